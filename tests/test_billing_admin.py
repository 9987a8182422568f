"""Operators see plans, monthly usage and Stripe events in admin; usage and events are read-only."""

from datetime import UTC, date, datetime

import pytest

from billing.models import ModelPrice, MonthlyUsage, Plan, StripeEvent

pytestmark = pytest.mark.django_db

PAGES = ("/admin/billing/plan/", "/admin/billing/monthlyusage/", "/admin/billing/stripeevent/")


@pytest.fixture
def records():
    Plan.objects.update_or_create(tier="tier1", defaults={"monthly_requests": 3000})
    MonthlyUsage.objects.create(user_id="alice", month=date(2026, 11, 1), requests=12, total_tokens=340)
    return StripeEvent.objects.create(
        event_id="evt_1",
        type="checkout.session.completed",
        created=datetime(2026, 11, 1, tzinfo=UTC),
        outcome=StripeEvent.Outcome.APPLIED,
        payload={"id": "evt_1", "data": {"object": {"client_reference_id": "alice"}}},
    )


def test_anonymous_visitors_are_sent_to_log_in(client, records):
    for url in (*PAGES, f"/admin/billing/stripeevent/{records.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_staff_see_plans_usage_and_events(admin_client, records, django_assert_max_num_queries):
    for url in PAGES:
        with django_assert_max_num_queries(10):
            assert admin_client.get(url).status_code == 200
    event_page = admin_client.get(f"/admin/billing/stripeevent/{records.pk}/change/").content.decode()
    assert "client_reference_id" in event_page


def test_usage_and_events_cannot_be_edited(admin_client, records):
    usage = MonthlyUsage.objects.get()

    assert admin_client.post(f"/admin/billing/monthlyusage/{usage.pk}/change/", {"requests": 0}).status_code == 403
    assert admin_client.post(f"/admin/billing/stripeevent/{records.pk}/delete/", {"post": "yes"}).status_code == 403
    assert MonthlyUsage.objects.get().requests == 12


def test_prices_read_as_money_does_everywhere(admin_client):
    ModelPrice.objects.create(
        model="gpt-4o-mini",
        effective_from=date(2026, 11, 1),
        input_per_million="0.15",
        cached_input_per_million="0.075",
        output_per_million="0.6",
    )

    page = admin_client.get("/admin/billing/modelprice/").content.decode()

    assert all(price in page for price in (">$0.15<", ">$0.075<", ">$0.60<"))
    assert "0.150000" not in page


def test_plan_budgets_are_edited_as_money_reads(admin_client):
    Plan.objects.update_or_create(tier="tier2", defaults={"monthly_budget_usd": "25"})

    page = admin_client.get("/admin/billing/plan/").content.decode()

    assert 'value="25.00"' in page and "25.000000" not in page
