"""The access log: one `requests` row per /v1 request, written behind the response.

Rows are queued in memory when a response finishes and written in batches by one
background task per worker, so a slow or failing database never delays or breaks a
response. While the database is unreachable rows stay queued (up to MAX_PENDING) and
are written when it returns; rows that cannot be kept are counted on the process log.
"""

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.db import DataError, IntegrityError, models
from django.http import HttpRequest
from django.utils import timezone

from billing import monthly_usage, prices, rollups, single_call
from billing.call_usage import NO_USAGE, Usage
from billing.quota import Charge
from gateway_project.lib import async_sql, request_ids
from gateway_project.lib.client_addresses import client_ip, hash_ip
from gateway_project.lib.errors import for_operators
from gateway_project.lib.per_loop import LoopTask
from proxy import analytics, metrics
from proxy.models import RequestLog

logger = logging.getLogger(__name__)

ENDPOINT_MAX_LENGTH = 255
MAX_PENDING = 100_000
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# Rows gather this long (or until BATCH_ROWS are queued) before a write: one insert per
# batch instead of one per request, which at low concurrency cost ~1.5 ms of the worker's
# CPU per request. flush() writes at once.
BATCH_DELAY = 0.05
BATCH_ROWS = 500


def _python_type(field: models.Field) -> object:
    for field_class, python_type in (
        (models.IntegerField, int),
        (models.CharField, str),
        (models.DateTimeField, datetime),
    ):
        if isinstance(field, field_class):
            return python_type | None if field.null else python_type
    raise TypeError(f"LogRow: no Python type for the column {field.column} ({type(field).__name__})")


# One `requests` row: every column of the model but its id, in the model's order (what each
# holds is the model's help_text). A tuple: built per request, handed to the database as it
# is. Usage is None when unknown; cost_pico_usd is filled in by the writer.
LogRow = NamedTuple(
    "LogRow",
    [(field.column, _python_type(field)) for field in RequestLog._meta.concrete_fields if not field.primary_key],
)


_INSERT_SQL = (
    f"INSERT INTO {RequestLog._meta.db_table} ({', '.join(LogRow._fields)}) "
    f"VALUES ({', '.join(['%s'] * len(LogRow._fields))})"
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A log row and how its call is settled, written in one transaction."""

    row: LogRow
    usage: Usage | None
    charge: Charge | None = None


@dataclass(slots=True)
class Exchange:
    """What the access log needs to know about one /v1 request, gathered as it goes."""

    method: str
    endpoint: str
    ip_hash: str
    created_at: datetime
    started: float = field(default_factory=time.monotonic)
    request_id: str = ""
    user_id: str = ""
    model: str = ""
    # The upstream that answered, once one has, and the attempts made (proxy.routing).
    upstream: str = ""
    attempts: int = 0
    # Set once the request is admitted: how its usage is settled when it finishes.
    charge: Charge | None = None

    # The task serving the request, while its row is still to come (see AccessLogWriter.close).
    task: asyncio.Task | None = None

    @classmethod
    def begin(cls, request: HttpRequest) -> "Exchange":
        exchange = cls(
            method=request.method[:16],
            endpoint=_storable(request.path)[:ENDPOINT_MAX_LENGTH],
            ip_hash=hash_ip(client_ip(request)),
            created_at=timezone.now(),
            request_id=request_ids.of(request.scope),
            task=asyncio.current_task(),
        )
        if exchange.task is not None:
            access_log.open_tasks.add(exchange.task)
        return exchange

    def finish(self, status: int, usage: Usage | None = NO_USAGE) -> None:
        """Queue the row; `usage` None means the upstream's usage is unknown."""
        if self.task is not None:
            access_log.open_tasks.discard(self.task)
        holding = self.charge.single_call_until if self.charge else None
        if holding is not None:
            # The caller's next call waits for this row (billing.single_call): no batching delay.
            single_call.finish(self.charge.user_id, self.charge.month, holding)
        # Detached: the writer's task, started by whichever request comes first, serves them all.
        request_ids.detached(
            access_log.record,
            _Entry(
                LogRow(
                    self.user_id,
                    self.method,
                    self.endpoint,
                    status,
                    int((time.monotonic() - self.started) * 1000),
                    *(usage if usage is not None else _UNKNOWN),
                    None,
                    _storable(self.model),
                    self.ip_hash,
                    self.created_at,
                    self.request_id,
                    self.upstream,
                    self.attempts,
                ),
                usage,
                self.charge,
            ),
            holding is not None,
        )


_UNKNOWN = (None, None, None, None)


def _storable(text: str) -> str:
    # PostgreSQL refuses NUL in text columns; a decoded %00 in a path must not cost the row.
    return text.replace("\x00", "")


class AccessLogWriter:
    def __init__(self) -> None:
        self._pending: list[_Entry] = []
        self._drainer = LoopTask(self._drain)
        self._dropped = 0
        # Tasks of requests whose row is still to come (see close()); weak, so a request
        # that died without a row is not kept forever.
        self.open_tasks: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()

    def record(self, entry: _Entry, at_once: bool = False) -> None:
        """Queue a row and its usage; never blocks and never raises into the response.
        `at_once`: write it without waiting for a batch to gather."""
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(0)
            self._dropped += 1
            metrics.access_log_dropped(1)
        self._pending.append(entry)
        self._drainer.start()
        if at_once:
            self._drainer.wake()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued row is written (at shutdown, and in tests)."""
        task = self._drainer.running()
        if task is None:
            return
        self._drainer.wake()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            logger.error("access log: %d rows could not be written before shutdown", len(self._pending))

    async def close(self, timeout: float) -> None:
        """At shutdown, once the server's grace period is over: end what still runs, then
        write every row.

        A request still open here (a stream) is cancelled: it ends as a 499 with its row
        queued, and its clean-up runs before the flush, so no row is lost.
        """
        tasks = list(self.open_tasks)
        for task in tasks:
            task.cancel()
        deadline = time.monotonic() + timeout
        if tasks:  # let the cancelled tasks run their finally blocks
            await asyncio.wait(tasks, timeout=timeout)
        await self.flush(timeout=max(0.0, deadline - time.monotonic()))

    async def _drain(self, woken: asyncio.Event) -> None:
        failures = 0
        while self._pending:
            if len(self._pending) < BATCH_ROWS and not woken.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), BATCH_DELAY)
            batch, self._pending = self._pending, []
            metrics.access_log_queued(len(batch))
            try:
                written, rejected = await _insert(batch)
            except Exception as error:
                self._pending[:0] = batch
                overflow = len(self._pending) - MAX_PENDING
                if overflow > 0:
                    del self._pending[:overflow]
                    self._dropped += overflow
                metrics.access_log_failed(dropped=max(overflow, 0))
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                logger.error(
                    "access log: could not write %d rows (%s); retrying in %.1f s",
                    len(batch),
                    for_operators(error),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            _written(written)
            metrics.access_log_written(len(self._pending), rejected=len(rejected))
            if rejected:
                logger.error("access log: the database rejected %d rows: %s", len(rejected), "; ".join(rejected))
            if failures:
                logger.warning("access log: writing again after %d failed attempts", failures)
                failures = 0
            if self._dropped:
                logger.error("access log: %d rows were dropped while the database was unreachable", self._dropped)
                self._dropped = 0


async def _insert(entries: list[_Entry]) -> tuple[list[LogRow], list[str]]:
    """Write a batch of rows with their usage; returns the rows written (with their cost) and
    why rows the database refused failed.

    Connection failures raise, and the whole batch is kept for a retry. A row the
    database rejects for its content would fail every retry and hold back every row
    queued after it, so the batch is then written row by row and only that row is lost.
    """
    try:
        return await _write(entries), []
    except (DataError, IntegrityError):
        written, rejected = [], []
        for entry in entries:
            try:
                written += await _write([entry])
            except (DataError, IntegrityError) as error:
                rejected.append(f"{entry.row.method} {entry.row.endpoint} ({for_operators(error)})")
        return written, rejected


def _written(rows: list[LogRow]) -> None:
    """Rows now in the database, with their cost: what is counted off the request's path
    (metrics, the analytics export) starts here, and must neither block nor raise."""
    metrics.count_rows(rows)
    analytics.export(rows)  # opt-in PostHog export: a hand-off to its thread, never raises


async def _write(entries: list[_Entry]) -> list[LogRow]:
    # Rows, usage and cost together: the log and the monthly counts never disagree.
    book = await prices.book()
    rows, deltas, calls = [], [], []
    for entry in entries:
        row = entry.row
        cost = book.cost(row.model, row.created_at, entry.usage)
        rows.append(row._replace(cost_pico_usd=cost))
        if entry.usage != NO_USAGE:  # model calls: refusals and reads use nothing
            calls.append((monthly_usage.month_of(row.created_at), row.model, entry.usage, cost))
        delta = entry.charge.delta(entry.usage, cost) if entry.charge else None
        if delta is not None:
            deltas.append(delta)
    statements = [(_INSERT_SQL, rows), *rollups.additions(rows)]
    if calls:
        statements.append((monthly_usage.MODEL_ADD_SQL, monthly_usage.model_totals(calls)))
    if deltas:
        statements.append((monthly_usage.ADD_SQL, monthly_usage.totals(deltas)))
        releases = monthly_usage.releases(deltas)
        if releases:
            statements.append((monthly_usage.RELEASE_SQL, releases))
    await async_sql.execute_in_one_transaction(statements)
    for delta in deltas:
        if delta.single_call_until is not None:
            single_call.free(delta.user_id, delta.month, delta.single_call_until)
    return rows


access_log = AccessLogWriter()
