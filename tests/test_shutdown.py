"""SIGTERM with streams open: running calls finish, a stream that would never end is
ended at the grace period, the process exits, and every log row is written."""

import signal
import threading
import time

import httpx
import pytest

from proxy.models import RequestLog
from tests.servers import GatewayProcess

# uvicorn ends open streams 5 s before gunicorn's graceful timeout: 3 s here.
GRACEFUL_TIMEOUT = 8
STOP_TIMEOUT = 30


class OpenStream:
    """A streamed call read in a thread: the first event at once, the rest when it comes."""

    def __init__(self, url: str, path: str, user: str, model: str = "") -> None:
        self._client = httpx.Client(base_url=url, timeout=30)
        body = {"model": model, "stream": True} if model else {"stream": True}
        self._context = self._client.stream("POST", path, json=body, headers={"X-User-ID": user})
        self._response = self._context.__enter__()
        self._chunks = self._response.iter_raw()
        self.first = next(self._chunks)
        self.rest = b""
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._read_rest, daemon=True)
        self._thread.start()

    def _read_rest(self) -> None:
        try:
            for chunk in self._chunks:
                self.rest += chunk
        except httpx.HTTPError as error:
            self.error = error
        finally:
            self._context.__exit__(None, None, None)
            self._client.close()

    def wait(self) -> None:
        self._thread.join(STOP_TIMEOUT)
        assert not self._thread.is_alive(), "the stream was still open after the grace period"


def wait_until_refusing(url: str) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=1)
        except httpx.TransportError:
            return
        time.sleep(0.02)  # polling for the listener to close
    pytest.fail("the gateway kept accepting connections after SIGTERM")


def test_sigterm_lets_running_streams_finish_ends_endless_ones_and_writes_every_row(gateway, upstream):
    process = GatewayProcess(OPENCLAW_URL=upstream.url, GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT))
    try:
        # Chat streams that never asked for usage: metered all the same.
        finishing = [OpenStream(process.url, "/v1/chat/completions", f"finisher-{n}", "gated") for n in range(3)]
        endless = OpenStream(process.url, "/v1/endless-stream", "endless")
        signalled = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        wait_until_refusing(process.url)
        upstream.gate.set()  # the running calls may now complete
        for stream in [*finishing, endless]:
            stream.wait()
        process.process.wait(STOP_TIMEOUT)
        stopped_after = time.monotonic() - signalled
    finally:
        output = process.stop()

    assert process.process.returncode == 0, output
    for stream in finishing:
        assert stream.error is None
        assert stream.rest.endswith(b"data: [DONE]\n\n")
    assert b'"first"' in endless.first
    assert endless.error is not None or not endless.rest.endswith(b"[DONE]\n\n"), "the endless stream cannot complete"
    assert stopped_after < GRACEFUL_TIMEOUT
    rows = sorted(RequestLog.objects.values_list("user_id", "status", "total_tokens"))
    assert rows == [("endless", 499, None), ("finisher-0", 200, 7), ("finisher-1", 200, 7), ("finisher-2", 200, 7)]
