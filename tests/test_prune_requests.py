"""manage.py prune_requests: old access-log rows go, in batches, archived first when asked."""

import gzip
import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import MonthlyUsage
from proxy.models import RequestLog

NOW = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)


def row(days_old: float, user: str = "alice") -> RequestLog:
    return RequestLog.objects.create(
        user_id=user,
        method="POST",
        endpoint="/v1/chat/completions",
        status=200,
        latency_ms=12,
        total_tokens=30,
        model="gpt-4o",
        ip_hash="0611c8f6",
        created_at=NOW - timedelta(days=days_old),
    )


def prune(*args: str) -> str:
    out = StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("prune_requests", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_deletes_only_rows_older_than_the_cutoff_in_batches_and_archives_them_first(tmp_path):
    old = [row(days) for days in (400, 200, 120, 91, 90.5)]
    kept = [row(days) for days in (89, 30, 0)]
    MonthlyUsage.objects.create(user_id="alice", month=NOW.date().replace(day=1), requests=8)
    archive = tmp_path / "requests.jsonl.gz"

    with CaptureQueriesContext(connection) as queries:
        output = prune("--older-than", "90d", "--archive", str(archive), "--batch-size", "2")

    assert sorted(RequestLog.objects.values_list("id", flat=True)) == sorted(r.id for r in kept)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3, "five rows in batches of two: three deletes, each in its own transaction"
    with gzip.open(archive, "rt") as lines:
        archived = [json.loads(line) for line in lines]
    assert [a["id"] for a in archived] == [r.id for r in old]
    assert archived[0]["endpoint"] == "/v1/chat/completions"
    assert archived[0]["created_at"].startswith("2030-04-27")
    assert "Deleted 5 access-log rows from before 2031-03-03 12:00 UTC, archived to" in output
    assert MonthlyUsage.objects.get().requests == 8, "usage counters are not the log"


@pytest.mark.django_db
def test_a_second_run_appends_to_the_archive(tmp_path):
    archive = tmp_path / "requests.jsonl.gz"
    row(100)
    prune("--older-than", "90d", "--archive", str(archive))
    row(100)
    prune("--older-than", "90d", "--archive", str(archive))

    with gzip.open(archive, "rt") as lines:
        assert len(lines.readlines()) == 2


@pytest.mark.django_db
def test_without_an_archive_it_only_deletes():
    row(2, "bob")
    row(0, "bob")

    assert "Deleted 1 access-log row from" in prune("--older-than", "24h")
    assert RequestLog.objects.count() == 1


@pytest.mark.parametrize("age", ["90", "d90", "90 days", "-1d", "1w"])
def test_an_unreadable_age_is_refused(age):
    with pytest.raises(CommandError, match="expected a number and a unit"):
        prune(f"--older-than={age}")
