"""Operators read the access log in admin: filtered, searched, never edited, never counted in full."""

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gateway_project.lib import large_tables
from gateway_project.lib.large_tables import FILTERED_COUNT_CAP
from proxy.admin import ModelFilter, RequestLogAdmin
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


def test_the_upstream_filter_tells_upstream_answers_from_the_gateways_own(admin_client):
    seed_mixed_statuses()

    page = admin_client.get(LIST).content.decode()
    assert "?upstream=default" in page and "none (the gateway&#x27;s own answer)" in page
    assert listed(admin_client.get(LIST, {"upstream": "default"})) == [("alice", 200)]
    assert listed(admin_client.get(LIST, {"upstream": "-"})) == [
        ("carol", 429),
        ("bob", 502),
        ("bob", 402),
        ("alice", 429),
    ]


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
        # Session and user, the floor of the recent values, the values of two filters, the
        # upstream names (a small table), count, estimate, page, date hierarchy; a date range
        # adds three (its ids).
        assert len(sql) <= 13, sql
        assert _whole_table_counts(sql) == [], query
        assert [s for s in sql if "DISTINCT" in s.upper() and "LIMIT" not in s.upper()] == [], query
        print(f"\n{query or 'unfiltered'}: {len(sql)} queries, {elapsed * 1000:.0f} ms\n  " + "\n  ".join(sql))


def test_an_unfiltered_list_over_the_cap_shows_an_estimate(admin_client, large_log):
    page = admin_client.get(LIST).content.decode()
    filtered = admin_client.get(LIST, {"status_class": "2xx"}).content.decode()

    estimate = int(re.search(r"about (\d+) requests", page).group(1))
    assert 90_000 <= estimate <= 110_000
    assert f"at least {FILTERED_COUNT_CAP} requests" in filtered


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


def _ids(response) -> list[int]:
    return [row.pk for row in response.context["cl"].result_list]


def seed_out_of_order_day() -> datetime:
    """Rows around one day (2026-10-16), inserted with ids out of time order at its edges:
    the smallest and the largest ids of the log are in the day, rows of the days around it
    got ids in between (as when several workers write batches)."""
    day = datetime(2026, 10, 16, tzinfo=UTC)
    times = [
        day + timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999),  # last instant of the day
        day - timedelta(hours=12),
        day,  # first instant of the day
        day + timedelta(days=1),  # next day's first instant: not in the day
        day + timedelta(hours=12),
        day - timedelta(microseconds=1),
        day + timedelta(days=2),
        day + timedelta(seconds=1),
    ]
    for number, at in enumerate(times):  # one by one: ids in this order
        RequestLog.objects.bulk_create([logged_request(f"u{number}", 502 if number % 2 else 200, at=at)])
    RequestLog.objects.bulk_create([logged_request("edge-last", at=day + timedelta(hours=6))])
    return day


def test_a_date_range_lists_exactly_its_rows_when_ids_are_out_of_time_order(admin_client, monkeypatch):
    day = seed_out_of_order_day()
    in_day = RequestLog.objects.filter(created_at__gte=day, created_at__lt=day + timedelta(days=1))
    expected = list(in_day.order_by("-id").values_list("id", flat=True))
    assert expected[0] == RequestLog.objects.latest("id").pk  # the edges are in the day
    assert expected[-1] == RequestLog.objects.earliest("id").pk
    queries = [
        {"created_at__year": "2026", "created_at__month": "10", "created_at__day": "16"},  # date hierarchy
        {"created_at__gte": "2026-10-16 00:00:00+00:00", "created_at__lt": "2026-10-17 00:00:00+00:00"},  # filter
    ]
    for query in queries:
        with CaptureQueriesContext(connection) as captured:
            bounded = admin_client.get(LIST, query)
        listing = [q["sql"] for q in captured.captured_queries if "LIMIT 100" in q["sql"]]
        assert _ids(bounded) == expected, query
        assert any('"requests"."id" >=' in sql and '"requests"."id" <=' in sql for sql in listing), listing

    # The same rows without the id bounds, in any combination with the other filters.
    wider = [
        *queries,
        {"created_at__year": "2026", "created_at__month": "10"},
        {"created_at__year": "2026"},
        {"created_at__gte": "2026-10-15 12:00:00+00:00", "created_at__lt": "2026-10-17 00:00:00+00:00"},
        {
            "created_at__gte": "2026-10-16 00:00:00+00:00",
            "created_at__lt": "2026-10-17 00:00:00+00:00",
            "status_class": "5xx",
        },
        {"created_at__year": "2026", "created_at__month": "10", "created_at__day": "16", "q": "u4"},
        {"created_at__year": "2026", "created_at__month": "10", "created_at__day": "20"},  # an empty day
    ]
    bounded = [_ids(admin_client.get(LIST, query)) for query in wider]
    monkeypatch.setattr(large_tables, "_id_bounds", lambda rows, field: {})
    unbounded = [_ids(admin_client.get(LIST, query)) for query in wider]
    assert bounded == unbounded
    assert [len(ids) for ids in bounded] == [5, 5, 9, 9, 7, 1, 1, 0]


def test_a_date_range_too_wide_to_read_is_listed_without_id_bounds(admin_client, monkeypatch):
    day = seed_out_of_order_day()
    monkeypatch.setattr(large_tables, "ID_BOUNDS_MAX_ROWS", 0)

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(
            LIST, {"created_at__gte": day.isoformat(), "created_at__lt": "2026-10-18 00:00:00+00:00"}
        )

    assert len(_ids(response)) == 6
    assert not any("MIN(" in q["sql"].upper() for q in captured.captured_queries)


def test_recent_value_filters_offer_the_values_of_the_latest_rows(admin_client, monkeypatch):
    monkeypatch.setattr(large_tables, "RECENT_ROWS", 3)
    models = ["old-model", "gpt-4o", "o3", "gpt-4o", "gpt-4.1"]  # oldest first
    RequestLog.objects.bulk_create(
        [logged_request("alice", at=NOON + timedelta(seconds=n), model=model) for n, model in enumerate(models)]
    )

    def offered(query: dict) -> list[str]:
        response = admin_client.get(LIST, query)
        spec = next(s for s in response.context["cl"].filter_specs if isinstance(s, ModelFilter))
        return [value for value, _ in spec.lookup_choices]

    assert offered({}) == ["gpt-4.1", "gpt-4o", "o3"]
    assert offered({"model": "old-model"}) == ["gpt-4.1", "gpt-4o", "o3", "old-model"]  # and the one selected
    monkeypatch.setattr(large_tables, "RECENT_ROWS", 10_000)
    assert offered({}) == ["gpt-4.1", "gpt-4o", "o3", "old-model"]  # a small log: all of them


def test_a_page_past_the_pages_offered_shows_the_last_one_and_how_to_reach_older_rows(admin_client, monkeypatch):
    # 11 rows, 2 a page, pages stop at 4 rows: 2 pages offered.
    monkeypatch.setattr(large_tables, "COUNT_CAP", 4)
    monkeypatch.setattr(RequestLogAdmin, "list_per_page", 2)
    RequestLog.objects.bulk_create([logged_request(f"u{n:02}", at=NOON + timedelta(seconds=n)) for n in range(11)])
    hint = "filter by date, status or user to reach older ones"

    first = admin_client.get(LIST)
    beyond = admin_client.get(LIST, {"p": "100003"})
    last = admin_client.get(LIST, {"p": "2"})

    assert [row.user_id for row in first.context["cl"].result_list] == ["u10", "u09"]
    assert hint not in first.content.decode()
    assert "?p=3" not in first.content.decode() and "?p=2" in first.content.decode()
    for response in (beyond, last):
        assert response.status_code == 200  # not Django's "?e=1" redirect
        assert [row.user_id for row in response.context["cl"].result_list] == ["u08", "u07"]
        assert response.context["cl"].page_num == 2
        assert hint in response.content.decode()
