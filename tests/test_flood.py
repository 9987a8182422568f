"""A flood of requests with made-up gateway keys: 401s only, nothing forwarded, nothing
written but the access log, and valid callers barely notice."""

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys

from accounts.models import Account, ApiKey
from billing.models import MonthlyUsage
from proxy.models import RequestLog
from tests.loadclient import Connection
from tests.personas import trainee
from tests.servers import BASE_DIR, GatewayProcess

# The acceptance run is FLOOD_REQUESTS=10000 (about two minutes on a shared 2-core machine);
# the suite floods less to stay fast. Either way the flood comes from a process of its own.
FLOOD = int(os.environ.get("FLOOD_REQUESTS", "2000"))
FLOODERS = int(os.environ.get("FLOOD_CONNECTIONS", "1"))
WARM_UP = 20
SAMPLES_PER_TURN = 10
# Then the flood runs on alone: the valid caller must not slow it down for the whole run.
SAMPLES = 200


async def valid_latencies(url: str, key: str, count: int) -> list[float]:
    connection = Connection(url)
    latencies = []
    try:
        for _ in range(count):
            status, seconds = await connection.request("GET", "/v1/models", {"X-Gateway-Key": key})
            assert status == 200
            latencies.append(seconds)
    finally:
        await connection.close()
    return latencies


def alternating_with_a_flood(url: str, key: str) -> tuple[dict[int, int], list[float], list[float]]:
    """Valid callers' latencies with the flood paused and running, in alternation, so that
    other load on a shared machine weighs on both samples alike."""
    flood = subprocess.Popen(
        [sys.executable, "-m", "tests.loadclient", url, str(FLOOD), str(FLOODERS)],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    quiet, flooded = [], []
    try:
        while flood.poll() is None and len(flooded) < SAMPLES:
            flood.send_signal(signal.SIGSTOP)
            quiet += asyncio.run(valid_latencies(url, key, SAMPLES_PER_TURN))
            flood.send_signal(signal.SIGCONT)
            flooded += asyncio.run(valid_latencies(url, key, SAMPLES_PER_TURN))
    finally:
        if flood.poll() is None:
            flood.send_signal(signal.SIGCONT)
    output, _ = flood.communicate(timeout=60)
    return {int(status): count for status, count in json.loads(output).items()}, quiet, flooded


def test_a_flood_of_made_up_keys_gets_401s_and_valid_callers_keep_their_latency(gateway, upstream):
    _, key = trainee("valerie")
    process = GatewayProcess(OPENCLAW_URL=upstream.url, GATEWAY_IDENTITY="key", RATE_LIMIT_PER_MINUTE="100000")
    try:
        asyncio.run(valid_latencies(process.url, key, WARM_UP))  # connections, key cache
        statuses, quiet, flooded = alternating_with_a_flood(process.url, key)
    finally:
        process.stop()

    assert statuses == {401: FLOOD}
    valid_requests = WARM_UP + len(quiet) + len(flooded)
    assert len(upstream.seen) == valid_requests, "a made-up key reached the upstream"
    assert RequestLog.objects.filter(status=401, user_id="").count() == FLOOD
    assert RequestLog.objects.exclude(status=401).count() == valid_requests
    assert (Account.objects.count(), ApiKey.objects.count()) == (1, 1)
    assert list(MonthlyUsage.objects.values_list("user_id", "requests")) == [("valerie", valid_requests)]
    ratio = statistics.median(flooded) / statistics.median(quiet)
    quiet_ms, flooded_ms = statistics.median(quiet) * 1000, statistics.median(flooded) * 1000
    print(
        f"valid caller: median {quiet_ms:.2f} ms without, {flooded_ms:.2f} ms during a flood of {FLOOD}"
        f" on {FLOODERS} connection(s) (x{ratio:.2f}, {len(flooded)} samples each)"
    )
    assert len(flooded) >= 50, "the flood ended before the valid caller could be measured"
    assert ratio < 2.0
