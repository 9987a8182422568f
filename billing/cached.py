"""Small tables every request reads (plans, prices), kept in each worker's memory: no
database read per request.

A table with a version (gateway_project.lib.table_versions) is checked at most every
CHANGE_CHECK_MS: one cheap read (Redis, or one indexed row) tells whether it changed,
and only then is it read again. Any copy is read again once it is CACHE_SECONDS old,
which is all a table without a version gets, and what a versioned one falls back to while
its version cannot be read.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection

from gateway_project.lib import process_state, table_versions
from gateway_project.lib.errors import for_operators, service_unavailable
from gateway_project.lib.per_loop import LoopTask

logger = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
T = TypeVar("T")
# Injected clock, so tests can move past a check or an expiry without sleeping.
clock = time.monotonic


class Reloaded(Generic[T]):
    def __init__(self, read: Callable[[], T], what: str, *, table: str | None = None) -> None:
        self._read = read
        self._what = what
        # The table_versions name whose changes make this copy stale; None: its age only.
        self._table = table
        self._value: T | None = None
        self._version: int | None = None
        self._expires = 0.0
        self._check_at = 0.0
        # One check (and reload) at a time, however many requests find the copy due together.
        self._loading = LoopTask(self._refresh)
        process_state.on_reset(self.clear)

    async def get(self) -> T:
        if clock() < self._check_at:
            return self._value
        try:
            return await asyncio.shield(self._loading.start())
        except DatabaseError as error:
            logger.error("%s: could not be loaded (%s)", self._what, for_operators(error))
            raise service_unavailable(
                f"The gateway cannot read its {self._what} for a moment (its database is unreachable). "
                "Try again shortly."
            ) from error  # the cause, for the process log of whoever catches this (for_operators)

    async def _refresh(self, _woken: asyncio.Event) -> T:
        now = clock()
        # The version is read before the rows: a change committed in between makes the copy
        # look stale at the next check (one reload too many), never current when it is not.
        version = await table_versions.read(self._table) if self._table else None
        fresh = now < self._expires
        if fresh and (version is None or version == self._version):
            # Unchanged, or unknown for now (then the copy's age decides).
            self._check_at = min(now + settings.CHANGE_CHECK_MS / 1000, self._expires)
            return self._value
        value = await sync_to_async(self._load, thread_sensitive=False)()
        self._value, self._version = value, version
        self._expires = now + CACHE_SECONDS
        self._check_at = now + settings.CHANGE_CHECK_MS / 1000 if self._table else self._expires
        return value

    def clear(self) -> None:
        self._expires = self._check_at = 0.0

    def _load(self) -> T:
        try:
            return self._read()
        finally:
            connection.close()
