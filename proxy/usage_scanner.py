"""What the gateway reads from a response as it streams past: the upstream's usage, and
whether the answer ended (its terminal event, JSON body or declared length).

The usage-only chunk the stream-usage rewrite (proxy.request_body.with_stream_usage) makes
the upstream send is taken out here when the client did not ask for it.
"""

import json
import re

from billing.call_usage import Usage

# A JSON response is kept whole for parsing only up to this size; past it only its tail
# is kept, where OpenAI's bodies put `usage`.
JSON_USAGE_MAX_BYTES = 4 * 1024 * 1024
JSON_TAIL_BYTES = 64 * 1024
# The Responses API's last event of a stream.
_TERMINAL_TYPES = frozenset(("response.completed", "response.incomplete", "response.failed"))
# An event ends at a blank line (LF, CRLF or CR line endings).
EVENT_END = re.compile(rb"\r?\n\r?\n|\r\r")
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
        for end in EVENT_END.finditer(self._buffer):
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
        data = event_data(event)
        if data == b"[DONE]":
            self.complete = True
            return False
        payload = json_or_none(data)
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
        payload = json_or_none(body)
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


def event_data(event: bytes | bytearray) -> bytes:
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


def json_or_none(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
