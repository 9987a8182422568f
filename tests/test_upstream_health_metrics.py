"""Upstream health in Prometheus: each upstream's breaker state, read when scraped from the
state every process shares (whichever worker answers), and the probes by outcome."""

import pytest

from proxy import breakers, health, probes
from proxy.models import Upstream
from tests.servers import closed_port_url
from tests.test_metrics import TOKEN, scrape, value


@pytest.fixture(autouse=True)
def _health(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.BREAKER_FAILURES = 3
    settings.BREAKER_COOLDOWN = 30.0
    settings.UPSTREAM_PROBE_SECONDS = 15


def test_the_breaker_state_of_each_upstream_and_the_probes_are_scraped(gateway, faulty, clock):
    Upstream.objects.create(name="dead", base_url=closed_port_url(), auth="none")
    Upstream.objects.create(name="fine", base_url=faulty[0].url, auth="none")
    before = scrape(gateway.url)
    for _ in range(3):
        gateway.server.call(probes.probe_all())
        clock.offset += 15
    gateway.server.call(health.settle())
    clock.offset -= 15  # within the cool-down

    opened = scrape(gateway.url)
    clock.offset += 30
    due = scrape(gateway.url)

    assert value(opened, "gateway_breaker_state", upstream="dead") == 1
    assert value(opened, "gateway_breaker_state", upstream="fine") == 0
    assert value(opened, "gateway_breaker_state", upstream="default") == 0
    assert value(due, "gateway_breaker_state", upstream="dead") == 2  # probing: its cool-down is over
    probed = {
        (upstream, outcome): value(opened, "gateway_upstream_probes_total", upstream=upstream, outcome=outcome)
        - value(before, "gateway_upstream_probes_total", upstream=upstream, outcome=outcome)
        for upstream in ("dead", "fine")
        for outcome in ("ok", "failed")
    }
    assert probed == {("dead", "ok"): 0, ("dead", "failed"): 3, ("fine", "ok"): 3, ("fine", "failed"): 0}
    assert value(opened, "gateway_breaker_changes_total", upstream="dead", state="open") >= 1


def test_a_process_that_never_saw_the_failures_reports_the_shared_state(gateway, clock, settings):
    """With Redis, the state every process shares; without it, the database's mirror: either
    way not the answering process's own copy."""
    for _ in range(3):
        gateway.server.call(breakers.failed("bridge", "answered 502"))
    gateway.server.call(health.settle())
    from gateway_project.lib import process_state

    process_state.reset()  # the scrape's process knows nothing of them

    assert value(scrape(gateway.url), "gateway_breaker_state", upstream="bridge") == 1
