"""A lean streaming client for the bench: opens N server-sent-event streams at once and
times each event's arrival (raw asyncio HTTP/1.1, so its own cost is small and the same
for every target)."""

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field


@dataclass
class StreamResult:
    ok: bool
    first_event_ms: float | None = None
    gaps_ms: list[float] = field(default_factory=list)
    events: int = 0


async def one_stream(host: str, port: int, path: str, key: str | None, body: bytes) -> StreamResult:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return StreamResult(ok=False)
    headers = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if key:
        headers.append(f"Authorization: Bearer {key}")
    started = time.perf_counter()
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
    arrivals: list[float] = []
    buffer = b""
    status_ok = False
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        status_ok = head.split(b" ", 2)[1] == b"200"
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            now = time.perf_counter()
            buffer += chunk
            complete = buffer.count(b"\n\n")
            arrivals.extend([now] * complete)
            buffer = buffer[buffer.rfind(b"\n\n") + 2 :] if complete else buffer
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
    if not arrivals:
        return StreamResult(ok=False)
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
    return StreamResult(status_ok, (arrivals[0] - started) * 1000, gaps, len(arrivals))


async def many_streams(url: str, count: int, keys: list[str] | None) -> list[StreamResult]:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    tasks = [
        one_stream(host, int(port), "/v1/chat/completions", keys[i % len(keys)] if keys else None, body.encode())
        for i in range(count)
    ]
    return await asyncio.gather(*tasks)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
