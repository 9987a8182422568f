"""`manage.py gateway_activity` prints, for a terminal, what the dashboard shows."""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command

from tests.test_dashboard import busy, dashboard_tables, now  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("gateway_activity", *args, stdout=out)
    return out.getvalue()


def printed_table(output: str, title: str) -> list[list[str]]:
    """The rows under a section title, split on runs of two or more spaces (header excluded)."""
    section = output.split(title, 1)[1].split("\n", 1)[1]
    lines = section.split("\n\n", 1)[0].splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def test_it_prints_the_same_numbers_as_the_dashboard(admin_client, busy):  # noqa: F811
    for minutes in ("5", "35"):
        output = run("--minutes", minutes)
        tables = dashboard_tables(admin_client.get("/admin/dashboard/", {"minutes": minutes}).content.decode())

        assert printed_table(output, f"Last {minutes} minutes, per user") == tables["recent"]
        assert printed_table(output, "Rate-limit hits (429) since") == tables["rate-limited"]
        assert printed_table(output, "against their quota") == tables["top-users"]


def test_it_prints_the_error_rate_and_the_busy_minutes(busy, now):  # noqa: F811
    output = run()

    assert "last 5 minutes 1 of 4 (25.0%)" in output
    assert "1 of 7 (14.3%)" in output
    minutes = printed_table(output, "Requests per minute since")
    assert [f"{now - timedelta(minutes=30):%H:%M}", "2", "2", "0"] in minutes
    assert sum(int(row[1]) for row in minutes) == 7


def test_it_says_so_when_nothing_happened(now):  # noqa: F811
    output = run()

    assert "no requests" in output
    assert output.count("(none)") == 6


def test_a_one_minute_window_reads_as_one_minute(admin_client, now):  # noqa: F811
    output = run("--minutes", "1")
    page = admin_client.get("/admin/dashboard/", {"minutes": "1"}).content.decode()

    assert "last 1 minute no requests" in output and "Last 1 minute, per user" in output
    assert "minutes" not in output.replace("minutes with requests", "")
    assert "Last 1 minute, per user" in page and "Last 1 minutes" not in page
