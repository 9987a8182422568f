"""The few queries on every /v1 request, run without leaving the event loop.

Through the ORM each of them costs a thread hop, Django's SQL compilation and
PostgreSQL's planner: ~2.5 ms for the key lookup here, against ~0.25 ms for the query
itself. On PostgreSQL they run as raw SQL on the worker's event loop with asyncpg (an
asyncio-native driver: a key lookup through this module costs ~105 µs of CPU against
~160-200 µs on psycopg's async connections, and answers ~0.3 ms sooner after the
connection sat idle), over connections kept by `_Connections`,
each statement prepared once per connection. On SQLite (the embedded default, one
worker) they run through Django's connection in a worker thread.

Behind PgBouncer in transaction mode (DATABASE_POOLER=pgbouncer) consecutive statements of
one connection may run on different server sessions, shared with other processes: a named
prepared statement then collides with another process's of the same name, or is missing.
There each statement is sent unnamed (asyncpg's documented setting: statement_cache_size=0)
and nothing is set for the session (PgBouncer refuses such startup parameters).

The SQL is written once with `%s` placeholders, as Django's cursor takes it; for
asyncpg they become `$1`, `$2`… Its parameters are typed by the statement, so a number
compared with an integer column that may not fit is cast (CAST(%s AS BIGINT)).

Failures surface as django.db.DatabaseError, as from the ORM, so callers handle one type.
"""

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
from asgiref.sync import sync_to_async
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction
from django.utils import timezone

from gateway_project.lib import from_settings
from gateway_project.lib.per_loop import PerLoop

T = TypeVar("T")

MAX_CONNECTIONS = 10
# A request waits this long for a free connection before it is answered 503.
WAIT_TIMEOUT = 5.0
# Idle connections older than this are closed instead of reused.
MAX_IDLE_SECONDS = 300.0
# A statement of fetchone() or fetch_each() waits at most this long for a row another session
# holds locked (an operator's transaction left open): it fails, rolled back, and its requests
# are answered 503 rather than every request queued behind it waiting. Set per session, so not
# behind PgBouncer: there, set it for the gateway's role (docs/operators/deploy.md).
LOCK_TIMEOUT = "3s"
# A batch of fetch_each() that has not answered by then (a connection gone silent) fails.
BATCH_TIMEOUT = 10.0


async def fetchone(sql: str, params: Sequence) -> tuple | None:
    """The first row of one statement that returns rows (SELECT, or RETURNING),
    committed on its own (`%s` placeholders)."""
    if not on_postgresql():
        return await sync_to_async(_fetchone_in_thread, thread_sensitive=False)(sql, params)

    async def run(conn: asyncpg.Connection) -> tuple | None:
        row = await conn.fetchrow(_statement(sql), *params)
        return None if row is None else tuple(row)

    return await _on_a_connection(run)


async def fetch_each(sql: str, rows: Sequence[Sequence]) -> list[tuple]:
    """One statement run once per row of parameters, in order, all sent in one round trip
    and committed together or not at all; the rows they return, in order.

    Sent at most once: a connection lost with the batch out may have committed it, so it
    fails rather than run again. On PostgreSQL a row locked elsewhere fails it after
    LOCK_TIMEOUT, a silent connection after BATCH_TIMEOUT; on SQLite a locked database
    fails it after Django's own timeout."""
    if not on_postgresql():
        return await sync_to_async(_fetch_each_in_thread, thread_sensitive=False)(sql, rows)

    async def run(conn: asyncpg.Connection) -> list[tuple]:
        # Pipelined: every Bind and Execute, then one Sync (one implicit transaction).
        return [tuple(row) for row in await conn.fetchmany(_statement(sql), rows, timeout=BATCH_TIMEOUT)]

    return await _on_a_connection(run, again_if_dropped=False)


async def executemany(sql: str, rows: Sequence[Sequence]) -> None:
    """One statement for each row, in one transaction."""
    await execute_in_one_transaction([(sql, rows)])


async def execute_in_one_transaction(statements: Sequence[tuple[str, Sequence[Sequence]]]) -> None:
    """Each (statement, rows) run once per row, all committed together or not at all. On
    PostgreSQL an INSERT's rows go as one array per column, in one execution (_as_arrays):
    an upsert's rows must then name each key once, as PostgreSQL updates a row once per
    statement (the callers sum their rows per key).

    A row the database refuses for its content raises django.db.DataError or
    IntegrityError, as from the ORM; other failures raise DatabaseError.
    """
    if not on_postgresql():
        return await sync_to_async(_execute_in_thread, thread_sensitive=False)(statements)

    async def run(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            # Mostly behind the response (the access log, bookkeeping): these wait for a row
            # locked elsewhere rather than fail after LOCK_TIMEOUT. Behind PgBouncer, what
            # _connection_settings() sets for the session too, for this transaction.
            settings = "SET LOCAL lock_timeout TO 0"
            if _behind_pgbouncer():
                settings += "; SET LOCAL synchronous_commit TO off"
            await conn.execute(settings)
            for sql, rows in statements:
                arrays = await _as_arrays(conn, sql) if len(rows) > 1 else None
                if arrays is None:
                    await conn.executemany(_numbered(sql), rows)
                else:
                    await conn.execute(arrays, *(list(column) for column in zip(*rows, strict=True)))

    await _on_a_connection(run)


async def close() -> None:
    """Close this event loop's connections (worker shutdown, end of the test session)."""
    connections = _by_loop.pop()
    if connections is not None:
        await connections.close()


def on_postgresql() -> bool:
    # From settings, not `connection.vendor`: on the event loop each request has its own
    # context, and touching `connection` there builds a new DatabaseWrapper every time.
    return from_settings.get("DATABASES")["default"]["ENGINE"] == "django.db.backends.postgresql"


def _behind_pgbouncer() -> bool:
    return from_settings.get("DATABASE_POOLER") == "pgbouncer"


class _DroppedConnection(Exception):
    pass


_numbered_cache: dict[str, str] = {}


def _numbered(sql: str) -> str:
    """`%s` placeholders as asyncpg's `$1`, `$2`…"""
    numbered = _numbered_cache.get(sql)
    if numbered is None:
        parts = sql.split("%s")
        numbered = "".join(f"{part}${index}" for index, part in enumerate(parts[:-1], 1)) + parts[-1]
        _numbered_cache[sql] = numbered
    return numbered


# An INSERT's list of values, when they are its only parameters: a batch sends them as one
# array per column, in one execution. Run once per row, PostgreSQL starts its executor and
# reads each CHECK constraint back from its stored text every time: ~8 µs of its CPU per row
# of `requests`, ~27 µs per relayed call in all (bench/RESULTS.md). The types are read once per
# process: a migration that changes a column's type needs the workers restarted, as any does.
_VALUES = re.compile(r"\bVALUES \((%s(?:, %s)*)\)")
_arrays_cache: dict[str, str | None] = {}


async def _as_arrays(conn: asyncpg.Connection, sql: str) -> str | None:
    """`sql` as `INSERT ... SELECT * FROM unnest($1::type[], ...)`, one array per column, the
    types PostgreSQL infers for its values; None for any other statement."""
    if sql in _arrays_cache:
        return _arrays_cache[sql]
    values = _VALUES.search(sql)
    arrays = None
    if values is not None and sql.count("%s") == values[1].count("%s"):
        types = (await conn.prepare(_numbered(sql))).get_parameters()
        columns = ", ".join(f"${index}::{kind.schema}.{kind.name}[]" for index, kind in enumerate(types, 1))
        arrays = f"{sql[: values.start()]}SELECT * FROM unnest({columns}){sql[values.end() :]}"
    _arrays_cache[sql] = arrays
    return arrays


_WRITES = ("INSERT", "UPDATE", "DELETE")


def _statement(sql: str) -> str:
    """A statement for fetchone() and fetch_each(): numbered; behind PgBouncer a write
    commits without waiting for the WAL flush by itself, as the session setting does elsewhere.

    set_config(..., true) lasts until the statement's own implicit transaction commits, and
    costs nothing, where BEGIN / SET LOCAL / COMMIT would cost two more round trips than
    the flush it saves (measured through PgBouncer here: 465 µs a quota count waiting for
    the flush, 326 µs with set_config, 497 µs in an explicit transaction).
    """
    numbered = _numbered(sql)
    if not _behind_pgbouncer() or not numbered.lstrip().upper().startswith(_WRITES):
        return numbered
    return (
        f"WITH written AS ({numbered}) "
        "SELECT written.* FROM written, set_config('synchronous_commit', 'off', true) AS unflushed"
    )


# What a failed statement or connection raises in asyncpg (and asyncio, on a timeout).
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


async def _on_a_connection(run: Callable[[asyncpg.Connection], Awaitable[T]], *, again_if_dropped: bool = True) -> T:
    connections = _by_loop.get()
    try:
        return await _attempt(connections, run)
    except _DroppedConnection as dropped:
        # The database dropped the connection while it sat idle (a restart, a network
        # cut), so the others are likely dead too: drop them all and try once more. A
        # connection lost in the middle of a statement is retried as well; that needs
        # the database to die mid-query, when the quota's asynchronous commit may lose
        # counts anyway.
        connections.drop_idle()
        if not again_if_dropped:
            raise DatabaseError(str(dropped)) from dropped.__cause__
        try:
            return await _attempt(connections, run)
        except _DroppedConnection as dropped:
            raise DatabaseError(str(dropped)) from dropped.__cause__


async def _attempt(connections: "_Connections", run: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    try:
        conn = await connections.take()
    except _FAILURES as error:
        # No connection to be had: refused, timed out, or no free one within WAIT_TIMEOUT.
        raise DatabaseError(f"{type(error).__name__}: {error}") from error
    reusable = False
    try:
        result = await run(conn)
        reusable = not conn.is_in_transaction()
        return result
    except _FAILURES as error:
        raise _as_django_error(error, dropped=conn.is_closed()) from error
    finally:
        connections.give_back(conn, reusable)


def _as_django_error(error: Exception, *, dropped: bool) -> Exception:
    message = f"{type(error).__name__}: {error}"
    if dropped:
        return _DroppedConnection(message)
    if isinstance(error, (asyncpg.DataError, asyncpg.CardinalityViolationError)):
        # The latter: a batch of upserts naming one key twice (_as_arrays), refused for its
        # content like a value too long, so the access log writes its rows one by one.
        return DataError(message)
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(message)
    return DatabaseError(message)


class _Connections:
    """An event loop's connections: idle ones are reused, new ones are made when a
    request needs one (at most MAX_CONNECTIONS at once), broken ones are dropped.

    Nothing reconnects in the background: after an outage the next request connects at
    once, rather than waiting out a pool's reconnection backoff.
    """

    def __init__(self, settings: dict) -> None:
        self._settings = settings
        self._idle: list[tuple[float, asyncpg.Connection]] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def take(self) -> asyncpg.Connection:
        if self._slots.locked():
            async with asyncio.timeout(WAIT_TIMEOUT):
                await self._slots.acquire()
        else:
            await self._slots.acquire()  # free: returns at once
        try:
            return self._take_idle() or await asyncpg.connect(**self._settings)
        except BaseException:
            self._slots.release()
            raise

    def give_back(self, conn: asyncpg.Connection, reusable: bool) -> None:
        if reusable and not conn.is_closed():
            self._idle.append((time.monotonic(), conn))
        else:
            # Failed or interrupted mid-statement (the client left): its state is
            # unknown, so it is not handed out again.
            conn.terminate()
        self._slots.release()

    def _take_idle(self) -> asyncpg.Connection | None:
        while self._idle:
            since, conn = self._idle.pop()
            if time.monotonic() - since < MAX_IDLE_SECONDS and not conn.is_closed():
                return conn
            conn.terminate()
        return None

    def drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.terminate()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, conn in idle:
            with contextlib.suppress(*_FAILURES):
                await conn.close(timeout=2)


def _new_connections() -> _Connections:
    return _Connections(_connection_settings())


# One set of connections per event loop: a worker has one loop; the test server has its own.
_by_loop: PerLoop[_Connections] = PerLoop(_new_connections)


def _connection_settings() -> dict:
    """Django's database, read now: the test runner renames it after settings load."""
    database = connection.settings_dict
    server_settings = {"application_name": "organized-gateway"}
    if not _behind_pgbouncer():
        # These connections read, write the quota counter and the access log: the
        # counter's commit sits on the request's path, so it does not wait for the WAL
        # flush (~1 ms here). A database crash may forget the last fraction of a second of
        # counts and rows; a clean restart loses nothing. Behind PgBouncer the same is
        # applied per transaction (_statement, execute_in_one_transaction).
        server_settings["synchronous_commit"] = "off"
        # A row locked elsewhere fails the statement, rolled back, after LOCK_TIMEOUT.
        server_settings["lock_timeout"] = LOCK_TIMEOUT
    return {
        "database": database["NAME"],
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "host": database.get("HOST") or None,
        "port": database.get("PORT") or None,
        "timeout": database.get("OPTIONS", {}).get("connect_timeout", 3),
        "server_settings": server_settings,
        # Unnamed statements only: parsed and planned on every call (the cost is measured in
        # docs/operators/deploy.md, "Behind PgBouncer").
        **({"statement_cache_size": 0} if _behind_pgbouncer() else {}),
    }


def _fetchone_in_thread(sql: str, params: Sequence) -> tuple | None:
    params = _sqlite_params(params)
    try:
        # Autocommit: one statement is its own transaction. (atomic() would begin an
        # IMMEDIATE one, taking SQLite's write lock for reads too.)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    finally:
        connection.close()
    return None if row is None else _aware(row)


def _fetch_each_in_thread(sql: str, rows: Sequence[Sequence]) -> list[tuple]:
    found = []
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for params in rows:
                cursor.execute(sql, _sqlite_params(params))
                found += [_aware(row) for row in cursor.fetchall()]
    finally:
        connection.close()
    return found


def _aware(row: Sequence) -> tuple:
    """A SQLite row with its datetimes in UTC, as asyncpg gives them."""
    return tuple(timezone.make_aware(v, UTC) if isinstance(v, datetime) and timezone.is_naive(v) else v for v in row)


def _execute_in_thread(statements: Sequence[tuple[str, Sequence[Sequence]]]) -> None:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for sql, rows in statements:
                cursor.executemany(sql, [_sqlite_params(row) for row in rows])
    finally:
        connection.close()


def _sqlite_params(params: Sequence) -> list:
    # SQLite keeps datetimes as naive UTC text, as the ORM writes and reads them.
    return [timezone.make_naive(p, UTC) if isinstance(p, datetime) and timezone.is_aware(p) else p for p in params]
