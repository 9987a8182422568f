"""Rollups (per user and hour, per user) always equal the aggregates of the access log they
come from: after concurrent load through several processes, after retention and after a
rebuild. Pages read them instead of the log."""

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import time_machine
from django.core.management import call_command

from billing.models import HourlyUsage, UserTotal
from proxy.models import RequestLog
from tests.personas import price
from tests.servers import GatewayProcess

COUNTERS = (
    "requests",
    "errors",
    "server_errors",
    "rate_limited",
    "over_quota",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "total_tokens",
    "unknown_usage_requests",
    "cost_pico_usd",
    "unknown_cost_requests",
    "latency_ms_sum",
)


def counted(row: RequestLog) -> list[int]:
    """One row's part in each counter, written out here apart from the code under test."""
    return [
        1,
        row.status >= 400,
        row.status >= 500,
        row.status == 429,
        row.status == 402,
        row.input_tokens or 0,
        row.cached_input_tokens or 0,
        row.output_tokens or 0,
        row.total_tokens or 0,
        row.total_tokens is None,
        row.cost_pico_usd or 0,
        row.cost_pico_usd is None,
        row.latency_ms,
    ]


def log_by_hour(rows=None) -> dict[tuple[str, datetime], list[int]]:
    summed: dict = defaultdict(lambda: [0] * len(COUNTERS))
    for row in rows if rows is not None else RequestLog.objects.all():
        hour = row.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        summed[row.user_id, hour] = [a + int(b) for a, b in zip(summed[row.user_id, hour], counted(row), strict=True)]
    return dict(summed)


def log_by_user() -> dict[str, list]:
    summed: dict = {}
    for row in RequestLog.objects.all():
        counts, first, last = summed.get(row.user_id, ([0] * len(COUNTERS), row.created_at, row.created_at))
        summed[row.user_id] = (
            [a + int(b) for a, b in zip(counts, counted(row), strict=True)],
            min(first, row.created_at),
            max(last, row.created_at),
        )
    return {user: [*counts, first, last] for user, (counts, first, last) in summed.items()}


def hours_rolled_up() -> dict[tuple[str, datetime], list[int]]:
    return {(h.user_id, h.hour): [getattr(h, c) for c in COUNTERS] for h in HourlyUsage.objects.all()}


def users_rolled_up() -> dict[str, list]:
    return {t.user_id: [*(getattr(t, c) for c in COUNTERS), t.first_seen, t.last_seen] for t in UserTotal.objects.all()}


async def mixed_load(urls: list[str], calls: int) -> dict[int, int]:
    """Chat (priced and not), streams, calls without usage, upstream failures and reads, from
    users of which some run into their rate limit or their month, all at once."""
    kinds = [
        ("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "a stream"}]},
        ),
        ("POST", "/v1/echo", {"model": "gpt-4o-mini"}),  # answered without usage: unknown
        ("POST", "/v1/status/502", {"model": "gpt-4o-mini"}),
        ("GET", "/v1/models", None),
    ]
    statuses: dict[int, int] = defaultdict(int)
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def call(number: int) -> None:
            # Every other call is the heavy user's; each user's calls go to every process.
            user = "heavy" if number % 2 else f"user-{number % 7}"
            method, path, body = kinds[number // 2 % len(kinds)]
            url = urls[number // (2 * len(kinds)) % len(urls)]
            response = await client.request(method, url + path, json=body, headers={"X-User-ID": user})
            statuses[response.status_code] += 1

        await asyncio.gather(*(call(n) for n in range(calls)))
    return dict(statuses)


@pytest.fixture
def priced():
    price("gpt-4o-mini", "0.15", "0.075", "0.60")


def test_rollups_equal_the_log_after_concurrent_load_through_three_processes(gateway, upstream, priced, settings):
    settings.RATE_LIMIT_PER_MINUTE = 40
    settings.FREE_MONTHLY_REQUESTS = 30
    environment = {"OPENCLAW_URL": upstream.url, "RATE_LIMIT_PER_MINUTE": "40", "FREE_MONTHLY_REQUESTS": "30"}
    if settings.REDIS_URL:
        environment["REDIS_URL"] = settings.REDIS_URL
    processes = [GatewayProcess(**environment) for _ in range(2)]
    try:
        statuses = asyncio.run(mixed_load([gateway.url, *(p.url for p in processes)], 420))
    finally:
        for process in processes:
            process.stop()  # writes what it queued
    gateway.settle()

    assert {200, 429, 402, 502} <= set(statuses), statuses
    assert RequestLog.objects.count() == 420
    assert RequestLog.objects.filter(total_tokens__isnull=True).exists()
    assert RequestLog.objects.filter(cost_pico_usd__gt=0).exists()
    assert hours_rolled_up() == log_by_hour()
    assert users_rolled_up() == log_by_user()


def hours_ago(hours: int) -> datetime:
    return datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=hours)


def prune(older_than: str) -> None:
    """prune_requests run at five past the half hour of the last calls."""
    with time_machine.travel(hours_ago(0) + timedelta(minutes=5), tick=False):
        call_command("prune_requests", "--older-than", older_than)


def calls_over_four_hours(gateway) -> None:
    """Calls at four different hours, of two users, through the served gateway."""
    with gateway.client() as client:
        for hours in (3, 2, 1, 0):
            with time_machine.travel(hours_ago(hours), tick=True):
                for user in ("ana", "ben") if hours % 2 else ("ana",):
                    client.post(
                        "/v1/chat/completions",
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{hours}"}]},
                        headers={"X-User-ID": user},
                    )
                    client.get("/v1/models", headers={"X-User-ID": user})
                gateway.settle()


def test_summaries_outlive_the_rows_retention_deletes(gateway, upstream, priced):
    calls_over_four_hours(gateway)
    totals_before, hours_before = users_rolled_up(), hours_rolled_up()
    assert len(hours_before) == 6

    prune("90m")  # rows of the hours before the last two

    assert {row.created_at.hour for row in RequestLog.objects.all()} == {hours_ago(1).hour, hours_ago(0).hour}
    assert users_rolled_up() == totals_before
    assert hours_rolled_up() == hours_before
    still_logged = {key: counts for key, counts in hours_before.items() if key[1] >= hours_ago(1).replace(minute=0)}
    assert log_by_hour() == still_logged


def test_prune_deletes_whole_hours_only(gateway, upstream, priced):
    calls_over_four_hours(gateway)

    prune("150m")  # the cut-off falls within an hour: all of it stays

    assert {row.created_at.hour for row in RequestLog.objects.all()} == {h.hour for h in map(hours_ago, (2, 1, 0))}


def test_a_rebuild_recomputes_what_the_log_holds_and_keeps_pruned_hours(gateway, upstream, priced):
    calls_over_four_hours(gateway)
    prune("90m")
    totals, hours = users_rolled_up(), hours_rolled_up()
    # Rollups that drifted (written by hand, lost, doubled) are made right again.
    HourlyUsage.objects.filter(hour__gte=hours_ago(1).replace(minute=0)).update(requests=999, cost_pico_usd=1)
    HourlyUsage.objects.filter(user_id="ben", hour__gte=hours_ago(1).replace(minute=0)).delete()
    UserTotal.objects.filter(user_id="ana").delete()

    call_command("rebuild_rollups")

    assert hours_rolled_up() == hours
    # Ana's first call was pruned and her totals lost with it: it is known to the hour.
    totals["ana"][-2] = hours_ago(3).replace(minute=0)
    assert users_rolled_up() == totals
    call_command("rebuild_rollups")
    assert hours_rolled_up() == hours and users_rolled_up() == totals


def test_a_rebuild_of_an_unpruned_log_gives_what_the_writer_wrote(gateway, upstream, priced):
    calls_over_four_hours(gateway)
    written = hours_rolled_up(), users_rolled_up()
    HourlyUsage.objects.all().delete()
    UserTotal.objects.all().delete()

    call_command("rebuild_rollups")

    assert (hours_rolled_up(), users_rolled_up()) == written
