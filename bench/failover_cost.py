"""What proxy.routing adds to a call, measured on loopback against the bundled stub upstream.

    python bench/failover_cost.py [--calls 300]

- fail-over: a route whose first target refuses the connection, then the fallback, against
  the fallback alone (time until the answer is in hand; issue 21: at most 2 ms more);
- first event: a stream's first event through routing.attempt, against one upstream.send
  and its first read as the relay did before routing (issue 21: no change).
Calls of each kind alternate, so a machine whose speed drifts moves both alike.
"""

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
os.environ.setdefault("DEBUG", "1")

import django

django.setup()

from proxy import routing, upstream  # noqa: E402
from proxy.legs import Leg  # noqa: E402
from proxy.routes import Target, Upstream  # noqa: E402

CHAT = b'{"model": "stub-mini", "messages": [{"role": "user", "content": "hi"}]}'
STREAM = b'{"model": "stub-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
HEADERS = {"content-type": "application/json", "Accept-Encoding": "identity"}


def serve_stub() -> tuple[str, subprocess.Popen]:
    """The stub in a process of its own: in a thread it would share this one's GIL and timings."""
    port = int(closed_port().rsplit(":", 1)[1])
    stub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "gateway_project.stub_upstream:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "WEB_CONCURRENCY": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return url, stub
        except OSError:
            time.sleep(0.05)  # start-up polling


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def at(name: str, url: str) -> Leg:
    return Leg(Target(Upstream(name, url, "none", None, (), 5.0, 60.0, 60.0, 60.0, 0)), {})


async def routed(legs: list[Leg], body: bytes) -> float:
    """Until the answer is in hand (a stream's first event, a JSON body whole); then drained."""
    exchange = SimpleNamespace(model="stub-mini", method="POST", endpoint="/v1/chat/completions", upstream="")
    started = time.perf_counter()
    answer = await routing.attempt(legs, "POST", "/v1/chat/completions", HEADERS, body, exchange)
    spent = time.perf_counter() - started
    assert exchange.attempts == len(legs) and exchange.upstream == "fallback"
    if answer.rest is not None:
        async for _ in answer.rest:
            pass
    await answer.response.aclose()
    return spent


async def single_send(target: Upstream, body: bytes) -> float:
    """The same, as the relay read it before routing: one send, then the first chunk."""
    started = time.perf_counter()
    response = await upstream.send(target, "POST", "/v1/chat/completions", HEADERS, body)
    raw = response.aiter_raw()
    await raw.__anext__()
    spent = time.perf_counter() - started
    async for _ in raw:
        pass
    await response.aclose()
    return spent


async def main(calls: int) -> None:
    (url, stub), refused = serve_stub(), closed_port()
    fallback, dead = at("fallback", url), at("refused", refused)
    times: dict[str, list[float]] = {name: [] for name in ("alone", "over", "stream", "stream1", "json1")}
    kinds = {
        "alone": lambda: routed([fallback], CHAT),
        "over": lambda: routed([dead, fallback], CHAT),
        "stream": lambda: routed([fallback], STREAM),
        "stream1": lambda: single_send(fallback.target.upstream, STREAM),
        "json1": lambda: single_send(fallback.target.upstream, CHAT),
    }
    for round in range(calls + 20):  # the first 20 warm the pool and the code
        order = list(kinds)
        random.shuffle(order)  # no kind always follows the same other
        for name in order:
            spent = await kinds[name]()
            if round >= 20:
                times[name].append(spent)
    ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"{calls} calls of each, alternating; medians in ms")
    added = ms["over"] - ms["alone"]
    print(f"fail-over: fallback alone {ms['alone']:.3f}, refused then fallback {ms['over']:.3f}: {added:+.3f}")
    print(f"first event: routing {ms['stream']:.3f}, one send {ms['stream1']:.3f}: {ms['stream'] - ms['stream1']:+.3f}")
    print(f"JSON answer: routing, whole {ms['alone']:.3f}; one send, first chunk {ms['json1']:.3f}")
    await upstream.close_client()
    stub.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    asyncio.run(main(parser.parse_args().calls))
