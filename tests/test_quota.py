"""Monthly quotas: counted and checked atomically before forwarding; 402 when spent."""

import asyncio
from collections import Counter
from datetime import UTC, date, datetime

import httpx
import openai
import pytest
import time_machine

from billing.models import MonthlyUsage, Plan
from tests.personas import trainee
from tests.servers import GatewayProcess

NOV_20 = datetime(2030, 11, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def key_mode(settings):
    settings.GATEWAY_IDENTITY = "key"
    settings.RATE_LIMIT_PER_MINUTE = 10_000


def set_plan(tier: str, **limits) -> None:
    # Transactional tests flush the table, seeded plans included: each test sets its own.
    Plan.objects.update_or_create(tier=tier, defaults=limits)


def usage_of(user_id: str, month: date = date(2030, 11, 1)) -> tuple[int, int]:
    row = MonthlyUsage.objects.filter(user_id=user_id, month=month).first()
    return (row.requests, row.total_tokens) if row else (0, 0)


def test_a_spent_request_quota_answers_402_naming_plan_limit_and_reset(gateway, upstream, key_mode, settings):
    settings.BILLING_UPGRADE_URL = "https://example.com/upgrade"
    set_plan("tier1", monthly_requests=2, monthly_tokens=None)
    _, key = trainee("alice", tier="tier1")
    with time_machine.travel(NOV_20, tick=False), gateway.client() as client:
        statuses = [client.get("/v1/models", headers={"X-Gateway-Key": key}).status_code for _ in range(2)]
        refused = client.get("/v1/models", headers={"X-Gateway-Key": key})

    assert statuses == [200, 200]
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "monthly_quota_exceeded")
    assert error["message"] == (
        "Monthly quota exceeded: the Tier 1 plan includes 2 requests a month. "
        "It resets on 2030-12-01 at 00:00 UTC. Upgrade at https://example.com/upgrade"
    )
    assert len(upstream.seen) == 2
    assert [row.status for row in gateway.log_rows()] == [200, 200, 402]
    assert usage_of("alice") == (2, 0)  # the 402 was not charged


def test_a_spent_token_quota_refuses_new_requests(gateway, upstream, key_mode):
    set_plan("tier2", monthly_requests=None, monthly_tokens=20)
    _, key = trainee("bob", tier="tier2")
    chat = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}
    with time_machine.travel(NOV_20, tick=False), gateway.client() as client:
        first = client.post("/v1/chat/completions", json=chat, headers={"X-Gateway-Key": key})
        gateway.log_rows()  # tokens are added when the response completes
        second = client.post("/v1/chat/completions", json=chat, headers={"X-Gateway-Key": key})
        gateway.log_rows()
        third = client.post("/v1/chat/completions", json=chat, headers={"X-Gateway-Key": key})

    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 402)
    assert "20 tokens a month" in third.json()["error"]["message"]
    assert usage_of("bob") == (2, 28)  # 14 tokens each: the one in flight overshot, as documented


def test_callers_without_a_tier_are_unlimited_and_still_counted(gateway, upstream):
    chat = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    with time_machine.travel(NOV_20, tick=False), gateway.client() as client:
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=chat, headers={"X-User-ID": "carol"}).status_code == 200
        client.get("/v1/status/500", headers={"X-User-ID": "carol"})

    gateway.log_rows()
    assert usage_of("carol") == (4, 30)


def test_free_limits_apply_to_callers_without_a_tier(gateway, upstream, settings):
    settings.FREE_MONTHLY_REQUESTS = 1
    with time_machine.travel(NOV_20, tick=False), gateway.client() as client:
        first = client.get("/v1/models", headers={"X-User-ID": "dan"})
        second = client.get("/v1/models", headers={"X-User-ID": "dan"})

    assert (first.status_code, second.status_code) == (200, 402)
    assert "the free plan includes 1 requests a month" in second.json()["error"]["message"]


def test_the_plan_sets_the_per_minute_rate_limit(gateway, upstream, key_mode):
    set_plan("tier1", requests_per_minute=2, monthly_requests=None, monthly_tokens=None)
    _, key = trainee("erin", tier="tier1")
    with gateway.client() as client:
        responses = [client.get("/v1/models", headers={"X-Gateway-Key": key}) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["x-ratelimit-limit"] == "2"


def test_a_metered_request_refused_by_the_rate_limit_is_not_counted(gateway, upstream, key_mode):
    # With Redis the quota is counted while the rate limit is asked, and given back on a 429.
    set_plan("tier1", requests_per_minute=2, monthly_requests=100, monthly_tokens=None)
    _, key = trainee("erin", tier="tier1")
    with time_machine.travel(NOV_20, tick=False), gateway.client() as client:
        statuses = [client.get("/v1/models", headers={"X-Gateway-Key": key}).status_code for _ in range(4)]
        gateway.settle()

    assert statuses == [200, 200, 429, 429]
    assert usage_of("erin") == (2, 0)
    assert len(upstream.seen) == 2


def test_usage_starts_afresh_each_month(gateway, upstream, key_mode):
    set_plan("tier1", monthly_requests=1, monthly_tokens=None)
    _, key = trainee("fay", tier="tier1")
    with gateway.client() as client:
        with time_machine.travel(datetime(2030, 11, 30, 23, 59, tzinfo=UTC), tick=False):
            november = [client.get("/v1/models", headers={"X-Gateway-Key": key}).status_code for _ in range(2)]
        with time_machine.travel(datetime(2030, 12, 1, 0, 0, tzinfo=UTC), tick=False):
            december = client.get("/v1/models", headers={"X-Gateway-Key": key}).status_code

    assert (november, december) == ([200, 402], 200)


def test_the_sdk_surfaces_the_402_with_its_message(gateway, upstream, key_mode):
    set_plan("tier1", monthly_requests=0)
    _, key = trainee("gil", tier="tier1")
    sdk = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key="sk-own", default_headers={"X-Gateway-Key": key}, max_retries=0
    )

    with pytest.raises(openai.APIStatusError) as raised:
        sdk.models.list()

    assert raised.value.status_code == 402
    assert "Monthly quota exceeded: the Tier 1 plan includes 0 requests a month." in raised.value.message


async def fire(urls: list[str], key: str) -> Counter:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=len(urls)), timeout=60) as client:
        responses = await asyncio.gather(*(client.get(f"{u}/v1/models", headers={"X-Gateway-Key": key}) for u in urls))
    return Counter(r.status_code for r in responses)


def test_a_hundred_at_once_with_ten_left_forward_exactly_ten(gateway, upstream, key_mode, settings):
    set_plan("tier1", monthly_requests=50, monthly_tokens=None)
    _, key = trainee("hana", tier="tier1")
    MonthlyUsage.objects.create(user_id="hana", month=date.today().replace(day=1), requests=40)

    statuses = asyncio.run(fire([gateway.url] * 100, key))

    assert statuses == {200: 10, 402: 90}
    assert len(upstream.seen) == 10
    assert MonthlyUsage.objects.get(user_id="hana").requests == 50


def test_a_hundred_at_once_through_two_processes_forward_exactly_ten(gateway, upstream, settings):
    set_plan("tier1", monthly_requests=50, monthly_tokens=None)
    _, key = trainee("ivan", tier="tier1")
    MonthlyUsage.objects.create(user_id="ivan", month=date.today().replace(day=1), requests=40)
    environment = {"OPENCLAW_URL": upstream.url, "GATEWAY_IDENTITY": "key", "RATE_LIMIT_PER_MINUTE": "10000"}
    if settings.REDIS_URL:
        environment["REDIS_URL"] = settings.REDIS_URL
    gateways = [GatewayProcess(**environment) for _ in range(2)]
    try:
        statuses = asyncio.run(fire([g.url for g in gateways] * 50, key))
    finally:
        for process in gateways:
            process.stop()

    assert statuses == {200: 10, 402: 90}
    assert len(upstream.seen) == 10
    assert MonthlyUsage.objects.get(user_id="ivan").requests == 50
