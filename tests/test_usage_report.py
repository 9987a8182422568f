"""manage.py usage_report: a month's usage and exact cost per user, for invoicing."""

import csv
from datetime import date
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing import money
from billing.models import MonthlyUsage

pytestmark = pytest.mark.django_db

NOVEMBER = date(2026, 11, 1)


@pytest.fixture
def november():
    common = {"month": NOVEMBER, "cached_input_tokens": 0, "unknown_usage_requests": 0}
    MonthlyUsage.objects.bulk_create(
        [
            MonthlyUsage(
                user_id="zed",
                requests=3,
                total_tokens=300,
                input_tokens=200,
                output_tokens=100,
                cost_pico_usd=money.to_pico("0.000123456789"),
                unknown_cost_requests=1,
                **common,
            ),
            MonthlyUsage(
                user_id="amy",
                requests=1,
                total_tokens=10,
                input_tokens=4,
                output_tokens=6,
                cost_pico_usd=money.to_pico("12.5"),
                **common,
            ),
            MonthlyUsage(user_id="amy", month=date(2026, 10, 1), requests=99, cost_pico_usd=money.to_pico("1")),
        ]
    )


def run(*args: str) -> str:
    out = StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


def test_the_csv_matches_the_monthly_usage_exactly(november, tmp_path):
    target = tmp_path / "invoice.csv"
    run("--month", "2026-11", "--csv", str(target))

    with target.open() as written:
        rows = list(csv.DictReader(written))
    assert [row["user_id"] for row in rows] == ["amy", "zed"]
    for row in rows:
        stored = MonthlyUsage.objects.get(user_id=row["user_id"], month=NOVEMBER)
        assert int(row["requests"]) == stored.requests
        assert int(row["input_tokens"]) == stored.input_tokens
        assert int(row["output_tokens"]) == stored.output_tokens
        assert int(row["total_tokens"]) == stored.total_tokens
        assert money.to_pico(row["cost_usd"]) == stored.cost_pico_usd
        assert int(row["unknown_cost_requests"]) == stored.unknown_cost_requests
    assert rows[1]["cost_usd"] == "0.000123456789"


def test_the_table_shows_each_user_and_exact_totals(november):
    out = run("--month", "2026-11")

    lines = out.splitlines()
    assert lines[0] == "Usage in 2026-11"
    assert lines[2].split() == ["amy", "1", "4", "0", "6", "10", "0", "$12.50", "0"]
    assert lines[-1].split() == ["total", "4", "204", "0", "106", "310", "0", "$12.500123456789", "1"]


def test_a_month_without_usage_says_so_and_a_bad_month_is_refused(november):
    assert run("--month", "2026-12").strip() == "No usage in 2026-12."
    with pytest.raises(CommandError, match="expected a month as YYYY-MM"):
        run("--month", "November")
