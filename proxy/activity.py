"""Live activity for operators, read by the admin dashboard and `manage.py gateway_activity` alike.

Each number is an aggregate over a time window of `requests` ending at `now` (served by the
created_at index) or over this month's usage, so the cost follows the traffic of the last hour,
not the size of the log. Callers take `now` once and pass it in.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Avg, Count, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncMinute

from accounts.models import Account
from billing import money, monthly_usage, plans
from billing.models import MonthlyUsage
from proxy.models import RequestLog

HOUR_MINUTES = 60
TOP_USERS = 10
MAX_ROWS = 50

_RATE_LIMITED = Q(status=429)
# Upstream errors: a 5xx an upstream answered, or no upstream answering at all (the gateway's
# 502 and 504). The gateway's own 5xx (a database outage's 503) are not the upstream's.
_UPSTREAM_ERROR = Q(status__gte=500) & ~Q(upstream="") | Q(status__in=(502, 504), upstream="")
_UNKNOWN_USAGE = Q(total_tokens__isnull=True)


@dataclass(frozen=True, slots=True)
class UserWindow:
    user_id: str
    requests: int
    avg_latency_ms: int
    rate_limited: int


@dataclass(frozen=True, slots=True)
class Minute:
    start: datetime
    requests: int
    rate_limited: int
    upstream_errors: int
    unknown_usage_requests: int  # calls whose usage the upstream never reported
    spend: int  # pico-USD of the calls whose cost is known

    @property
    def spend_text(self) -> str:
        return money.usd_text(self.spend)


@dataclass(frozen=True, slots=True)
class ErrorRate:
    """Requests of a window: the share that were upstream errors (an upstream's 5xx, or no
    upstream answering), and the calls whose usage is unknown."""

    requests: int
    upstream_errors: int
    unknown_usage_requests: int = 0  # calls whose usage the upstream never reported

    def __str__(self) -> str:
        if not self.requests:
            return "no requests"
        return f"{self.upstream_errors} of {self.requests} ({self.upstream_errors / self.requests:.1%})"


@dataclass(frozen=True, slots=True)
class QuotaUse:
    user_id: str
    plan: str
    requests: int
    monthly_requests: int | None
    total_tokens: int
    monthly_tokens: int | None

    @property
    def used(self) -> str:
        """The larger share of the month's requests or tokens used, or "unlimited"."""
        shares = [
            used / limit if limit else 1.0
            for used, limit in ((self.requests, self.monthly_requests), (self.total_tokens, self.monthly_tokens))
            if limit is not None
        ]
        return f"{max(shares):.0%}" if shares else "unlimited"


@dataclass(frozen=True, slots=True)
class Spender:
    user_id: str
    plan: str
    spend: int  # pico-USD
    budget: int | None  # pico-USD
    unknown_cost_requests: int  # calls of unknown cost

    @property
    def spend_text(self) -> str:
        return money.usd_text(self.spend)

    @property
    def budget_text(self) -> str:
        return "none" if self.budget is None else money.usd_text(self.budget)

    @property
    def used(self) -> str:
        if self.budget is None:
            return "no budget"
        return f"{self.spend / self.budget:.0%}" if self.budget else "100%"


@dataclass(frozen=True, slots=True)
class Activity:
    now: datetime
    minutes: int
    recent: list[UserWindow]  # the last `minutes`, busiest first
    recent_errors: ErrorRate
    rate_limited: list[tuple[str, int]]  # 429s per user over the hour, most first
    per_minute: list[Minute]  # the hour, oldest first; the last minute is the current one
    hour_errors: ErrorRate
    top_users: list[QuotaUse]  # this month, most requests first
    top_spenders: list[Spender]  # this month, most spent first

    @property
    def hour_spend(self) -> str:
        return money.usd_text(sum(m.spend for m in self.per_minute))

    @property
    def hour_start(self) -> datetime:
        return self.per_minute[0].start


def gather(now: datetime, minutes: int = 5) -> Activity:
    """Activity up to `now`; `minutes` (1 to 60) is the window of the per-user table and error rate."""
    minutes = min(max(minutes, 1), HOUR_MINUTES)
    since = now - timedelta(minutes=minutes)
    hour_start = now.replace(second=0, microsecond=0) - timedelta(minutes=HOUR_MINUTES - 1)
    recent = RequestLog.objects.filter(created_at__gt=since, created_at__lte=now)
    hour = RequestLog.objects.filter(created_at__gte=hour_start, created_at__lte=now)
    by_tier = plans.read_plans()
    per_minute = _per_minute(hour, hour_start)
    return Activity(
        now=now,
        minutes=minutes,
        recent=_per_user(recent),
        recent_errors=ErrorRate(
            **recent.aggregate(
                requests=Count("id"),
                upstream_errors=Count("id", filter=_UPSTREAM_ERROR),
                unknown_usage_requests=Count("id", filter=_UNKNOWN_USAGE),
            )
        ),
        rate_limited=list(
            hour.filter(_RATE_LIMITED)
            .values("user_id")
            .annotate(hits=Count("id"))
            .order_by("-hits", "user_id")
            .values_list("user_id", "hits")[:MAX_ROWS]
        ),
        per_minute=per_minute,
        hour_errors=ErrorRate(
            sum(m.requests for m in per_minute),
            sum(m.upstream_errors for m in per_minute),
            sum(m.unknown_usage_requests for m in per_minute),
        ),
        top_users=_top_users(now, by_tier),
        top_spenders=_top_spenders(now, by_tier),
    )


def _per_user(rows) -> list[UserWindow]:
    totals = (
        rows.values("user_id")
        .annotate(requests=Count("id"), avg_latency=Avg("latency_ms"), rate_limited=Count("id", filter=_RATE_LIMITED))
        .order_by("-requests", "user_id")[:MAX_ROWS]
    )
    return [
        UserWindow(row["user_id"], row["requests"], round(row["avg_latency"]), row["rate_limited"]) for row in totals
    ]


def _per_minute(rows, hour_start: datetime) -> list[Minute]:
    counted = {
        row["minute"]: row
        for row in rows.annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(
            requests=Count("id"),
            rate_limited=Count("id", filter=_RATE_LIMITED),
            upstream_errors=Count("id", filter=_UPSTREAM_ERROR),
            unknown_usage_requests=Count("id", filter=_UNKNOWN_USAGE),
            spend=Sum("cost_pico_usd"),
        )
        .order_by()
    }
    minutes = []
    for offset in range(HOUR_MINUTES):
        start = hour_start + timedelta(minutes=offset)
        row = counted.get(start, {})
        minutes.append(
            Minute(
                start,
                row.get("requests", 0),
                row.get("rate_limited", 0),
                row.get("upstream_errors", 0),
                row.get("unknown_usage_requests", 0),
                row.get("spend") or 0,
            )
        )
    return minutes


def _month_with_tiers(now: datetime):
    tier = Subquery(Account.objects.filter(user_id=OuterRef("user_id")).values("tier")[:1])
    return MonthlyUsage.objects.filter(month=monthly_usage.month_of(now)).annotate(tier=Coalesce(tier, Value("")))


def _top_spenders(now: datetime, by_tier: dict[str, plans.Limits]) -> list[Spender]:
    rows = _month_with_tiers(now).filter(cost_pico_usd__gt=0).order_by("-cost_pico_usd", "user_id")[:TOP_USERS]
    spenders = []
    for row in rows:
        limits = plans.limits_in(by_tier, row.tier)
        spenders.append(
            Spender(row.user_id, limits.name, row.cost_pico_usd, limits.monthly_budget, row.unknown_cost_requests)
        )
    return spenders


def _top_users(now: datetime, by_tier: dict[str, plans.Limits]) -> list[QuotaUse]:
    rows = _month_with_tiers(now).order_by("-requests", "user_id")[:TOP_USERS]
    top = []
    for row in rows:
        limits = plans.limits_in(by_tier, row.tier)
        top.append(
            QuotaUse(
                row.user_id, limits.name, row.requests, limits.monthly_requests, row.total_tokens, limits.monthly_tokens
            )
        )
    return top
