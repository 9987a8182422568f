"""Operators read the access log in admin: filtered, searched, never edited, never counted in full."""

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gateway_project.large_tables import COUNT_CAP
from proxy.models import RequestLog
from tests.personas import logged_request

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LIST = "/admin/proxy/requestlog/"


def seed_mixed_statuses() -> None:
    RequestLog.objects.bulk_create(
        [
            logged_request("alice", 200, at=NOON),
            logged_request("alice", 429, at=NOON + timedelta(seconds=1)),
            logged_request("bob", 402, at=NOON + timedelta(seconds=2)),
            logged_request("bob", 502, at=NOON + timedelta(seconds=3), endpoint="/v1/embeddings"),
            logged_request("carol", 429, at=NOON + timedelta(days=1), model="gpt-4o-mini"),
        ]
    )


def listed(response) -> list[tuple[str, int]]:
    return [(row.user_id, row.status) for row in response.context["cl"].result_list]


def test_anonymous_visitors_are_sent_to_log_in(client):
    seed_mixed_statuses()
    row = RequestLog.objects.first()
    for url in (LIST, f"{LIST}{row.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_staff_see_the_log_newest_first_with_its_columns(admin_client):
    seed_mixed_statuses()

    response = admin_client.get(LIST)

    assert response.status_code == 200
    assert listed(response) == [("carol", 429), ("bob", 502), ("bob", 402), ("alice", 429), ("alice", 200)]
    page = response.content.decode()
    for header in ("time", "user", "method", "endpoint", "status", "latency", "tokens", "model"):
        assert f">{header.capitalize()}<" in page or f">{header}<" in page.lower()
    assert "100 ms" in page


def test_the_log_cannot_be_added_to_changed_or_deleted(admin_client):
    seed_mixed_statuses()
    row = RequestLog.objects.get(user_id="carol")

    add = admin_client.post(f"{LIST}add/", {"user_id": "mallory", "status": 200})
    change = admin_client.post(f"{LIST}{row.pk}/change/", {"user_id": "mallory", "status": 200})
    delete = admin_client.post(f"{LIST}{row.pk}/delete/", {"post": "yes"})
    bulk_delete = admin_client.post(LIST, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})

    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert RequestLog.objects.count() == 5
    assert RequestLog.objects.get(pk=row.pk).user_id == "carol"
    assert "delete_selected" not in admin_client.get(LIST).content.decode()
    assert bulk_delete.status_code in (200, 302)  # no such action: nothing happens


@pytest.mark.parametrize(
    ("status_class", "expected"),
    [
        ("429", [("carol", 429), ("alice", 429)]),
        ("402", [("bob", 402)]),
        ("5xx", [("bob", 502)]),
        ("4xx", [("carol", 429), ("bob", 402), ("alice", 429)]),
        ("2xx", [("alice", 200)]),
    ],
)
def test_the_status_filter_narrows_the_log_to_one_class(admin_client, status_class, expected):
    seed_mixed_statuses()

    assert listed(admin_client.get(LIST, {"status_class": status_class})) == expected


def test_endpoint_model_and_user_filters_narrow_the_log(admin_client):
    seed_mixed_statuses()

    page = admin_client.get(LIST).content.decode()
    assert "?endpoint=%2Fv1%2Fembeddings" in page and "?model=gpt-4o-mini" in page
    assert listed(admin_client.get(LIST, {"endpoint": "/v1/embeddings"})) == [("bob", 502)]
    assert listed(admin_client.get(LIST, {"model": "gpt-4o-mini"})) == [("carol", 429)]
    assert listed(admin_client.get(LIST, {"q": "bob"})) == [("bob", 502), ("bob", 402)]
    assert listed(admin_client.get(LIST, {"q": "bo"})) == []  # exact ids only: the index answers


def test_the_date_hierarchy_drills_down_to_a_day(admin_client):
    seed_mixed_statuses()

    month = admin_client.get(LIST).content.decode()
    day = admin_client.get(LIST, {"created_at__year": 2026, "created_at__month": 11, "created_at__day": 21})

    # Both rows' days are in one month, so the hierarchy opens on its days.
    assert "created_at__day=20" in month and "created_at__day=21" in month
    assert "created_at__day=22" not in month
    assert listed(day) == [("carol", 429)]


@pytest.fixture
def large_log():
    """100,001 rows, seeded in batches: past COUNT_CAP, so nothing may count them all."""
    batch = [logged_request(f"user{i % 500}", 429 if i % 50 == 0 else 200, at=NOON) for i in range(10_000)]
    for _ in range(10):
        RequestLog.objects.bulk_create(batch, batch_size=2_000)
        for row in batch:
            row.pk = None
    RequestLog.objects.create(
        **{f: getattr(batch[0], f) for f in ("user_id", "method", "endpoint", "ip_hash")},
        status=502,
        latency_ms=1,
        created_at=NOON,
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE requests")  # what autovacuum does on a live table


def _whole_table_counts(queries: list[str]) -> list[str]:
    """COUNT queries with neither a WHERE nor a LIMIT: those read every row."""
    counts = [sql for sql in queries if "COUNT(" in sql.upper()]
    return [sql for sql in counts if not re.search(r"\bWHERE\b|\bLIMIT\b", sql, re.IGNORECASE)]


def test_a_list_over_100k_rows_runs_bounded_queries_and_never_counts_the_table(admin_client, large_log):
    for query in ({}, {"status_class": "429"}, {"created_at__year": "2026"}, {"q": "user7"}, {"model": "gpt-4o"}):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = admin_client.get(LIST, query)
            elapsed = time.perf_counter() - started

        sql = [q["sql"] for q in captured.captured_queries]
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 100
        assert len(sql) <= 10, sql
        assert _whole_table_counts(sql) == [], query
        assert [s for s in sql if "DISTINCT" in s.upper() and "LIMIT" not in s.upper()] == [], query
        print(f"\n{query or 'unfiltered'}: {len(sql)} queries, {elapsed * 1000:.0f} ms\n  " + "\n  ".join(sql))


def test_an_unfiltered_list_over_the_cap_shows_an_estimate(admin_client, large_log):
    page = admin_client.get(LIST).content.decode()
    filtered = admin_client.get(LIST, {"status_class": "2xx"}).content.decode()

    estimate = int(re.search(r"about (\d+) requests", page).group(1))
    assert 90_000 <= estimate <= 110_000
    assert f"at least {COUNT_CAP} requests" in filtered


def test_unknown_usage_shows_as_unknown_and_has_a_filter(admin_client):
    RequestLog.objects.bulk_create(
        [
            logged_request("dana", 200, at=NOON, tokens=12),
            logged_request("erik", 200, at=NOON + timedelta(seconds=1), tokens=None),
        ]
    )

    page = admin_client.get(LIST).content.decode()
    assert "12 (12 in, 0 cached, 0 out)" in page
    assert '<td class="field-tokens">unknown</td>' in page
    assert listed(admin_client.get(LIST, {"usage": "unknown"})) == [("erik", 200)]
    assert listed(admin_client.get(LIST, {"usage": "known"})) == [("dana", 200)]
