"""GET /api/usage: the caller's limits and use, identified as on /v1."""

from datetime import UTC, datetime

import time_machine

from billing.models import Plan
from tests.personas import price, trainee

NOV_20 = datetime(2030, 11, 20, 15, 0, tzinfo=UTC)


def test_usage_matches_what_the_caller_used(gateway, upstream, settings):
    settings.GATEWAY_IDENTITY = "key"
    Plan.objects.update_or_create(
        tier="tier1", defaults={"requests_per_minute": 5, "monthly_requests": 100, "monthly_tokens": 1000}
    )
    _, key = trainee("alice", tier="tier1")
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with time_machine.travel(NOV_20, tick=False), gateway.client() as client:
        for _ in range(3):
            client.post("/v1/chat/completions", json=chat, headers={"X-Gateway-Key": key})
        gateway.log_rows()
        response = client.get("/api/usage", headers={"X-Gateway-Key": key})

    assert response.status_code == 200
    assert response.json() == {
        "user_id": "alice",
        "tier": "tier1",
        "plan": "Tier 1",
        "rate_limit": {"limit": 5, "remaining": 2, "reset": int(NOV_20.timestamp()) + 60},
        "month": "2030-11",
        "requests": {"used": 3, "limit": 100},
        "tokens": {"used": 30, "limit": 1000},
        "token_split": {"input": 3, "cached_input": 0, "output": 27},
        "unknown_usage_requests": 0,
        # No price for model "m": three calls of unknown cost, none counted as free.
        "spend": {"used_usd": "0", "budget_usd": None, "unknown_cost_requests": 3},
        "resets_at": "2030-12-01T00:00:00Z",
    }


def test_asking_for_usage_uses_up_nothing(gateway, upstream, settings):
    settings.RATE_LIMIT_PER_MINUTE = 1
    with gateway.client() as client:
        for _ in range(3):
            client.get("/api/usage", headers={"X-User-ID": "bob"})
        relayed = client.get("/v1/models", headers={"X-User-ID": "bob"})
        after = client.get("/api/usage", headers={"X-User-ID": "bob"}).json()

    assert relayed.status_code == 200
    assert after["rate_limit"]["remaining"] == 0
    assert (after["tier"], after["plan"], after["requests"]["limit"]) == (None, "free", None)


def test_usage_follows_the_identity_rules_of_v1(gateway, upstream, settings):
    settings.GATEWAY_IDENTITY = "key"
    with gateway.client() as client:
        response = client.get("/api/usage", headers={"X-User-ID": "alice"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_the_api_documents_itself(client):
    docs = client.get("/api/docs")
    schema = client.get("/api/openapi.json").json()

    assert docs.status_code == 200
    assert "/api/usage" in schema["paths"]


def test_calls_with_unknown_usage_are_counted_apart(gateway, upstream, settings):
    settings.STREAM_USAGE = "passthrough"  # a stream that reports no usage
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client() as client:
        client.post("/v1/chat/completions", json=chat, headers={"X-User-ID": "una"})
        client.post("/v1/chat/completions", json={**chat, "stream": True}, headers={"X-User-ID": "una"})
        gateway.log_rows()
        used = client.get("/api/usage", headers={"X-User-ID": "una"}).json()

    assert used["requests"]["used"] == 2
    assert used["tokens"]["used"] == 10  # the first call's; the stream's is not guessed
    assert used["unknown_usage_requests"] == 1


def test_daily_usage_comes_from_the_rollups_and_outlives_the_log(gateway, upstream, settings):
    from django.core.management import call_command

    price("gpt-4o-mini", "0.15", "0.075", "0.60")
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"X-User-ID": "dora"}
    with gateway.client() as client:
        for day, calls in ((18, 2), (20, 1)):
            with time_machine.travel(NOV_20.replace(day=day), tick=False):
                for _ in range(calls):
                    client.post("/v1/chat/completions", json=chat, headers=headers)
                client.post("/v1/echo", json={"model": "gpt-4o-mini"}, headers=headers)  # no usage reported
                gateway.log_rows()
        with time_machine.travel(NOV_20, tick=False):
            before = client.get("/api/usage/daily?days=3", headers=headers).json()
            call_command("prune_requests", "--older-than", "1d")
            after = client.get("/api/usage/daily?days=3", headers=headers).json()
            too_long = client.get("/api/usage/daily?days=91", headers=headers)

    assert before == after
    assert [day["day"] for day in before["days"]] == ["2030-11-18", "2030-11-19", "2030-11-20"]
    nov_18, nov_19, nov_20 = before["days"]
    assert (nov_18["requests"], nov_18["tokens"], nov_18["unknown_usage_requests"]) == (3, 20, 1)
    # 2 calls of 1 input and 9 output tokens at $0.15 and $0.60 per million; the echo's cost unknown.
    assert nov_18["cost_usd"] == "0.0000111" and nov_18["unknown_cost_requests"] == 1
    assert nov_19 == {
        "day": "2030-11-19",
        "requests": 0,
        "tokens": 0,
        "cost_usd": "0",
        "unknown_usage_requests": 0,
        "unknown_cost_requests": 0,
    }
    assert (nov_20["requests"], nov_20["tokens"]) == (2, 10)
    assert too_long.status_code == 422
