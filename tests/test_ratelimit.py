"""Rate limits as callers meet them: exact, rolling, per user, and fail-open without Redis."""

import asyncio
import logging
import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import openai
import pytest
import time_machine
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway_project.lib import process_state
from proxy import ratelimit
from proxy.models import RequestLog
from tests.servers import GatewayProcess

T0 = datetime(2030, 3, 4, 9, 0, 0, tzinfo=UTC)
UNIX_T0 = int(T0.timestamp())


def get_models(client: httpx.Client, user: str) -> httpx.Response:
    return client.get("/v1/models", headers={"X-User-ID": user})


def limit_headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["x-ratelimit-limit"]), int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])


def test_the_window_rolls_under_controlled_time(gateway, upstream, settings):
    settings.RATE_LIMIT_PER_MINUTE = 3
    with time_machine.travel(T0, tick=False) as clock, gateway.client() as client:
        first = get_models(client, "rita")
        clock.shift(10)
        second, third = get_models(client, "rita"), get_models(client, "rita")
        clock.shift(49)  # t = 59 s
        refused = get_models(client, "rita")
        clock.shift(1)  # t = 60 s: the first request leaves the window
        back = get_models(client, "rita")
        refused_again = get_models(client, "rita")

    assert [r.status_code for r in (first, second, third, refused, back, refused_again)] == [
        200,
        200,
        200,
        429,
        200,
        429,
    ]
    assert limit_headers(first) == (3, 2, UNIX_T0 + 60)
    assert limit_headers(second) == (3, 1, UNIX_T0 + 60)
    assert limit_headers(third) == (3, 0, UNIX_T0 + 60)
    assert limit_headers(refused) == (3, 0, UNIX_T0 + 60)
    assert refused.headers["retry-after"] == "1"
    assert limit_headers(back) == (3, 0, UNIX_T0 + 70)
    assert refused_again.headers["retry-after"] == "10"


def test_a_refusal_is_openai_shaped_logged_and_never_forwarded(gateway, upstream, settings):
    settings.RATE_LIMIT_PER_MINUTE = 2
    with gateway.client() as client:
        responses = [get_models(client, "sam") for _ in range(3)]

    assert responses[2].status_code == 429
    assert responses[2].json() == {
        "error": {
            "message": "Rate limit exceeded. 2 requests/minute.",
            "type": "requests",
            "code": "rate_limit_exceeded",
            "param": None,
        }
    }
    assert len(upstream.seen) == 2
    assert [row.status for row in gateway.log_rows()] == [200, 200, 429]


def test_users_never_affect_each_other(gateway, upstream, settings):
    settings.RATE_LIMIT_PER_MINUTE = 2
    with gateway.client() as client:
        for _ in range(3):
            get_models(client, "uma")
        other = get_models(client, "victor")

    assert other.status_code == 200
    assert limit_headers(other)[:2] == (2, 1)


def test_the_sdk_raises_rate_limit_error_with_the_message(gateway, upstream, settings):
    settings.RATE_LIMIT_PER_MINUTE = 2
    sdk = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key="sk-x", default_headers={"X-User-ID": "wendy"}, max_retries=0
    )
    sdk.models.list()
    sdk.models.list()

    with pytest.raises(openai.RateLimitError) as raised:
        sdk.models.list()

    assert raised.value.message.endswith(" - Rate limit exceeded. 2 requests/minute.")
    assert raised.value.code == "rate_limit_exceeded"


async def fire_at_once(urls: list[str], user: str) -> Counter:
    """One request per URL, all in flight together (not a loop of calls)."""
    limits = httpx.Limits(max_connections=len(urls))
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        responses = await asyncio.gather(*(client.get(f"{url}/v1/models", headers={"X-User-ID": user}) for url in urls))
    return Counter(r.status_code for r in responses)


def test_two_hundred_at_once_through_one_worker_admit_exactly_n(gateway, upstream, settings):
    settings.REDIS_URL = None  # the in-process backend, as the embedded default runs
    settings.RATE_LIMIT_PER_MINUTE = 50

    statuses = asyncio.run(fire_at_once([gateway.url] * 200, "xena"))

    assert statuses == {200: 50, 429: 150}
    assert len(upstream.seen) == 50
    assert len(gateway.log_rows()) == 200


def test_two_hundred_at_once_through_two_processes_sharing_redis_admit_exactly_n(gateway, upstream, settings):
    if not settings.REDIS_URL:
        pytest.skip("several processes share limits through Redis: runs in the services half (REDIS_URL set)")
    environment = {"REDIS_URL": settings.REDIS_URL, "OPENCLAW_URL": upstream.url, "RATE_LIMIT_PER_MINUTE": "50"}
    gateways = [GatewayProcess(workers=2, **environment) for _ in range(2)]
    try:
        statuses = asyncio.run(fire_at_once([g.url for g in gateways] * 100, "yusuf"))
    finally:
        for process in gateways:
            process.stop()

    assert statuses == {200: 50, 429: 150}
    assert len(upstream.seen) == 50
    assert Counter(RequestLog.objects.values_list("status", flat=True)) == {200: 50, 429: 150}


def test_redis_stopping_mid_run_fails_open_and_limits_return_with_it(
    gateway, upstream, settings, private_redis, monkeypatch, caplog
):
    settings.REDIS_URL = private_redis.url
    settings.RATE_LIMIT_PER_MINUTE = 2
    monkeypatch.setattr(ratelimit, "RETRY_INTERVAL", 0.0)
    caplog.set_level(logging.WARNING, logger="proxy.ratelimit")
    with gateway.client() as client:
        before = [get_models(client, "zoe").status_code for _ in range(3)]

        private_redis.stop()
        while_down = [get_models(client, "zoe") for _ in range(5)]
        readiness = client.get("/health/ready")

        private_redis.start()
        after = [get_models(client, "zoe").status_code for _ in range(3)]

    assert before == [200, 200, 429]
    assert [r.status_code for r in while_down] == [200] * 5
    assert all("x-ratelimit-limit" not in r.headers for r in while_down)
    assert readiness.status_code == 503
    assert readiness.json()["down"] == ["cache"]
    assert after == [200, 200, 429]
    # The limiter's own line: table versions (read by prices and routing) report the same outage too.
    unreachable = [r for r in caplog.records if r.name == "proxy.ratelimit" and "Redis is unreachable" in r.message]
    assert len(unreachable) == 1, "the outage is reported once, not per request"
    assert any("limits apply again" in r.message for r in caplog.records)


async def steady_load(url: str, users: list[str], rounds: int, started: threading.Event | None = None) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        statuses = []
        for _ in range(rounds):
            responses = await asyncio.gather(*(client.get("/v1/models", headers={"X-User-ID": u}) for u in users))
            statuses += [r.status_code for r in responses]
            if started is not None:
                started.set()
    return statuses


def test_redis_restarting_under_load_never_gives_a_500_and_limits_resume(
    gateway, upstream, settings, private_redis, monkeypatch
):
    settings.REDIS_URL = private_redis.url
    settings.RATE_LIMIT_PER_MINUTE = 5
    monkeypatch.setattr(ratelimit, "RETRY_INTERVAL", 0.0)
    loaded, fresh = [f"load-{n}" for n in range(20)], [f"fresh-{n}" for n in range(20)]
    started = threading.Event()

    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(asyncio.run, steady_load(gateway.url, loaded, 15, started))
        assert started.wait(10)
        private_redis.stop()  # with requests in flight
        private_redis.start()
        during = load.result(60)
    after = asyncio.run(steady_load(gateway.url, fresh, 8))

    assert set(during) <= {200, 429}, "a request failed while Redis restarted"
    assert Counter(during)[200] >= 5 * len(loaded)
    # Limits apply again: each user gets exactly 5 of 8 within the minute.
    assert Counter(after) == {200: 100, 429: 60}
    assert len(gateway.log_rows()) == len(during) + len(after)


def test_a_redis_that_never_answers_is_given_up_on_and_the_request_passes(settings, monkeypatch, caplog):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    monkeypatch.setattr(ratelimit, "REDIS_TIMEOUT", 0.05)
    caplog.set_level(logging.ERROR, logger="proxy.ratelimit")

    async def scenario():
        try:
            return await ratelimit.check("hung-user", 5, float(UNIX_T0))
        finally:
            await ratelimit.close()

    try:
        decision = asyncio.run(scenario())
    finally:
        silent.close()
        process_state.reset()

    assert decision is None
    assert "Redis is unreachable (TimeoutError" in caplog.text


def test_checks_queued_behind_a_hung_redis_fail_open_within_one_timeout(settings, monkeypatch):
    """A check Redis never answers: a check queued behind it (in the next round trip) waits
    no longer than that one round trip's timeout, then passes (not a timeout of its own)."""
    silent = socket.create_server(("127.0.0.1", 0))
    settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    monkeypatch.setattr(ratelimit, "REDIS_TIMEOUT", 0.2)
    monkeypatch.setattr(ratelimit, "REDIS_CONNECTIONS", 1)

    async def scenario():
        try:
            limiter = ratelimit.backend()
            first = asyncio.create_task(limiter.hit("hung-1", 5, float(UNIX_T0)))
            await asyncio.sleep(0)  # the first check is out, on the only connection
            queued = asyncio.create_task(limiter.hit("hung-2", 5, float(UNIX_T0)))
            return await asyncio.gather(first, queued, return_exceptions=True)
        finally:
            await ratelimit.close()

    try:
        outcomes = asyncio.run(scenario())
    finally:
        silent.close()
        process_state.reset()

    first, queued = outcomes
    assert isinstance(first, TimeoutError)  # its round trip timed out
    # The queued one was not sent to the Redis that had just failed: it passes at once.
    assert isinstance(queued, RedisConnectionError) and "Redis failed a moment ago" in str(queued)
