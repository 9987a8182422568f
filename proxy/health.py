"""Upstream health, written where operators read it (admin "Upstreams", manage.py
check_upstreams, /metrics): each upstream's circuit breaker mirrored into the database, its
last probe and last error (proxy.models.UpstreamHealth, by name), and its attempts per
minute (proxy.models.UpstreamMinute).

- Breakers: the process that opens or closes one writes the change (breakers.on_change), in
  a task of its own, off the request's path. A change older than the one stored never
  overwrites it (two tasks may finish out of order).
- Attempts: proxy.routing records each one here (`attempted`: a dict update, no I/O). A
  background task per worker adds the counts to the table every FLUSH_SECONDS (INSERT ... ON
  CONFLICT DO UPDATE adding them, on SQLite as on PostgreSQL) and once more at shutdown, and
  prunes rows older than KEEP_MINUTES. While the database fails, the counts wait for the next
  flush.

The statements are raw SQL (gateway_project.lib.async_sql: on the event loop on PostgreSQL),
their columns read from the models, and each is tested against them.
"""

import asyncio
import logging
from bisect import bisect_left
from datetime import UTC, datetime

from django.db import DatabaseError

from gateway_project.lib import async_sql, process_state
from gateway_project.lib.periodic import Periodic
from proxy import breakers, timing
from proxy.models import UpstreamHealth, UpstreamMinute

logger = logging.getLogger(__name__)

# Attempts are counted per minute in buckets of latency: a fixed log scale, each bucket named
# by its upper bound; the last holds everything longer than 60 s.
LATENCY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
OVER_MS = 2**31 - 1
FLUSH_SECONDS = 5.0
KEEP_MINUTES = 60
# Minutes of counts kept in memory while the database fails (beyond: the oldest go).
PENDING_MINUTES = 10

_HEALTH = UpstreamHealth._meta.db_table
_MINUTES = UpstreamMinute._meta.db_table
_COUNTED = ("upstream", "minute", "latency_le_ms", "calls", "failures")
assert {f.column for f in UpstreamMinute._meta.concrete_fields} == {"id", *_COUNTED}

_ADD = (
    f"INSERT INTO {_MINUTES} ({', '.join(_COUNTED)}) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (upstream, minute, latency_le_ms) DO UPDATE SET "
    f"calls = {_MINUTES}.calls + excluded.calls, failures = {_MINUTES}.failures + excluded.failures"
)
_PRUNE = f"DELETE FROM {_MINUTES} WHERE minute < %s"
_LAST_ERROR = (
    f"INSERT INTO {_HEALTH} (name, last_error, last_error_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (name) DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at "
    f"WHERE {_HEALTH}.last_error_at IS NULL OR {_HEALTH}.last_error_at < excluded.last_error_at"
)
_STATE = (
    f"INSERT INTO {_HEALTH} (name, state, state_since, open_until) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (name) DO UPDATE SET "
    "state = excluded.state, state_since = excluded.state_since, open_until = excluded.open_until "
    f"WHERE {_HEALTH}.state_since IS NULL OR {_HEALTH}.state_since <= excluded.state_since"
)
# The probe lease: the row's probed_at moves to now only when the last probe is due; the
# process whose statement moved it (a row returned) probes.
_LEASE = (
    f"INSERT INTO {_HEALTH} (name, probed_at) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET probed_at = excluded.probed_at "
    f"WHERE {_HEALTH}.probed_at IS NULL OR {_HEALTH}.probed_at <= %s RETURNING name"
)
_PROBED = f"UPDATE {_HEALTH} SET probe_ok = %s, probe_latency_ms = %s WHERE name = %s"

# (upstream, minute's start in epoch seconds, bucket) → [calls, failures]
_counts: dict[tuple[str, int, int], list[int]] = {}
# upstream → (the last failed attempt's error, when)
_last_errors: dict[str, tuple[str, float]] = {}
_pruned_minute = 0


def attempted(upstream: str, error: str | None, seconds: float) -> None:
    """An attempt on `upstream` that took `seconds`; `error`: why it failed (None: it did
    not; the circuit breakers' rule). On the request's path: memory only."""
    now = timing.clock.wall()
    key = (upstream, int(now // 60) * 60, bucket_of(seconds))
    counts = _counts.get(key)
    if counts is None:
        counts = _counts[key] = [0, 0]
    counts[0] += 1
    if error is not None:
        counts[1] += 1
        _last_errors[upstream] = (error, now)


def bucket_of(seconds: float) -> int:
    """The latency bucket (its upper bound in ms) of an attempt that took `seconds`."""
    index = bisect_left(LATENCY_BUCKETS_MS, seconds * 1000)
    return LATENCY_BUCKETS_MS[index] if index < len(LATENCY_BUCKETS_MS) else OVER_MS


async def flush() -> None:
    """Add the counts and last errors kept since the last flush to the tables, and prune
    rows past KEEP_MINUTES (once a minute). Raises DatabaseError, the counts kept."""
    global _counts, _last_errors, _pruned_minute
    counts, errors = _counts, _last_errors
    _counts, _last_errors = {}, {}
    minute = int(timing.clock.wall() // 60) * 60
    statements = []
    if counts:
        rows = sorted((name, _time(start), le, *values) for (name, start, le), values in counts.items())
        statements.append((_ADD, rows))
    if errors:
        statements.append((_LAST_ERROR, sorted((name, text, _time(at)) for name, (text, at) in errors.items())))
    prune = minute != _pruned_minute
    if prune:
        statements.append((_PRUNE, [(_time(minute - KEEP_MINUTES * 60),)]))
    if not statements:
        return
    try:
        await async_sql.execute_in_one_transaction(statements)
    except DatabaseError:
        _keep(counts, errors, minute)
        raise
    if prune:
        _pruned_minute = minute


def _keep(counts: dict, errors: dict, minute: int) -> None:
    """Counts a failed flush took, back for the next one (newer ones added to them)."""
    oldest = minute - PENDING_MINUTES * 60
    for key, (calls, failures) in counts.items():
        if key[1] >= oldest:
            kept = _counts.setdefault(key, [0, 0])
            kept[0] += calls
            kept[1] += failures
    for name, error in errors.items():
        _last_errors.setdefault(name, error)


async def leased(name: str, interval: float) -> bool:
    """Whether this process is the one to probe upstream `name` now: no process started a
    probe of it within `interval` seconds (a tenth of it spared for the processes' timers)."""
    now = timing.clock.wall()
    row = await async_sql.fetchone(_LEASE, [name, _time(now), _time(now - interval * 0.9)])
    return row is not None


async def probed(name: str, ok: bool, seconds: float, error: str) -> None:
    """A probe's outcome, for operators."""
    statements = [(_PROBED, [(ok, round(seconds * 1000), name)])]
    if not ok:
        statements.append((_LAST_ERROR, [(name, error, _time(timing.clock.wall()))]))
    await async_sql.execute_in_one_transaction(statements)


def _mirror(name: str, breaker: breakers.Breaker) -> None:
    """breakers.on_change listener: called on the event loop, so the write is a task."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(_write_change(name, breaker))
    _writes.add(task)
    task.add_done_callback(_writes.discard)


async def _write_change(name: str, breaker: breakers.Breaker) -> None:
    since = breaker.since or timing.clock.wall()
    opened = bool(breaker.open_until)
    state = breakers.OPEN if opened else breakers.CLOSED
    statements = [(_STATE, [(name, state, _time(since), _time(breaker.open_until) if opened else None)])]
    if opened and breaker.last_error:
        statements.append((_LAST_ERROR, [(name, breaker.last_error, _time(since))]))
    try:
        await async_sql.execute_in_one_transaction(statements)
    except DatabaseError as error:
        logger.warning("upstream health: the %s breaker of %s was not recorded (%s)", state, name, error)


async def settle() -> None:
    """Wait for this loop's breaker changes still being written (shutdown, tests)."""
    loop = asyncio.get_running_loop()
    pending = [task for task in _writes if task.get_loop() is loop]
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


_writes: set[asyncio.Task] = set()
breakers.on_change(_mirror)


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@process_state.on_reset
def _forget() -> None:
    _counts.clear()
    _last_errors.clear()


flusher = Periodic("upstream health: writing attempt counts", flush, lambda: FLUSH_SECONDS)


def start() -> None:
    """At a worker's startup (the ASGI lifespan): counts are flushed from now on."""
    flusher.start()


async def close() -> None:
    """At shutdown: the last counts and breaker changes written (failures logged)."""
    await flusher.stop()
    await settle()
    try:
        await flush()
    except DatabaseError as error:
        logger.warning("upstream health: the last attempt counts were not written (%s)", error)
