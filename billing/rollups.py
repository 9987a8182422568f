"""Rollups of the access log: per user and hour (`usage_hours`), per user all along
(`user_totals`). Pages read these instead of the log, so their cost follows the number of
users and hours shown, not the size of the log.

Each counter is the exact aggregate of the rows' columns (see COUNTS), kept in step by the
access-log writer in the transaction that writes the rows, and rebuilt from the log by
`manage.py rebuild_rollups`. Retention (`prune_requests`) deletes whole hours of rows and
never touches rollups, so summaries outlive the rows they came from.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, models, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import Coalesce, TruncHour

from billing.models import HourlyUsage, Rollup, UserTotal
from gateway_project.lib import async_sql

HOURS = HourlyUsage._meta.db_table
TOTALS = UserTotal._meta.db_table

# The counters, in the order of the rows built below (after user_id, and the hour).
COUNTERS = tuple(field.name for field in Rollup._meta.get_fields() if isinstance(field, models.BigIntegerField))


def _sum(column: str) -> Coalesce:
    return Coalesce(Sum(column), 0, output_field=models.BigIntegerField())


# Each counter as an aggregate of `requests` rows: what the rebuild computes, and the
# definition the writer's per-row counts (row_counts) follow.
COUNTS = {
    "requests": Count("id"),
    "errors": Count("id", filter=Q(status__gte=400)),
    "server_errors": Count("id", filter=Q(status__gte=500)),
    "rate_limited": Count("id", filter=Q(status=429)),
    "over_quota": Count("id", filter=Q(status=402)),
    "input_tokens": _sum("input_tokens"),
    "cached_input_tokens": _sum("cached_input_tokens"),
    "output_tokens": _sum("output_tokens"),
    "total_tokens": _sum("total_tokens"),
    "unknown_usage_requests": Count("id", filter=Q(total_tokens__isnull=True)),
    "cost_pico_usd": _sum("cost_pico_usd"),
    "unknown_cost_requests": Count("id", filter=Q(cost_pico_usd__isnull=True)),
    "latency_ms_sum": _sum("latency_ms"),
}
assert tuple(COUNTS) == COUNTERS, "COUNTS must follow the Rollup model's counters"


def row_counts(
    status: int,
    latency_ms: int,
    input_tokens: int | None,
    cached_input_tokens: int | None,
    output_tokens: int | None,
    total_tokens: int | None,
    cost_pico_usd: int | None,
) -> tuple[int, ...]:
    """One row's contribution to each counter, as COUNTS aggregates it."""
    return (
        1,
        int(status >= 400),
        int(status >= 500),
        int(status == 429),
        int(status == 402),
        input_tokens or 0,
        cached_input_tokens or 0,
        output_tokens or 0,
        total_tokens or 0,
        int(total_tokens is None),
        cost_pico_usd or 0,
        int(cost_pico_usd is None),
        latency_ms,
    )


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _added(table: str) -> str:
    return ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in COUNTERS)


HOUR_ADD_SQL = (
    f"INSERT INTO {HOURS} (user_id, hour, {', '.join(COUNTERS)}) VALUES (%s, %s{', %s' * len(COUNTERS)}) "
    f"ON CONFLICT (user_id, hour) DO UPDATE SET {_added(HOURS)}"
)
TOTAL_ADD_SQL = (
    f"INSERT INTO {TOTALS} (user_id, first_seen, last_seen, {', '.join(COUNTERS)}) "
    f"VALUES (%s, %s, %s{', %s' * len(COUNTERS)}) "
    f"ON CONFLICT (user_id) DO UPDATE SET {_added(TOTALS)}, "
    f"first_seen = CASE WHEN excluded.first_seen < {TOTALS}.first_seen "
    f"THEN excluded.first_seen ELSE {TOTALS}.first_seen END, "
    f"last_seen = CASE WHEN excluded.last_seen > {TOTALS}.last_seen "
    f"THEN excluded.last_seen ELSE {TOTALS}.last_seen END"
)


def _stored(moment: datetime):
    """A time as a raw statement must hand it over to compare equal with the ORM's: SQLite
    keeps naive UTC text, PostgreSQL a timestamptz."""
    if async_sql.on_postgresql():
        return moment
    return str(moment.astimezone(UTC).replace(tzinfo=None))


def additions(rows: Iterable) -> list[tuple[str, list[tuple]]]:
    """HOUR_ADD_SQL's and TOTAL_ADD_SQL's rows for access-log rows (with their cost): one per
    user and hour, one per user, in key order so that concurrent writers lock rows in the
    same order and never deadlock."""
    hours: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0] * len(COUNTERS))
    totals: dict[str, list[int]] = defaultdict(lambda: [0] * len(COUNTERS))
    seen: dict[str, tuple[datetime, datetime]] = {}
    for row in rows:
        counts = row_counts(
            row.status,
            row.latency_ms,
            row.input_tokens,
            row.cached_input_tokens,
            row.output_tokens,
            row.total_tokens,
            row.cost_pico_usd,
        )
        for summed in (hours[row.user_id, hour_of(row.created_at)], totals[row.user_id]):
            for index, count in enumerate(counts):
                summed[index] += count
        first, last = seen.get(row.user_id, (row.created_at, row.created_at))
        seen[row.user_id] = (min(first, row.created_at), max(last, row.created_at))
    return [
        (
            HOUR_ADD_SQL,
            [(user_id, _stored(hour), *counts) for (user_id, hour), counts in sorted(hours.items())],
        ),
        (
            TOTAL_ADD_SQL,
            [
                (user_id, _stored(seen[user_id][0]), _stored(seen[user_id][1]), *counts)
                for user_id, counts in sorted(totals.items())
            ],
        ),
    ]


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    requests: int = 0
    total_tokens: int = 0  # of the calls whose usage is known
    cost_pico_usd: int = 0  # of the calls whose cost is known
    unknown_usage_requests: int = 0
    unknown_cost_requests: int = 0


def daily(user_id: str, first_day: date, now: datetime) -> list[Day]:
    """Each day (UTC) from `first_day` to `now`'s: one user's use, from their hourly rollups
    (one row an hour at most, read by the (user_id, hour) index)."""
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    days = {first_day + timedelta(days=n): [0] * 5 for n in range((now.date() - first_day).days + 1)}
    hours = HourlyUsage.objects.filter(user_id=user_id, hour__gte=start, hour__lte=now).values_list(
        "hour", "requests", "total_tokens", "cost_pico_usd", "unknown_usage_requests", "unknown_cost_requests"
    )
    for hour, *counts in hours:
        summed = days.setdefault(hour.astimezone(UTC).date(), [0] * 5)
        for index, count in enumerate(counts):
            summed[index] += count
    return [Day(day, *counts) for day, counts in sorted(days.items())]


def rebuild(requests_model=None, hours_model=HourlyUsage, totals_model=UserTotal) -> tuple[int, int]:
    """Recompute the rollups of every hour the log still holds; hours before it (pruned)
    keep theirs, and each user's totals are the sum of their hours. Returns the hours and
    users written. The models may be a migration's historical ones."""
    if requests_model is None:
        from proxy.models import RequestLog as requests_model

    with transaction.atomic():
        if connection.vendor == "postgresql":
            # The writer waits while this runs: its rows land after, added to the rebuilt sums.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {HOURS}, {TOTALS} IN EXCLUSIVE MODE")
        rebuilt_hours = _rebuild_hours(requests_model, hours_model)
        rebuilt_users = _rebuild_totals(requests_model, hours_model, totals_model)
    return rebuilt_hours, rebuilt_users


def _rebuild_hours(requests_model, hours_model) -> int:
    """Each hour the log holds, summed again from its rows; returns the hours written."""
    oldest = requests_model.objects.aggregate(oldest=Min("created_at"))["oldest"]
    if oldest is None:
        return 0
    start = hour_of(oldest)
    hours_model.objects.filter(hour__gte=start).delete()
    per_hour = (
        requests_model.objects.filter(created_at__gte=start)
        .annotate(hour=TruncHour("created_at"))
        .values("user_id", "hour")
        # Named apart from the columns: an aggregate named total_tokens would stand in for
        # the column in the filters of the aggregates after it.
        .annotate(**{f"n_{column}": count for column, count in COUNTS.items()})
        .values_list("user_id", "hour", *(f"n_{column}" for column in COUNTERS))
        .order_by()
    )
    select, params = per_hour.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {HOURS} (user_id, hour, {', '.join(COUNTERS)}) {select}", params)
        return cursor.rowcount


def _rebuild_totals(requests_model, hours_model, totals_model) -> int:
    """Each user's totals as the sum of their hours; returns the users written."""
    per_user = requests_model.objects.values("user_id").annotate(first=Min("created_at"), last=Max("created_at"))
    seen = {row["user_id"]: (row["first"], row["last"]) for row in per_user}
    earlier = {row.user_id: (row.first_seen, row.last_seen) for row in totals_model.objects.all()}
    summed = hours_model.objects.values("user_id").annotate(
        **{f"sum_{column}": Sum(column) for column in COUNTERS}, first_hour=Min("hour"), last_hour=Max("hour")
    )
    totals = []
    for row in summed:
        # Exact times where the log or the earlier totals have them; where neither reaches
        # the user's first (or last) hour, that hour's start: known to the hour only.
        times = [t for t in (*seen.get(row["user_id"], ()), *earlier.get(row["user_id"], ())) if t is not None]
        first = min(times, default=None)
        last = max(times, default=None)
        totals.append(
            totals_model(
                user_id=row["user_id"],
                first_seen=first if first and hour_of(first) <= row["first_hour"] else row["first_hour"],
                last_seen=last if last and hour_of(last) >= row["last_hour"] else row["last_hour"],
                **{column: row[f"sum_{column}"] for column in COUNTERS},
            )
        )
    totals_model.objects.all().delete()
    totals_model.objects.bulk_create(totals, batch_size=2000)
    return len(totals)
