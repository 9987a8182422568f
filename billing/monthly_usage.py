"""Monthly usage counters per user and per model: months in UTC, increments as single upserts
(SQLite and PostgreSQL), and the conditional count that admits a metered call."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from billing.call_usage import Usage
from billing.models import ModelMonth, MonthlyUsage
from gateway_project.lib import async_sql

_TABLE = MonthlyUsage._meta.db_table


@dataclass(frozen=True, slots=True)
class UsageDelta:
    user_id: str
    month: date
    requests: int
    # None: the call's usage is unknown (counted apart, never as 0 tokens).
    usage: Usage | None
    # pico-dollars; None: unknown (no price, or unknown usage), counted apart.
    cost: int | None = None
    # The single-call lease the call held (billing.quota), released with its row.
    single_call_until: datetime | None = None


def month_of(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


_COUNT_IF_UNDER_SQL = (
    f"INSERT INTO {_TABLE} (user_id, month, requests, tokens, input_tokens, cached_input_tokens, output_tokens, "
    "unknown_usage_requests, cost_pico_usd, unknown_cost_requests, single_call_until) "
    "VALUES (%s, %s, 1, 0, 0, 0, 0, 0, 0, 0, %s) "
    f"ON CONFLICT (user_id, month) DO UPDATE SET requests = {_TABLE}.requests + 1, single_call_until = "
    f"CASE WHEN {_TABLE}.cost_pico_usd >= CAST(%s AS BIGINT) THEN %s ELSE {_TABLE}.single_call_until END "
    f"WHERE {_TABLE}.requests < CAST(%s AS BIGINT) AND {_TABLE}.tokens < CAST(%s AS BIGINT) "
    f"AND {_TABLE}.cost_pico_usd < CAST(%s AS BIGINT) AND ({_TABLE}.cost_pico_usd < CAST(%s AS BIGINT) "
    f"OR {_TABLE}.single_call_until IS NULL OR {_TABLE}.single_call_until < %s) "
    "RETURNING requests, CASE WHEN single_call_until = %s THEN 1 ELSE 0 END"
)


async def count_if_under(
    user_id: str,
    month: date,
    *,
    max_requests: int,
    max_tokens: int,
    max_cost: int,
    alone_from: int,
    now: datetime,
    lease: datetime | None,
) -> tuple[bool, bool]:
    """Count one request unless the month's requests, tokens or cost already reached their
    limit; from a cost of `alone_from` on, only while no other call holds the single-call
    lease, which this one then takes until `lease`. Returns (admitted, holds the lease).

    One conditional upsert: concurrent callers cannot both see the last free request,
    because the row is locked from the check through the increment. Its commit does not
    wait for PostgreSQL's WAL flush (see gateway_project.lib.async_sql).
    """
    first_lease = lease if alone_from <= 0 else None  # a new month's row starts at a cost of 0
    row = await async_sql.fetchone(
        _COUNT_IF_UNDER_SQL,
        [
            user_id,
            month,
            first_lease,
            alone_from,
            lease,
            max_requests,
            max_tokens,
            max_cost,
            alone_from,
            now,
            lease,
        ],
    )
    return (False, False) if row is None else (True, bool(row[1]))


_STANDING_SQL = f"SELECT requests, tokens, cost_pico_usd FROM {_TABLE} WHERE user_id = %s AND month = %s"


async def standing(user_id: str, month: date) -> tuple[int, int, int] | None:
    """The month's requests, tokens and cost so far."""
    return await async_sql.fetchone(_STANDING_SQL, [user_id, month])


_UNCOUNT_SQL = f"UPDATE {_TABLE} SET requests = requests - 1 WHERE user_id = %s AND month = %s AND requests > 0"
# Frees the single-call lease a finished (or refused) call held, unless it already ran out
# and another call took it.
RELEASE_SQL = (
    f"UPDATE {_TABLE} SET single_call_until = NULL WHERE user_id = %s AND month = %s AND single_call_until = %s"
)


async def uncount(user_id: str, month: date, single_call_until: datetime | None = None) -> None:
    """Take back one request counted by count_if_under, and the lease it took."""
    statements = [(_UNCOUNT_SQL, [(user_id, month)])]
    if single_call_until is not None:
        statements.append((RELEASE_SQL, [(user_id, month, single_call_until)]))
    await async_sql.execute_in_one_transaction(statements)


# A month's counters: the columns ADD_SQL adds to, in the order of totals()' rows after
# user_id and month.
COUNTERS = (
    "requests",
    "tokens",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "unknown_usage_requests",
    "cost_pico_usd",
    "unknown_cost_requests",
)

# Adds requests, usage and cost to a user's month: one row per user and month (see totals()).
ADD_SQL = (
    f"INSERT INTO {_TABLE} (user_id, month, {', '.join(COUNTERS)}) VALUES (%s, %s{', %s' * len(COUNTERS)}) "
    "ON CONFLICT (user_id, month) DO UPDATE SET "
    + ", ".join(f"{column} = {_TABLE}.{column} + excluded.{column}" for column in COUNTERS)
)


def month_totals(user_id: str, month: date) -> dict[str, int]:
    """One user's counters for one month (zeros before their first call): what /api/usage
    and the account page show."""
    row = MonthlyUsage.objects.filter(user_id=user_id, month=month).values(*COUNTERS).first()
    return row or dict.fromkeys(COUNTERS, 0)


def totals(deltas: list[UsageDelta]) -> list[tuple]:
    """ADD_SQL's rows for these deltas: one per user and month."""
    summed: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0] * len(COUNTERS))
    for delta in deltas:
        total = summed[delta.user_id, delta.month]
        total[0] += delta.requests
        if delta.usage is None:
            total[5] += 1
        else:
            total[1] += delta.usage.total_tokens
            total[2] += delta.usage.input_tokens
            total[3] += delta.usage.cached_input_tokens
            total[4] += delta.usage.output_tokens
        if delta.cost is None:
            total[7] += 1
        else:
            total[6] += delta.cost
    # In key order: batches of several workers then lock rows in one order, never a deadlock.
    return [(user_id, month, *counts) for (user_id, month), counts in sorted(summed.items())]


_MODEL_TABLE = ModelMonth._meta.db_table
_MODEL_COUNTERS = ("requests", "tokens", "cost_pico_usd", "unpriced_requests")
# Adds calls to a model's month: one row per month and model (see model_totals()).
MODEL_ADD_SQL = (
    f"INSERT INTO {_MODEL_TABLE} (month, model, {', '.join(_MODEL_COUNTERS)}) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (month, model) DO UPDATE SET "
    + ", ".join(f"{column} = {_MODEL_TABLE}.{column} + excluded.{column}" for column in _MODEL_COUNTERS)
)


def model_totals(calls: list[tuple[date, str, Usage | None, int | None]]) -> list[tuple]:
    """MODEL_ADD_SQL's rows for (month, model, usage, cost) of each call."""
    summed: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0] * len(_MODEL_COUNTERS))
    for month, model, used, cost in calls:
        total = summed[month, model]
        total[0] += 1
        if used is not None:
            total[1] += used.total_tokens
            if cost is None:
                total[3] += 1
        if cost is not None:
            total[2] += cost
    return [(month, model, *counts) for (month, model), counts in sorted(summed.items())]


def releases(deltas: list[UsageDelta]) -> list[tuple]:
    """RELEASE_SQL's rows for the deltas of calls that held the single-call lease."""
    return [(d.user_id, d.month, d.single_call_until) for d in deltas if d.single_call_until is not None]
