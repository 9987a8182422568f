"""Monthly usage counters: months in UTC, increments as single upserts (SQLite and PostgreSQL)."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db import connection

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
    f"WHERE {_TABLE}.requests < %s AND {_TABLE}.tokens < %s "
    "RETURNING requests"
)


async def count_if_under(user_id: str, month: date, max_requests: int, max_tokens: int) -> bool:
    """Count one request unless the month's requests or tokens already reached their limit.

    One conditional upsert: concurrent callers cannot both see the last free request,
    because the row is locked from the check through the increment. Its commit does not
    wait for PostgreSQL's WAL flush (see gateway_project.async_sql).
    """
    return await async_sql.fetchone(_COUNT_IF_UNDER_SQL, [user_id, month, max_requests, max_tokens]) is not None


def add(deltas: list[UsageDelta]) -> None:
    """Add requests and tokens, one upsert per user and month (inside the caller's transaction)."""
    totals: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
    for delta in deltas:
        total = totals[delta.user_id, delta.month]
        total[0] += delta.requests
        total[1] += delta.tokens
    if not totals:
        return
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {_TABLE} (user_id, month, requests, tokens) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (user_id, month) DO UPDATE SET requests = {_TABLE}.requests + excluded.requests, "
            f"tokens = {_TABLE}.tokens + excluded.tokens",
            [(user_id, month, requests, tokens) for (user_id, month), (requests, tokens) in totals.items()],
        )
