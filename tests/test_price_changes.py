"""A price loaded while the gateway serves applies to calls within CHANGE_CHECK_MS (half a
second), in every worker of every process, without a database read per call."""

from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import httpx
import pytest
from django.core.management import call_command

from accounts.models import Account
from billing import cached, prices
from billing.models import ModelPrice, MonthlyUsage, Plan
from gateway_project.lib import table_versions
from proxy.models import RequestLog
from tests.servers import GatewayProcess, closed_port_url

MODEL = "gpt-5-nano"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
# "hi": 1 token in, 9 out, at $1 and $4 per million.
CALL_COST = 1 * 1_000_000 + 9 * 4_000_000


def budgeted(user_id: str) -> None:
    Plan.objects.update_or_create(
        tier="tier1",
        defaults={"monthly_budget_usd": Decimal("10"), "monthly_requests": None, "requests_per_minute": None},
    )
    Account.objects.create(user_id=user_id, tier="tier1")


def load_price(tmp_path, output: str = "4") -> str:
    """manage.py load_prices with MODEL's price from today: $1 in, $0.50 cached, $4 out."""
    path = tmp_path / "prices.csv"
    today = datetime.now(UTC).date()
    path.write_text(f"model,effective_from,input,cached_input,output\n{MODEL},{today},1,0.5,{output}\n")
    out = StringIO()
    call_command("load_prices", str(path), stdout=out)
    return out.getvalue()


def load_price_row() -> ModelPrice:
    return ModelPrice.objects.create(
        model=MODEL,
        effective_from=datetime.now(UTC).date(),
        input_per_million=Decimal("1"),
        cached_input_per_million=Decimal("0.5"),
        output_per_million=Decimal("4"),
    )


def call(client: httpx.Client, user_id: str) -> httpx.Response:
    return client.post("/v1/chat/completions", json=CHAT, headers={"X-User-ID": user_id})


@pytest.fixture
def clock(monkeypatch):
    """The workers' clock for their copies of prices, moved by the test."""
    now = [1000.0]
    monkeypatch.setattr(cached, "clock", lambda: now[0])
    return now


def test_a_price_loaded_while_serving_costs_the_calls_half_a_second_later(gateway, upstream, settings, clock, tmp_path):
    settings.CHANGE_CHECK_MS = 500
    budgeted("nia")
    with gateway.client() as client:
        refused = call(client, "nia")
        unpriced = call(client, "oli")  # no budget: served, of unknown cost
        gateway.log_rows()
        load_price(tmp_path)
        clock[0] += 0.5
        admitted = call(client, "nia")
        costed = call(client, "oli")
        rows = gateway.log_rows()

    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_priced"
    assert (unpriced.status_code, admitted.status_code, costed.status_code) == (200, 200, 200)
    assert [(r.user_id, r.status, r.cost_pico_usd) for r in rows] == [
        ("nia", 400, 0),
        ("oli", 200, None),
        ("nia", 200, CALL_COST),
        ("oli", 200, CALL_COST),
    ]
    month = MonthlyUsage.objects.get(user_id="nia")
    assert (month.cost_pico_usd, month.unknown_cost_requests) == (CALL_COST, 0)


def test_between_two_checks_calls_read_neither_prices_nor_their_version(
    gateway, upstream, settings, clock, monkeypatch
):
    settings.CHANGE_CHECK_MS = 500
    budgeted("pat")
    reads = []
    real_read, real_read_book = table_versions.read, prices._cache._read

    async def counted_read(name):
        if name == "prices":  # the routes' version is routing's, read on its own schedule
            reads.append(name)
        return await real_read(name)

    def counted_read_book():
        reads.append("rows")
        return real_read_book()

    monkeypatch.setattr(table_versions, "read", counted_read)
    monkeypatch.setattr(prices._cache, "_read", counted_read_book)
    with gateway.client() as client:
        statuses = [call(client, "pat").status_code for _ in range(10)]
        gateway.log_rows()
        first = list(reads)
        clock[0] += 0.5
        call(client, "pat")
        gateway.log_rows()

    assert statuses == [400] * 10
    assert first == ["prices", "rows"]  # the first call loads them, the next nine read nothing
    assert reads == ["prices", "rows", "prices"]  # half a second later: the version only, unchanged


def test_a_price_loaded_reaches_every_worker_of_two_gateway_processes(transactional_db, upstream, settings, tmp_path):
    budgeted("quin")
    # A check per call: what is shown here is that the change reaches other processes (the
    # half second is shown above).
    environment = {"OPENCLAW_URL": upstream.url, "CHANGE_CHECK_MS": "0", "RATE_LIMIT_PER_MINUTE": "10000"}
    workers = 1
    if settings.REDIS_URL:
        environment["REDIS_URL"] = settings.REDIS_URL
        workers = 2
    processes = [GatewayProcess(workers=workers, **environment) for _ in range(2)]
    clients = [httpx.Client(base_url=process.url, timeout=10) for process in processes]
    try:
        before = [call(client, "quin").status_code for client in clients for _ in range(4)]
        load_price(tmp_path)
        after = [call(client, "quin").status_code for client in clients for _ in range(4)]
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.stop()  # writes what it queued

    assert before == [400] * 8
    assert after == [200] * 8
    costs = list(RequestLog.objects.filter(status=200).values_list("cost_pico_usd", flat=True))
    assert costs == [CALL_COST] * 8
    assert MonthlyUsage.objects.get(user_id="quin").cost_pico_usd == 8 * CALL_COST


def test_an_edit_or_a_delete_in_admin_applies_half_a_second_later(gateway, upstream, settings, clock, admin_client):
    settings.CHANGE_CHECK_MS = 500
    budgeted("rae")
    price = load_price_row()
    form = {
        "model": MODEL,
        "effective_from": str(price.effective_from),
        "input_per_million": "1",
        "cached_input_per_million": "0.5",
        "output_per_million": "8",
    }
    with gateway.client() as client:
        first = call(client, "rae")
        gateway.log_rows()
        edited = admin_client.post(f"/admin/billing/modelprice/{price.pk}/change/", form)
        clock[0] += 0.5
        second = call(client, "rae")
        gateway.log_rows()
        deleted = admin_client.post(f"/admin/billing/modelprice/{price.pk}/delete/", {"post": "yes"})
        clock[0] += 0.5
        third = call(client, "rae")
        rows = gateway.log_rows()

    assert (edited.status_code, deleted.status_code) == (302, 302)
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 400)
    assert third.json()["error"]["code"] == "model_not_priced"
    assert [r.cost_pico_usd for r in rows] == [CALL_COST, 1 * 1_000_000 + 9 * 8_000_000, 0]


def test_with_redis_unreachable_calls_are_served_and_a_new_price_applies_within_thirty_seconds(
    gateway, upstream, settings, clock, tmp_path, process_log
):
    settings.REDIS_URL = closed_port_url().replace("http", "redis")
    settings.CHANGE_CHECK_MS = 500
    with gateway.client() as client:
        before = call(client, "sol")
        gateway.log_rows()
        load_price(tmp_path)
        clock[0] += 0.5
        stale = call(client, "sol")
        gateway.log_rows()
        clock[0] += cached.CACHE_SECONDS
        fresh = call(client, "sol")
        rows = gateway.log_rows()

    assert [before.status_code, stale.status_code, fresh.status_code] == [200, 200, 200]
    assert [r.cost_pico_usd for r in rows] == [None, None, CALL_COST]
    unreachable = [r for r in process_log.records if "table versions: Redis is unreachable" in r.getMessage()]
    assert len(unreachable) == 1


def test_a_price_changed_by_loading_a_file_again_applies_half_a_second_later(
    gateway, upstream, settings, clock, tmp_path
):
    settings.CHANGE_CHECK_MS = 500
    load_price(tmp_path)
    with gateway.client() as client:
        call(client, "tam")
        gateway.log_rows()
        changed = load_price(tmp_path, output="8")
        clock[0] += 0.5
        call(client, "tam")
        rows = gateway.log_rows()

    assert "0 added, 1 changed" in changed
    assert [r.cost_pico_usd for r in rows] == [CALL_COST, 1 * 1_000_000 + 9 * 8_000_000]
