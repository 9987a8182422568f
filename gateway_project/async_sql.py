"""The few queries on every /v1 request, run without leaving the event loop.

Through the ORM each of them costs a thread hop, Django's SQL compilation and
PostgreSQL's planner: ~2.5 ms for the key lookup here, against ~0.25 ms for the query
itself. On PostgreSQL they run as raw SQL on the worker's event loop, over connections
kept by `_Connections` and prepared once per connection. On SQLite (the embedded
default, one worker) they run through Django's connection in a worker thread.

Failures surface as django.db.DatabaseError, as from the ORM, so callers handle one type.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction
from django.utils import timezone
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

T = TypeVar("T")

MAX_CONNECTIONS = 10
# A request waits this long for a free connection before it is answered 503.
WAIT_TIMEOUT = 5.0
# Idle connections older than this are closed instead of reused.
MAX_IDLE_SECONDS = 300.0


async def fetchone(sql: str, params: Sequence) -> tuple | None:
    """The first row of one statement that returns rows (SELECT, or RETURNING),
    committed on its own (`%s` placeholders)."""
    if not _on_postgresql():
        return await sync_to_async(_fetchone_in_thread, thread_sensitive=False)(sql, params)

    async def run(conn: psycopg.AsyncConnection) -> tuple | None:
        cursor = await conn.execute(sql, params, prepare=True)
        return await cursor.fetchone()

    return await _on_a_connection(run)


async def executemany(sql: str, rows: Sequence[Sequence]) -> None:
    """One statement for each row, in one transaction."""
    await execute_in_one_transaction([(sql, rows)])


async def execute_in_one_transaction(statements: Sequence[tuple[str, Sequence[Sequence]]]) -> None:
    """Each (statement, rows) run once per row, all committed together or not at all.

    A row the database refuses for its content raises django.db.DataError or
    IntegrityError, as from the ORM; other failures raise DatabaseError.
    """
    if not _on_postgresql():
        return await sync_to_async(_execute_in_thread, thread_sensitive=False)(statements)

    async def run(conn: psycopg.AsyncConnection) -> None:
        async with conn.transaction(), conn.cursor() as cursor:
            for sql, rows in statements:
                await cursor.executemany(sql, rows)

    await _on_a_connection(run)


async def close() -> None:
    """Close this event loop's connections (worker shutdown, end of the test session)."""
    connections = _by_loop.pop(asyncio.get_running_loop(), None)
    if connections is not None:
        await connections.close()


def _on_postgresql() -> bool:
    # From settings, not `connection.vendor`: on the event loop each request has its own
    # context, and touching `connection` there builds a new DatabaseWrapper every time.
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


class _DroppedConnection(Exception):
    pass


async def _on_a_connection(run: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    connections = _connections()
    try:
        return await _attempt(connections, run)
    except _DroppedConnection:
        # The database dropped the connection while it sat idle (a restart, a network
        # cut), so the others are likely dead too: drop them all and try once more. A
        # connection lost in the middle of a statement is retried as well; that needs
        # the database to die mid-query, when the quota's asynchronous commit may lose
        # counts anyway.
        await connections.drop_idle()
        try:
            return await _attempt(connections, run)
        except _DroppedConnection as dropped:
            raise DatabaseError(str(dropped)) from dropped.__cause__


async def _attempt(connections: "_Connections", run: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    conn = None
    try:
        async with connections.borrow() as conn:
            return await run(conn)
    except (psycopg.Error, TimeoutError) as error:
        message = f"{type(error).__name__}: {error}"
        if conn is not None and conn.broken:
            raise _DroppedConnection(message) from error
        if isinstance(error, psycopg.DataError):
            raise DataError(message) from error
        if isinstance(error, psycopg.IntegrityError):
            raise IntegrityError(message) from error
        raise DatabaseError(message) from error


class _Connections:
    """An event loop's connections: idle ones are reused, new ones are made when a
    request needs one (at most MAX_CONNECTIONS at once), broken ones are dropped.

    Nothing reconnects in the background: after an outage the next request connects at
    once, rather than waiting out a pool's reconnection backoff.
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._idle: list[tuple[float, psycopg.AsyncConnection]] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with asyncio.timeout(WAIT_TIMEOUT):
            await self._slots.acquire()
        conn = None
        try:
            conn = await self._take_idle() or await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            yield conn
        finally:
            if conn is not None:
                if conn.broken or conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.close()
                else:
                    self._idle.append((time.monotonic(), conn))
            self._slots.release()

    async def _take_idle(self) -> psycopg.AsyncConnection | None:
        while self._idle:
            since, conn = self._idle.pop()
            if time.monotonic() - since < MAX_IDLE_SECONDS:
                return conn
            await conn.close()
        return None

    async def drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for _, conn in idle:
            await conn.close()

    async def close(self) -> None:
        await self.drop_idle()


# One set of connections per event loop: a worker has one loop; the test server has its own.
_by_loop: dict[asyncio.AbstractEventLoop, _Connections] = {}


def _connections() -> _Connections:
    loop = asyncio.get_running_loop()
    connections = _by_loop.get(loop)
    if connections is None:
        for finished in [other for other in _by_loop if other.is_closed()]:
            del _by_loop[finished]
        connections = _by_loop[loop] = _Connections(_conninfo())
    return connections


def _conninfo() -> str:
    """Django's database, read now: the test runner renames it after settings load."""
    database = connection.settings_dict
    options = database.get("OPTIONS", {})
    return make_conninfo(
        dbname=database["NAME"],
        user=database.get("USER") or None,
        password=database.get("PASSWORD") or None,
        host=database.get("HOST") or None,
        port=database.get("PORT") or None,
        connect_timeout=options.get("connect_timeout", 3),
        # These connections only read, and write the quota counter: its commit sits on
        # the request's path, so it does not wait for the WAL flush (~1 ms here). A
        # database crash may forget the last fraction of a second of counts; a clean
        # restart loses nothing.
        options="-c synchronous_commit=off",
        application_name="organized-gateway",
    )


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
    if row is None:
        return None
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
