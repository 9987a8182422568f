"""Migrations keep what the log and the months already hold."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE_SPLIT = [("proxy", "0003_user_summary"), ("billing", "0002_default_plans")]
AFTER_SPLIT = [("proxy", "0004_split_usage"), ("billing", "0003_split_usage")]
AT = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def before_the_split(transactional_db):
    apps = migrate(BEFORE_SPLIT)
    yield apps
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_splitting_usage_keeps_totals_and_marks_unreported_model_calls_unknown(before_the_split):
    RequestLog = before_the_split.get_model("proxy", "RequestLog")
    MonthlyUsage = before_the_split.get_model("billing", "MonthlyUsage")
    common = {"user_id": "old", "latency_ms": 5, "model": "gpt-4o", "ip_hash": "0611c8f6", "created_at": AT}
    for method, endpoint, status, tokens in [
        ("POST", "/v1/chat/completions", 200, 42),  # usage reported: kept
        ("POST", "/v1/chat/completions", 200, 0),  # a stream without include_usage: unknown
        ("GET", "/v1/models", 200, 0),  # a read: 0
        ("POST", "/v1/chat/completions", 429, 0),  # refused: 0
    ]:
        RequestLog.objects.create(method=method, endpoint=endpoint, status=status, tokens_est=tokens, **common)
    MonthlyUsage.objects.create(user_id="old", month=AT.date().replace(day=1), requests=4, tokens=42)

    apps = migrate(AFTER_SPLIT)

    rows = apps.get_model("proxy", "RequestLog").objects.order_by("id")
    assert [(r.endpoint, r.status, r.total_tokens, r.input_tokens) for r in rows] == [
        ("/v1/chat/completions", 200, 42, None),
        ("/v1/chat/completions", 200, None, None),
        ("/v1/models", 200, 0, None),
        ("/v1/chat/completions", 429, 0, None),
    ]
    month = apps.get_model("billing", "MonthlyUsage").objects.get(user_id="old")
    assert (month.requests, month.tokens, month.unknown_usage_requests) == (4, 42, 0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT requests, tokens, unknown_usage FROM user_summary WHERE user_id = 'old'")
        assert cursor.fetchone() == (4, 42, 1)


@pytest.fixture
def before_request_ids(transactional_db):
    apps = migrate([("proxy", "0005_request_cost")])
    yield apps
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_adding_request_ids_keeps_the_log_its_summary_and_old_writers(before_request_ids):
    RequestLog = before_request_ids.get_model("proxy", "RequestLog")
    common = {"method": "POST", "endpoint": "/v1/chat/completions", "latency_ms": 5, "model": "gpt-4o"}
    RequestLog.objects.create(user_id="old", status=200, total_tokens=42, ip_hash="0611c8f6", created_at=AT, **common)

    apps = migrate([("proxy", "0006_request_id")])

    [row] = apps.get_model("proxy", "RequestLog").objects.all()
    assert (row.user_id, row.total_tokens, row.request_id) == ("old", 42, "")
    with connection.cursor() as cursor:
        # The view over `requests` (dropped around the new column on SQLite) answers again.
        cursor.execute("SELECT requests, tokens FROM user_summary WHERE user_id = 'old'")
        assert cursor.fetchone() == (1, 42)
        # A worker still running the code from before (a deploy's old workers) keeps logging.
        cursor.execute(
            "INSERT INTO requests (user_id, method, endpoint, status, latency_ms, model, ip_hash, created_at) "
            "VALUES ('old', 'GET', '/v1/models', 200, 1, '', '0611c8f6', %s)",
            [AT],
        )
    assert sorted(apps.get_model("proxy", "RequestLog").objects.values_list("request_id", flat=True)) == ["", ""]
