"""Admin "Upstreams": each upstream's breaker state and since when, last error, error rate,
latency p50 and calls per minute over the last 5 minutes, and the routes that use it, read
for the whole page at once; the API key never shown."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from proxy import breakers, health
from proxy.models import Route, RouteTarget, Upstream, UpstreamMinute

KEY = "sk-op-admin-secret-0123456789"


@pytest.fixture(autouse=True)
def _breakers(settings):
    settings.BREAKER_FAILURES = 3
    settings.BREAKER_COOLDOWN = 30.0


def minute_ago(clock, minutes: int) -> datetime:
    now = datetime.fromtimestamp(clock.wall(), UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes)


def open_breaker(gateway, name: str) -> None:
    for _ in range(3):
        gateway.server.call(breakers.failed(name, "answered 502"))
    gateway.server.call(health.settle())


def cells(page: str, name: str) -> str:
    """The list's row of upstream `name`, as text."""
    start = page.index(f">{name}</a>")
    return page[start : page.index("</tr>", start)]


def test_the_list_shows_each_upstreams_health_and_routes(gateway, clock, admin_client):
    Upstream.objects.create(name="bridge", base_url="http://bridge.test", auth="api_key", api_key=KEY)
    Upstream.objects.create(name="spare", base_url="http://spare.test")
    route = Route.objects.create(model="gpt-4o")
    RouteTarget.objects.create(route=route, upstream=Upstream.objects.get(name="bridge"))
    for minutes, bucket, calls, failures in [(1, 100, 6, 1), (3, 1000, 4, 3), (9, 25, 50, 0)]:
        UpstreamMinute.objects.create(
            upstream="bridge", minute=minute_ago(clock, minutes), latency_le_ms=bucket, calls=calls, failures=failures
        )
    open_breaker(gateway, "bridge")

    page = admin_client.get("/admin/proxy/upstream/").content.decode()

    bridge, spare = cells(page, "bridge"), cells(page, "spare")
    assert ">open<" in bridge
    assert "answered 502 (" in bridge
    assert "40% (4 of 10 calls)" in bridge  # the row of 9 minutes ago is out of the window
    assert "≤ 100 ms" in bridge  # 6 of 10 calls within 100 ms
    assert ">2.0<" in bridge  # calls per minute
    assert ">gpt-4o<" in bridge
    assert ">closed<" in spare and ">0.0<" in spare
    assert "default (OPENCLAW_URL)" in page  # the implicit upstream, above the list
    assert "passes half of them" in page  # how p50 is read
    assert KEY not in page and KEY[:12] not in page


def test_a_breaker_past_its_cool_down_shows_as_probing_and_a_success_as_closed(gateway, clock, admin_client):
    Upstream.objects.create(name="bridge", base_url="http://bridge.test")
    open_breaker(gateway, "bridge")

    clock.offset += 30
    probing = cells(admin_client.get("/admin/proxy/upstream/").content.decode(), "bridge")
    gateway.server.call(breakers.succeeded("bridge", trial=True))  # the trial's answer
    gateway.server.call(health.settle())
    closed = cells(admin_client.get("/admin/proxy/upstream/").content.decode(), "bridge")

    assert ">probing<" in probing
    assert ">closed<" in closed


def test_the_page_reads_every_upstreams_health_in_the_same_few_queries(gateway, admin_client):
    def queries_for_the_list() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/proxy/upstream/").status_code == 200
        return len(captured)

    Upstream.objects.create(name="one", base_url="http://one.test")
    with_one = queries_for_the_list()
    for name in ("two", "three", "four"):
        Upstream.objects.create(name=name, base_url=f"http://{name}.test")

    assert queries_for_the_list() == with_one
