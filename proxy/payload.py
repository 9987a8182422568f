"""What the gateway reads from bodies it relays: the request's model, the response's usage.

Bodies pass through verbatim; these readers only look.
"""

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from gateway_project.errors import GatewayError
from proxy import bodylimit

MODEL_MAX_LENGTH = 128
# A JSON response is parsed for usage only up to this size; larger ones log 0 tokens
# rather than hold a copy of the whole body in memory.
JSON_USAGE_MAX_BYTES = 4 * 1024 * 1024


def request_body(request: HttpRequest) -> bytes:
    """The raw request body, refused with 413 past MAX_REQUEST_BYTES."""
    if bodylimit.exceeded(request):
        raise _too_large()
    try:
        return request.body
    except RequestDataTooBig:
        raise _too_large() from None


def _too_large() -> GatewayError:
    return GatewayError(
        413,
        "request_too_large",
        f"The request body is larger than the gateway accepts ({settings.MAX_REQUEST_BYTES} bytes).",
        # The rest of the upload is never read: closing is the only way to stop it.
        headers={"Connection": "close"},
    )


def request_model(request: HttpRequest) -> str:
    """The `model` of a JSON request body, or "" when there is none.

    A body declared as JSON that does not parse is refused here, before anything is
    forwarded or charged, with the message OpenAI gives for the same mistake.
    """
    if not request.body or "json" not in request.content_type:
        return ""
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(
            400,
            "invalid_json",
            "We could not parse the JSON body of your request. The body must be valid JSON "
            "when Content-Type is application/json.",
        ) from None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model[:MODEL_MAX_LENGTH] if isinstance(model, str) else ""


class UsageScanner:
    """Finds `usage.total_tokens` in a response body as it streams past.

    JSON bodies are parsed once complete; server-sent events are read line by line and
    the last `data:` event carrying usage wins (OpenAI's final usage chunk, or the
    Responses API's `response.completed`).
    """

    def __init__(self, content_type: str) -> None:
        self.total_tokens = 0
        self._sse = content_type.startswith("text/event-stream")
        self._json = not self._sse and "json" in content_type
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._sse:
            self._buffer += chunk
            *lines, rest = self._buffer.split(b"\n")
            self._buffer = bytearray(rest)
            for line in lines:
                self._scan_event_line(line)
        elif self._json:
            if len(self._buffer) + len(chunk) > JSON_USAGE_MAX_BYTES:
                self._json = False
                self._buffer = bytearray()
            else:
                self._buffer += chunk

    def finish(self) -> int:
        if self._sse and self._buffer:
            self._scan_event_line(bytes(self._buffer))
        elif self._json:
            self._take_usage(_loads(bytes(self._buffer)))
        self._buffer = bytearray()
        return self.total_tokens

    def _scan_event_line(self, line: bytes) -> None:
        # Cheap substring test first: most chunks carry no usage.
        if line.startswith(b"data:") and b'"usage"' in line:
            self._take_usage(_loads(line[5:]))

    def _take_usage(self, payload: object) -> None:
        if not isinstance(payload, dict):
            return
        usage = payload.get("usage")
        if not isinstance(usage, dict) and isinstance(payload.get("response"), dict):
            usage = payload["response"].get("usage")
        total = usage.get("total_tokens") if isinstance(usage, dict) else None
        if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
            self.total_tokens = total


def _loads(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
