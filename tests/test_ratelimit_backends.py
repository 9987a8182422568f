"""The contract every rate-limit backend keeps, run against each of them.

Time is passed in, so the rolling window is walked through exactly.
"""

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis
from django.conf import settings

from gateway_project.lib import process_state
from gateway_project.lib.redis_connections import Connections
from proxy import ratelimit
from proxy.ratelimit import InProcessLimiter, RedisLimiter

T0 = 1_800_000_000.0


def in_process() -> InProcessLimiter:
    return InProcessLimiter()


def on_redis() -> RedisLimiter:
    if not settings.REDIS_URL:
        pytest.skip("Redis backend: runs in the services half of the suite (REDIS_URL set)")
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter("gateway:rate:contract-*"))
    if keys:
        client.delete(*keys)
    client.close()
    return RedisLimiter(settings.REDIS_URL)


@pytest.fixture(params=[in_process, on_redis], ids=["in-process", "redis"])
def run_with_limiter(request) -> Callable:
    """Runs `scenario(limiter)` on a fresh event loop and closes the limiter after."""

    def run(scenario: Callable[..., Awaitable]):
        limiter = request.param()

        async def main():
            try:
                return await scenario(limiter)
            finally:
                await limiter.aclose()

        return asyncio.run(main())

    return run


def test_it_admits_n_then_refuses(run_with_limiter):
    async def scenario(limiter):
        return [await limiter.hit("contract-a", 3, T0 + i / 10) for i in range(4)]

    decisions = run_with_limiter(scenario)

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.reset for d in decisions} == {T0 + 60}


def test_a_slot_comes_back_exactly_sixty_seconds_after_it_was_taken(run_with_limiter):
    async def scenario(limiter):
        for second in range(3):
            await limiter.hit("contract-b", 3, T0 + second)
        at_59 = await limiter.hit("contract-b", 3, T0 + 59.999)
        at_60 = await limiter.hit("contract-b", 3, T0 + 60)
        after = await limiter.hit("contract-b", 3, T0 + 60)
        return at_59, at_60, after

    at_59, at_60, after = run_with_limiter(scenario)

    assert not at_59.allowed
    assert at_59.retry_after(T0 + 59.999) == 1
    assert at_60.allowed and at_60.remaining == 0
    assert not after.allowed


def test_the_window_rolls_with_each_admission(run_with_limiter):
    async def scenario(limiter):
        await limiter.hit("contract-c", 2, T0)
        await limiter.hit("contract-c", 2, T0 + 30)
        refused = await limiter.hit("contract-c", 2, T0 + 45)
        first_freed = await limiter.hit("contract-c", 2, T0 + 60)
        refused_again = await limiter.hit("contract-c", 2, T0 + 75)
        return refused, first_freed, refused_again

    refused, first_freed, refused_again = run_with_limiter(scenario)

    assert not refused.allowed
    assert refused.retry_after(T0 + 45) == 15
    assert first_freed.allowed
    assert not refused_again.allowed
    assert refused_again.reset == T0 + 90


def test_refused_requests_do_not_use_up_the_window(run_with_limiter):
    async def scenario(limiter):
        await limiter.hit("contract-d", 1, T0)
        for second in range(1, 60):
            await limiter.hit("contract-d", 1, T0 + second)
        return await limiter.hit("contract-d", 1, T0 + 60)

    assert run_with_limiter(scenario).allowed


def test_users_do_not_share_a_window(run_with_limiter):
    async def scenario(limiter):
        await limiter.hit("contract-e", 1, T0)
        return await limiter.hit("contract-e", 1, T0), await limiter.hit("contract-f", 1, T0)

    same, other = run_with_limiter(scenario)

    assert not same.allowed
    assert other.allowed


def test_two_hundred_concurrent_hits_admit_exactly_n(run_with_limiter):
    async def scenario(limiter):
        return await asyncio.gather(*(limiter.hit("contract-g", 50, T0) for _ in range(200)))

    decisions = run_with_limiter(scenario)

    assert sum(d.allowed for d in decisions) == 50


def test_a_lower_limit_applies_at_once(run_with_limiter):
    async def scenario(limiter):
        for _ in range(5):
            await limiter.hit("contract-h", 10, T0)
        return await limiter.hit("contract-h", 3, T0 + 1)

    decision = run_with_limiter(scenario)

    assert not decision.allowed
    assert decision.remaining == 0


def test_redis_keys_expire_by_themselves():
    limiter = on_redis()

    async def scenario():
        try:
            await limiter.hit("contract-ttl", 5, T0)
        finally:
            await limiter.aclose()

    asyncio.run(scenario())
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert 0 < client.pttl("gateway:rate:contract-ttl") <= 60_000
    finally:
        client.close()


def test_the_in_process_backend_forgets_idle_users():
    limiter = InProcessLimiter()

    async def scenario():
        for user in range(100):
            await limiter.hit(f"user-{user}", 5, T0)
        await limiter.hit("latecomer", 5, T0 + 61)

    asyncio.run(scenario())

    assert list(limiter._admitted) == ["latecomer"]


def test_a_check_is_one_round_trip_to_redis(private_redis):
    limiter = RedisLimiter(private_redis.url)
    stats = redis.Redis.from_url(private_redis.url)

    async def hits(count: int):
        for second in range(count):
            await limiter.hit("contract-trips", 100, T0 + second)

    async def scenario():
        try:
            await hits(1)  # the first call also loads the script
            before = stats.info("all")
            await hits(10)
            after = stats.info("all")
        finally:
            await limiter.aclose()
            stats.close()
        return (
            after["cmdstat_evalsha"]["calls"] - before["cmdstat_evalsha"]["calls"],
            after["total_commands_processed"] - before["total_commands_processed"],
        )

    evalsha_calls, commands = asyncio.run(scenario())

    assert evalsha_calls == 10
    # Each EVALSHA runs 6 commands inside the script; the 1 is the second INFO. Nothing
    # else reached Redis: one round trip per check.
    assert commands == 10 * (1 + 6) + 1


def test_a_check_cancelled_mid_flight_leaves_no_reply_for_the_next_one(private_redis):
    limiter = RedisLimiter(private_redis.url)

    async def scenario():
        try:
            # Every connection open, so the next checks are sent at once and wait for their reply...
            await asyncio.gather(*(limiter.hit(f"contract-warm-{n}", 5, T0) for n in range(100)))
            checks = [asyncio.ensure_future(limiter.hit("contract-cancel", 1000, T0 + i / 1000)) for i in range(100)]
            await asyncio.sleep(0)
            # ...where a third of them are cancelled.
            for check in checks[::3]:
                check.cancel()
            await asyncio.gather(*checks, return_exceptions=True)
            return [await limiter.hit(f"contract-after-{n}", 5, T0) for n in range(40)]
        finally:
            await limiter.aclose()

    after = asyncio.run(scenario())

    # Each later check got its own reply: a fresh user's first request, 4 slots left.
    assert [(d.allowed, d.remaining, d.reset) for d in after] == [(True, 4, T0 + 60)] * 40


def test_a_redis_that_forgot_the_script_is_sent_it_again(private_redis):
    limiter = RedisLimiter(private_redis.url)
    admin = redis.Redis.from_url(private_redis.url)

    async def scenario():
        try:
            first = await limiter.hit("contract-flush", 2, T0)
            admin.script_flush()  # as after a Redis restart
            second = await limiter.hit("contract-flush", 2, T0 + 1)
            third = await limiter.hit("contract-flush", 2, T0 + 2)
        finally:
            await limiter.aclose()
            admin.close()
        return first, second, third

    first, second, third = asyncio.run(scenario())

    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert third.remaining == 0


def test_concurrent_checks_go_to_redis_together_each_with_its_own_answer(private_redis):
    """One write and one connection for a worker's checks made at the same time: several
    callers, one of them twice over a limit of one."""
    limiter = RedisLimiter(private_redis.url)
    stats = redis.Redis.from_url(private_redis.url)

    async def scenario():
        try:
            before = stats.info("clients")["connected_clients"]
            users = ["contract-p", "contract-q", "contract-p", "contract-r", "contract-q"]
            decisions = await asyncio.gather(*(limiter.hit(user, 1, T0) for user in users))
            return stats.info("clients")["connected_clients"] - before, decisions
        finally:
            await limiter.aclose()
            stats.close()

    opened, decisions = asyncio.run(scenario())

    assert opened == 1
    assert [d.allowed for d in decisions] == [True, True, False, True, False]


def test_a_check_redis_refuses_fails_alone_and_the_others_in_its_round_trip_are_answered(private_redis):
    limiter = RedisLimiter(private_redis.url)
    admin = redis.Redis.from_url(private_redis.url)
    admin.set("gateway:rate:contract-wrong-type", "not a sorted set")
    admin.script_flush()  # and Redis has forgotten the script: sent again for all of them

    async def scenario():
        try:
            users = ["contract-s", "contract-wrong-type", "contract-t"]
            return await asyncio.gather(*(limiter.hit(user, 5, T0) for user in users), return_exceptions=True)
        finally:
            await limiter.aclose()
            admin.close()

    first, refused, last = asyncio.run(scenario())

    assert (first.allowed, first.remaining, last.allowed, last.remaining) == (True, 4, True, 4)
    assert isinstance(refused, redis.exceptions.ResponseError)
    assert "WRONGTYPE" in str(refused)


def test_a_check_sent_again_after_its_reply_was_lost_is_answered_as_the_first_time(private_redis):
    """A broken connection's round trip is sent once more: a check Redis already ran (its
    reply lost) is neither counted twice nor refused for the slot it took itself."""
    connections = Connections(private_redis.url, 1, 2.0)
    check = (["gateway:rate:contract-resent"], [int(T0 * 1000), b"60000", 1, "one-member", b"1"])

    async def scenario():
        try:
            first = await ratelimit._HIT.each(connections, [check])
            again = await ratelimit._HIT.each(connections, [check])
            other = await ratelimit._HIT.each(connections, [(check[0], [*check[1][:3], "another", b"1"])])
        finally:
            await connections.aclose()
        return first, again, other

    [first], [again], [other] = asyncio.run(scenario())

    assert first == again == [1, 1, int(T0 * 1000)]  # admitted, one entry in the window
    assert other[0] == 0  # a new check at the limit is refused


def test_a_key_redis_refuses_lets_its_request_through_and_not_the_others_unlimited(private_redis, settings):
    settings.REDIS_URL = private_redis.url
    admin = redis.Redis.from_url(private_redis.url)
    admin.set("gateway:rate:contract-broken", "not a sorted set")
    admin.close()

    async def scenario():
        try:
            refused = await ratelimit.check("contract-broken", 5, T0)
            after = await ratelimit.check("contract-fine", 5, T0)
        finally:
            await ratelimit.close()
        return refused, after

    try:
        refused, after = asyncio.run(scenario())
    finally:
        process_state.reset()

    assert refused is None  # passes unlimited
    assert after is not None and after.allowed and after.remaining == 4  # Redis still limits the others
