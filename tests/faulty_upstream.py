"""An upstream on loopback that misbehaves as scripted, one step per attempt it receives.

A raw asyncio TCP server rather than an ASGI app: only a socket can reset a connection
before the status line, or accept a request and never answer. Each request it receives is
recorded with its time; the script's steps are taken in order, then `then` for the rest.
"""

import asyncio
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from proxy import routes, timing
from proxy.routes import Target, Upstream

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@dataclass(frozen=True)
class Step:
    kind: str  # answer, reset, silent, stream_then_silent, ok, events, raw_events
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    # events: what is sent, one piece at a time (str: a chat chunk's text; bytes: as they
    # are; float: a pause in seconds), then how the stream ends (DONE, END, CUT or STALL).
    pieces: tuple[str | bytes | float, ...] = ()
    end: str = ""


# How a scripted stream ends: finish_reason, usage when asked and [DONE]; the body's end
# without [DONE]; the connection closed mid-body; nothing more (the gateway must give up).
DONE, END, CUT, STALL = "done", "end", "cut", "stall"
MALFORMED = b"data: {this is not json\n\n"


def ok() -> Step:
    """A chat completion (streamed when asked), naming the model it was sent."""
    return Step("ok")


def answer(status: int, code: str = "", *headers: tuple[str, str], message: str = "") -> Step:
    error = {"error": {"message": message or f"upstream says {status}", "type": "test", "code": code, "param": None}}
    return Step("answer", status, headers, json.dumps(error).encode())


def reset() -> Step:
    """The request is read, then the connection is reset before any status line."""
    return Step("reset")


def silent() -> Step:
    """The request is read and never answered."""
    return Step("silent")


def together(n: int) -> Step:
    """A chat completion answered once n requests of this step have arrived: n connections
    open at once, left idle in the gateway's pool afterwards."""
    return Step("together", status=n)


def stream_then_silent() -> Step:
    """Stream headers, then nothing."""
    return Step("stream_then_silent")


def chat_stream(*pieces: str | bytes | float, end: str = DONE) -> Step:
    """A chat completions stream: a role chunk, then each piece (text: a chunk adding it;
    bytes: sent as they are, e.g. MALFORMED or half an event), then `end`."""
    return Step("events", pieces=pieces, end=end)


def events(*pieces: bytes | float, end: str = END) -> Step:
    """An event stream of exactly these pieces, then `end` (DONE: the body ends, as END)."""
    return Step("raw_events", pieces=pieces, end=end)


@dataclass
class Seen:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def model(self) -> str:
        return json.loads(self.body).get("model", "")


@dataclass
class FaultyUpstream:
    name: str = "faulty"
    script: list[Step] = field(default_factory=list)
    then: Step = field(default_factory=ok)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    # A request on a connection that already served one is reset before any step is taken:
    # an upstream that closed its idle connections just as the request came.
    reset_reused: bool = False

    def start(self) -> "FaultyUpstream":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(listener, ready), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        self._server.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def play(self, *steps: Step, then: Step | None = None, reset_reused: bool = False) -> "FaultyUpstream":
        self.script, self.seen = list(steps), []
        self.then = then or ok()
        self.reset_reused = reset_reused
        self._together: list[asyncio.Event] = []
        return self

    def _serve(self, listener: socket.socket, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._connection, sock=listener))
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            served = 0
            while True:  # keep-alive: one request after another
                request = await _read_request(reader)
                if request is None:
                    break
                self.seen.append(Seen(time.monotonic(), *request))
                served += 1
                step = reset() if self.reset_reused and served > 1 else self.script.pop(0) if self.script else self.then
                if not await self._take(step, request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.is_closing():
                writer.transport.abort()

    async def _take(
        self, step: Step, request: tuple, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answers one request as `step` says; False when the connection is to end."""
        if step.kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if step.kind in ("silent", "stream_then_silent"):
            if step.kind == "stream_then_silent":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
            await reader.read()  # until the gateway gives up and closes
            return False
        if step.kind in ("events", "raw_events"):
            return await self._stream(step, json.loads(request[2] or b"{}"), reader, writer)
        if step.kind == "together":
            arrived = asyncio.Event()
            self._together.append(arrived)
            if len(self._together) == step.status:
                for other in self._together:
                    other.set()
            await arrived.wait()
        if step.kind == "answer":
            _respond(writer, step.status, step.headers, step.body)
        else:
            payload = json.loads(request[2] or b"{}")
            if payload.get("stream"):
                _respond_stream(writer, payload)
            else:
                _respond(writer, 200, (), json.dumps(_completion(payload)).encode())
        await writer.drain()
        return True

    async def _stream(
        self, step: Step, payload: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """A scripted event stream, each piece its own HTTP chunk; False: the connection ends."""
        base = {"id": f"chatcmpl-{self.name}", "object": "chat.completion.chunk", "created": ord(self.name[0])}
        base["model"] = payload.get("model")
        chat = step.kind == "events"
        pieces = [_chunk(base, {"role": "assistant", "content": ""})] if chat else []
        pieces += [_chunk(base, {"content": p}) if isinstance(p, str) else p for p in step.pieces]
        if step.end == DONE and chat:
            pieces.append(_chunk(base, {}, "stop"))
            if (payload.get("stream_options") or {}).get("include_usage"):
                pieces.append(b"data: " + json.dumps({**base, "choices": [], "usage": USAGE}).encode() + b"\n\n")
            pieces.append(b"data: [DONE]\n\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in pieces:
            if isinstance(piece, float):
                await asyncio.sleep(piece)  # the upstream taking its time: what is tested
                continue
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        if step.end == STALL:
            await reader.read()  # until the gateway gives up and closes
            return False
        if step.end == CUT:
            return False  # closed mid-body: no last chunk
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def _chunk(base: dict, delta: dict, finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return path, headers, body


def _respond(writer: asyncio.StreamWriter, status: int, headers, body: bytes) -> None:
    lines = [f"HTTP/1.1 {status} X", "content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def _completion(payload: dict) -> dict:
    message = {"role": "assistant", "content": "fine"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return {
        "id": "c-1",
        "object": "chat.completion",
        "created": 0,
        "model": payload.get("model"),
        "choices": [choice],
        "usage": USAGE,
    }


def _respond_stream(writer: asyncio.StreamWriter, payload: dict) -> None:
    base = {"id": "c-1", "object": "chat.completion.chunk", "created": 0, "model": payload.get("model")}
    events = [{**base, "choices": [{"index": 0, "delta": {"content": "fine"}, "finish_reason": None}]}]
    if (payload.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": USAGE})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(body)
    writer.write(head + body)


# For the tests: the attempts' clock, upstreams and routes.


class FakeClock(timing.Clock):
    def __init__(self) -> None:
        self.offset = 0.0
        self.pauses: list[float] = []

    def now(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(round(seconds, 3))
        self.offset += seconds
        await asyncio.sleep(0)

    def jitter(self) -> float:
        return 0.5  # back-off at 75 % of its ceiling


def at(server, *, retries: int = 0, auth: str = "none", api_key: str | None = None, timeout: float = 3.0) -> Upstream:
    return Upstream(server.name, server.url, auth, api_key, (), 1.0, timeout, timeout, timeout, retries)


def route(monkeypatch, *targets: Target) -> None:
    async def targets_for(model: str, *, pin: str | None = None) -> list[Target]:
        return list(targets)

    monkeypatch.setattr(routes, "targets_for", targets_for)
