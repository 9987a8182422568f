"""Monthly usage counters per user and per model: months in UTC, increments as single upserts
(SQLite and PostgreSQL), and the conditional count that admits a metered call."""

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple

from django.db import DatabaseError, models

from billing.call_usage import Usage
from billing.models import ModelMonth, MonthlyUsage
from gateway_project.lib import async_sql
from gateway_project.lib.batches import Batches
from gateway_project.lib.errors import for_operators
from gateway_project.lib.per_loop import PerLoop

logger = logging.getLogger(__name__)

_TABLE = MonthlyUsage._meta.db_table


def counters_of(model: type[models.Model]) -> tuple[str, ...]:
    """A counter table's counters: its integer columns, in the model's order."""
    return tuple(
        field.name
        for field in model._meta.concrete_fields
        if isinstance(field, models.IntegerField) and not field.primary_key
    )


# A month's counters: the columns ADD_SQL adds to, in the order of totals()' rows after
# user_id and month.
COUNTERS = counters_of(MonthlyUsage)


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


# A new month's row holds this one request and nothing else (the model's defaults are not
# the database's, so each counter is named).
_FIRST_COUNTS = ", ".join("1" if column == "requests" else "0" for column in COUNTERS)
_COUNT_IF_UNDER_SQL = (
    f"INSERT INTO {_TABLE} (user_id, month, {', '.join(COUNTERS)}, single_call_until) "
    f"VALUES (%s, %s, {_FIRST_COUNTS}, %s) "
    f"ON CONFLICT (user_id, month) DO UPDATE SET requests = {_TABLE}.requests + 1, single_call_until = "
    f"CASE WHEN {_TABLE}.cost_pico_usd >= CAST(%s AS BIGINT) THEN %s ELSE {_TABLE}.single_call_until END "
    f"WHERE {_TABLE}.requests < CAST(%s AS BIGINT) AND {_TABLE}.total_tokens < CAST(%s AS BIGINT) "
    f"AND {_TABLE}.cost_pico_usd < CAST(%s AS BIGINT) AND ({_TABLE}.cost_pico_usd < CAST(%s AS BIGINT) "
    f"OR {_TABLE}.single_call_until IS NULL OR {_TABLE}.single_call_until < %s) "
    # The call's place in its batch (see _send_counts), and whether it took the lease.
    "RETURNING CAST(%s AS INTEGER), CASE WHEN single_call_until = %s THEN 1 ELSE 0 END"
)


class _Count(NamedTuple):
    """One metered call to count (count_if_under's arguments)."""

    user_id: str
    month: date
    max_requests: int
    max_tokens: int
    max_cost: int
    alone_from: int
    now: datetime
    lease: datetime | None

    def params(self, place: int) -> list:
        first_lease = self.lease if self.alone_from <= 0 else None  # a new month's row starts at a cost of 0
        return [
            self.user_id,
            self.month,
            first_lease,
            self.alone_from,
            self.lease,
            self.max_requests,
            self.max_tokens,
            self.max_cost,
            self.alone_from,
            self.now,
            place,
            self.lease,
        ]


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
    wait for PostgreSQL's WAL flush (see gateway_project.lib.async_sql). The counts of a
    worker's concurrent calls go to the database together (one round trip, one commit), each
    still its own conditional upsert, run one after the other.
    """
    count = _Count(user_id, month, max_requests, max_tokens, max_cost, alone_from, now, lease)
    return await _batches.get().call(count)


async def _send_counts(counts: Sequence[_Count]) -> list[tuple[bool, bool]]:
    # In key order, as the access log's batches add to the same rows (totals()): concurrent
    # transactions then lock rows in one order, never a deadlock.
    order = sorted(range(len(counts)), key=lambda place: (counts[place].user_id, counts[place].month))
    rows = await async_sql.fetch_each(_COUNT_IF_UNDER_SQL, [counts[place].params(place) for place in order])
    holds_lease = {place: bool(holds) for place, holds in rows}
    return [(place in holds_lease, holds_lease.get(place, False)) for place in range(len(counts))]


async def _give_back(count: _Count, counted: tuple[bool, bool]) -> None:
    """Take back the count of a call whose caller left while it was being counted."""
    admitted, holds_lease = counted
    if not admitted:
        return
    try:
        await uncount(count.user_id, count.month, count.lease if holds_lease else None)
    except DatabaseError as error:
        logger.error(
            "quota: a request whose caller left while it was counted stays counted for %s (%s)",
            count.user_id,
            for_operators(error),
        )


_batches = PerLoop(lambda: Batches(_send_counts, abandoned=_give_back))


async def settle_counts() -> None:
    """Wait for the counts out and the give-backs of callers who left (shutdown, tests)."""
    await _batches.get().settle()


class Standing(NamedTuple):
    """Where a user's month stands: what the limits are compared with."""

    requests: int
    total_tokens: int
    cost_pico_usd: int


_STANDING_SQL = f"SELECT {', '.join(Standing._fields)} FROM {_TABLE} WHERE user_id = %s AND month = %s"


async def standing(user_id: str, month: date) -> Standing | None:
    """The month's requests, tokens and cost so far."""
    row = await async_sql.fetchone(_STANDING_SQL, [user_id, month])
    return None if row is None else Standing(*row)


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


# What one call adds to each counter of its month (usage None: unknown, counted apart).
_ADDS: dict[str, Callable[[UsageDelta], int]] = {
    "requests": lambda delta: delta.requests,
    "total_tokens": lambda delta: 0 if delta.usage is None else delta.usage.total_tokens,
    "input_tokens": lambda delta: 0 if delta.usage is None else delta.usage.input_tokens,
    "cached_input_tokens": lambda delta: 0 if delta.usage is None else delta.usage.cached_input_tokens,
    "output_tokens": lambda delta: 0 if delta.usage is None else delta.usage.output_tokens,
    "unknown_usage_requests": lambda delta: int(delta.usage is None),
    "cost_pico_usd": lambda delta: delta.cost or 0,
    "unknown_cost_requests": lambda delta: int(delta.cost is None),
}
assert tuple(_ADDS) == COUNTERS, "_ADDS must follow MonthlyUsage's counters"


def totals(deltas: list[UsageDelta]) -> list[tuple]:
    """ADD_SQL's rows for these deltas: one per user and month."""
    return _summed([((delta.user_id, delta.month), delta) for delta in deltas], _ADDS)


def _summed(calls: list[tuple[tuple, object]], adds: dict[str, Callable]) -> list[tuple]:
    """(key, call) pairs as rows of counters: the key, then each counter summed over its calls."""
    summed: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(adds))
    for key, call in calls:
        total = summed[key]
        for index, add in enumerate(adds.values()):
            total[index] += add(call)
    # In key order: batches of several workers then lock rows in one order, never a deadlock.
    return [(*key, *counts) for key, counts in sorted(summed.items())]


_MODEL_TABLE = ModelMonth._meta.db_table
_MODEL_COUNTERS = counters_of(ModelMonth)
# Adds calls to a model's month: one row per month and model (see model_totals()).
MODEL_ADD_SQL = (
    f"INSERT INTO {_MODEL_TABLE} (month, model, {', '.join(_MODEL_COUNTERS)}) "
    f"VALUES (%s, %s{', %s' * len(_MODEL_COUNTERS)}) "
    "ON CONFLICT (month, model) DO UPDATE SET "
    + ", ".join(f"{column} = {_MODEL_TABLE}.{column} + excluded.{column}" for column in _MODEL_COUNTERS)
)


class _ModelCall(NamedTuple):
    month: date
    model: str
    usage: Usage | None
    cost: int | None


# What one call adds to each counter of its model's month. A call of unknown usage adds no
# tokens, and is not "unpriced": its cost is unknown for want of usage, not of a price.
_MODEL_ADDS: dict[str, Callable[[_ModelCall], int]] = {
    "requests": lambda call: 1,
    "total_tokens": lambda call: 0 if call.usage is None else call.usage.total_tokens,
    "cost_pico_usd": lambda call: call.cost or 0,
    "unpriced_requests": lambda call: int(call.usage is not None and call.cost is None),
}
assert tuple(_MODEL_ADDS) == _MODEL_COUNTERS, "_MODEL_ADDS must follow ModelMonth's counters"


def model_totals(calls: list[tuple[date, str, Usage | None, int | None]]) -> list[tuple]:
    """MODEL_ADD_SQL's rows for (month, model, usage, cost) of each call."""
    return _summed([((month, model), _ModelCall(month, model, *rest)) for month, model, *rest in calls], _MODEL_ADDS)


def releases(deltas: list[UsageDelta]) -> list[tuple]:
    """RELEASE_SQL's rows for the deltas of calls that held the single-call lease."""
    return [(d.user_id, d.month, d.single_call_until) for d in deltas if d.single_call_until is not None]
