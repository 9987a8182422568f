"""What the gateway reads from bodies it relays: the request's model and stream options,
the response's usage and whether it ended.

Bodies pass through verbatim. The one exception is the stream-usage rewrite: a streamed
chat or legacy completion that did not ask for usage is forwarded with
`stream_options.include_usage` added, and the usage-only chunk this makes the upstream send
is taken back out of the stream, so the client meets no event it did not ask for and the
gateway still learns the upstream's own count.
"""

import json
import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from billing.usage import Usage
from gateway_project.errors import GatewayError
from proxy import bodylimit

MODEL_MAX_LENGTH = 128
MODEL_SEARCH_BYTES = 64 * 1024
_MODEL_MEMBER = re.compile(rb'"model"\s*:\s*"([^"\\]{1,128})"')
# A JSON response is kept whole for parsing only up to this size; past it only its tail
# is kept, where OpenAI's bodies put `usage`.
JSON_USAGE_MAX_BYTES = 4 * 1024 * 1024
JSON_TAIL_BYTES = 64 * 1024
# Endpoints whose streams report usage only when asked (stream_options.include_usage).
STREAM_USAGE_PATHS = frozenset(("/v1/chat/completions", "/v1/completions"))
_INCLUDE_USAGE = b',"stream_options":{"include_usage":true}'
# The Responses API's last event of a stream.
_TERMINAL_TYPES = frozenset(("response.completed", "response.incomplete", "response.failed"))


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
        (settings.STREAM_USAGE != "include" and not always)
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


# An event ends at a blank line (LF, CRLF or CR line endings).
_EVENT_END = re.compile(rb"\r?\n\r?\n|\r\r")
# An event is scanned only up to this size; past it, it is relayed as it comes, unread.
EVENT_MAX_BYTES = 256 * 1024
_EVENT_ENDINGS = (b"\n\n", b"\r\n\r\n")
_TERMINAL_NAMES = tuple(name.encode() for name in _TERMINAL_TYPES)


def _may_matter(data: bytes | bytearray) -> bool:
    """Whether events may carry usage or the end of the stream: cheap substring tests,
    so that the JSON of most events is never parsed."""
    return b"[DONE]" in data or _has_usage_object(data) or any(name in data for name in _TERMINAL_NAMES)


def _has_usage_object(data: bytes | bytearray) -> bool:
    # `"usage": {` rather than `"usage": null`, which OpenAI puts on every chunk but the
    # last once include_usage is on.
    at = data.find(b'"usage"')
    while at >= 0:
        value = at + 7
        while data[value : value + 1] in (b" ", b":", b"\t", b"\n", b"\r"):
            value += 1
        if data[value : value + 1] == b"{":
            return True
        at = data.find(b'"usage"', value)
    return False


class UsageScanner:
    """Reads a response body as it streams past: its usage, and whether it ended.

    JSON bodies are parsed once complete. Server-sent events are read event by event; the
    last event carrying usage wins (OpenAI's usage chunk, or the Responses API's
    `response.completed`). `complete` says the body's end was seen: a `data: [DONE]`, a
    terminal Responses event, a JSON body that parses, or the declared Content-Length.
    With `drop_usage_chunk`, `feed` returns the events without the usage-only chunk
    (`"choices": []` with usage); otherwise it returns each chunk as it came.
    """

    def __init__(self, content_type: str, content_length: str | None = None, drop_usage_chunk: bool = False) -> None:
        self.usage: Usage | None = None
        self.complete = False
        self._sse = content_type.startswith("text/event-stream")
        self._json = not self._sse and "json" in content_type
        self._drop = drop_usage_chunk and self._sse
        self._expected = int(content_length) if content_length and content_length.isdigit() else None
        self._received = 0
        self._buffer = bytearray()
        self._tail_only = False
        self._finished = False

    def feed(self, chunk: bytes) -> bytes:
        self._received += len(chunk)
        if self._sse:
            return self._feed_events(chunk)
        if self._json:
            self._buffer += chunk
            if len(self._buffer) > JSON_USAGE_MAX_BYTES:
                self._tail_only = True
            if self._tail_only and len(self._buffer) > JSON_TAIL_BYTES:
                del self._buffer[:-JSON_TAIL_BYTES]
        if self._expected is not None and self._received >= self._expected:
            self.complete = True
        return chunk

    def finish(self) -> bytes:
        """At the end of the body: reads what is left, returns what is still to relay.
        Called again (a client that left while the rest was sent), it does nothing."""
        if self._finished:
            return b""
        self._finished = True
        rest = b""
        if self._sse and self._buffer:
            # A last event without its blank line. Only when dropping was it held back.
            rest = bytes(self._buffer)
            if self._scan_event(rest) or not self._drop:
                rest = b""
        elif self._json:
            self._finish_json(bytes(self._buffer))
        self._buffer = bytearray()
        return rest

    def _feed_events(self, chunk: bytes) -> bytes:
        if not self._buffer and chunk.endswith(_EVENT_ENDINGS) and not _may_matter(chunk):
            # Whole events, none carrying usage or an end: the common case, nothing to copy.
            return chunk
        self._buffer += chunk
        kept = bytearray() if self._drop else None
        start = 0
        for end in _EVENT_END.finditer(self._buffer):
            event = self._buffer[start : end.end()]
            start = end.end()
            if not self._scan_event(event) and kept is not None:
                kept += event
            # else: the usage-only chunk the gateway asked for, not relayed
        del self._buffer[:start]
        if len(self._buffer) > EVENT_MAX_BYTES:
            # No event is this large: not worth holding. What was held is relayed unread.
            if kept is not None:
                kept += self._buffer
            self._buffer = bytearray()
        return chunk if kept is None else bytes(kept)

    def _scan_event(self, event: bytes | bytearray) -> bool:
        """Takes usage and the end of the stream from one event; True for the usage-only
        chunk that is to be dropped."""
        if not _may_matter(event):
            return False
        data = _data(event)
        if data == b"[DONE]":
            self.complete = True
            return False
        payload = _loads(data)
        if not isinstance(payload, dict):
            return False
        if payload.get("type") in _TERMINAL_TYPES:
            self.complete = True
        usage = usage_of(payload)
        if usage is None:
            return False
        self.usage = usage
        return self._drop and payload.get("choices") == []

    def _finish_json(self, body: bytes) -> None:
        if self._tail_only:
            # Only the tail is left: complete only if the declared length arrived (feed).
            self.usage = _usage_in_tail(body)
            return
        payload = _loads(body)
        if payload is not None:
            self.complete = True
        if isinstance(payload, dict):
            self.usage = usage_of(payload)


def usage_of(payload: dict) -> Usage | None:
    """The usage in a response object or event, in any shape the OpenAI API uses."""
    usage = payload.get("usage")
    if not isinstance(usage, dict) and isinstance(payload.get("response"), dict):
        usage = payload["response"].get("usage")
    if not isinstance(usage, dict):
        return None
    if "input_tokens" in usage:  # Responses API
        input_tokens, details, output_tokens = (
            usage.get("input_tokens"),
            usage.get("input_tokens_details"),
            usage.get("output_tokens"),
        )
    else:  # chat and legacy completions, embeddings
        input_tokens, details, output_tokens = (
            usage.get("prompt_tokens"),
            usage.get("prompt_tokens_details"),
            usage.get("completion_tokens"),
        )
    total = usage.get("total_tokens")
    if output_tokens is None and _is_count(total) and _is_count(input_tokens) and total >= input_tokens:
        output_tokens = total - input_tokens  # embeddings: no output tokens, total = input
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = 0  # no cache report: nothing was read from a cache
    if not all(_is_count(n) for n in (input_tokens, cached, output_tokens)):
        return None  # a count missing or malformed: unknown, never a guess
    if not _is_count(total):
        total = input_tokens + output_tokens
    return Usage(input_tokens, min(cached, input_tokens), output_tokens, total)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _data(event: bytes | bytearray) -> bytes:
    """The data of one server-sent event (its `data:` lines joined)."""
    lines = [line[5:].strip() for line in bytes(event).splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines)


def _usage_in_tail(tail: bytes) -> Usage | None:
    at = tail.rfind(b'"usage"')
    if at < 0:
        return None
    colon = tail.find(b":", at + 7)
    try:
        value, _ = json.JSONDecoder().raw_decode(tail[colon + 1 :].decode().lstrip())
    except (ValueError, UnicodeDecodeError):
        return None
    return usage_of({"usage": value})


def _loads(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
