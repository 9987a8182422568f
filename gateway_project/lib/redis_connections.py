"""Redis round trips on the request path, with redis-py's connections and nothing around them.

A `redis.asyncio.Redis` call passes through the client's retry wrapper, the pool's condition,
timeout and socket check, and the observability hooks before and after one round trip; on
Python 3.11 each send with a socket timeout is also a task of its own (`asyncio.wait_for`).
For a check made on every request that was as much CPU as the round trip. Here a call takes
an idle connection from a list, has redis-py pack and send the command and parse the reply
(hiredis when installed), under one timeout for the whole round trip.

A redis-py connection carries one round trip at a time: concurrent calls on one event loop each
hold their own, up to `size`; more wait for one to come back, at most the round trip's timeout.
`call_each` sends several commands in one write and reads their replies in order (a pipeline
without redis-py's Pipeline class, for callers that batch: proxy.ratelimit).
"""

import asyncio
import hashlib
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class Connections:
    """Up to `size` connections to the Redis at `url`, for the event loop that makes them."""

    def __init__(self, url: str, size: int, timeout: float) -> None:
        # The pool parses the URL (host, port or socket, database, password, TLS) and makes
        # connections; its own checkout is not used. Timeouts are ours, per round trip.
        self._factory = redis.ConnectionPool.from_url(
            url, socket_timeout=None, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self._timeout = timeout
        self._all: list[AbstractConnection] = [self._factory.make_connection() for _ in range(size)]
        # Most recently used first, so a quiet worker keeps few sockets open; each connects
        # on its first use.
        self._idle: asyncio.LifoQueue[AbstractConnection] = asyncio.LifoQueue()
        for connection in reversed(self._all):
            self._idle.put_nowait(connection)

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply as the parser gives it (no response callbacks)."""
        (reply,) = await self.call_each([args])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def call_each(self, commands: list[tuple]) -> list[Any]:
        """Send several commands in one write on one connection and return their replies in
        order; a command Redis refuses has its error (a ResponseError) in its place."""
        connection = await self._take()
        try:
            try:
                return await self._round_trips(connection, commands)
            except RedisConnectionError:
                # After a Redis restart every idle connection is dead, and finds out only on its
                # next use: one immediate retry on a fresh socket, or each would fail a call.
                # redis-py has closed it already; a refused reconnect fails again at once.
                return await self._round_trips(connection, commands)
        finally:
            self._idle.put_nowait(connection)

    async def _round_trips(self, connection: AbstractConnection, commands: list[tuple]) -> list[Any]:
        # On a timeout or a cancellation redis-py closes the connection (a reply may still
        # be on its way), so it is never handed out with a stale reply in it.
        replies = []
        async with asyncio.timeout(self._timeout):
            await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as refused:  # the command's own reply: the connection reads on
                    replies.append(refused)
        return replies

    async def _take(self) -> AbstractConnection:
        try:
            return self._idle.get_nowait()
        except asyncio.QueueEmpty:
            # All busy: a Redis that has stopped answering keeps them so for a timeout each, so
            # the wait is bounded too; the caller then fails open as for any Redis error.
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._idle.get()
            except TimeoutError:
                raise RedisTimeoutError(f"no Redis connection came free within {self._timeout} s") from None

    async def aclose(self) -> None:
        for connection in self._all:
            await connection.disconnect()


class Script:
    """A Lua script run by its SHA1, and sent whole when this Redis does not know it yet
    (first use, a restart): EVALSHA, then EVAL on NOSCRIPT, as redis-py's own Script does."""

    def __init__(self, source: str) -> None:
        self._source = source.encode()
        # Bytes go out as they are: redis-py's encoder skips them (measured: 13 µs to pack
        # a rate-limit check with the constant arguments as str and int, 9 µs as bytes).
        self._evalsha = (b"EVALSHA", hashlib.sha1(self._source).hexdigest().encode())

    async def each(self, connections: Connections, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """The script run once per (keys, args), all in one round trip; a run Redis refused
        has its error in its place."""
        replies = await connections.call_each(self._commands(self._evalsha, calls))
        unknown = [place for place, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            again = await connections.call_each(self._commands((b"EVAL", self._source), [calls[p] for p in unknown]))
            for place, reply in zip(unknown, again, strict=True):
                replies[place] = reply
        return replies

    @staticmethod
    def _commands(head: tuple[bytes, bytes], calls: list[tuple[list[str], list[Any]]]) -> list[tuple]:
        return [(*head, b"%d" % len(keys), *keys, *args) for keys, args in calls]
