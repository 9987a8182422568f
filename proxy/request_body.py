"""What the gateway reads from a request it relays: its body (bounded), its JSON, the model
it names, and the stream-usage rewrite.

Bodies pass through verbatim. The one exception is the stream-usage rewrite: a streamed
chat or legacy completion that did not ask for usage is forwarded with
`stream_options.include_usage` added; the usage-only chunk this makes the upstream send is
taken back out of the stream by the usage scanner (proxy.usage_scanner), so the client meets
no event it did not ask for and the gateway still learns the upstream's own count.
"""

import json
import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from gateway_project.lib import from_settings
from gateway_project.lib.errors import GatewayError
from proxy import bodylimit

MODEL_MAX_LENGTH = 128
MODEL_SEARCH_BYTES = 64 * 1024
_MODEL_MEMBER = re.compile(rb'"model"\s*:\s*"([^"\\]{1,128})"')
# Endpoints whose streams report usage only when asked (stream_options.include_usage).
STREAM_USAGE_PATHS = frozenset(("/v1/chat/completions", "/v1/completions"))
_INCLUDE_USAGE = b',"stream_options":{"include_usage":true}'


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


def request_payload(request: HttpRequest) -> dict | None:
    """The JSON object of the request body; None when the body is not a JSON object.

    A body declared as JSON that does not parse is refused here, before anything is
    forwarded or charged, with the message OpenAI gives for the same mistake.
    """
    if not request.body or "json" not in request.content_type:
        return None
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(
            400,
            "invalid_json",
            "We could not parse the JSON body of your request. The body must be valid JSON "
            "when Content-Type is application/json.",
        ) from None
    return payload if isinstance(payload, dict) else None


def model_of(payload: dict | None) -> str:
    model = payload.get("model") if payload else None
    return model[:MODEL_MAX_LENGTH] if isinstance(model, str) else ""


def model_named(request: HttpRequest) -> str:
    """The body's model for the log row of a request refused before its body was read:
    "" when there is none or the body does not parse. Never raises. A large body is only
    searched near its start, so that a flood of refused calls costs no JSON parsing."""
    if bodylimit.exceeded(request):
        return ""
    try:
        body = request.body
        if len(body) > MODEL_SEARCH_BYTES:
            found = _MODEL_MEMBER.search(body, 0, MODEL_SEARCH_BYTES)
            return found[1].decode("utf-8", "replace")[:MODEL_MAX_LENGTH] if found else ""
        return model_of(request_payload(request))
    except (GatewayError, RequestDataTooBig):
        return ""


def with_stream_usage(path: str, body: bytes, payload: dict | None, *, always: bool = False) -> tuple[bytes, bool]:
    """The body to forward, and whether the upstream's usage-only chunk must be taken out
    of the stream (the gateway asked for it, the client did not). `always`: even with
    STREAM_USAGE=passthrough."""
    if (
        (from_settings.get("STREAM_USAGE") != "include" and not always)
        or payload is None
        or payload.get("stream") is not True
        or path not in STREAM_USAGE_PATHS
    ):
        return body, False
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, False
    if "stream_options" not in payload:
        # Spliced in before the closing brace: the rest of the body stays byte for byte.
        # The object has a "stream" member, so a comma always fits.
        end = body.rindex(b"}")
        return body[:end] + _INCLUDE_USAGE + body[end:], True
    # stream_options present without include_usage (rare): the body is written anew.
    options = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    return json.dumps({**payload, "stream_options": options}, ensure_ascii=False).encode(), True


def with_model(body: bytes, model: str, renamed: str) -> bytes:
    """The body with its `model` member, `model`, renamed (a route's target that serves the
    call under another name); the rest stays byte for byte when the member is found once."""
    member = re.compile(rb'("model"\s*:\s*)' + re.escape(json.dumps(model).encode()))
    found = list(member.finditer(body))
    if len(found) == 1:
        start, end = found[0].span()
        return body[:start] + found[0][1] + json.dumps(renamed).encode() + body[end:]
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not isinstance(payload, dict):
        return body
    return json.dumps({**payload, "model": renamed}, ensure_ascii=False).encode()
