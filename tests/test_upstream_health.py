"""Upstream health (issue 22): background probes feed the circuit breakers, one process
probes an upstream per interval, breaker changes and attempts reach the database for
operators. Probes run one round at a time (probes.probe_all), on the gateway's own event
loop, against upstreams on loopback; time is the fake clock's."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from proxy import breakers, health, probes
from proxy.models import Upstream, UpstreamHealth, UpstreamMinute
from proxy.routes import Target
from tests.faulty_upstream import answer, at, route
from tests.servers import closed_port_url

INTERVAL = 15
KEY = "sk-op-probe-secret-0123456789"
CHAT = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _health(settings):
    settings.BREAKER_FAILURES = 3
    settings.BREAKER_COOLDOWN = 30.0
    settings.UPSTREAM_PROBE_SECONDS = INTERVAL


def probe_round(gateway, clock) -> list[probes.Outcome]:
    """One round of probes on the gateway's loop, its writes settled; then an interval passes."""
    outcomes = gateway.server.call(probes.probe_all())
    gateway.server.call(health.settle())
    clock.offset += INTERVAL
    return outcomes


def state(gateway, clock, name: str) -> str:
    return gateway.server.call(breakers.breaker(name)).state(clock.wall())


def test_probes_of_a_dead_upstream_open_its_breaker_and_a_probe_success_closes_it(gateway, faulty, clock):
    Upstream.objects.create(name="bridge", base_url=closed_port_url(), auth="none")

    for _ in range(2):
        probe_round(gateway, clock)
    assert state(gateway, clock, "bridge") == "closed"  # two failures of three
    probe_round(gateway, clock)
    opened = UpstreamHealth.objects.get(name="bridge")
    Upstream.objects.filter(name="bridge").update(base_url=faulty[0].url)  # it is back
    probe_round(gateway, clock)
    cooling = state(gateway, clock, "bridge")  # that probe came within the cool-down
    probe_round(gateway, clock)  # the cool-down is over: this probe is the trial
    closed = UpstreamHealth.objects.get(name="bridge")

    assert cooling == "probing"  # the success during the cool-down closed nothing
    assert (opened.state, opened.probe_ok) == ("open", False)
    assert opened.last_error.startswith("probe GET /v1/models: connect")
    assert opened.open_until - opened.state_since == timedelta(seconds=30)
    assert state(gateway, clock, "bridge") == "closed"
    assert (closed.state, closed.probe_ok) == ("closed", True)
    assert closed.state_since > opened.state_since
    assert closed.probe_latency_ms is not None
    assert [seen.path for seen in faulty[0].seen] == ["/v1/models", "/v1/models"]


def test_a_probe_answered_with_a_4xx_means_up_and_a_5xx_down(gateway, faulty, clock):
    faulty[0].play(then=answer(401, "invalid_api_key"))
    faulty[1].play(then=answer(503))
    Upstream.objects.create(name="a", base_url=faulty[0].url, auth="none")
    Upstream.objects.create(name="b", base_url=faulty[1].url, auth="none")

    outcomes = {outcome.name: outcome for outcome in probe_round(gateway, clock)}

    assert (outcomes["a"].ok, outcomes["a"].status) == (True, 401)
    assert (outcomes["b"].ok, outcomes["b"].error) == (False, "probe GET /v1/models: answered 503")
    assert outcomes["default"].ok  # OPENCLAW_URL, the tests' upstream


def test_a_silent_upstream_fails_its_probe_within_its_timeouts(gateway, faulty, clock):
    faulty[0].play(then=answer(200))
    faulty[0].then = type(faulty[0].then)("silent")
    Upstream.objects.create(name="a", base_url=faulty[0].url, auth="none", connect_timeout=0.1, first_byte_timeout=0.2)

    (outcome,) = [o for o in probe_round(gateway, clock) if o.name == "a"]

    assert not outcome.ok
    assert outcome.error in (
        "probe GET /v1/models: no answer within 0.3 s",
        "probe GET /v1/models: timeout (ReadTimeout)",
    )


def test_the_probe_goes_where_configured_with_the_upstreams_own_credential_only(gateway, faulty, clock, caplog):
    caplog.set_level(logging.DEBUG)
    faulty[0].play(then=answer(500))
    faulty[1].play()
    Upstream.objects.create(
        name="openai", base_url=faulty[0].url, auth="api_key", api_key=KEY, headers={"X-Title": "Workshop"}
    )
    Upstream.objects.create(name="bridge", base_url=faulty[1].url + "/api", auth="caller", probe="GET /v1/ping")
    Upstream.objects.create(name="quiet", base_url=faulty[2].url, probe="")

    for _ in range(3):
        probe_round(gateway, clock)

    keyed, callers = faulty[0].seen[0], faulty[1].seen[0]
    assert (keyed.path, keyed.headers["authorization"], keyed.headers["x-title"]) == (
        "/v1/models",
        f"Bearer {KEY}",
        "Workshop",
    )
    assert callers.path == "/api/v1/ping"
    assert "authorization" not in callers.headers
    assert faulty[2].seen == []  # a blank probe: never probed
    assert len(faulty[0].seen) == 3
    assert state(gateway, clock, "openai") == "open"
    assert KEY not in caplog.text and KEY[:12] not in caplog.text
    assert KEY not in UpstreamHealth.objects.get(name="openai").last_error


def test_one_of_two_processes_probing_at_once_probes_once_per_interval(gateway, faulty, clock):
    Upstream.objects.create(name="a", base_url=faulty[0].url, auth="none")

    async def two_probers() -> list[list[probes.Outcome]]:
        return await asyncio.gather(probes.probe_all(), probes.probe_all())

    first = gateway.server.call(two_probers())
    clock.offset += INTERVAL - 2
    too_soon = gateway.server.call(probes.probe_all())
    clock.offset += 2
    due = gateway.server.call(probes.probe_all())

    # Each upstream probed once, by whichever took its lease.
    assert sorted(outcome.name for outcomes in first for outcome in outcomes) == ["a", "default"]
    assert too_soon == []
    assert sorted(outcome.name for outcome in due) == ["a", "default"]
    assert len(faulty[0].seen) == 2


def test_attempts_are_counted_per_minute_and_latency_bucket_and_added_up(gateway, faulty, clock, monkeypatch):
    a, b = faulty[0].play(answer(500), answer(500)), faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b)))
    with gateway.client() as client:
        for _ in range(2):
            assert client.post("/v1/chat/completions", json=CHAT, headers={"X-User-ID": "ann"}).status_code == 200
        gateway.server.call(health.flush())
        assert client.post("/v1/chat/completions", json=CHAT, headers={"X-User-ID": "ann"}).status_code == 200
    gateway.server.call(health.flush())

    totals = {}
    for row in UpstreamMinute.objects.all():
        calls, failures = totals.get(row.upstream, (0, 0))
        totals[row.upstream] = (calls + row.calls, failures + row.failures)
        assert row.latency_le_ms in health.LATENCY_BUCKETS_MS
    assert totals == {"a": (3, 2), "b": (2, 0)}
    assert UpstreamHealth.objects.get(name="a").last_error == "answered 500"


def test_rows_older_than_an_hour_are_pruned_and_counts_wait_out_a_database_failure(gateway, clock, monkeypatch):
    clock.offset += 60  # a minute whose rows were not pruned yet
    old = datetime.fromtimestamp(clock.wall(), UTC) - timedelta(minutes=61)
    UpstreamMinute.objects.create(upstream="a", minute=old.replace(second=0, microsecond=0), latency_le_ms=25, calls=1)
    health.attempted("a", None, 0.01)
    failing = health.async_sql.execute_in_one_transaction

    async def down(statements):
        raise health.DatabaseError("the database is down")

    monkeypatch.setattr(health.async_sql, "execute_in_one_transaction", down)
    with pytest.raises(health.DatabaseError):
        gateway.server.call(health.flush())
    monkeypatch.setattr(health.async_sql, "execute_in_one_transaction", failing)
    health.attempted("a", "answered 502", 0.3)
    gateway.server.call(health.flush())

    assert list(UpstreamMinute.objects.order_by("latency_le_ms").values_list("latency_le_ms", "calls", "failures")) == [
        (25, 1, 0),
        (500, 1, 1),
    ]


def test_latency_buckets_are_a_fixed_log_scale():
    assert [health.bucket_of(s) for s in (0.0, 0.025, 0.026, 0.3, 59.0, 61.0)] == [
        25,
        25,
        50,
        500,
        60000,
        health.OVER_MS,
    ]


def test_the_probe_loop_runs_a_round_at_start_and_stops_at_shutdown(gateway, faulty, clock, settings):
    settings.UPSTREAM_PROBE_SECONDS = 3600
    Upstream.objects.create(name="a", base_url=faulty[0].url, auth="none")

    async def start_then_stop() -> None:
        task = probes.prober.start()
        while not faulty[0].seen:
            await asyncio.sleep(0.01)  # the round under way, on real sockets
        await probes.stop()
        assert task.done()

    gateway.server.call(start_then_stop())

    assert len(faulty[0].seen) == 1


def test_no_probe_loop_when_probes_are_off(gateway, settings):
    settings.UPSTREAM_PROBE_SECONDS = 0

    async def start() -> object:
        return probes.prober.start()

    assert gateway.server.call(start()) is None
