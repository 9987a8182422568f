"""Circuit breakers shared by two gateway processes (issue 22): a primary down for 60 s, a
call every 4 s alternating between the processes. Every call is answered by the fallback
while the primary is down, the primary sees at most one attempt per cool-down, and serves
again within 30 s of recovering. Time is a clock the test moves for both processes
(tests/shared_clock.py): no call waits for a real cool-down."""

import itertools

import httpx
import pytest

from proxy.models import RequestLog, Route, RouteTarget, Upstream
from tests.faulty_upstream import ok, reset
from tests.servers import GatewayProcess
from tests.shared_clock import FileClock

COOLDOWN = 15
CHAT = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def routed(transactional_db, faulty):
    a, b = faulty[0], faulty[1]
    primary = Upstream.objects.create(name="primary", base_url=a.url, auth="none", retries=0)
    fallback = Upstream.objects.create(name="fallback", base_url=b.url, auth="none", retries=0)
    route = Route.objects.create(model="*")
    RouteTarget.objects.create(route=route, upstream=primary, priority=1)
    RouteTarget.objects.create(route=route, upstream=fallback, priority=2)
    return a, b


@pytest.fixture
def processes(routed, private_redis, tmp_path):
    clock = FileClock(tmp_path / "clock")
    clock.move_to(0)
    environment = {
        "REDIS_URL": private_redis.url,
        "TEST_CLOCK_FILE": str(clock.path),
        "BREAKER_FAILURES": "3",
        "BREAKER_COOLDOWN": str(COOLDOWN),
        "UPSTREAM_PROBE_SECONDS": "0",
    }
    gateways = [GatewayProcess(config="tests/gunicorn_clocked.py", **environment) for _ in range(2)]
    yield gateways, clock
    for gateway in gateways:
        gateway.stop()


def call(gateway: GatewayProcess, number: int) -> tuple[int, str]:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"X-User-ID": f"trainee-{number % 3}"}, timeout=10
    )
    return response.status_code, response.headers.get("x-request-id", "")


def outage(server, down: bool) -> None:
    server.script, server.then = [], reset() if down else ok()


def test_a_minute_long_outage_of_the_primary_with_two_processes(processes, routed):
    (first, second), clock = processes
    primary, _ = routed
    statuses, attempts_on_primary = [], []
    for number in range(30):  # a call every 4 s for two minutes
        now = number * 4
        clock.move_to(now)
        outage(primary, down=20 <= now < 80)
        before = len(primary.seen)
        statuses.append(call(first if number % 2 == 0 else second, number)[0])
        attempts_on_primary.append((now, len(primary.seen) - before))

    assert statuses == [200] * 30
    for gateway in (first, second):
        gateway.stop()  # every row written
    rows = list(RequestLog.objects.order_by("created_at", "id").values_list("status", "upstream"))
    assert len(rows) == 30
    served_by = [upstream for _, upstream in rows]
    assert served_by[:5] == ["primary"] * 5
    assert served_by[5:20] == ["fallback"] * 15  # every call of the outage answered
    # Opening takes three failing calls (each tries a reset again at once); from then on,
    # one attempt per cool-down at most.
    opened_at = next(now for now, count in attempts_on_primary if now >= 20 and count == 0)
    assert opened_at == 32
    probes = [now for now, count in attempts_on_primary if opened_at <= now < 80 and count]
    assert all(count <= 1 for now, count in attempts_on_primary if now >= opened_at)
    assert all(later - earlier >= COOLDOWN for earlier, later in itertools.pairwise(probes))
    back = next(number * 4 for number, upstream in enumerate(served_by) if number * 4 >= 80 and upstream == "primary")
    assert back - 80 <= 30
    assert served_by[back // 4 :] == ["primary"] * (30 - back // 4)


def test_redis_cut_while_a_breaker_is_open_falls_back_to_each_process(processes, routed, private_redis):
    (first, second), clock = processes
    primary, _ = routed
    outage(primary, down=True)
    for number in range(4):  # three failing calls open the breaker; the fourth sees it open
        clock.move_to(number)
        call(first if number % 2 == 0 else second, number)
    before = len(primary.seen)
    assert before == 6

    private_redis.stop()
    statuses = []
    for number in range(3, 9):
        clock.move_to(number)
        statuses.append(call(first if number % 2 == 0 else second, number)[0])

    assert statuses == [200] * 6  # no 500: each process keeps the breaker it last read
    assert len(primary.seen) == before  # still open in both
    output = first.stop() + second.stop()
    assert "circuit breakers: Redis is unreachable" in output
    assert "Traceback" not in output
