"""What the account page shows a customer: their plan, this month's use against its limits
(the same counters as /api/usage), use per day, their keys and their Codex session."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from accounts.models import Account, CodexCredential
from billing import money, plans, usage
from proxy import charts
from proxy.models import RequestLog


@dataclass(frozen=True)
class Meter:
    label: str
    used: str
    limit: str | None  # None: unlimited
    percent: int | None  # of the limit used, capped at 100


def _meter(label: str, used: int, limit: int | None, text=str) -> Meter:
    percent = None if not limit else min(100, used * 100 // limit)
    if limit == 0:
        percent = 100
    return Meter(label, text(used), None if limit is None else text(limit), percent)


def overview(account: Account, now: datetime) -> dict:
    limits = plans.limits_in(plans.read_plans(), account.tier)
    month = usage.month_of(now)
    used = usage.month_totals(account.user_id, month)
    return {
        "account": account,
        "plan": limits,
        "month": month,
        "resets_on": usage.next_month(month),
        "used": used,
        "meters": [
            _meter("Requests", used["requests"], limits.monthly_requests, lambda n: f"{n:,}"),
            _meter("Tokens", used["tokens"], limits.monthly_tokens, lambda n: f"{n:,}"),
            _meter("Spend", used["cost_pico_usd"], limits.monthly_budget, money.usd_text),
        ],
        "chart": charts.requests_per_day(_days(account.user_id, month, now)),
        "keys": list(account.api_keys.order_by("revoked_at", "-created_at")),
        "codex": CodexCredential.objects.filter(account=account).first(),
    }


def _days(user_id: str, month: date, now: datetime) -> list[tuple[date, int, str]]:
    """Each day of the month so far: requests, tokens and cost, from the user's own rows (an
    index range on user and time)."""
    rows = (
        RequestLog.objects.filter(
            user_id=user_id, created_at__gte=datetime(month.year, month.month, 1, tzinfo=UTC), created_at__lte=now
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(requests=Count("id"), tokens=Sum("total_tokens"), cost=Sum("cost_pico_usd"))
    )
    by_day = {row["day"]: row for row in rows}
    days = []
    for offset in range((now.date() - month).days + 1):
        day = month + timedelta(days=offset)
        row = by_day.get(day)
        if row is None:
            days.append((day, 0, ""))
        else:
            detail = f"{row['tokens'] or 0:,} tokens, {money.usd_text(row['cost'] or 0)}"
            days.append((day, row["requests"], detail))
    return days
