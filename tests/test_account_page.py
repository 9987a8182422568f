"""A signed-in customer's page: this month's use as /api/usage counts it, their keys, their
Codex session; every change a POST of their own account's things only."""

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts import identity
from accounts.models import ApiKey, CodexCredential, hash_key
from billing.models import MonthlyUsage, Plan
from gateway_project.lib import process_state
from tests.personas import link_codex, logged_request, trainee, write_log

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
ACCESS_TOKEN = "eyJhbGciOiJub25lIn0.eyJleHAiOjIwMDAwMDAwMDB9.codex-access-token-secret"
REFRESH_TOKEN = "rt_codex-refresh-token-secret"


@pytest.fixture(autouse=True)
def fresh_caches():
    process_state.reset()


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def alice():
    return trainee("alice", tier="tier1")


@pytest.fixture
def customer(alice) -> Client:
    client = Client()
    assert client.post("/account/sign-in/", {"key": alice[1]}).status_code == 302
    return client


def auth_json(access: str = ACCESS_TOKEN, refresh: str = REFRESH_TOKEN) -> SimpleUploadedFile:
    document = {
        "OPENAI_API_KEY": None,
        "tokens": {"id_token": "id.token.x", "access_token": access, "refresh_token": refresh, "account_id": "acc"},
        "last_refresh": "2026-11-18T11:00:00Z",
    }
    return SimpleUploadedFile("auth.json", json.dumps(document).encode(), content_type="application/json")


def test_the_page_shows_the_plan_and_this_months_use_as_the_usage_api_counts_it(gateway, alice, customer, settings):
    _, raw_key = alice
    settings.GATEWAY_IDENTITY = "key"
    Plan.objects.update_or_create(
        tier="tier1", defaults={"monthly_requests": 1000, "monthly_tokens": 2_000_000, "monthly_budget_usd": "25"}
    )
    MonthlyUsage.objects.create(
        user_id="alice",
        month=NOW.date().replace(day=1),
        requests=412,
        total_tokens=123_456,
        input_tokens=100_000,
        output_tokens=23_456,
        cost_pico_usd=1_234_500_000_000,
        unknown_usage_requests=2,
        unknown_cost_requests=3,
    )

    page = customer.get("/account/").text
    with gateway.client() as client:
        api = client.get("/api/usage", headers={"X-Gateway-Key": raw_key}).json()

    assert api["plan"] == "Tier 1" and api["requests"] == {"used": 412, "limit": 1000}
    assert '<span id="plan-name">Tier 1</span>' in page
    assert f"{api['requests']['used']:,}" in page and "of 1,000" in page
    assert f"{api['tokens']['used']:,}" in page and "of 2,000,000" in page
    assert "$1.2345" in page and api["spend"]["used_usd"] == "1.2345" and "of $25.00" in page
    assert "2 calls had no usage reported" in page and "3 calls of unknown cost" in page
    assert "resets on December 1" in page


def test_the_chart_has_a_bar_per_day_with_use(alice, customer):
    write_log(
        [
            logged_request("alice", at=NOW - timedelta(days=2), tokens=300, cost=2_000_000_000),
            logged_request("alice", at=NOW - timedelta(days=2, hours=1), tokens=200, cost=1_000_000_000),
            logged_request("alice", at=NOW, tokens=50, cost=None),
            logged_request("bob", at=NOW, tokens=999),
            logged_request("alice", at=NOW - timedelta(days=40), tokens=999),  # last month
        ]
    )

    page = customer.get("/account/").text

    assert page.count('<rect class="bar"') == 2
    assert "Nov 16: 2 requests, 500 tokens, $0.003" in page
    assert "Nov 18: 1 request, 50 tokens" in page


def test_a_new_key_is_shown_once_and_works(alice, customer):
    response = customer.post("/account/keys/", {"name": "notebook"})

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    raw_key = response.context["new_key"]
    assert raw_key in response.text
    key = ApiKey.objects.get(key_hash=hash_key(raw_key))
    assert key.account == alice[0] and key.name == "notebook" and key.is_active
    again = customer.get("/account/").text
    assert raw_key not in again and key.prefix in again and "notebook" in again


def test_keys_are_revoked_and_forgotten_at_once(alice, customer):
    account, _ = alice
    key, _ = ApiKey.objects.issue(account, name="notebook")
    identity._key_cache._entries[key.key_hash] = identity._Entry(0.0, None, "cached caller")

    response = customer.post(f"/account/keys/{key.pk}/revoke")

    assert response.status_code == 302
    key.refresh_from_db()
    assert not key.is_active
    assert identity._key_cache._entries[key.key_hash].loaded_at == float("-inf")
    assert "is revoked" in customer.get("/account/").text


@pytest.mark.parametrize(
    ("cache_seconds", "check_ms", "sentence"),
    [
        (10, 500, "A revoked key is refused within a second everywhere."),
        (0, 500, "A revoked key is refused at once everywhere."),
        (10, 0, "A revoked key is refused at once everywhere."),
    ],
)
def test_the_revocation_delay_reads_as_english(customer, settings, cache_seconds, check_ms, sentence):
    settings.KEY_CACHE_SECONDS = cache_seconds
    settings.CHANGE_CHECK_MS = check_ms

    page = customer.get("/account/").text

    assert f'<p class="muted" id="revocation-delay">{sentence}</p>' in page


def test_revoking_the_key_signed_in_with_ends_the_session(alice, customer):
    key = ApiKey.objects.get(account=alice[0])
    response = customer.post(f"/account/keys/{key.pk}/revoke", follow=True)
    assert response.redirect_chain[-1][0] == "/account/sign-in/"


def test_nobody_revokes_another_accounts_key(customer):
    _, bobs_key = trainee("bob")
    bob = ApiKey.objects.get(key_hash=hash_key(bobs_key))

    assert customer.post(f"/account/keys/{bob.pk}/revoke").status_code == 404
    bob.refresh_from_db()
    assert bob.is_active


def test_active_keys_are_capped(alice, customer):
    for _ in range(19):
        ApiKey.objects.issue(alice[0])
    response = customer.post("/account/keys/", {"name": "one too many"})
    assert response.status_code == 400
    assert "20 active keys" in response.text
    assert ApiKey.objects.filter(account=alice[0]).count() == 20


def test_changes_are_posts_under_csrf(alice):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/account/sign-in/")
    client.post("/account/sign-in/", {"key": alice[1], "csrfmiddlewaretoken": page.cookies["csrftoken"].value})

    assert client.get("/account/keys/").status_code == 405
    assert client.post("/account/keys/", {"name": "x"}).status_code == 403
    assert ApiKey.objects.filter(account=alice[0]).count() == 1


def test_a_codex_auth_json_links_the_session_and_its_tokens_are_never_shown(alice, customer, caplog):
    caplog.set_level(logging.DEBUG)
    response = customer.post("/account/codex/", {"auth_json": auth_json()})

    assert response.status_code == 302
    credential = CodexCredential.objects.get(account=alice[0])
    assert credential.access_token == ACCESS_TOKEN and credential.refresh_token == REFRESH_TOKEN
    assert credential.expires_at == datetime.fromtimestamp(2_000_000_000, tz=UTC)
    page = customer.get("/account/").text
    assert "linked" in page and "2033-05-18 03:33" in page
    for secret in (ACCESS_TOKEN, REFRESH_TOKEN, "codex-access-token-secret"):
        assert secret not in page
        assert secret not in caplog.text


def test_the_codex_status_shows_refreshes_and_failures(alice, customer):
    credential = link_codex(alice[0], ACCESS_TOKEN, expires_in=timedelta(minutes=-5))
    credential.last_refresh_error = "HTTP 400 invalid_grant"
    credential.last_refreshed_at = NOW - timedelta(hours=3)
    credential.save()

    page = customer.get("/account/").text

    assert "linked, expired" in page
    assert "HTTP 400 invalid_grant" in page and "2026-11-18 09:00" in page


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"tokens": {"id_token": "x"}}', "has no access_token"),
        (b"{not json", "does not parse"),
        (b"\xff\xfe\x00binary", "This file is not text"),
        (b"", "The submitted file is empty"),
        (b"x" * 70_000, "larger than an auth.json"),
    ],
)
def test_a_file_that_is_not_an_auth_json_is_refused_clearly(alice, customer, content, message):
    upload = SimpleUploadedFile("auth.json", content)
    response = customer.post("/account/codex/", {"auth_json": upload})

    assert response.status_code == 400
    assert message in response.text
    assert not CodexCredential.objects.filter(account=alice[0]).exists()


def test_a_codex_session_is_unlinked(alice, customer):
    link_codex(alice[0], ACCESS_TOKEN)
    assert customer.post("/account/codex/unlink").status_code == 302
    assert not CodexCredential.objects.filter(account=alice[0]).exists()
    assert "not linked" in customer.get("/account/").text


def test_billing_is_hidden_while_stripe_is_not_configured(customer, settings):
    settings.STRIPE_SECRET_KEY = None
    Plan.objects.update_or_create(tier="tier2", defaults={"stripe_price_id": "price_tier2"})
    page = customer.get("/account/").text
    assert 'id="billing"' not in page and "Upgrade" not in page


def jwt(claims: dict) -> str:
    import base64  # here, not at the top: this file's head is another engineer's

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.codex-access-token-secret"


def upload(document: dict) -> SimpleUploadedFile:
    return SimpleUploadedFile("auth.json", json.dumps(document).encode(), content_type="application/json")


CRAFTED_AUTH_JSONS = [
    pytest.param({"tokens": {"access_token": jwt({"exp": 1e20})}}, "exp claim is not a time", id="exp 1e20"),
    pytest.param({"tokens": {"access_token": jwt({"exp": -1e20})}}, "exp claim is not a time", id="exp -1e20"),
    pytest.param({"tokens": {"access_token": ACCESS_TOKEN}, "expires_in": 1e30}, "expires_in is not", id="in 1e30"),
    pytest.param({"tokens": {"access_token": ACCESS_TOKEN}, "expires_at": "soon"}, "expires_at is not", id="at soon"),
    pytest.param({"tokens": {"access_token": ACCESS_TOKEN}, "expires_in": True}, "expires_in is not", id="in true"),
    pytest.param(
        {"tokens": {"access_token": "codex-access-token-secret\nx"}}, "not a single word of printable", id="newline"
    ),
    pytest.param(
        {"tokens": {"access_token": "codex-access-token-secret x"}}, "not a single word of printable", id="space"
    ),
    pytest.param(
        {"tokens": {"access_token": "codex-access-token-secret\x1b"}}, "not a single word of printable", id="control"
    ),
    pytest.param({"tokens": {"access_token": "a" * 17_000}}, "longer than 16 KiB", id="too long"),
]


@pytest.mark.parametrize(("document", "message"), CRAFTED_AUTH_JSONS)
def test_a_crafted_auth_json_is_refused_clearly_and_nothing_is_stored(alice, customer, document, message):
    response = customer.post("/account/codex/", {"auth_json": upload(document)})

    assert response.status_code == 400
    assert message in response.text and "Choose the auth.json that" in response.text
    assert "codex-access-token-secret" not in response.text and "a" * 100 not in response.text
    assert not CodexCredential.objects.filter(account=alice[0]).exists()


@pytest.mark.parametrize(
    ("extra", "expires_at"),
    [
        pytest.param({"expires_in": 3600}, NOW + timedelta(hours=1), id="expires_in"),
        pytest.param({"expires_at": 1_900_000_000}, datetime.fromtimestamp(1_900_000_000, tz=UTC), id="expires_at"),
        pytest.param({"expires_in": None}, datetime.fromtimestamp(2_000_000_000, tz=UTC), id="null: the jwt's"),
    ],
)
def test_a_valid_auth_json_with_an_expiry_links_the_session(alice, customer, extra, expires_at):
    document = {"tokens": {"access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN}, **extra}

    assert customer.post("/account/codex/", {"auth_json": upload(document)}).status_code == 302

    assert CodexCredential.objects.get(account=alice[0]).expires_at == expires_at


def test_a_new_session_does_not_show_the_old_ones_last_refresh(alice, customer):
    credential = link_codex(alice[0], "at-old", refresh_token="rt-old")
    credential.last_refreshed_at = NOW - timedelta(hours=3)
    credential.last_refresh_error = "HTTP 400 invalid_grant"
    credential.save()

    assert customer.post("/account/codex/", {"auth_json": auth_json()}).status_code == 302

    status = customer.get("/account/").text.split('id="codex-status"')[1].split("</table>")[0]
    assert "never" in status and "2026-11-18 09:00" not in status and "invalid_grant" not in status


@pytest.fixture(autouse=True)
def fresh_sign_in_counters():
    """Each test signs in from 127.0.0.1 with the clock stopped: without this, the file's tests
    together pass signin.ATTEMPTS_PER_IP within one window and the later ones get a 429."""
    from django.core.cache import cache  # here, not at the top: this file's head is another engineer's

    cache.clear()
