"""Server-sent events as a broken stream's ending reads and writes them (proxy.rescue): whole
events out of chunks cut anywhere, the text a chat completions stream delivered, its chunks
rewritten into the stream they continue, and the Responses API's failure event."""

import json
import re

from gateway_project.lib.errors import GatewayError
from proxy.usage_scanner import EVENT_END, EVENT_MAX_BYTES, event_data, json_or_none

DONE = b"[DONE]"
# Members that make chunks of two upstreams one completion for the caller's SDK.
IDENTITY = ("id", "created", "model")
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
_LIFECYCLE = frozenset(("response.created", "response.in_progress"))
# The response.created event comes first: only this many events are read for it.
_LIFECYCLE_WITHIN = 4


class Events:
    """Whole events out of chunks: what is fed comes back once its event has ended."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        events, start = [], 0
        for end in EVENT_END.finditer(self._buffer):
            events.append(bytes(self._buffer[start : end.end()]))
            start = end.end()
        del self._buffer[:start]
        return events

    @property
    def held(self) -> int:
        return len(self._buffer)

    def release(self) -> bytes:
        held, self._buffer = bytes(self._buffer), bytearray()
        return held


def chunk_of(event: bytes) -> dict | None:
    """A chat completion chunk (its JSON object), or None for anything else."""
    payload = json_or_none(event_data(event))
    return payload if isinstance(payload, dict) else None


def is_done(event: bytes) -> bool:
    return event_data(event) == DONE


def text_of(chunk: dict) -> str:
    """The content a chunk adds to its first choice."""
    return "".join(
        choice["delta"]["content"]
        for choice in chunk.get("choices") or ()
        if isinstance(choice, dict)
        and isinstance(choice.get("delta"), dict)
        and isinstance(choice["delta"].get("content"), str)
    )


def is_plain(chunk: dict) -> bool:
    """Whether a chunk adds nothing but text to the first choice: no other choice, tool call,
    refusal, logprobs or error, which a continuation could not carry on."""
    if "error" in chunk:
        return False
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0 or choice.get("logprobs") is not None:
            return False
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict) or any(delta.get(key) for key in ("tool_calls", "function_call", "refusal")):
            return False
    return True


def is_finished(chunk: dict) -> bool:
    return any(isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ())


def event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


class Transcript:
    """What a chat completions stream delivered to the caller, read as it passes: its text, the
    identity of its chunks, and whether the text is all of it. Only whole events pass (`feed`):
    a broken stream leaves the caller no half event a continuation would be glued to."""

    def __init__(self) -> None:
        self._events = Events()
        self._parts: list[str] = []
        self.identity: dict = {}
        self.plain = True
        self.finished = False

    def feed(self, chunk: bytes) -> bytes:
        events = self._events.feed(chunk)
        for whole in events:
            self._read(whole)
        if self._events.held > EVENT_MAX_BYTES:  # no chunk is this large: relayed unread
            self.plain = False
            events.append(self._events.release())
        return b"".join(events)

    def release(self) -> bytes:
        """At the end of a stream that ended whole: what it held (a last event without its
        blank line)."""
        return self._events.release()

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def continuable(self) -> bool:
        """Whether another upstream could finish this answer: plain text, not finished."""
        return self.plain and not self.finished

    def _read(self, whole: bytes) -> None:
        data = event_data(whole)
        if not data or data == DONE:
            return  # a comment (keep-alive) or the end
        chunk = chunk_of(whole)
        if chunk is None or not is_plain(chunk):
            # A malformed event is relayed as it came, but what it said is unknown.
            self.plain = False
            return
        for key in IDENTITY:
            if key in chunk:
                self.identity.setdefault(key, chunk[key])
        self._parts.append(text_of(chunk))
        self.finished = self.finished or is_finished(chunk)


class ResponsesTrail:
    """Of a Responses API stream, what its failure event needs: the response object its
    lifecycle events carried (SDKs check the failed response is the one that started), and
    the last sequence number. Cheap: the first few events parsed, then a substring search."""

    def __init__(self) -> None:
        self._events: Events | None = Events()
        self._looked = 0
        self.response: dict = {}
        self.sequence = -1

    def feed(self, chunk: bytes) -> None:
        if self._events is not None:
            for whole in self._events.feed(chunk):
                self._looked += 1
                payload = json_or_none(event_data(whole))
                if isinstance(payload, dict) and payload.get("type") in _LIFECYCLE:
                    response = payload.get("response")
                    self.response = response if isinstance(response, dict) else {}
                if self.response or self._looked >= _LIFECYCLE_WITHIN:
                    self._events = None
                    break
        at = chunk.rfind(b'"sequence_number"')
        found = _SEQUENCE.match(chunk, at) if at >= 0 else None
        if found:
            self.sequence = int(found[1])

    def failed(self, failure: GatewayError) -> bytes:
        """`response.failed`, as the Responses API ends a response that failed mid-stream."""
        error = {"code": failure.code, "message": failure.message, "type": failure.type}
        response = {"object": "response", **self.response, "status": "failed", "error": error}
        payload = {"type": "response.failed", "sequence_number": self.sequence + 1, "response": response}
        return b"event: response.failed\n" + event(payload)
