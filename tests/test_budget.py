"""Monthly budgets in money: unpriced models refused, spent budgets refused with 402, and
close to the budget one call at a time, so the overshoot stays within the bound
docs/operators/prices-budgets.md states."""

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import openai
import pytest

from billing import money, monthly_usage
from billing.models import ModelPrice, MonthlyUsage, Plan
from tests.personas import price, trainee
from tests.servers import GatewayProcess

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
# "hi": 1 token in, 9 out, at $10 and $20 per million: $0.00019 a call.
CALL_COST = 1 * 10_000_000 + 9 * 20_000_000


@pytest.fixture
def priced(gateway, upstream, settings):
    settings.GATEWAY_IDENTITY = "key"
    settings.RATE_LIMIT_PER_MINUTE = 10_000
    price("gpt-4o-mini", "10", "5", "20")
    return gateway


def budgeted(user_id: str, budget_usd: str) -> str:
    limits = {"monthly_budget_usd": Decimal(budget_usd), "requests_per_minute": None}
    Plan.objects.update_or_create(tier="tier1", defaults={**limits, "monthly_requests": None, "monthly_tokens": None})
    _, key = trainee(user_id, tier="tier1")
    return key


async def burst(url: str, key: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=count), timeout=30) as client:
        return await asyncio.gather(
            *(client.post("/v1/chat/completions", json=CHAT, headers={"X-Gateway-Key": key}) for _ in range(count))
        )


def test_fifty_simultaneous_calls_stop_at_the_budget_and_overshoot_at_most_one_call(priced, upstream, settings):
    # Reached after 5 calls (4.5 calls' worth); the whole budget is within the margin, so
    # calls run one at a time: a call turned away while another is in flight is sent again
    # with the others, after the gateway has written the finished one.
    key = budgeted("ivy", f"{money.to_usd(CALL_COST * 9 // 2):f}")
    pending, outcomes = 50, Counter()
    while pending:
        responses = asyncio.run(burst(priced.url, key, pending))
        priced.log_rows()
        codes = Counter(r.json()["error"]["code"] if r.status_code != 200 else 200 for r in responses)
        outcomes[200] += codes[200]
        outcomes["monthly_budget_exceeded"] += codes["monthly_budget_exceeded"]
        pending = codes["budget_nearly_spent"]
        assert set(codes) <= {200, "monthly_budget_exceeded", "budget_nearly_spent"}

    month = MonthlyUsage.objects.get(user_id="ivy")
    assert outcomes == {200: 5, "monthly_budget_exceeded": 45}
    assert len(upstream.seen) == 5
    assert month.cost_pico_usd == 5 * CALL_COST
    budget = CALL_COST * 9 // 2
    # Admitted while the recorded spend was under the budget (4 calls: 0.89 of it), then
    # refused; the fifth call, admitted alone, is the overshoot: under one call's cost.
    assert 0 < month.cost_pico_usd - budget <= CALL_COST  # docs: at most one call's cost


def test_far_from_the_budget_calls_run_side_by_side(priced, upstream, settings):
    settings.BUDGET_MARGIN_USD = Decimal("0")
    key = budgeted("jo", "10")

    responses = asyncio.run(burst(priced.url, key, 20))

    assert [r.status_code for r in responses] == [200] * 20


def test_close_to_the_budget_a_second_call_waits_for_the_first(priced, upstream):
    key = budgeted("kai", "1")  # within the $1 margin from the start
    gated = {**CHAT, "model": "gated", "stream": True}
    ModelPrice.objects.create(
        model="gated",
        effective_from=date(2020, 1, 1),
        input_per_million=1,
        cached_input_per_million=1,
        output_per_million=1,
    )
    with (
        priced.client() as client,
        client.stream("POST", "/v1/chat/completions", json=gated, headers={"X-Gateway-Key": key}) as first,
    ):
        assert first.status_code == 200
        second = client.post("/v1/chat/completions", json=CHAT, headers={"X-Gateway-Key": key})
        assert second.status_code == 429
        assert second.headers["retry-after"] == "1"
        assert second.json()["error"]["code"] == "budget_nearly_spent"
        upstream.gate.set()
        first.read()
    priced.log_rows()
    with priced.client() as client:
        third = client.post("/v1/chat/completions", json=CHAT, headers={"X-Gateway-Key": key})

    assert third.status_code == 200


def test_a_single_call_place_never_written_frees_itself_after_the_lease(priced):
    month = date(2030, 11, 1)
    now = datetime(2030, 11, 20, 12, 0, tzinfo=UTC)
    count = dict(max_requests=2**62, max_tokens=2**62, max_cost=10**12, alone_from=0)

    def take(at: datetime) -> tuple[bool, bool]:
        return priced.server.call(
            monthly_usage.count_if_under("lee", month, now=at, lease=at + timedelta(minutes=15), **count)
        )

    assert take(now) == (True, True)  # admitted, alone; its worker then dies: never written
    assert take(now + timedelta(minutes=14)) == (False, False)
    assert take(now + timedelta(minutes=16)) == (True, True)


def test_the_sdk_gets_the_402_with_plan_budget_spend_and_reset(priced, upstream):
    key = budgeted("max", "0.50")
    MonthlyUsage.objects.create(user_id="max", month=date.today().replace(day=1), cost_pico_usd=money.to_pico("0.5"))
    sdk = openai.OpenAI(
        base_url=f"{priced.url}/v1", api_key="sk-own", default_headers={"X-Gateway-Key": key}, max_retries=0
    )

    with pytest.raises(openai.APIStatusError) as raised:
        sdk.chat.completions.create(**CHAT)

    assert raised.value.status_code == 402
    assert raised.value.code == "monthly_budget_exceeded"
    assert "Monthly budget exceeded: the Tier 1 plan's budget is $0.50 a month and $0.50 is spent." in (
        raised.value.message
    )
    assert "It resets on" in raised.value.message
    assert upstream.seen == []


def test_under_a_budget_an_unpriced_model_is_refused_before_forwarding(priced, upstream):
    key = budgeted("ned", "10")
    with priced.client() as client:
        response = client.post(
            "/v1/chat/completions", json={**CHAT, "model": "mystery-1"}, headers={"X-Gateway-Key": key}
        )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "model_not_priced"
    assert "mystery-1" in error["message"]
    assert upstream.seen == []
    assert not MonthlyUsage.objects.filter(user_id="ned", requests__gt=0).exists()
    [row] = priced.log_rows()
    assert (row.status, row.model, row.cost_pico_usd) == (400, "mystery-1", 0)


def test_without_a_budget_an_unpriced_model_may_be_called(priced, upstream):
    Plan.objects.update_or_create(tier="tier1", defaults={"monthly_budget_usd": None, "requests_per_minute": None})
    _, key = trainee("ola", tier="tier1")
    with priced.client() as client:
        response = client.post(
            "/v1/chat/completions", json={**CHAT, "model": "mystery-1"}, headers={"X-Gateway-Key": key}
        )

    assert response.status_code == 200
    [row] = priced.log_rows()
    assert row.cost_pico_usd is None


def test_under_a_budget_a_call_naming_no_model_is_refused(priced, upstream):
    key = budgeted("pia", "10")
    with priced.client() as client:
        untyped = client.post(
            "/v1/chat/completions", content=b'{"model": "gpt-4o-mini"}', headers={"X-Gateway-Key": key}
        )
        listing = client.get("/v1/models", headers={"X-Gateway-Key": key})

    assert untyped.status_code == 400  # no JSON content type: the budget could not see the model
    assert untyped.json()["error"]["code"] == "model_not_priced"
    assert listing.status_code == 200  # reads cost nothing
    assert [seen.path for seen in upstream.seen] == ["/v1/models"]


def test_under_a_budget_streams_are_metered_even_with_passthrough(priced, upstream, settings):
    settings.STREAM_USAGE = "passthrough"
    key = budgeted("quin", "10")
    with priced.client() as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers={"X-Gateway-Key": key})

    assert b'"choices": []' not in response.content
    [row] = priced.log_rows()
    assert row.cost_pico_usd == CALL_COST


def test_a_caller_waiting_for_each_answer_is_never_told_a_call_is_in_progress(priced, upstream):
    # Close to the budget (all of it is within the margin), one call at a time and no pause:
    # each call's place is free, and its cost counted, before the next one is admitted.
    key = budgeted("rae", f"{money.to_usd(CALL_COST * 9 // 2):f}")
    sdk = openai.OpenAI(
        base_url=f"{priced.url}/v1", api_key="sk-own", default_headers={"X-Gateway-Key": key}, max_retries=0
    )
    statuses = []
    while len(statuses) < 10:
        try:
            sdk.chat.completions.create(**CHAT)
            statuses.append(200)
        except openai.APIStatusError as refusal:
            statuses.append(f"{refusal.status_code} {refusal.code}")
            break

    assert statuses == [200] * 5 + ["402 monthly_budget_exceeded"]
    assert len(upstream.seen) == 5
    overshoot = MonthlyUsage.objects.get(user_id="rae").cost_pico_usd - CALL_COST * 9 // 2
    assert 0 < overshoot <= CALL_COST  # docs: at most one call's cost


def test_sequential_calls_through_two_gateway_processes_are_admitted_one_after_the_other(priced, upstream):
    key = budgeted("sam", f"{money.to_usd(CALL_COST * 9 // 2):f}")
    environment = dict(OPENCLAW_URL=upstream.url, GATEWAY_IDENTITY="key", RATE_LIMIT_PER_MINUTE="10000")
    first, second = GatewayProcess(**environment), GatewayProcess(**environment)
    try:
        statuses = []
        for turn in range(6):
            url = (first, second)[turn % 2].url
            response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"X-Gateway-Key": key}, timeout=10)
            statuses.append(response.status_code if response.status_code == 200 else response.json()["error"]["code"])
    finally:
        output = first.stop() + second.stop()

    assert statuses == [200] * 5 + ["monthly_budget_exceeded"], output
    assert MonthlyUsage.objects.get(user_id="sam").cost_pico_usd == 5 * CALL_COST


def test_a_call_in_flight_in_another_process_still_keeps_the_next_one_out(priced, upstream):
    key = budgeted("tia", "1")  # within the $1 margin from the start
    price("gated", "1", "1", "1")
    environment = dict(OPENCLAW_URL=upstream.url, GATEWAY_IDENTITY="key", BUDGET_WAIT_SECONDS="0.3")
    first, second = GatewayProcess(**environment), GatewayProcess(**environment)
    gated = {**CHAT, "model": "gated", "stream": True}
    try:
        with (
            httpx.Client(timeout=10) as client,
            client.stream(
                "POST", f"{first.url}/v1/chat/completions", json=gated, headers={"X-Gateway-Key": key}
            ) as running,
        ):
            assert running.status_code == 200
            refused = client.post(f"{second.url}/v1/chat/completions", json=CHAT, headers={"X-Gateway-Key": key})
            upstream.gate.set()
            running.read()
        after = httpx.post(f"{second.url}/v1/chat/completions", json=CHAT, headers={"X-Gateway-Key": key}, timeout=10)
    finally:
        output = first.stop() + second.stop()

    assert refused.status_code == 429, output
    assert refused.json()["error"]["code"] == "budget_nearly_spent"
    assert after.status_code == 200
