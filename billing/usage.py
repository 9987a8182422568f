"""Monthly usage counters: months in UTC, increments as single upserts (SQLite and PostgreSQL)."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from billing.models import MonthlyUsage
from gateway_project import async_sql

_TABLE = MonthlyUsage._meta.db_table


@dataclass(frozen=True, slots=True)
class UsageDelta:
    user_id: str
    month: date
    requests: int
    tokens: int


def month_of(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


_COUNT_IF_UNDER_SQL = (
    f"INSERT INTO {_TABLE} (user_id, month, requests, tokens) VALUES (%s, %s, 1, 0) "
    f"ON CONFLICT (user_id, month) DO UPDATE SET requests = {_TABLE}.requests + 1 "
    f"WHERE {_TABLE}.requests < CAST(%s AS BIGINT) AND {_TABLE}.tokens < CAST(%s AS BIGINT) "
    "RETURNING requests"
)


async def count_if_under(user_id: str, month: date, max_requests: int, max_tokens: int) -> bool:
    """Count one request unless the month's requests or tokens already reached their limit.

    One conditional upsert: concurrent callers cannot both see the last free request,
    because the row is locked from the check through the increment. Its commit does not
    wait for PostgreSQL's WAL flush (see gateway_project.async_sql).
    """
    return await async_sql.fetchone(_COUNT_IF_UNDER_SQL, [user_id, month, max_requests, max_tokens]) is not None


_UNCOUNT_SQL = f"UPDATE {_TABLE} SET requests = requests - 1 WHERE user_id = %s AND month = %s AND requests > 0"


async def uncount(user_id: str, month: date) -> None:
    """Take back one request counted by count_if_under."""
    await async_sql.executemany(_UNCOUNT_SQL, [(user_id, month)])


# Adds requests and tokens to a user's month: one row per user and month (see totals()).
ADD_SQL = (
    f"INSERT INTO {_TABLE} (user_id, month, requests, tokens) VALUES (%s, %s, %s, %s) "
    f"ON CONFLICT (user_id, month) DO UPDATE SET requests = {_TABLE}.requests + excluded.requests, "
    f"tokens = {_TABLE}.tokens + excluded.tokens"
)


def totals(deltas: list[UsageDelta]) -> list[tuple[str, date, int, int]]:
    """ADD_SQL's rows for these deltas: one per user and month."""
    summed: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
    for delta in deltas:
        total = summed[delta.user_id, delta.month]
        total[0] += delta.requests
        total[1] += delta.tokens
    return [(user_id, month, requests, tokens) for (user_id, month), (requests, tokens) in summed.items()]
