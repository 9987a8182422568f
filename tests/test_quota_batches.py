"""A worker's concurrent quota counts go to the database together, each still exact: every
caller gets its own answer, a caller who leaves mid-count is given its request back, and
several processes counting many callers at once never lock each other out."""

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
import pytest
from django.db import DatabaseError

from billing import monthly_usage
from billing.models import MonthlyUsage, Plan
from gateway_project.lib import async_sql
from tests.personas import trainee
from tests.servers import GatewayProcess

MONTH = date(2030, 11, 1)
NOW = datetime(2030, 11, 20, 12, 0, tzinfo=UTC)
UNLIMITED = 2**62


def count(user_id: str, *, max_requests=UNLIMITED, max_tokens=UNLIMITED, lease=None, alone_from=UNLIMITED):
    return monthly_usage.count_if_under(
        user_id,
        MONTH,
        max_requests=max_requests,
        max_tokens=max_tokens,
        max_cost=UNLIMITED,
        alone_from=alone_from,
        now=NOW,
        lease=lease,
    )


def run(scenario) -> object:
    async def closing():
        try:
            return await scenario()
        finally:
            await monthly_usage.settle_counts()
            await async_sql.close()

    return asyncio.run(closing())


def test_concurrent_counts_go_in_one_round_trip_and_each_caller_gets_its_own_answer(transactional_db, monkeypatch):
    MonthlyUsage.objects.create(user_id="ana", month=MONTH, requests=9)
    MonthlyUsage.objects.create(user_id="cy", month=MONTH, total_tokens=500)
    sent = []
    fetch_each = async_sql.fetch_each

    async def recorded(sql, rows):
        sent.append([user_id for user_id, *_ in rows])
        return await fetch_each(sql, rows)

    monkeypatch.setattr(async_sql, "fetch_each", recorded)

    async def scenario():
        return await asyncio.gather(
            count("dee", max_requests=1),  # a new month's row
            count("ana", max_requests=10),  # the last request of ana's month
            count("ben"),
            count("ana", max_requests=10),  # one too many
            count("cy", max_tokens=500),  # tokens spent
        )

    admitted = [counted for counted, _ in run(scenario)]

    assert admitted == [True, True, True, False, False]
    # One batch, its rows in key order: every batch locks rows in that order, so none deadlocks.
    assert sent == [["ana", "ana", "ben", "cy", "dee"]]
    requests = dict(MonthlyUsage.objects.values_list("user_id", "requests"))
    assert requests == {"ana": 10, "ben": 1, "cy": 0, "dee": 1}


def test_a_caller_who_leaves_while_its_count_is_out_gets_the_request_and_the_single_call_place_back(
    transactional_db, monkeypatch
):
    MonthlyUsage.objects.create(user_id="eve", month=MONTH, requests=3, cost_pico_usd=10)
    fetch_each = async_sql.fetch_each
    out, answer = asyncio.Event(), asyncio.Event()

    async def held(sql, rows):
        out.set()
        await answer.wait()
        return await fetch_each(sql, rows)

    monkeypatch.setattr(async_sql, "fetch_each", held)

    async def scenario():
        caller = asyncio.create_task(count("eve", lease=NOW + timedelta(minutes=15), alone_from=0))
        await out.wait()
        caller.cancel()  # the client went away
        answer.set()
        with pytest.raises(asyncio.CancelledError):
            await caller

    run(scenario)

    row = MonthlyUsage.objects.get(user_id="eve")
    assert (row.requests, row.single_call_until) == (3, None)


def test_a_batch_held_up_by_a_row_locked_elsewhere_fails_in_bounded_time_and_the_next_one_counts(
    transactional_db, settings, monkeypatch
):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("PostgreSQL's lock_timeout: SQLite waits for its lock by its own timeout (Django's, 5 s)")
    MonthlyUsage.objects.create(user_id="fay", month=MONTH, requests=1)
    monkeypatch.setattr(async_sql, "LOCK_TIMEOUT", "200ms")

    async def scenario():
        locker = await asyncpg.connect(**async_sql._connection_settings())
        try:
            async with locker.transaction():  # an operator's session, left open on fay's row
                await locker.execute("SELECT 1 FROM billing_monthlyusage WHERE user_id = 'fay' FOR UPDATE")
                held = await asyncio.gather(count("fay"), count("gus"), return_exceptions=True)
            return held, await count("fay")
        finally:
            await locker.close()

    held, after = run(scenario)

    # 503 for both callers, and neither counted: the batch was rolled back.
    assert [type(failure) for failure in held] == [DatabaseError, DatabaseError]
    assert after == (True, False)
    assert dict(MonthlyUsage.objects.values_list("user_id", "requests")) == {"fay": 2}


def test_many_callers_at_once_through_two_processes_are_each_counted_exactly(transactional_db, upstream, settings):
    """Each process's batches hold several callers' rows at once, the two processes seeing
    the callers in opposite orders: every call is counted once, none refused."""
    Plan.objects.update_or_create(tier="tier1", defaults={"monthly_requests": 1_000, "monthly_tokens": None})
    keys = [trainee(f"user{number:02}", tier="tier1")[1] for number in range(20)]
    environment = {"OPENCLAW_URL": upstream.url, "GATEWAY_IDENTITY": "key", "RATE_LIMIT_PER_MINUTE": "10000"}
    if settings.REDIS_URL:
        environment["REDIS_URL"] = settings.REDIS_URL
    gateways = [GatewayProcess(**environment) for _ in range(2)]

    async def fire() -> Counter:
        # Each process sees the callers in its own order, the second in reverse.
        calls = [(gateways[0].url, key) for key in keys * 5] + [(gateways[1].url, key) for key in reversed(keys * 5)]
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=len(calls)), timeout=60) as client:
            responses = await asyncio.gather(
                *(client.get(f"{url}/v1/models", headers={"X-Gateway-Key": key}) for url, key in calls)
            )
        return Counter(response.status_code for response in responses)

    try:
        statuses = asyncio.run(fire())
    finally:
        for process in gateways:
            process.stop()

    assert statuses == {200: 200}
    assert dict(MonthlyUsage.objects.values_list("user_id", "requests")) == {f"user{n:02}": 10 for n in range(20)}
