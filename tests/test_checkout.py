"""Buying a plan: /api/billing and the account page's buttons, against a fake Stripe on loopback
that receives the SDK's real calls (tests/fake_stripe.py)."""

import logging

import httpx
import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils.crypto import get_random_string

from accounts import sessions
from accounts.models import Account, ApiKey
from billing.models import Plan
from tests.personas import trainee
from tests.servers import closed_port_url
from tests.test_stripe_webhook import SECRET, event, signed

CHECKOUT = "/api/billing/checkout"
PORTAL = "/api/billing/portal"
PAGE_CHECKOUT = "/account/billing/checkout"
PAGE_PORTAL = "/account/billing/portal"
CSRF_TOKEN = get_random_string(32)


@pytest.fixture
def priced_plans(db):
    for tier, price in (("tier1", "price_basic"), ("tier2", "price_pro"), ("tier3", "price_team")):
        Plan.objects.update_or_create(tier=tier, defaults={"stripe_price_id": price})


@pytest.fixture
def return_urls(settings):
    settings.STRIPE_SUCCESS_URL = "https://gateway.example/account/?checkout=success"
    settings.STRIPE_CANCEL_URL = "https://gateway.example/account/?checkout=cancelled"
    settings.STRIPE_PORTAL_RETURN_URL = "https://gateway.example/account/"


@pytest.fixture
def api(gateway):
    """The live gateway; afterwards, the keys' last-used times are written (in the background
    otherwise, on a connection the end of the session would find still open)."""
    yield gateway
    gateway.settle()


def customer(user_id: str, *, email: str = "", tier: str = "", stripe_customer_id: str = "") -> tuple[Account, str]:
    account, key = trainee(user_id, tier)
    Account.objects.filter(pk=account.pk).update(email=email, stripe_customer_id=stripe_customer_id)
    account.refresh_from_db()
    return account, key


def api_post(gateway, path: str, key: str | None, json: dict | None = None, **headers: str) -> httpx.Response:
    if key:
        headers["X-Gateway-Key"] = key
    with gateway.client() as client:
        return client.post(path, json=json, headers={k.replace("_", "-"): v for k, v in headers.items()})


def error_code(response) -> str:
    return response.json()["error"]["code"]


# --- the API --------------------------------------------------------------------------


def test_the_api_starts_a_subscription_checkout_for_the_plans_price(api, fake_stripe, priced_plans, return_urls):
    _, key = customer("alice", email="alice@example.com")

    response = api_post(api, CHECKOUT, key, {"tier": "tier2"})

    assert response.status_code == 200
    assert response.json() == {"url": f"{fake_stripe.url}/c/pay/cs_test_1"}
    [call] = fake_stripe.checkouts()
    assert call.form == {
        "mode": "subscription",
        "line_items[0][price]": "price_pro",
        "line_items[0][quantity]": "1",
        "client_reference_id": "alice",
        "metadata[user_id]": "alice",
        "metadata[tier]": "tier2",
        "subscription_data[metadata][user_id]": "alice",
        "subscription_data[metadata][tier]": "tier2",
        "customer_email": "alice@example.com",
        "success_url": "https://gateway.example/account/?checkout=success",
        "cancel_url": "https://gateway.example/account/?checkout=cancelled",
    }
    assert call.headers["authorization"] == "Bearer sk_test_fake"
    assert call.idempotency_key.startswith("checkout-alice-tier2-")


def test_the_accounts_stripe_customer_is_reused_rather_than_its_email(api, fake_stripe, priced_plans):
    _, key = customer("bob", email="bob@example.com", stripe_customer_id="cus_bob")  # a plan cancelled earlier

    assert api_post(api, CHECKOUT, key, {"tier": "tier1"}).status_code == 200

    form = fake_stripe.checkouts()[0].form
    assert form["customer"] == "cus_bob"
    assert "customer_email" not in form


def test_an_account_without_email_lets_stripe_ask_for_it(api, fake_stripe, priced_plans):
    _, key = customer("cleo")

    api_post(api, CHECKOUT, key, {"tier": "tier1"})

    assert not {"customer", "customer_email"} & fake_stripe.checkouts()[0].form.keys()


def test_a_gateway_key_as_bearer_is_accepted_in_header_mode(api, fake_stripe, priced_plans, settings):
    settings.GATEWAY_IDENTITY, settings.AUTH_MODE = "header", "openai"
    _, key = customer("dana")

    response = api_post(api, CHECKOUT, None, {"tier": "tier1"}, Authorization=f"Bearer {key}")

    assert response.status_code == 200
    assert fake_stripe.checkouts()[0].form["client_reference_id"] == "dana"


def test_a_repeated_idempotency_key_gives_the_same_session(api, fake_stripe, priced_plans):
    _, key = customer("erin")

    first = api_post(api, CHECKOUT, key, {"tier": "tier2"}, Idempotency_Key="order-42")
    again = api_post(api, CHECKOUT, key, {"tier": "tier2"}, Idempotency_Key="order-42")
    other = api_post(api, CHECKOUT, key, {"tier": "tier2"}, Idempotency_Key="order-43")
    other_tier = api_post(api, CHECKOUT, key, {"tier": "tier3"}, Idempotency_Key="order-42")

    assert first.json() == again.json()
    assert len({first.json()["url"], other.json()["url"], other_tier.json()["url"]}) == 3
    keys = [call.idempotency_key for call in fake_stripe.checkouts()]
    assert keys[0] == keys[1] and len(set(keys)) == 3
    assert len(fake_stripe.sessions) == 3


def test_without_an_idempotency_key_each_call_is_a_new_session(api, fake_stripe, priced_plans):
    _, key = customer("fred")

    urls = {api_post(api, CHECKOUT, key, {"tier": "tier1"}).json()["url"] for _ in range(2)}

    assert len(urls) == 2
    assert len({call.idempotency_key for call in fake_stripe.checkouts()}) == 2


def test_two_accounts_sending_the_same_idempotency_key_get_sessions_of_their_own(api, fake_stripe, priced_plans):
    _, gina = customer("gina")
    _, hugo = customer("hugo")

    for key in (gina, hugo):
        api_post(api, CHECKOUT, key, {"tier": "tier1"}, Idempotency_Key="retry-1")

    assert [call.form["client_reference_id"] for call in fake_stripe.checkouts()] == ["gina", "hugo"]
    assert len(fake_stripe.sessions) == 2


@pytest.mark.parametrize("idempotency_key", ["x" * 201, "with space"])
def test_an_invalid_idempotency_key_is_refused(api, fake_stripe, priced_plans, idempotency_key):
    _, key = customer("iris")

    response = api_post(api, CHECKOUT, key, {"tier": "tier1"}, Idempotency_Key=idempotency_key)

    assert (response.status_code, error_code(response)) == (400, "invalid_idempotency_key")
    assert fake_stripe.calls == []


def test_the_portal_session_is_for_the_callers_customer(api, fake_stripe, return_urls):
    _, key = customer("jack", tier="tier2", stripe_customer_id="cus_jack")

    response = api_post(api, PORTAL, key)

    assert response.status_code == 200
    assert response.json() == {"url": f"{fake_stripe.url}/p/session/bps_1"}
    [call] = fake_stripe.portals()
    assert call.form == {"customer": "cus_jack", "return_url": "https://gateway.example/account/"}
    assert call.headers["authorization"] == "Bearer sk_test_fake"


def test_the_urls_lead_to_stripes_pages(api, fake_stripe, priced_plans):
    _, key = customer("kim", tier="", stripe_customer_id="cus_kim")

    checkout_page = httpx.get(api_post(api, CHECKOUT, key, {"tier": "tier1"}).json()["url"])
    portal_page = httpx.get(api_post(api, PORTAL, key).json()["url"])

    assert checkout_page.status_code == portal_page.status_code == 200
    assert "Fake Stripe Checkout" in checkout_page.text and "cs_test_1" in checkout_page.text
    assert "Fake Stripe Billing Portal" in portal_page.text and "bps_2" in portal_page.text


def test_without_a_stripe_key_both_endpoints_answer_503(api, priced_plans, settings):
    settings.STRIPE_SECRET_KEY = None
    _, key = customer("lena", stripe_customer_id="cus_lena")

    for path, body in ((CHECKOUT, {"tier": "tier1"}), (PORTAL, None)):
        response = api_post(api, path, key, body)
        assert (response.status_code, error_code(response)) == (503, "billing_not_configured")
        assert "STRIPE_SECRET_KEY" in response.json()["error"]["message"]


@pytest.mark.parametrize("tier", ["gold", "tier3"])
def test_a_tier_that_cannot_be_bought_is_400_naming_those_that_can(api, fake_stripe, priced_plans, tier):
    Plan.objects.filter(tier="tier3").update(stripe_price_id="")
    _, key = customer("mia")

    response = api_post(api, CHECKOUT, key, {"tier": tier})

    assert (response.status_code, error_code(response)) == (400, "plan_not_purchasable")
    assert "Plans for sale: tier1, tier2." in response.json()["error"]["message"]
    assert fake_stripe.calls == []


def test_a_subscribed_account_is_sent_to_the_billing_portal_instead(api, fake_stripe, priced_plans):
    _, key = customer("nina", tier="tier1", stripe_customer_id="cus_nina")

    response = api_post(api, CHECKOUT, key, {"tier": "tier3"})

    assert (response.status_code, error_code(response)) == (409, "already_subscribed")
    assert "billing portal" in response.json()["error"]["message"]
    assert fake_stripe.calls == []


def test_a_tier_given_by_an_operator_does_not_stop_a_purchase(api, fake_stripe, priced_plans):
    _, key = customer("olga", tier="tier1")  # no Stripe customer: nothing is paid for yet

    assert api_post(api, CHECKOUT, key, {"tier": "tier1"}).status_code == 200


def test_the_portal_without_a_stripe_customer_is_409(api, fake_stripe):
    _, key = customer("otto")

    response = api_post(api, PORTAL, key)

    assert (response.status_code, error_code(response)) == (409, "no_billing_account")
    assert "buy a plan first" in response.json()["error"]["message"]
    assert fake_stripe.calls == []


def test_a_transient_stripe_failure_is_retried_with_the_same_key(api, fake_stripe, priced_plans):
    _, key = customer("pia")
    fake_stripe.fail(500, times=1)

    response = api_post(api, CHECKOUT, key, {"tier": "tier1"})

    assert response.status_code == 200
    first, retry = fake_stripe.checkouts()
    assert first.idempotency_key == retry.idempotency_key
    assert len(fake_stripe.sessions) == 1


def test_stripe_failing_is_a_502_and_the_secret_key_is_never_logged(api, fake_stripe, priced_plans, caplog):
    caplog.set_level(logging.DEBUG)
    _, key = customer("quinn")
    fake_stripe.fail(500, times=3)

    response = api_post(api, CHECKOUT, key, {"tier": "tier1"})

    assert (response.status_code, error_code(response)) == (502, "stripe_error")
    assert len(fake_stripe.checkouts()) == 3  # the first call and the SDK's two retries
    assert "sk_test_fake" not in response.text
    logged = [record.getMessage() for record in caplog.records]
    assert not [line for line in logged if "sk_test_fake" in line]
    assert [line for line in logged if "APIError" in line and "req_fake_3" in line]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****fake"}),
        (400, {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}),
        (400, {"type": "invalid_request_error", "code": "resource_missing", "message": "No such price: 'price_pro'"}),
    ],
    ids=["bad key", "card error", "no such price"],
)
def test_a_refusal_by_stripe_is_a_502(api, fake_stripe, priced_plans, caplog, status, error):
    _, key = customer("rosa")
    fake_stripe.fail(status, error)

    response = api_post(api, CHECKOUT, key, {"tier": "tier2"})

    assert (response.status_code, error_code(response)) == (502, "stripe_error")
    assert len(fake_stripe.checkouts()) == 1  # a refusal is not retried
    assert error["message"] not in response.text
    assert not [record for record in caplog.records if "sk_test_fake" in record.getMessage()]


def test_stripe_unreachable_is_a_502(api, fake_stripe, priced_plans, settings):
    settings.STRIPE_API_BASE = closed_port_url()
    _, key = customer("sam", stripe_customer_id="cus_sam")

    for path, body in ((CHECKOUT, {"tier": "tier1"}), (PORTAL, None)):
        response = api_post(api, path, key, body)
        assert (response.status_code, error_code(response)) == (502, "stripe_error")
        assert "could not be reached" in response.json()["error"]["message"]


@pytest.mark.parametrize("identity", ["header", "key"])
def test_x_user_id_alone_is_no_proof_in_any_identity_mode(api, fake_stripe, priced_plans, settings, identity):
    settings.GATEWAY_IDENTITY = identity
    customer("tara", stripe_customer_id="cus_tara")

    for path, body in ((CHECKOUT, {"tier": "tier1"}), (PORTAL, None)):
        response = api_post(api, path, None, body, X_User_ID="tara")
        assert (response.status_code, error_code(response)) == (401, "invalid_api_key")
    assert fake_stripe.calls == []


def test_a_revoked_key_is_refused(api, fake_stripe, priced_plans):
    account, key = customer("uma", stripe_customer_id="cus_uma")
    ApiKey.objects.filter(account=account).revoke()

    response = api_post(api, PORTAL, key)

    assert (response.status_code, error_code(response)) == (401, "invalid_api_key")


def test_a_finished_checkout_gives_the_account_the_plans_tier(api, fake_stripe, priced_plans, settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    _, key = customer("vic", email="vic@example.com")
    api_post(api, CHECKOUT, key, {"tier": "tier3"})
    session = fake_stripe.sessions["cs_test_1"]

    # What Stripe sends once the customer has paid on the Checkout page.
    paid = {**session, "status": "complete", "payment_status": "paid", "customer": "cus_vic"}
    body, headers = signed(event("evt_paid", "checkout.session.completed", paid))
    delivered = httpx.post(f"{api.url}/billing/stripe/webhook", content=body, headers=headers)

    assert delivered.json()["outcome"] == "applied"
    account = Account.objects.get(user_id="vic")
    assert (account.tier, account.stripe_customer_id) == ("tier3", "cus_vic")
    assert api_post(api, CHECKOUT, key, {"tier": "tier1"}).status_code == 409
    assert api_post(api, PORTAL, key).status_code == 200
    assert fake_stripe.portals()[0].form["customer"] == "cus_vic"


# --- the account page's buttons -------------------------------------------------------


def signed_in(account: Account) -> Client:
    """A browser signed in to the account page, holding a CSRF cookie; CSRF is enforced."""
    client = Client(enforce_csrf_checks=True)
    session = client.session
    session[sessions.SESSION_KEY] = account.pk
    session[sessions.PROOF_KEY] = sessions.by_key(ApiKey.objects.issue(account)[0])
    session.save()
    client.cookies["csrftoken"] = CSRF_TOKEN
    return client


def press(client: Client, path: str, **fields: str):
    return client.post(path, {"csrfmiddlewaretoken": CSRF_TOKEN, **fields})


def flashed(response) -> list[str]:
    return [message.message for message in get_messages(response.wsgi_request)]


@pytest.mark.django_db
def test_the_upgrade_button_sends_the_browser_to_stripe_checkout(fake_stripe, priced_plans, return_urls):
    account, _ = customer("wes", email="wes@example.com")

    response = press(signed_in(account), PAGE_CHECKOUT, tier="tier2", nonce="n1")

    assert response.status_code == 303
    assert response["Location"] == f"{fake_stripe.url}/c/pay/cs_test_1"
    [call] = fake_stripe.checkouts()
    assert (call.form["line_items[0][price]"], call.form["customer_email"]) == ("price_pro", "wes@example.com")
    assert call.form["subscription_data[metadata][user_id]"] == "wes"
    assert call.form["success_url"] == "https://gateway.example/account/?checkout=success"
    assert call.idempotency_key.startswith("checkout-wes-tier2-")


@pytest.mark.django_db
def test_the_same_form_posted_twice_is_one_checkout_session(fake_stripe, priced_plans):
    account, _ = customer("xia")
    client = signed_in(account)

    first = press(client, PAGE_CHECKOUT, tier="tier1", nonce="form-1")
    double = press(client, PAGE_CHECKOUT, tier="tier1", nonce="form-1")
    next_visit = press(client, PAGE_CHECKOUT, tier="tier1", nonce="form-2")

    assert first["Location"] == double["Location"] != next_visit["Location"]
    assert len(fake_stripe.sessions) == 2


@pytest.mark.django_db
def test_the_manage_billing_button_opens_the_portal_of_the_accounts_customer(fake_stripe, return_urls):
    account, _ = customer("yuri", tier="tier1", stripe_customer_id="cus_yuri")

    response = press(signed_in(account), PAGE_PORTAL)

    assert (response.status_code, response["Location"]) == (303, f"{fake_stripe.url}/p/session/bps_1")
    assert fake_stripe.portals()[0].form == {"customer": "cus_yuri", "return_url": "https://gateway.example/account/"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "fields", "account_fields", "reason"),
    [
        (PAGE_CHECKOUT, {"tier": "tier1"}, {"tier": "tier2", "stripe_customer_id": "cus_z"}, "billing portal"),
        (PAGE_CHECKOUT, {"tier": "platinum"}, {}, "Plans for sale: tier1, tier2, tier3."),
        (PAGE_PORTAL, {}, {}, "buy a plan first"),
    ],
    ids=["already subscribed", "unknown tier", "no customer"],
)
def test_a_refusal_returns_to_the_account_page_with_the_reason(
    fake_stripe, priced_plans, path, fields, account_fields, reason
):
    account, _ = customer("zoe", **account_fields)

    response = press(signed_in(account), path, **fields)

    assert (response.status_code, response["Location"]) == (303, "/account/")
    [message] = flashed(response)
    assert reason in message
    assert fake_stripe.calls == []


@pytest.mark.django_db
def test_stripe_failing_returns_to_the_account_page_with_the_reason(fake_stripe, priced_plans):
    account, _ = customer("abe")
    fake_stripe.fail(402, {"type": "card_error", "message": "declined"})

    response = press(signed_in(account), PAGE_CHECKOUT, tier="tier1", nonce="n")

    assert (response.status_code, response["Location"]) == (303, "/account/")
    assert "Stripe refused" in flashed(response)[0]


@pytest.mark.django_db
def test_without_a_stripe_key_the_buttons_explain_why(priced_plans, settings):
    settings.STRIPE_SECRET_KEY = None
    account, _ = customer("bea", stripe_customer_id="cus_bea")

    for path in (PAGE_CHECKOUT, PAGE_PORTAL):
        response = press(signed_in(account), path, tier="tier1")
        assert response["Location"] == "/account/"
        assert "STRIPE_SECRET_KEY" in flashed(response)[0]


@pytest.mark.django_db
@pytest.mark.parametrize("path", [PAGE_CHECKOUT, PAGE_PORTAL])
def test_a_form_without_the_csrf_token_is_refused(fake_stripe, priced_plans, path):
    account, _ = customer("cyd", stripe_customer_id="cus_cyd")

    response = signed_in(account).post(path, {"tier": "tier1", "nonce": "n"})

    assert response.status_code == 403
    assert fake_stripe.calls == []


@pytest.mark.django_db
@pytest.mark.parametrize("path", [PAGE_CHECKOUT, PAGE_PORTAL])
def test_the_buttons_need_a_signed_in_customer_and_a_post(fake_stripe, priced_plans, path):
    account, _ = customer("dov", stripe_customer_id="cus_dov")
    anonymous = Client(enforce_csrf_checks=True)
    anonymous.cookies["csrftoken"] = CSRF_TOKEN

    signed_out = press(anonymous, path, tier="tier1")
    read = signed_in(account).get(path)

    assert (signed_out.status_code, signed_out["Location"]) == (302, "/account/sign-in/")
    assert read.status_code == 405
    assert fake_stripe.calls == []
