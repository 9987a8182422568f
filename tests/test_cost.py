"""What calls cost, against a real upstream on loopback: exact, from the price in effect at
each call's time, summed into the month without drift; unknown never counted as 0."""

import asyncio
import random
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest
import time_machine

from accounts.models import Account
from billing.admin import unpriced_models
from billing.models import ModelMonth, ModelPrice, MonthlyUsage, Plan
from gateway_project.lib import process_state
from proxy.models import RequestLog

PRICES = {  # USD per million input, cached input and output tokens
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.075"), Decimal("0.60")),
    "gpt-4o": (Decimal("2.50"), Decimal("1.25"), Decimal("10.00")),
    "o1": (Decimal("15"), Decimal("7.50"), Decimal("60")),
}
USERS = ["ada", "bo", "cy", "di", "ed"]
MODELS = ["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o", "o1"]


def set_prices(since: date = date(2020, 1, 1), prices: dict = PRICES) -> None:
    for model, (input_price, cached, output) in prices.items():
        ModelPrice.objects.create(
            model=model,
            effective_from=since,
            input_per_million=input_price,
            cached_input_per_million=cached,
            output_per_million=output,
        )


def expected_usd(row: RequestLog, prices: dict = PRICES) -> Decimal:
    """The cost of a row worked out again in decimal dollars, independently of the gateway."""
    base = row.model if row.model in prices else row.model.rsplit("-", 3)[0]
    input_price, cached, output = prices[base]
    uncached = row.input_tokens - row.cached_input_tokens
    return (uncached * input_price + row.cached_input_tokens * cached + row.output_tokens * output) / 10**6


def as_usd(pico: int) -> Decimal:
    return Decimal(pico) / 10**12


async def mixed_calls(url: str, count: int) -> list[int]:
    rng = random.Random(7)
    # A connection per call: no keep-alive connection the server may close while it is reused.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        gate = asyncio.Semaphore(64)

        async def call(n: int) -> int:
            words = " ".join(["word"] * rng.randint(1, 30))
            if n % 3 == 2:  # Responses API, its instructions read from the cache
                path = "/v1/responses"
                body = {"model": rng.choice(MODELS), "instructions": words, "input": "hi", "prompt_cache_key": "k"}
            else:
                path = "/v1/chat/completions"
                body = {"model": rng.choice(MODELS), "messages": [{"role": "user", "content": words}]}
            body["stream"] = n % 2 == 0  # half streamed, none asking for usage
            async with gate:
                response = await client.post(path, json=body, headers={"X-User-ID": USERS[n % len(USERS)]})
                return response.status_code

        return await asyncio.gather(*(call(n) for n in range(count)))


def test_a_thousand_concurrent_mixed_calls_sum_to_the_month_exactly(gateway, upstream, settings, monkeypatch):
    settings.RATE_LIMIT_PER_MINUTE = 100_000
    monkeypatch.setenv("STUB_STREAM_INTERVAL_MS", "0")
    set_prices()
    # Two of the users on a metered plan (counted at admission, costed when written).
    Plan.objects.update_or_create(tier="tier1", defaults={"monthly_requests": 10**6, "requests_per_minute": None})
    for user_id in USERS[:2]:
        Account.objects.create(user_id=user_id, tier="tier1")

    statuses = asyncio.run(mixed_calls(gateway.url, 1000))

    assert statuses == [200] * 1000
    rows = gateway.log_rows()
    assert len(rows) == 1000
    by_user: dict[str, int] = defaultdict(int)
    for row in rows:
        assert row.cost_pico_usd is not None
        assert as_usd(row.cost_pico_usd) == expected_usd(row)
        by_user[row.user_id] += row.cost_pico_usd
    months = {m.user_id: m for m in MonthlyUsage.objects.all()}
    assert {user: months[user].cost_pico_usd for user in USERS} == by_user
    assert all(months[user].unknown_cost_requests == 0 for user in USERS)
    assert {months[user].requests for user in USERS} == {200}
    assert any(row.cached_input_tokens for row in rows)
    assert sum(m.cost_pico_usd for m in ModelMonth.objects.all()) == sum(by_user.values())


def test_a_price_change_dated_today_leaves_yesterdays_rows_and_totals_unchanged(gateway, upstream, settings):
    set_prices(date(2030, 11, 1))
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client() as client:
        with time_machine.travel(datetime(2030, 11, 20, 18, 0, tzinfo=UTC), tick=False):
            client.post("/v1/chat/completions", json=chat, headers={"X-User-ID": "fay"})
            gateway.log_rows()
        yesterday = list(RequestLog.objects.values_list("cost_pico_usd", flat=True))
        month_before = MonthlyUsage.objects.get(user_id="fay").cost_pico_usd
        set_prices(date(2030, 11, 21), {"gpt-4o": (Decimal("5"), Decimal("2.50"), Decimal("20"))})
        process_state.reset()  # the worker reads prices again, as its next check would (CHANGE_CHECK_MS)
        with time_machine.travel(datetime(2030, 11, 21, 9, 0, tzinfo=UTC), tick=False):
            client.post("/v1/chat/completions", json=chat, headers={"X-User-ID": "fay"})
            rows = gateway.log_rows()

    # "hi": 1 token in, 9 out.
    assert yesterday == [1 * 2_500_000 + 9 * 10_000_000] == [rows[0].cost_pico_usd]
    assert rows[1].cost_pico_usd == 1 * 5_000_000 + 9 * 20_000_000
    assert month_before == yesterday[0]
    assert MonthlyUsage.objects.get(user_id="fay").cost_pico_usd == yesterday[0] + rows[1].cost_pico_usd


def test_an_unpriced_model_or_unknown_usage_has_unknown_cost_never_zero(gateway, upstream, settings):
    set_prices()
    settings.STREAM_USAGE = "passthrough"
    with gateway.client() as client:
        client.post(
            "/v1/chat/completions",
            json={"model": "mystery-1", "messages": [{"role": "user", "content": "a"}]},
            headers={"X-User-ID": "gus"},
        )
        client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "b"}]},
            headers={"X-User-ID": "gus"},
        )
        client.get("/v1/models", headers={"X-User-ID": "gus"})
        rows = gateway.log_rows()
        used = client.get("/api/usage", headers={"X-User-ID": "gus"}).json()

    assert [(r.model, r.total_tokens, r.cost_pico_usd) for r in rows] == [
        ("mystery-1", 10, None),  # usage known, no price
        ("gpt-4o", None, None),  # usage unknown
        ("", 0, 0),  # a read costs nothing
    ]
    month = MonthlyUsage.objects.get(user_id="gus")
    assert (month.cost_pico_usd, month.unknown_cost_requests) == (0, 2)
    assert used["spend"] == {"used_usd": "0", "budget_usd": None, "unknown_cost_requests": 2}
    assert [(m.model, m.unpriced_requests) for m in unpriced_models(datetime.now(UTC))] == [("mystery-1", 1)]


@pytest.fixture
def staff(admin_client):
    return admin_client


def test_admin_lists_models_called_without_a_price_and_shows_costs(gateway, upstream, staff):
    set_prices()
    with gateway.client() as client:
        for model in ("mystery-1", "gpt-4o"):
            client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "x"}]},
                headers={"X-User-ID": "hal"},
            )
        gateway.log_rows()

    prices_page = staff.get("/admin/billing/modelprice/").content.decode()
    unknown_cost = staff.get("/admin/proxy/requestlog/", {"cost": "unknown"}).context["cl"].result_list
    summary_page = staff.get("/admin/proxy/usersummary/").content.decode()

    unpriced = prices_page.split('id="unpriced-models"')[1].split("</div>")[0]
    assert "<td>mystery-1</td><td>1</td>" in unpriced and "gpt-4o" not in unpriced
    assert [row.model for row in unknown_cost] == ["mystery-1"]
    assert "$0.0000925 (+1 call of unknown cost)" in summary_page  # gpt-4o: 1 in at $2.50, 9 out at $10 per million
