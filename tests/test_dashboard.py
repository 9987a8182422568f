"""The live dashboard shows operators what the gateway is doing right now."""

import re
from datetime import timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
import time_machine
from django.utils import timezone

from accounts.models import Account
from billing import money
from billing.models import MonthlyUsage, Plan
from billing.monthly_usage import month_of
from proxy.models import RequestLog
from tests.personas import busy_hour, logged_request, write_log

pytestmark = pytest.mark.django_db

URL = "/admin/dashboard/"


class _Tables(HTMLParser):
    """Cell texts of each table with an id, row by row (header rows excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id"):
            self._table = dict(attrs)["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def dashboard_tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return {name: [row for row in rows if row] for name, rows in parser.tables.items()}


@pytest.fixture
def now():
    """A fixed instant close to the real one (admin sessions must not expire), clock stopped."""
    moment = timezone.now().replace(second=30, microsecond=0)
    with time_machine.travel(moment, tick=False):
        yield moment


@pytest.fixture
def busy(now, settings):
    settings.FREE_MONTHLY_REQUESTS = 100
    busy_hour(now)
    Plan.objects.update_or_create(tier="tier1", defaults={"monthly_requests": 3000, "monthly_tokens": 2_000_000})
    Plan.objects.update_or_create(tier="tier3", defaults={"monthly_requests": 100_000, "monthly_tokens": None})
    Account.objects.create(user_id="alice", tier="tier1")
    Account.objects.create(user_id="carol", tier="tier3")
    month = month_of(now)
    MonthlyUsage.objects.bulk_create(
        [
            MonthlyUsage(user_id="alice", month=month, requests=150, total_tokens=1_000),
            MonthlyUsage(user_id="bob", month=month, requests=40, total_tokens=0),
            MonthlyUsage(user_id="carol", month=month, requests=2_000, total_tokens=90_000),
            MonthlyUsage(user_id="alice", month=month - timedelta(days=1), requests=9_999),  # last month
        ]
    )


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_logged_in_user_without_staff_status_is_sent_to_log_in(client, django_user_model):
    user = django_user_model.objects.create_user("trainee", password="x")
    client.force_login(user)

    assert client.get(URL).status_code == 302


def test_the_admin_index_links_to_the_dashboard(admin_client):
    assert 'href="/admin/dashboard/"' in admin_client.get("/admin/").content.decode()


def test_it_shows_the_last_five_minutes_per_user(admin_client, busy):
    tables = dashboard_tables(admin_client.get(URL).content.decode())

    assert tables["recent"] == [["alice", "3", "150 ms", "1"], ["bob", "1", "50 ms", "0"]]


def test_it_counts_calls_with_unknown_usage_and_links_to_them(admin_client, busy, now):
    RequestLog.objects.bulk_create(
        [
            logged_request("dana", 200, at=now - timedelta(minutes=1), tokens=None),
            logged_request("dana", 200, at=now - timedelta(minutes=20), tokens=None),
        ]
    )

    page = admin_client.get(URL).content.decode()

    unknown = re.search(r'<p id="unknown-usage">(.*?)</p>', page, re.S)[1]
    assert [int(n) for n in re.findall(r"<strong>(\d+)</strong>", unknown)] == [1, 2]
    assert "/admin/proxy/requestlog/?usage=unknown" in unknown


def test_it_shows_spend_per_minute_and_top_spenders_against_their_budgets(admin_client, busy, now):
    Plan.objects.filter(tier="tier1").update(monthly_budget_usd=Decimal("20"))
    RequestLog.objects.bulk_create(
        [
            logged_request("alice", 200, at=now - timedelta(minutes=2), cost=money.to_pico("0.25")),
            logged_request("alice", 200, at=now - timedelta(minutes=2), cost=money.to_pico("0.5")),
        ]
    )
    MonthlyUsage.objects.filter(user_id="alice", month=month_of(now)).update(
        cost_pico_usd=money.to_pico("5"), unknown_cost_requests=2
    )
    MonthlyUsage.objects.filter(user_id="carol", month=month_of(now)).update(cost_pico_usd=money.to_pico("7.5"))

    page = admin_client.get(URL).content.decode()
    tables = dashboard_tables(page)

    assert page.index('id="top-spenders"') > page.index('id="content"')
    minute = f"{now - timedelta(minutes=2):%H:%M}"
    assert tables["spend-per-minute"] == [[minute, "$0.75", "4"]]  # two more requests of unknown cost
    assert tables["top-spenders"] == [
        ["carol", "Tier 3", "$7.50", "none", "no budget", "0"],
        ["alice", "Tier 1", "$5.00", "$20.00", "25%", "2"],
    ]


def test_it_shows_rate_limit_hits_per_user_over_the_hour(admin_client, busy):
    tables = dashboard_tables(admin_client.get(URL).content.decode())

    assert tables["rate-limited"] == [["bob", "2"], ["alice", "1"], ["carol", "1"]]


def test_it_shows_the_upstream_error_rate(admin_client, busy):
    page = admin_client.get(URL).content.decode()

    error_rate = " ".join(re.search(r'<p id="error-rate">(.*?)</p>', page, re.S).group(1).split())
    assert "Last 5 minutes: <strong>1 of 4 (25.0%)</strong>" in error_rate
    assert "<strong>1 of 7 (14.3%)</strong>" in error_rate


def test_the_upstream_error_rate_counts_upstream_answers_and_unreachable_upstreams_only(admin_client, now):
    write_log(
        [
            logged_request("ada", 500, at=now - timedelta(minutes=1)),  # an upstream's own 500
            logged_request("ada", 503, at=now - timedelta(minutes=1), upstream="default"),
            logged_request("bo", 502, at=now - timedelta(minutes=1)),  # no upstream answered
            logged_request("bo", 503, at=now - timedelta(minutes=1)),  # the database was down
            logged_request("cy", 500, at=now - timedelta(minutes=1), upstream=""),  # the gateway failed
            logged_request("cy", 200, at=now - timedelta(minutes=1)),
        ]
    )
    page = admin_client.get(URL).content.decode()

    error_rate = " ".join(re.search(r'<p id="error-rate">(.*?)</p>', page, re.S).group(1).split())
    assert "Last 5 minutes: <strong>3 of 6 (50.0%)</strong>" in error_rate


def test_it_draws_requests_per_minute_over_the_hour(admin_client, busy, now):
    response = admin_client.get(URL)
    per_minute = response.context["activity"].per_minute
    page = response.content.decode()

    assert len(per_minute) == 60 and per_minute[-1].start == now.replace(second=0)
    assert sum(m.requests for m in per_minute) == 7
    assert [m.rate_limited for m in per_minute if m.start == now.replace(second=0) - timedelta(minutes=30)] == [2]
    assert "<svg" in page and "requests per minute over the last hour" in page.lower()
    assert f"{(now - timedelta(minutes=30)):%H:%M} UTC: 2 requests, 2 rate limited, 0 upstream errors" in page


def test_it_shows_the_months_top_users_against_their_plans(admin_client, busy):
    tables = dashboard_tables(admin_client.get(URL).content.decode())

    assert tables["top-users"] == [
        ["carol", "Tier 3", "2000", "100000", "90000", "unlimited", "2%"],
        ["alice", "Tier 1", "150", "3000", "1000", "2000000", "5%"],
        ["bob", "free", "40", "100", "0", "unlimited", "40%"],
    ]


def test_it_reloads_itself_every_few_seconds(admin_client):
    assert '<meta http-equiv="refresh" content="5">' in admin_client.get(URL).content.decode()


def test_a_wider_window_counts_older_requests(admin_client, busy):
    tables = dashboard_tables(admin_client.get(URL, {"minutes": "35"}).content.decode())

    assert tables["recent"][:2] == [["alice", "3", "150 ms", "1"], ["bob", "3", "17 ms", "2"]]


def test_it_needs_a_bounded_number_of_queries(admin_client, busy, django_assert_max_num_queries):
    # Session and user, then one query per section (the hour per minute, the top users and
    # spenders of the month, the plans once), never one per row.
    with django_assert_max_num_queries(9):
        admin_client.get(URL)
