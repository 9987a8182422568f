"""Small tables every request reads (plans, prices), kept in each worker's memory and
reloaded with one query once they are older than CACHE_SECONDS: no database read per request."""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection

from gateway_project.errors import service_unavailable

logger = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
T = TypeVar("T")


class Reloaded(Generic[T]):
    def __init__(self, read: Callable[[], T], what: str) -> None:
        self._read = read
        self._what = what
        self._value: T | None = None
        self._expires = 0.0
        self._loading: asyncio.Task | None = None

    async def get(self) -> T:
        if time.monotonic() < self._expires:
            return self._value
        loop = asyncio.get_running_loop()
        # One reload at a time, however many requests notice the expiry together.
        if self._loading is None or self._loading.done() or self._loading.get_loop() is not loop:
            self._loading = loop.create_task(sync_to_async(self._load, thread_sensitive=False)())
        try:
            self._value = await asyncio.shield(self._loading)
        except DatabaseError as error:
            logger.error("%s: could not be loaded (%s)", self._what, type(error).__name__)
            raise service_unavailable(
                f"The gateway cannot read its {self._what} for a moment (its database is unreachable). "
                "Try again shortly."
            ) from None
        self._expires = time.monotonic() + CACHE_SECONDS
        return self._value

    def clear(self) -> None:
        self._expires = 0.0

    def _load(self) -> T:
        try:
            return self._read()
        finally:
            connection.close()
