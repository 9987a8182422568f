"""Stripe webhooks, posted with real signatures: tiers written once, in order."""

import hashlib
import hmac
import json
import threading
import time

import httpx
import pytest

from accounts.models import Account, TierChange
from billing.models import Plan, StripeEvent

SECRET = "whsec_test_secret"
URL = "/billing/stripe/webhook"


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET


def event(event_id: str, kind: str, obj: dict, created: int = 1_900_000_000) -> dict:
    return {"id": event_id, "object": "event", "type": kind, "created": created, "data": {"object": obj}}


def signed(payload: dict, *, secret: str = SECRET, timestamp: int | None = None) -> tuple[bytes, dict]:
    body = json.dumps(payload).encode()
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={timestamp},v1={signature}", "Content-Type": "application/json"}


def post(client, payload: dict, **signing):
    body, headers = signed(payload, **signing)
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def checkout(
    event_id: str,
    user_id: str,
    tier: str | None = "tier1",
    created: int = 1_900_000_000,
    *,
    kind: str = "checkout.session.completed",
    payment_status: str | None = None,
) -> dict:
    metadata = {"tier": tier} if tier else {}
    session = {
        "object": "checkout.session",
        "client_reference_id": user_id,
        "customer": f"cus_{user_id}",
        "metadata": metadata,
    }
    if payment_status is not None:
        session["payment_status"] = payment_status
    return event(event_id, kind, session, created)


def subscription(event_id: str, kind: str, customer: str, price: str, status: str, created: int) -> dict:
    items = {"object": "list", "data": [{"price": {"id": price}}]}
    obj = {"object": "subscription", "customer": customer, "status": status, "items": items}
    return event(event_id, kind, obj, created)


def history(user_id: str) -> list[tuple[str, str, str, str]]:
    return list(
        TierChange.objects.filter(account__user_id=user_id)
        .order_by("id")
        .values_list("old_tier", "new_tier", "source", "reference")
    )


@pytest.fixture
def priced_plans(db):
    for tier, price in (("tier1", "price_basic"), ("tier2", "price_pro"), ("tier3", "price_team")):
        Plan.objects.update_or_create(tier=tier, defaults={"stripe_price_id": price})


@pytest.mark.django_db
def test_a_completed_checkout_creates_the_account_with_tier_and_customer(client):
    response = post(client, checkout("evt_1", "alice", "tier2"))

    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "applied"}
    account = Account.objects.get(user_id="alice")
    assert (account.tier, account.stripe_customer_id) == ("tier2", "cus_alice")
    assert history("alice") == [("", "tier2", "stripe", "evt_1")]


@pytest.mark.django_db
@pytest.mark.parametrize("payment_status", ["paid", "no_payment_required"])
def test_a_paid_or_free_checkout_grants_the_tier(client, payment_status):
    post(client, checkout("evt_p", "paula", "tier2", payment_status=payment_status))

    assert Account.objects.get(user_id="paula").tier == "tier2"


@pytest.mark.django_db
def test_a_checkout_completed_unpaid_records_the_customer_but_waits_for_the_payment(client):
    response = post(client, checkout("evt_u", "ulla", "tier2", payment_status="unpaid"))

    assert response.json()["outcome"] == "unchanged"
    account = Account.objects.get(user_id="ulla")
    assert (account.tier, account.stripe_customer_id) == ("", "cus_ulla")
    assert StripeEvent.objects.get(event_id="evt_u").detail == "payment pending"
    assert history("ulla") == []


@pytest.mark.django_db
def test_the_delayed_payment_succeeding_grants_the_tier_once(client):
    post(client, checkout("evt_u", "vera", "tier2", 100, payment_status="unpaid"))
    succeeded = checkout(
        "evt_a", "vera", "tier2", 200, kind="checkout.session.async_payment_succeeded", payment_status="paid"
    )

    first = post(client, succeeded)
    again = post(client, succeeded)

    assert (first.json()["outcome"], again.json()["outcome"]) == ("applied", "duplicate")
    assert Account.objects.get(user_id="vera").tier == "tier2"
    assert history("vera") == [("", "tier2", "stripe", "evt_a")]


@pytest.mark.django_db
def test_an_unpaid_completion_arriving_after_the_payment_is_stale(client):
    post(
        client,
        checkout("evt_a", "walt", "tier3", 200, kind="checkout.session.async_payment_succeeded", payment_status="paid"),
    )

    late = post(client, checkout("evt_u", "walt", "tier3", 100, payment_status="unpaid"))

    assert late.json()["outcome"] == "stale"
    assert Account.objects.get(user_id="walt").tier == "tier3"


@pytest.mark.django_db
def test_a_failed_delayed_payment_grants_nothing(client):
    post(client, checkout("evt_u", "xena", "tier1", 100, payment_status="unpaid"))

    failed = post(
        client,
        checkout("evt_f", "xena", "tier1", 200, kind="checkout.session.async_payment_failed", payment_status="unpaid"),
    )

    assert failed.json()["outcome"] == "unhandled"
    assert Account.objects.get(user_id="xena").tier == ""


@pytest.mark.django_db
def test_the_user_can_come_from_metadata(client):
    session = {"object": "checkout.session", "customer": "cus_b", "metadata": {"user_id": "bob", "tier": "tier1"}}

    post(client, event("evt_m", "checkout.session.completed", session))

    assert Account.objects.get(user_id="bob").tier == "tier1"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "tier"),
    [("active", "tier2"), ("trialing", "tier2"), ("canceled", ""), ("unpaid", ""), ("incomplete_expired", "")],
)
def test_subscription_updates_set_the_tier_from_the_price(client, priced_plans, status, tier):
    post(client, checkout("evt_c", "carol", "tier1", created=100))

    response = post(
        client, subscription("evt_s", "customer.subscription.updated", "cus_carol", "price_pro", status, 200)
    )

    assert response.status_code == 200
    assert Account.objects.get(user_id="carol").tier == tier


@pytest.mark.django_db
def test_a_created_subscription_sets_the_tier_and_a_deleted_one_removes_it(client, priced_plans):
    post(client, checkout("evt_c", "dora", None, created=100))
    post(client, subscription("evt_s1", "customer.subscription.created", "cus_dora", "price_team", "active", 200))
    tier_while_subscribed = Account.objects.get(user_id="dora").tier
    post(client, subscription("evt_s2", "customer.subscription.deleted", "cus_dora", "price_team", "canceled", 300))

    assert tier_while_subscribed == "tier3"
    assert Account.objects.get(user_id="dora").tier == ""
    assert history("dora") == [("", "tier3", "stripe", "evt_s1"), ("tier3", "", "stripe", "evt_s2")]


@pytest.mark.django_db
def test_a_replayed_event_has_no_second_effect(client):
    post(client, checkout("evt_1", "erin", "tier1"))
    Account.objects.filter(user_id="erin").update(tier="tier3")  # changed since, e.g. by an operator

    replay = post(client, checkout("evt_1", "erin", "tier1"))

    assert replay.status_code == 200
    assert replay.json()["outcome"] == "duplicate"
    assert Account.objects.get(user_id="erin").tier == "tier3"
    assert len(history("erin")) == 1
    assert StripeEvent.objects.filter(event_id="evt_1").count() == 1


def test_two_deliveries_racing_have_one_effect(gateway):
    body, headers = signed(checkout("evt_race", "fred", "tier2"))
    barrier = threading.Barrier(2)
    results = []

    def deliver():
        barrier.wait()
        results.append(httpx.post(f"{gateway.url}{URL}", content=body, headers=headers, timeout=30).json()["outcome"])

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["applied", "duplicate"]
    assert history("fred") == [("", "tier2", "stripe", "evt_race")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, headers: (body.replace(b"tier1", b"tier3"), headers),
        lambda body, headers: (body, {**headers, "Stripe-Signature": "t=1,v1=deadbeef"}),
        lambda body, headers: (body, {"Content-Type": "application/json"}),
    ],
    ids=["tampered body", "bad signature", "no signature"],
)
def test_a_bad_signature_is_refused_and_changes_nothing(client, tamper):
    body, headers = tamper(*signed(checkout("evt_bad", "gina", "tier1")))

    response = client.post(URL, data=body, content_type="application/json", headers=headers)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not Account.objects.exists() and not StripeEvent.objects.exists()


@pytest.mark.django_db
def test_a_wrong_secret_or_a_stale_timestamp_is_refused(client):
    wrong = post(client, checkout("evt_w", "hugo"), secret="whsec_someone_else")
    stale = post(client, checkout("evt_o", "hugo"), timestamp=int(time.time()) - 301)

    assert (wrong.status_code, stale.status_code) == (400, 400)
    assert not Account.objects.exists()


@pytest.mark.django_db
def test_an_out_of_order_downgrade_is_ignored(client, priced_plans):
    post(client, checkout("evt_c", "iris", None, created=100))
    post(client, subscription("evt_new", "customer.subscription.updated", "cus_iris", "price_team", "active", 300))

    late = post(
        client, subscription("evt_old", "customer.subscription.updated", "cus_iris", "price_basic", "active", 200)
    )

    assert late.json()["outcome"] == "stale"
    assert Account.objects.get(user_id="iris").tier == "tier3"
    assert (
        StripeEvent.objects.get(event_id="evt_old").get_outcome_display()
        == "ignored: older than the last event applied"
    )


@pytest.mark.django_db
def test_unknown_types_and_customers_are_accepted_and_recorded(client):
    unknown_type = post(client, event("evt_x", "invoice.paid", {"object": "invoice"}))
    unknown_customer = post(
        client, subscription("evt_y", "customer.subscription.updated", "cus_nobody", "price_pro", "active", 5)
    )

    assert (unknown_type.status_code, unknown_customer.status_code) == (200, 200)
    assert dict(StripeEvent.objects.values_list("event_id", "outcome")) == {
        "evt_x": "unhandled",
        "evt_y": "unknown_customer",
    }


@pytest.mark.django_db
def test_a_subscription_before_its_checkout_finds_the_account_by_metadata(client, priced_plans):
    Account.objects.create(user_id="jack")
    early = subscription("evt_s", "customer.subscription.created", "cus_new", "price_pro", "active", 100)
    early["data"]["object"]["metadata"] = {"user_id": "jack"}

    post(client, early)

    account = Account.objects.get(user_id="jack")
    assert (account.tier, account.stripe_customer_id) == ("tier2", "cus_new")


@pytest.mark.django_db
def test_without_a_secret_the_webhook_refuses(client, settings):
    settings.STRIPE_WEBHOOK_SECRET = None

    assert post(client, checkout("evt_1", "kim")).status_code == 503


@pytest.mark.django_db
def test_only_post_is_accepted(client):
    assert client.get(URL).status_code == 405
