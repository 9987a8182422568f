"""The `user_summary` view totals the access log per user (over its rollups), and operators read it in admin."""

from datetime import UTC, datetime, timedelta

import pytest

from proxy.models import RequestLog, UserSummary
from tests.personas import logged_request, write_log

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LIST = "/admin/proxy/usersummary/"


@pytest.fixture
def log():
    write_log(
        [
            logged_request("alice", 200, at=NOON, latency_ms=100, tokens=30),
            logged_request("alice", 429, at=NOON + timedelta(minutes=1), latency_ms=2),
            logged_request("alice", 502, at=NOON + timedelta(minutes=2), latency_ms=300),
            logged_request("bob", 200, at=NOON + timedelta(minutes=3), latency_ms=50, tokens=12),
        ]
    )


def test_the_view_totals_each_users_requests_errors_429s_tokens_and_latency(log):
    alice = UserSummary.objects.get(user_id="alice")
    bob = UserSummary.objects.get(user_id="bob")

    assert (alice.requests, alice.errors, alice.rate_limited, alice.total_tokens) == (3, 2, 1, 30)
    assert alice.avg_latency_ms == pytest.approx(134.0)
    assert (alice.first_seen, alice.last_seen) == (NOON, NOON + timedelta(minutes=2))
    assert (bob.requests, bob.errors, bob.rate_limited, bob.total_tokens) == (1, 0, 0, 12)
    assert alice.pk != bob.pk


def test_anonymous_visitors_are_sent_to_log_in(client, log):
    alice = UserSummary.objects.get(user_id="alice")
    for url in (LIST, f"{LIST}{alice.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_staff_see_users_most_recently_seen_first(admin_client, log):
    response = admin_client.get(LIST)

    assert response.status_code == 200
    assert [row.user_id for row in response.context["cl"].result_list] == ["bob", "alice"]
    assert "134 ms" in response.content.decode()


def test_one_users_summary_links_to_their_requests(admin_client, log):
    alice = UserSummary.objects.get(user_id="alice")

    page = admin_client.get(f"{LIST}{alice.pk}/change/").content.decode()

    assert "134 ms" in page
    assert 'href="/admin/proxy/requestlog/?q=alice"' in page


def test_summaries_cannot_be_added_changed_or_deleted(admin_client, log):
    alice = UserSummary.objects.get(user_id="alice")

    assert admin_client.post(f"{LIST}add/", {}).status_code == 403
    assert admin_client.post(f"{LIST}{alice.pk}/change/", {"requests": 0}).status_code == 403
    assert admin_client.post(f"{LIST}{alice.pk}/delete/", {"post": "yes"}).status_code == 403
    assert RequestLog.objects.count() == 4
