"""manage.py check_upstreams: each upstream's state, latency and last error, a probe made
now, and exit status 1 naming each route left without a usable target (for cron)."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from proxy import breakers, health
from proxy.models import Route, RouteTarget, Upstream
from tests.faulty_upstream import answer
from tests.servers import closed_port_url


@pytest.fixture(autouse=True)
def _breakers(settings):
    settings.BREAKER_FAILURES = 3
    settings.BREAKER_COOLDOWN = 30.0


def check(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("check_upstreams", *args, stdout=out, stderr=err)
        status = 0
    except SystemExit as exit:
        status = exit.code
    return status, out.getvalue(), err.getvalue()


def routed(model: str, *upstreams: Upstream) -> None:
    route = Route.objects.create(model=model)
    for priority, upstream in enumerate(upstreams, 1):
        RouteTarget.objects.create(route=route, upstream=upstream, priority=priority)


def test_all_upstreams_up_exits_0_with_a_table_of_their_health(gateway, faulty):
    routed("gpt-4o", Upstream.objects.create(name="bridge", base_url=faulty[0].url, auth="none"))

    status, out, err = check()

    assert (status, err) == (0, "")
    assert out.splitlines()[0].split() == [
        "upstream",
        "state",
        "since",
        "probe",
        "errors",
        "(5",
        "min)",
        "p50",
        "last",
        "error",
    ]
    assert any(line.startswith("bridge") and "closed" in line and "ok, " in line for line in out.splitlines())
    assert any(line.split()[:2] == ["gpt-4o", "bridge"] for line in out.splitlines())
    assert [seen.path for seen in faulty[0].seen] == ["/v1/models"]


def test_a_route_whose_only_upstream_fails_its_probe_exits_1_naming_it(gateway, faulty):
    faulty[1].play(then=answer(503))
    routed("gpt-4o", Upstream.objects.create(name="dead", base_url=closed_port_url(), auth="none"))
    routed("gpt-5", Upstream.objects.create(name="sick", base_url=faulty[1].url, auth="none"))
    routed("mini", Upstream.objects.get(name="dead"), Upstream.objects.create(name="fine", base_url=faulty[0].url))

    status, out, err = check()

    assert status == 1
    dead, sick = err.splitlines()
    assert any(line.split() == ["mini", "dead,", "fine", "fine"] for line in out.splitlines())  # fine serves it
    assert dead.startswith("route 'gpt-4o' has no usable target (dead: probe GET /v1/models: connect (")
    assert sick == "route 'gpt-5' has no usable target (sick: probe GET /v1/models: answered 503)"


def test_an_open_breaker_makes_a_route_unusable_without_probing(gateway, faulty, settings):
    settings.OPENCLAW_URL = None
    routed("*", Upstream.objects.create(name="bridge", base_url=faulty[0].url, auth="none"))
    for _ in range(3):
        gateway.server.call(breakers.failed("bridge", "answered 502"))
    gateway.server.call(health.settle())

    status, out, err = check("--no-probe")

    assert status == 1
    assert err.startswith("route '*' has no usable target (bridge: circuit breaker open since ")
    assert faulty[0].seen == []  # --no-probe
    assert "answered 502" in out


def test_a_route_left_with_disabled_upstreams_only_exits_1(gateway, faulty):
    routed("gpt-4o", Upstream.objects.create(name="off", base_url=faulty[0].url, enabled=False))

    status, _, err = check("--no-probe")

    assert status == 1
    assert err == "route 'gpt-4o' has no usable target (no enabled target)\n"


def test_the_default_upstream_serves_the_catch_all_when_no_route_does(gateway, settings):
    settings.OPENCLAW_URL = closed_port_url()

    status, _, err = check()

    assert status == 1
    assert err.startswith("route '*' has no usable target (default: probe GET /v1/models: connect")


def test_json_for_monitoring(gateway, faulty):
    routed("gpt-4o", Upstream.objects.create(name="bridge", base_url=faulty[0].url, auth="none"))

    status, out, _ = check("--json")

    report = json.loads(out)
    assert (status, report["ok"]) == (0, True)
    bridge = next(u for u in report["upstreams"] if u["name"] == "bridge")
    assert (bridge["state"], bridge["probe"]["ok"], bridge["enabled"]) == ("closed", True, True)
    assert {"route": "gpt-4o", "targets": ["bridge"], "usable": ["bridge"]} in report["routes"]
