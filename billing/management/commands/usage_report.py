"""A month's usage per user, for invoicing or export: one line per user.

    manage.py usage_report --month 2026-11 [--csv FILE]

Read from the monthly usage table (what quotas and budgets count), never from the log.
Costs are exact (never rounded: the table as money is shown everywhere, the CSV as plain
decimals of USD); calls whose usage or cost is unknown are
counted apart, never as 0.
"""

import csv
import sys
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from billing import money
from billing.models import MonthlyUsage

COLUMNS = (
    "user_id",
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "total_tokens",
    "unknown_usage_requests",
    "cost_usd",
    "unknown_cost_requests",
)


def report_rows(month: date) -> list[list]:
    rows = []
    for usage in MonthlyUsage.objects.filter(month=month).order_by("user_id"):
        rows.append(
            [
                usage.user_id,
                usage.requests,
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.output_tokens,
                usage.total_tokens,
                usage.unknown_usage_requests,
                money.to_usd(usage.cost_pico_usd),
                usage.unknown_cost_requests,
            ]
        )
    return rows


class Command(BaseCommand):
    help = "Print a month's usage and cost per user; --csv FILE writes it as CSV (- for standard output)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--month", required=True, help="YYYY-MM")
        parser.add_argument("--csv", help="write CSV to this file (- for standard output)")

    def handle(self, *args, month: str, csv: str | None, **options) -> None:
        try:
            first = date.fromisoformat(f"{month}-01")
        except ValueError:
            raise CommandError(f"--month {month!r}: expected a month as YYYY-MM, e.g. 2026-11.") from None
        rows = report_rows(first)
        if csv:
            self._write_csv(csv, rows)
            if csv == "-":
                return
        self._print_table(first, rows)

    def _write_csv(self, target: str, rows: list[list]) -> None:
        stream = sys.stdout if target == "-" else open(target, "w", newline="", encoding="utf-8")  # noqa: SIM115
        try:
            writer = csv.writer(stream)
            writer.writerow(COLUMNS)
            writer.writerows([[*row[:7], f"{row[7]:f}", row[8]] for row in rows])
        finally:
            if stream is not sys.stdout:
                stream.close()

    def _print_table(self, month: date, rows: list[list]) -> None:
        write = self.stdout.write
        if not rows:
            write(f"No usage in {month:%Y-%m}.")
            return
        shown = [[str(cell) if i != 7 else money.usd_amount_text(cell) for i, cell in enumerate(row)] for row in rows]
        totals = [sum(row[i] for row in rows) for i in range(1, 9)]
        shown.append(["total", *[str(t) if i != 6 else money.usd_amount_text(t) for i, t in enumerate(totals)]])
        headers = [
            "user",
            "requests",
            "input",
            "cached",
            "output",
            "tokens",
            "unknown usage",
            "cost",
            "unknown cost",
        ]
        widths = [max(len(h), *(len(r[i]) for r in shown)) for i, h in enumerate(headers)]
        write(f"Usage in {month:%Y-%m}")
        for row in [headers, *shown]:
            cells = zip(row, widths, strict=True)
            write("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
