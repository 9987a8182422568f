"""Give a cost to calls of unknown cost whose model now has a price on their day:

    manage.py recost --since 2026-11-01

Only rows whose usage is known; the cost is added to the months, rollups and model months
exactly as if the price had been there when the call was written. Running it again changes
nothing; it is safe while the gateway runs (billing.recost).
"""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from billing import money, recost
from billing.prices import read_book


class Command(BaseCommand):
    help = (
        "Cost the calls of unknown cost from a day (UTC) on whose usage is known and whose model now has a "
        "price in effect on their day; adds the cost to monthly usage, rollups and model months. Idempotent."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", required=True, metavar="YYYY-MM-DD", help="the first day (UTC) to cost")

    def handle(self, *args, since: str, **options) -> None:
        try:
            first_day = date.fromisoformat(since)
        except ValueError:
            raise CommandError(f"--since must be a day, YYYY-MM-DD, not {since!r}.") from None
        report = recost.recost(first_day, read_book())
        for line in report_lines(first_day, report):
            self.stdout.write(line)


def report_lines(since: date, report: recost.Report) -> list[str]:
    if not report.calls:
        lines = [f"No call of unknown cost from {since} on could be costed: nothing changed."]
    else:
        lines = [f"Costed {calls(report.calls)} from {since} on, {money.usd_text(report.cost)} in all:"]
        for (month, model), (count, cost) in sorted(report.costed.items()):
            lines.append(f"  {month:%Y-%m} {model}: {calls(count)}, {money.usd_text(cost)}")
    left = []
    if report.unknown_usage_requests:
        left.append(f"{calls(report.unknown_usage_requests)} whose usage is unknown")
    if report.unpriced:
        models = ", ".join(f"{model or '(no model)'}: {count}" for model, count in sorted(report.unpriced.items()))
        left.append(f"{calls(report.unpriced.total())} of models without a price on their day ({models})")
    if left:
        lines.append(f"Left of unknown cost: {'; '.join(left)}.")
    return lines


def calls(count: int) -> str:
    return f"{count} call" if count == 1 else f"{count} calls"
