"""Codex mode: the gateway sends the proven caller's stored Codex token upstream."""

from datetime import timedelta

import openai
import pytest
from django.core.checks import run_checks

from accounts.models import CodexCredential
from tests.personas import link_codex, trainee


@pytest.fixture
def codex_mode(settings):
    settings.AUTH_MODE = "codex"
    settings.GATEWAY_IDENTITY = "key"


def test_the_sdk_works_with_only_a_gateway_key_and_base_url(gateway, upstream, codex_mode):
    account, key = trainee("alice")
    link_codex(account, "codex-access-token-of-alice")
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)

    completion = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert completion.choices[0].message.content.endswith("You said: hi")
    seen = upstream.last.headers
    assert seen["x-codex-token"] == "codex-access-token-of-alice"
    assert "authorization" not in seen
    assert seen["x-forwarded-user"] == "alice"
    assert gateway.log_rows()[0].user_id == "alice"


def test_each_caller_gets_their_own_token(gateway, upstream, codex_mode):
    alice, alices_key = trainee("alice")
    bob, bobs_key = trainee("bob")
    link_codex(alice, "token-alice")
    link_codex(bob, "token-bob")
    with gateway.client() as client:
        client.get("/v1/models", headers={"Authorization": f"Bearer {bobs_key}", "X-User-ID": "alice"})
        to_bob = upstream.last.headers["x-codex-token"]
        client.get("/v1/models", headers={"X-Gateway-Key": alices_key})
        to_alice = upstream.last.headers["x-codex-token"]

    assert (to_bob, to_alice) == ("token-bob", "token-alice")


def test_a_caller_without_a_key_never_reaches_a_stored_token(gateway, upstream, codex_mode):
    alice, _ = trainee("alice")
    link_codex(alice, "token-alice")
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": "alice", "Authorization": "Bearer sk-anything"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("link", "code", "message"),
    [
        (None, "no_codex_session", "No Codex session."),
        (timedelta(minutes=-5), "codex_session_expired", "Your Codex session has expired."),
    ],
)
def test_a_missing_or_expired_session_is_refused_before_anything_is_charged(
    gateway, upstream, codex_mode, settings, link, code, message
):
    settings.RATE_LIMIT_PER_MINUTE = 2
    settings.KEY_CACHE_SECONDS = 0  # a newly linked session applies at once
    account, key = trainee("alice")
    if link is not None:
        link_codex(account, "stale-token", expires_in=link)
    with gateway.client() as client:
        refused = [client.get("/v1/models", headers={"X-Gateway-Key": key}) for _ in range(3)]
        CodexCredential.objects.filter(account=account).delete()
        link_codex(account, "fresh-token")
        admitted = [client.get("/v1/models", headers={"X-Gateway-Key": key}) for _ in range(2)]

    assert {r.status_code for r in refused} == {401}
    assert refused[0].json()["error"]["code"] == code
    assert refused[0].json()["error"]["message"].startswith(message)
    # Had the refusals used up the window, these would be 429.
    assert [r.status_code for r in admitted] == [200, 200]
    assert len(upstream.seen) == 2


def test_codex_mode_with_header_identity_is_a_configuration_error(settings):
    settings.AUTH_MODE = "codex"
    settings.GATEWAY_IDENTITY = "header"

    assert "gateway.E001" in {message.id for message in run_checks(tags=["gateway"])}


def test_codex_mode_with_key_identity_passes_the_check(settings):
    settings.AUTH_MODE = "codex"
    settings.GATEWAY_IDENTITY = "key"

    assert "gateway.E001" not in {message.id for message in run_checks(tags=["gateway"])}
