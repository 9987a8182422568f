"""The account page's plans: each plan on offer says what it gives and costs, next to the
customer's own. Prices come from Stripe (tests/fake_stripe.py on loopback, the SDK's real
calls) and are kept; whatever Stripe does, the page renders."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from accounts.models import Account
from billing.models import Plan
from tests.personas import trainee
from tests.servers import closed_port_url
from tests.test_dashboard import dashboard_tables

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
UNKNOWN = "shown at checkout"


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def stripe_prices(fake_stripe, settings):
    settings.RATE_LIMIT_PER_MINUTE = 50
    settings.FREE_MONTHLY_REQUESTS = 100
    settings.FREE_MONTHLY_TOKENS = None
    settings.FREE_MONTHLY_BUDGET = None
    plans = {
        "tier1": ("price_basic", 1_000, 2_000_000, "5", None),
        "tier2": ("price_pro", 10_000, None, "25", 120),
        "tier3": ("price_team", None, None, None, 600),
    }
    for tier, (price, requests, tokens, budget, per_minute) in plans.items():
        Plan.objects.update_or_create(
            tier=tier,
            defaults={
                "stripe_price_id": price,
                "monthly_requests": requests,
                "monthly_tokens": tokens,
                "monthly_budget_usd": budget,
                "requests_per_minute": per_minute,
            },
        )
    fake_stripe.add_price("price_basic", 500)
    fake_stripe.add_price("price_pro", 2_000)
    fake_stripe.add_price("price_team", 200_000, interval="year")
    return fake_stripe


def account_page(user_id: str, tier: str = "") -> str:
    _, key = trainee(user_id, tier)
    client = Client()
    assert client.post("/account/sign-in/", {"key": key}).status_code == 302
    response = client.get("/account/")
    assert response.status_code == 200
    return response.text


def plan_rows(page: str) -> list[list[str]]:
    return dashboard_tables(page)["plans"]


def test_each_plan_on_offer_says_what_it_gives_and_costs_next_to_the_customers_own(stripe_prices):
    rows = plan_rows(account_page("alice", "tier1"))

    assert rows == [
        ["Tier 1 (yours)", "$5.00 a month", "1,000", "2,000,000", "$5.00", "50", ""],
        ["Tier 2", "$20.00 a month", "10,000", "unlimited", "$25.00", "120", "Upgrade to Tier 2"],
        ["Tier 3", "$2,000.00 a year", "unlimited", "unlimited", "unlimited", "600", "Upgrade to Tier 3"],
    ]


def test_a_customer_without_a_plan_compares_the_free_limits(stripe_prices):
    rows = plan_rows(account_page("bob"))

    assert rows[0] == ["Free (yours)", "free", "100", "unlimited", "unlimited", "50", ""]
    assert [row[0] for row in rows[1:]] == ["Tier 1", "Tier 2", "Tier 3"]


def test_prices_are_asked_of_stripe_once_and_kept(stripe_prices, clock):
    account_page("carol", "tier1")
    account_page("dan", "tier1")

    assert len(stripe_prices.calls_to("/v1/prices/price_pro")) == 1
    assert stripe_prices.calls_to("/v1/prices/price_pro")[0].headers["authorization"] == "Bearer sk_test_fake"
    clock.shift(timedelta(hours=1, seconds=1))
    account_page("erin", "tier1")
    assert len(stripe_prices.calls_to("/v1/prices/price_pro")) == 2


def test_while_stripe_fails_the_page_shows_the_plans_without_prices_then_with_them(stripe_prices, clock, caplog):
    stripe_prices.fail(500, times=3)

    with caplog.at_level(logging.WARNING, logger="billing.checkout"):
        rows = plan_rows(account_page("frank", "tier1"))

    assert [row[1] for row in rows] == ["—", UNKNOWN, UNKNOWN]
    assert rows[1][-1] == "Upgrade to Tier 2"  # still for sale: Checkout shows the price
    assert "Stripe did not give the price price_pro" in caplog.text and "sk_test_fake" not in caplog.text
    # Not asked again at every page view while it fails...
    account_page("gina", "tier1")
    assert len(stripe_prices.calls_to("/v1/prices/price_pro")) == 1
    # ...but a minute later.
    clock.shift(timedelta(minutes=1, seconds=1))
    assert [row[1] for row in plan_rows(account_page("hal", "tier1"))][1:] == ["$20.00 a month", "$2,000.00 a year"]


def test_while_stripe_is_unreachable_the_page_renders_and_asks_it_once(stripe_prices, settings, caplog):
    settings.STRIPE_API_BASE = closed_port_url()

    with caplog.at_level(logging.WARNING, logger="billing.checkout"):
        rows = plan_rows(account_page("ivy", "tier1"))

    assert [row[1] for row in rows] == ["—", UNKNOWN, UNKNOWN]
    # One connection refused, and the other prices are not asked for (each would wait as long).
    assert caplog.text.count("Stripe did not give the price") == 1
    assert [row[-1] for row in rows[1:]] == ["Upgrade to Tier 2", "Upgrade to Tier 3"]


@pytest.mark.parametrize(
    ("price", "text"),
    [
        ({"unit_amount": 1_900, "currency": "eur"}, "19.00 EUR a month"),
        ({"unit_amount": 3_000, "currency": "jpy"}, "3,000 JPY a month"),
        ({"unit_amount": 6_000, "interval": "month", "count": 3}, "$60.00 every 3 months"),
        ({"unit_amount": 999, "interval": None}, "$9.99"),
        ({"unit_amount": None}, UNKNOWN),  # tiered: only Checkout can say
    ],
)
def test_a_price_reads_as_stripe_charges_it(stripe_prices, price, text):
    stripe_prices.add_price("price_pro", **price)

    assert plan_rows(account_page("jo", "tier1"))[1][1] == text


def test_a_price_stripe_does_not_know_is_left_to_checkout(stripe_prices):
    del stripe_prices.prices["price_pro"]

    assert plan_rows(account_page("kim", "tier1"))[1][1] == UNKNOWN


def test_a_subscriber_changes_plan_in_the_portal_and_stripe_is_not_asked(stripe_prices):
    _, key = trainee("lee", "tier2")
    Account.objects.filter(user_id="lee").update(stripe_customer_id="cus_lee")
    client = Client()
    client.post("/account/sign-in/", {"key": key})
    page = client.get("/account/").text

    assert 'id="plans"' not in page and 'id="manage-billing"' in page
    assert stripe_prices.calls == []
