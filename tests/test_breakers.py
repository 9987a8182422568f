"""Circuit breakers (issue 22), in one gateway process: a failing upstream is skipped for a
cool-down, then probed by one call; a route with none left answers 503 at once. Time is the
fake clock's (tests/faulty_upstream.FakeClock): cool-downs pass without sleeping. With
REDIS_URL set the breakers live in Redis, as every process shares them."""

import pytest

from proxy import breakers, metrics
from proxy.routes import Target
from tests.faulty_upstream import answer, at, ok, reset, route, silent
from tests.servers import closed_port_url

CHAT = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
COOLDOWN = 15.0


@pytest.fixture(autouse=True)
def _breakers(settings):
    settings.BREAKER_FAILURES = 3
    settings.BREAKER_COOLDOWN = COOLDOWN


def call(gateway, stream: bool = False):
    with gateway.client() as client:
        return client.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers={"X-User-ID": "ann"})


def upstreams_of(gateway) -> list[str]:
    return [row.upstream for row in gateway.log_rows()]


def test_three_failures_in_a_row_open_the_breaker_and_calls_skip_the_upstream(gateway, faulty, clock, monkeypatch):
    a, b = faulty[0].play(then=answer(500)), faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b)))

    for _ in range(3):
        assert call(gateway).status_code == 200  # b answers each time
    assert len(a.seen) == 3
    for _ in range(5):
        assert call(gateway).status_code == 200

    assert len(a.seen) == 3  # not one attempt more while open
    assert len(b.seen) == 8
    assert upstreams_of(gateway) == ["b"] * 8
    assert [row.attempts for row in gateway.log_rows()] == [2, 2, 2, 1, 1, 1, 1, 1]
    assert metrics.BREAKER_SKIPS.labels("a")._value.get() >= 5


@pytest.mark.parametrize("fault", [reset(), silent()], ids=["reset", "silent"])
def test_resets_and_silence_count_as_failures(gateway, faulty, clock, monkeypatch, fault):
    a, b = faulty[0].play(then=fault), faulty[1]
    route(monkeypatch, Target(at(a, timeout=0.2)), Target(at(b)))

    for _ in range(5):
        assert call(gateway, stream=True).status_code == 200

    assert len(a.seen) <= 6  # three failing calls (a reset is retried once at once), then skipped


def test_an_unreachable_upstream_opens_its_breaker(gateway, faulty, clock, monkeypatch):
    dead = at(faulty[0])
    dead = type(dead)(**{**{f: getattr(dead, f) for f in dead.__slots__}, "base_url": closed_port_url()})
    route(monkeypatch, Target(dead), Target(at(faulty[1])))

    for _ in range(4):
        assert call(gateway).status_code == 200

    assert gateway.server.call(breakers.breaker("a")).state(clock.wall()) == "open"


def test_4xx_answers_never_open_the_breaker(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(then=answer(404, "model_not_found"))
    route(monkeypatch, Target(at(a)), Target(at(faulty[1])))

    statuses = [call(gateway).status_code for _ in range(5)]

    assert statuses == [404] * 5  # relayed as they came, every time
    assert len(a.seen) == 5


def test_a_success_between_failures_starts_the_count_again(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(answer(500), answer(500), ok(), answer(500), answer(500), ok())
    route(monkeypatch, Target(at(a)), Target(at(faulty[1])))

    for _ in range(6):
        call(gateway)

    assert len(a.seen) == 6


def test_after_the_cool_down_one_call_probes_and_a_success_closes_the_breaker(gateway, faulty, clock, monkeypatch):
    a, b = faulty[0].play(answer(500), answer(500), answer(500)), faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b)))
    for _ in range(4):
        call(gateway)
    assert len(a.seen) == 3

    clock.offset += COOLDOWN
    for _ in range(3):
        assert call(gateway).status_code == 200

    assert len(a.seen) == 6  # the probe, then every call again
    assert upstreams_of(gateway)[-3:] == ["a", "a", "a"]
    assert gateway.server.call(breakers.breaker("a")).state(clock.wall()) == "closed"


def test_a_failed_probe_opens_the_breaker_for_another_cool_down(gateway, faulty, clock, monkeypatch):
    a, b = faulty[0].play(then=answer(503)), faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b)))
    for _ in range(3):
        call(gateway)

    clock.offset += COOLDOWN
    call(gateway)  # the probe fails
    assert len(a.seen) == 4
    clock.offset += COOLDOWN - 1
    call(gateway)
    assert len(a.seen) == 4  # still cooling down
    clock.offset += 1
    call(gateway)

    assert len(a.seen) == 5  # one probe per cool-down
    assert upstreams_of(gateway) == ["b"] * 6


def test_a_route_without_a_usable_target_answers_503_at_once(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(then=answer(502))
    route(monkeypatch, Target(at(a)))
    statuses = [call(gateway).status_code for _ in range(3)]
    assert statuses == [502, 502, 502]  # the upstream's own answers
    clock.offset += 4

    response = call(gateway, stream=True)

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_healthy_upstream"
    assert error["type"] == "server_error"
    assert "route '*'" in error["message"]
    assert "(a, circuit breaker open)" in error["message"]
    assert response.headers["retry-after"] == str(int(COOLDOWN - 4))
    assert len(a.seen) == 3
    row = gateway.log_rows()[-1]
    assert (row.status, row.upstream, row.attempts, row.total_tokens) == (503, "", 0, 0)


def test_the_503_from_the_openai_sdk(gateway, sdk, faulty, clock, monkeypatch):
    import openai

    a = faulty[0].play(then=answer(500))
    route(monkeypatch, Target(at(a)))
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(**CHAT)

    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(**CHAT)

    assert raised.value.status_code == 503
    assert raised.value.code == "no_healthy_upstream"
    assert len(a.seen) == 3


def test_breakers_off_with_zero_failures(gateway, faulty, clock, monkeypatch, settings):
    settings.BREAKER_FAILURES = 0
    a = faulty[0].play(then=answer(500))
    route(monkeypatch, Target(at(a)), Target(at(faulty[1])))

    for _ in range(5):
        call(gateway)

    assert len(a.seen) == 5


def test_the_breaker_is_kept_where_every_process_reads_it(gateway, faulty, clock, monkeypatch, settings):
    """With Redis, a process that never saw the failures (its copy forgotten) skips the
    upstream too; without it, each process learns on its own."""
    from gateway_project.lib import process_state

    a = faulty[0].play(then=answer(500))
    route(monkeypatch, Target(at(a)), Target(at(faulty[1])))
    for _ in range(3):
        call(gateway)

    process_state.reset()  # a process that knows nothing of the failures
    call(gateway)

    assert len(a.seen) == (3 if settings.REDIS_URL else 4)


def test_the_process_log_says_when_a_breaker_opens_and_closes(gateway, faulty, clock, monkeypatch, process_log):
    a = faulty[0].play(answer(500), answer(500), answer(500))
    route(monkeypatch, Target(at(a)), Target(at(faulty[1])))
    for _ in range(3):
        call(gateway)
    clock.offset += COOLDOWN
    call(gateway)

    lines = [r.getMessage() for r in process_log.records if r.name == "proxy.breakers"]
    assert lines == [
        "upstream a failed 3 times in a row (last: answered 500): its circuit breaker is open, calls skip it for 15 s",
        "upstream a answered again: its circuit breaker is closed",
    ]


def breakers_run(coroutine):
    """Run `coroutine` on a loop of its own, closing that loop's connections after it."""
    import asyncio

    from gateway_project.lib import async_sql, shared_redis
    from proxy import health

    async def main():
        try:
            return await coroutine
        finally:
            await health.settle()  # breaker changes mirrored to the database
            await shared_redis.close()
            await async_sql.close()

    return asyncio.run(main())


def test_once_the_cool_down_is_over_one_call_of_all_processes_probes(clock, settings, transactional_db):
    """Two processes' breakers (two Breakers) over one Redis, or two calls of one process."""
    from tests.conftest import forget_shared_state

    forget_shared_state()
    first = breakers.Breakers()
    second = breakers.Breakers() if settings.REDIS_URL else first

    async def scenario():
        for _ in range(3):
            await first.failed("a", "reset")
        clock.offset += 1
        closed_or_skipped = [await first.enter("a", lease=5), await second.enter("a", lease=5)]
        clock.offset += COOLDOWN
        entries = [await first.enter("a", lease=5), await second.enter("a", lease=5)]
        waits = [await first.wait("a"), await second.wait("a")]
        await first.succeeded("a", trial=True)
        clock.offset += breakers.SYNC_SECONDS
        return closed_or_skipped, entries, waits, await second.enter("a", lease=5)

    closed_or_skipped, entries, waits, after = breakers_run(scenario())

    assert closed_or_skipped == [None, None]  # open: no attempt
    assert entries == [breakers.PROBING, None]  # one probe, the other call skips
    assert waits[1] == breakers.PROBE_WAIT  # a 503 would say: again in a second
    assert after == breakers.CLOSED


def test_streams_that_break_after_their_start_count_against_the_upstream(gateway, faulty, clock, monkeypatch):
    from tests.faulty_upstream import CUT, chat_stream

    a = faulty[0].play(then=chat_stream("Hel", "lo", end=CUT))
    route(monkeypatch, Target(at(a)), Target(at(faulty[1])))

    broken = [call(gateway, stream=True) for _ in range(3)]
    after = call(gateway, stream=True)

    assert all('"error"' in response.text and "[DONE]" not in response.text for response in broken)
    assert after.status_code == 200 and after.text.endswith("data: [DONE]\n\n")
    assert len(a.seen) == 3  # open: the fourth call went to b at once
    assert upstreams_of(gateway)[-1] == "b"


def test_one_callers_retries_count_once(gateway, faulty, clock, monkeypatch):
    """A request the upstream chokes on, retried twice, must not open the breaker for everyone."""
    a = faulty[0].play(answer(500), answer(500), answer(500))
    route(monkeypatch, Target(at(a, retries=2)))

    choked = call(gateway)
    after = call(gateway)

    assert (choked.status_code, after.status_code) == (500, 200)
    assert len(a.seen) == 4


def test_a_success_during_the_cool_down_closes_nothing(clock, settings, transactional_db):
    """A call admitted before the breaker opened, ending well, or a probe within the cool-down."""
    from tests.conftest import forget_shared_state

    forget_shared_state()
    breaker = breakers.Breakers()

    async def scenario():
        for _ in range(3):
            await breaker.failed("a", "reset")
        await breaker.succeeded("a")
        await breaker.succeeded("a", trial=True)  # a probe's, still within the cool-down
        cooling = (await breaker.breaker("a")).state(clock.wall())
        clock.offset += COOLDOWN
        await breaker.succeeded("a")  # not the trial's
        due = (await breaker.breaker("a")).state(clock.wall())
        await breaker.succeeded("a", trial=True)
        return cooling, due, (await breaker.breaker("a")).state(clock.wall())

    assert breakers_run(scenario()) == ("open", "probing", "closed")


def test_calls_leave_the_trial_to_the_background_probe_that_probes_the_upstream(gateway, faulty, clock, settings):
    from proxy import health, probes
    from proxy.models import Route, RouteTarget
    from proxy.models import Upstream as UpstreamRow

    settings.UPSTREAM_PROBE_SECONDS = 15
    a, b = faulty[0].play(then=answer(503)), faulty[1]
    primary = UpstreamRow.objects.create(name="a", base_url=a.url, auth="none", retries=0)
    fallback = UpstreamRow.objects.create(name="b", base_url=b.url, auth="none", retries=0)
    route_row = Route.objects.create(model="*")
    RouteTarget.objects.create(route=route_row, upstream=primary, priority=1)
    RouteTarget.objects.create(route=route_row, upstream=fallback, priority=2)
    for _ in range(3):
        call(gateway)
    clock.offset += COOLDOWN
    a.play()  # it is back

    before_probe = [call(gateway).status_code for _ in range(3)]
    gateway.server.call(probes.probe_all())
    gateway.server.call(health.settle())
    clock.offset += breakers.SYNC_SECONDS

    assert before_probe == [200] * 3
    assert [seen.path for seen in a.seen] == ["/v1/models"]  # no caller waited on it
    assert call(gateway).status_code == 200
    assert upstreams_of(gateway)[-4:] == ["b", "b", "b", "a"]
