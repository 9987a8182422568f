"""A real upstream for tests, served on loopback: scenarios the relay must survive.

Streams wait on gates the test opens, so "the first event arrived before the upstream
finished" is proven by ordering, not by timing. Unknown paths go to the bundled stub.
"""

import asyncio
import json
import re
import threading
from dataclasses import dataclass, field

from gateway_project import stub_upstream
from gateway_project.stub_upstream import read_body


@dataclass
class SeenRequest:
    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: dict[str, str]
    body: bytes
    # Every header as received, repeated names included.
    header_list: list[tuple[str, str]] = field(default_factory=list)


STATUS_MODEL = re.compile(rb'"model": ?"status-(\d{3})"')


def chunk_event(content: str, usage: dict | None = None) -> bytes:
    payload = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": "gpt-test"}
    payload["choices"] = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    if usage:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@dataclass
class TestUpstream:
    seen: list[SeenRequest] = field(default_factory=list)
    # Set by the test thread to let a gated stream finish.
    gate: threading.Event = field(default_factory=threading.Event)
    # Set when the upstream saw its client (the gateway) go away mid-response.
    disconnected: threading.Event = field(default_factory=threading.Event)
    # Set when a stream has finished sending everything.
    stream_finished: threading.Event = field(default_factory=threading.Event)
    # Bytes the firehose has handed to its server so far.
    sent_bytes: int = 0
    # Set when a "late-end" response has sent everything but the end of its body.
    holding_end: threading.Event = field(default_factory=threading.Event)
    # Extra headers of every response (tests of the header families).
    extra_response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # The body of the latest response, as sent.
    sent_body: bytes = b""

    def reset(self) -> None:
        self.sent_bytes = 0
        self.seen.clear()
        self.gate.clear()
        self.disconnected.clear()
        self.stream_finished.clear()
        self.holding_end.clear()
        self.extra_response_headers.clear()
        self.sent_body = b""

    @property
    def last(self) -> SeenRequest:
        return self.seen[-1]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        header_list = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        self.seen.append(
            SeenRequest(
                scope["method"],
                scope["path"],
                scope["raw_path"],
                scope["query_string"],
                dict(header_list),
                body,
                header_list,
            )
        )
        path = scope["path"]
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        self.sent_body = b""
        send = self._recorded(send)
        if b'"model": "late-end"' in body or b'"model":"late-end"' in body:
            # Everything is sent but the end of the body, which waits for the gate (or the
            # gateway leaving), as upstreams do that end their body some time after the
            # last event.
            send = self._holding_the_end(send)
        try:
            if path == "/v1/echo":
                await self._json(send, 200, {"path": path, "query": scope["query_string"].decode()})
            elif path.startswith("/v1/status/"):
                await self._status(send, int(path.rsplit("/", 1)[1]))
            elif answered_with := STATUS_MODEL.search(body):
                # A model call the upstream answers with an error: {"model": "status-500", ...}
                await self._status(send, int(answered_with[1]))
            elif path == "/v1/gated-stream" or (path == "/v1/chat/completions" and b'"model":"gated"' in body):
                await self._gated_stream(send, b'"include_usage":true' in body.replace(b" ", b""))
            elif path == "/v1/endless-stream":
                await self._stream_start(send)
                await send({"type": "http.response.body", "body": chunk_event("first"), "more_body": True})
                await asyncio.Event().wait()
            elif path == "/v1/firehose":
                await self._stream_start(send)
                event = chunk_event("x" * 65_000)
                # As fast as the reader takes it: blocks once everything in between is full.
                # Bounded (~260 MB), so a gateway that never lets go cannot keep it running
                # into later tests.
                for _ in range(4000):
                    if self.disconnected.is_set():
                        break
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                    self.sent_bytes += len(event)
                    # Once the gateway has closed the connection, uvicorn's send returns at
                    # once without writing: let the disconnect watcher run, or this loop would
                    # spin through every event without noticing.
                    await asyncio.sleep(0)
            elif path == "/v1/hang":
                await asyncio.Event().wait()
            elif path == "/v1/reset-mid-stream":
                await self._stream_start(send)
                await send({"type": "http.response.body", "body": chunk_event("first"), "more_body": True})
                raise ConnectionAbortedError("upstream drops the connection mid-stream")
            else:
                await stub_upstream.app(scope, _replay(body), send)
        finally:
            watcher.cancel()

    def _recorded(self, send):
        """`send` adding the extra response headers and keeping the body as sent."""

        async def sending(message) -> None:
            if message["type"] == "http.response.start" and self.extra_response_headers:
                message = {**message, "headers": [*message["headers"], *self.extra_response_headers]}
            if message["type"] == "http.response.body" and len(self.sent_body) < 1_000_000:  # not the firehose
                self.sent_body += message.get("body", b"")
            await send(message)

        return sending

    def _holding_the_end(self, send):
        async def sending(message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                if message.get("body"):
                    await send({**message, "more_body": True})
                self.holding_end.set()
                for _ in range(1000):  # polling two thread events, at most 10 s
                    if self.gate.is_set() or self.disconnected.is_set():
                        break
                    await asyncio.sleep(0.01)
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        return sending

    async def _watch_disconnect(self, receive) -> None:
        if (await receive())["type"] == "http.disconnect":
            self.disconnected.set()

    async def _json(self, send, status: int, payload: dict, extra: list | None = None) -> None:
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json")] + (extra or [])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _status(self, send, status: int) -> None:
        extra = [
            (b"x-request-id", b"req-123"),
            (b"openai-processing-ms", b"42"),
            (b"set-cookie", b"upstream_session=abc"),
            (b"x-upstream-internal", b"secret-topology"),
        ]
        error = {"error": {"message": f"upstream says {status}", "type": "test", "code": str(status), "param": None}}
        await self._json(send, status, error, extra)

    async def _stream_start(self, send) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _gated_stream(self, send, include_usage: bool) -> None:
        await self._stream_start(send)
        await send({"type": "http.response.body", "body": chunk_event("first"), "more_body": True})
        await asyncio.to_thread(self.gate.wait, 10)
        await send({"type": "http.response.body", "body": chunk_event(" second"), "more_body": True})
        if include_usage:  # as OpenAI: a usage chunk only when asked for
            usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
            await send({"type": "http.response.body", "body": chunk_event("", usage), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        self.stream_finished.set()


def _replay(body: bytes):
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
