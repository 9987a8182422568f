"""The worker's Redis client for small shared state: table versions, circuit breakers.

Calls through it sit on the request path now and then (a copy due for a check, a breaker
due for a sync): a hung Redis must cost that request little. The rate limiter keeps a
pool of its own, sized and timed for one call per request.
"""

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway_project.lib.per_loop import PerLoop

TIMEOUT = 0.5

# redis.asyncio clients are bound to the event loop that made them: one per loop and URL.
_clients: PerLoop[dict[str, aredis.Redis]] = PerLoop(dict)


def client(url: str) -> aredis.Redis:
    clients = _clients.get()
    found = clients.get(url)
    if found is None:
        found = clients[url] = aredis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            # One immediate retry on a connection Redis closed (a restart), none with back-off:
            # redis-py's default would hold the request for seconds while Redis is down.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
    return found


async def close() -> None:
    """Close this event loop's clients (worker shutdown, end of the test session)."""
    for found in (_clients.pop() or {}).values():
        await found.aclose()
