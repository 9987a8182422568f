"""HTTP/1.1 spoken byte for byte, for requests real clients would refuse or fix up:
bodies cut short, absurd headers, a declared length never sent."""

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    # Whether the server closed the connection after this response.
    closed: bool


def connect(url: str, timeout: float = 5) -> socket.socket:
    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=timeout)


def head(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: gateway.test"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def read_response(sock: socket.socket) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {data!r}")
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    closed = headers.get("connection", "").lower() == "close"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(sock, rest)
    else:
        length = int(headers.get("content-length", "0"))
        body = _read_until(sock, rest, lambda data: len(data) >= length)[:length]
    return RawResponse(int(status_line.split()[1]), headers, body, closed)


def _read_until(sock: socket.socket, data: bytes, done) -> bytes:
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _read_chunked(sock: socket.socket, data: bytes) -> bytes:
    body = b""
    while True:
        data = _read_until(sock, data, lambda d: b"\r\n" in d)
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        data = _read_until(sock, data, lambda d, n=size: len(d) >= n + 2)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


def request(url: str, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> RawResponse:
    with connect(url) as sock:
        if body:
            headers = [*headers, (b"Content-Length", str(len(body)).encode())]
        sock.sendall(head(method, path, headers) + body)
        return read_response(sock)
