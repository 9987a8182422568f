"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for floods and soaks.

httpx spends about a millisecond of CPU per request; a flood of thousands from the test
process would then measure the client, not the gateway.
"""

import asyncio
import json
import secrets
import sys
import time
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 10.0


class Connection:
    def __init__(self, url: str) -> None:
        address = urlsplit(url)
        self._host, self._port = address.hostname, address.port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, float]:
        """(status, seconds) of one request without a body; reconnects when the server closed."""
        return await asyncio.wait_for(self._request(method, path, headers), REQUEST_TIMEOUT)

    async def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, float]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        started = time.perf_counter()
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self._reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self._reader.readexactly(int(fields.get("content-length", "0")))
        elapsed = time.perf_counter() - started
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), elapsed

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def flood_with_made_up_keys(url: str, count: int, concurrency: int) -> dict[int, int]:
    """`count` requests with made-up gateway keys over `concurrency` connections: statuses seen."""
    statuses: dict[int, int] = {}
    numbers = iter(range(count))

    async def flooder() -> None:
        connection = Connection(url)
        try:
            for number in numbers:
                status, _ = await connection.request(
                    "POST", "/v1/chat/completions", {"X-Gateway-Key": made_up_key(number)}
                )
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await connection.close()

    await asyncio.gather(*(flooder() for _ in range(concurrency)))
    return statuses


def made_up_key(number: int) -> str:
    # Half look like real keys (so each costs the gateway a database lookup), half do not.
    return "gk_" + secrets.token_urlsafe(32) if number % 2 else secrets.token_hex(number % 7 + 1)


if __name__ == "__main__":
    # python -m tests.loadclient URL COUNT CONCURRENCY: a flood from a process of its own,
    # so the flooding client does not share a CPU core (and a GIL) with what it measures.
    url, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(flood_with_made_up_keys(url, count, concurrency))))
