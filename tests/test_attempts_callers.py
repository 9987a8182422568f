"""Retries and fail-over as callers meet them: the OpenAI SDK with its own retries off, the
credential each upstream gets, and admission and billing counted once per call."""

import openai
import pytest

from billing.models import MonthlyUsage, Plan
from proxy.routes import Target, Upstream
from tests.faulty_upstream import answer, at, route, silent, stream_then_silent
from tests.personas import link_codex, price, trainee


def ask(sdk, **options):
    return sdk.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}], **options)


def test_the_sdk_never_sees_a_500_the_gateway_retried(sdk, gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(answer(500))
    route(monkeypatch, Target(at(a, retries=1)))

    completion = ask(sdk)

    assert completion.choices[0].message.content == "fine"
    assert len(a.seen) == 2
    [row] = gateway.log_rows()
    assert (row.status, row.attempts, row.total_tokens) == (200, 2, 7)


def test_the_sdk_streams_from_the_fallback_when_the_first_stream_never_starts(sdk, gateway, faulty, clock, monkeypatch):
    a, b = faulty[0].play(stream_then_silent()), faulty[1]
    route(monkeypatch, Target(at(a, timeout=0.3)), Target(at(b), model="large"))

    chunks = list(ask(sdk, stream=True))

    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "fine"
    assert {c.model for c in chunks} == {"large"}
    [row] = gateway.log_rows()
    assert (row.upstream, row.model, row.attempts, row.total_tokens) == ("b", "large", 2, 7)


def test_the_sdk_gets_the_last_429_with_its_retry_after(sdk, gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(then=answer(429, "rate_limit_exceeded", ("retry-after", "20"), message="slow down"))
    route(monkeypatch, Target(at(a, retries=1)))

    with pytest.raises(openai.RateLimitError) as raised:
        ask(sdk)

    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.response.headers["retry-after"] == "20"
    assert len(a.seen) == 2
    assert clock.pauses == [0.75]  # 20 s is past the cap: a back-off instead


def test_the_sdk_gets_a_504_in_the_gateways_words_when_every_target_is_silent(sdk, gateway, faulty, clock, monkeypatch):
    a, b = faulty[0].play(then=silent()), faulty[1].play(then=silent())
    route(monkeypatch, Target(at(a, timeout=0.2)), Target(at(b, timeout=0.2)))

    with pytest.raises(openai.InternalServerError) as raised:
        ask(sdk)

    assert raised.value.status_code == 504
    assert "sent nothing for 0.2 seconds" in raised.value.message
    [row] = gateway.log_rows()
    assert (row.status, row.upstream, row.attempts) == (504, "", 2)


def test_each_upstream_gets_its_own_credential_and_headers(gateway, faulty, clock, monkeypatch):
    a, b, c = faulty
    keyed = Upstream("b", b.url, "api_key", "sk-operator", (("X-Title", "workshop"),), 1.0, 3.0, 3.0, 3.0, 0)
    none = Upstream("c", c.url, "none", None, (), 1.0, 3.0, 3.0, 3.0, 0)
    route(monkeypatch, Target(at(a.play(answer(503)), auth="caller")), Target(keyed), Target(none))
    b.play(answer(503))

    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "small", "messages": []},
            headers={"Authorization": "Bearer sk-trainee-own", "X-User-ID": "ann"},
        )

    assert response.status_code == 200
    assert a.seen[0].headers["authorization"] == "Bearer sk-trainee-own"
    assert (b.seen[0].headers["authorization"], b.seen[0].headers["x-title"]) == ("Bearer sk-operator", "workshop")
    assert "authorization" not in c.seen[0].headers


def test_in_codex_mode_a_caller_without_a_session_still_reaches_an_api_key_upstream(
    gateway, faulty, clock, monkeypatch, settings
):
    settings.AUTH_MODE, settings.GATEWAY_IDENTITY = "codex", "key"
    a, b = faulty[0], faulty[1]
    keyed = Upstream("b", b.url, "api_key", "sk-operator", (), 1.0, 3.0, 3.0, 3.0, 0)
    route(monkeypatch, Target(at(a, auth="caller")), Target(keyed))
    _, key = trainee("noor")  # no Codex session linked

    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "small"}, headers={"X-Gateway-Key": key})

    assert response.status_code == 200
    assert (len(a.seen), len(b.seen)) == (0, 1)
    assert b.seen[0].headers["authorization"] == "Bearer sk-operator"
    assert "x-codex-token" not in b.seen[0].headers
    [row] = gateway.log_rows()
    assert (row.upstream, row.attempts) == ("b", 1)


def test_a_codex_session_goes_only_to_the_callers_upstream(gateway, faulty, clock, monkeypatch, settings):
    settings.AUTH_MODE, settings.GATEWAY_IDENTITY = "codex", "key"
    a, b = faulty[0].play(answer(502)), faulty[1]
    route(monkeypatch, Target(at(a, auth="caller")), Target(at(b)))
    account, key = trainee("omar")
    link_codex(account, "codex-token-of-omar")

    with gateway.client() as client:
        client.post("/v1/chat/completions", json={"model": "small"}, headers={"X-Gateway-Key": key})

    assert a.seen[0].headers["x-codex-token"] == "codex-token-of-omar"
    assert "x-codex-token" not in b.seen[0].headers


def test_a_budgeted_caller_is_admitted_and_charged_once_for_the_answer_it_got(
    gateway, faulty, clock, monkeypatch, settings
):
    settings.GATEWAY_IDENTITY = "key"
    price("small", "10", "5", "20")
    price("large", "100", "50", "200")
    Plan.objects.create(tier="tier1", monthly_budget_usd=10, monthly_requests=100, requests_per_minute=None)
    _, key = trainee("pia", tier="tier1")
    a, b = faulty[0].play(then=answer(500)), faulty[1]
    route(monkeypatch, Target(at(a, retries=2)), Target(at(b), model="large"))

    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "small"}, headers={"X-Gateway-Key": key})

    assert response.status_code == 200
    [row] = gateway.log_rows()
    large_call = 3 * 100_000_000 + 4 * 200_000_000  # 3 tokens in, 4 out, in pico-USD
    assert (row.model, row.attempts, row.cost_pico_usd) == ("large", 4, large_call)
    month = MonthlyUsage.objects.get(user_id="pia")
    assert (month.requests, month.cost_pico_usd) == (1, large_call)
