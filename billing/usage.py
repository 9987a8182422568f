"""Monthly usage counters: months in UTC, increments as single upserts (SQLite and PostgreSQL)."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple

from billing.models import MonthlyUsage
from gateway_project import async_sql

_TABLE = MonthlyUsage._meta.db_table


class Usage(NamedTuple):
    """Tokens of one call as the upstream reported them. Cached input tokens are part of
    the input tokens, as OpenAI counts them. Where a call's usage is unknown, callers hold
    None instead, never zeros."""

    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    total_tokens: int


# A call that used nothing: refused before forwarding, or not a token-priced call.
NO_USAGE = Usage(0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class UsageDelta:
    user_id: str
    month: date
    requests: int
    # None: the call's usage is unknown (counted apart, never as 0 tokens).
    usage: Usage | None


def month_of(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


_COUNT_IF_UNDER_SQL = (
    f"INSERT INTO {_TABLE} (user_id, month, requests, tokens, input_tokens, cached_input_tokens, output_tokens, "
    "unknown_usage_requests) VALUES (%s, %s, 1, 0, 0, 0, 0, 0) "
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


# The columns ADD_SQL adds to, in the order of totals()' rows after user_id and month.
_ADDED = ("requests", "tokens", "input_tokens", "cached_input_tokens", "output_tokens", "unknown_usage_requests")

# Adds requests and usage to a user's month: one row per user and month (see totals()).
ADD_SQL = (
    f"INSERT INTO {_TABLE} (user_id, month, {', '.join(_ADDED)}) VALUES (%s, %s{', %s' * len(_ADDED)}) "
    "ON CONFLICT (user_id, month) DO UPDATE SET "
    + ", ".join(f"{column} = {_TABLE}.{column} + excluded.{column}" for column in _ADDED)
)


def totals(deltas: list[UsageDelta]) -> list[tuple]:
    """ADD_SQL's rows for these deltas: one per user and month."""
    summed: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0] * len(_ADDED))
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
    return [(user_id, month, *counts) for (user_id, month), counts in summed.items()]
