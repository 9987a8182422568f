from django.core.management.base import BaseCommand
from django.utils import timezone

from gateway_project.lib.wording import counted
from proxy import activity


class Command(BaseCommand):
    help = (
        "Print what the admin dashboard shows: recent requests per user, 429s, requests per minute, "
        "quotas, upstream errors."
    )

    def add_arguments(self, parser):
        parser.add_argument("--minutes", type=int, default=5, help="the recent window (default 5)")

    def handle(self, *args, minutes: int, **options):
        current = activity.gather(timezone.now(), minutes)
        since, window = f"{current.hour_start:%H:%M}", counted(current.minutes, "minute")
        write = self.stdout.write
        write(f"Activity at {current.now:%Y-%m-%d %H:%M:%S} UTC\n")
        write(
            f"Upstream error rate (upstream 5xx, unreachable): last {window} {current.recent_errors}; "
            f"since {since} {current.hour_errors}\n"
        )
        write(
            f"Calls with unknown usage (not reported upstream): last {window} "
            f"{current.recent_errors.unknown_usage_requests}; "
            f"since {since} {current.hour_errors.unknown_usage_requests}\n"
        )
        write(f"Last {window}, per user")
        _table(
            write,
            ["user", "requests", "avg latency", "429s"],
            [
                [row.user_id or "—", row.requests, f"{row.avg_latency_ms} ms", row.rate_limited]
                for row in current.recent
            ],
        )
        write(f"Rate-limit hits (429) since {since}")
        _table(write, ["user", "429s"], [[user_id or "—", hits] for user_id, hits in current.rate_limited])
        write(f"Requests per minute since {since} (minutes with requests)")
        _table(
            write,
            ["minute", "requests", "429s", "upstream errors"],
            [
                [f"{m.start:%H:%M}", m.requests, m.rate_limited, m.upstream_errors]
                for m in current.per_minute
                if m.requests
            ],
        )
        write(f"Spend since {since}: {current.hour_spend}")
        _table(
            write,
            ["minute", "spend", "requests"],
            [[f"{m.start:%H:%M}", m.spend_text, m.requests] for m in current.per_minute if m.spend],
        )
        _month(write, current)


def _month(write, current: activity.Activity) -> None:
    """This month's top spenders and users, against their plans."""
    write(f"Top spenders of {current.now:%B %Y} against their budget")
    _table(
        write,
        ["user", "plan", "spent", "budget", "used", "unknown cost"],
        [
            [s.user_id, s.plan, s.spend_text, s.budget_text, s.used, s.unknown_cost_requests]
            for s in current.top_spenders
        ],
    )
    write(f"Top users of {current.now:%B %Y} against their quota")
    _table(
        write,
        ["user", "plan", "requests", "of", "tokens", "of", "used"],
        [
            [
                row.user_id,
                row.plan,
                row.requests,
                _limit(row.monthly_requests),
                row.total_tokens,
                _limit(row.monthly_tokens),
                row.used,
            ]
            for row in current.top_users
        ],
    )


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _table(write, header: list[str], rows: list[list]) -> None:
    if not rows:
        write("  (none)\n")
        return
    cells = [header, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        # First column left-aligned (names), the rest right-aligned (numbers), as on the dashboard.
        write(
            "  "
            + "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
    write("")
