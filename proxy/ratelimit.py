"""Per-user rate limit: at most N admitted requests in any rolling 60 seconds, exactly.

Two backends behind one contract (`Limiter`): Redis when REDIS_URL is set, shared by every
worker and host, atomic in one Lua script (a worker's concurrent checks pipelined in one
round trip, gateway_project.lib.batches); in-process otherwise (exact within the one
worker the gateway then runs). Both keep a log of admission times, so there is no
minute boundary to burst across, and refused requests leave no trace.

If Redis cannot be reached the gateway fails open: requests pass unlimited, the process
log says so at most once a minute, and limiting resumes by itself when Redis answers.
"""

import logging
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from billing.plans import Limits
from gateway_project.lib import from_settings, process_state
from gateway_project.lib.batches import Batches
from gateway_project.lib.errors import GatewayError
from gateway_project.lib.per_loop import PerLoop
from gateway_project.lib.redis_connections import Connections, Script
from gateway_project.lib.wording import counted
from proxy import metrics

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# Redis is given this long per call. Long enough that a busy event loop cannot make a
# healthy Redis look down (that would let a burst through unlimited); a stopped Redis
# fails at once anyway (connection refused), and a hung one is skipped after one failure.
REDIS_TIMEOUT = 2.0
# One batch of checks is out at a time per worker, and now and then a readiness ping.
REDIS_CONNECTIONS = 4
# After a failure, Redis is skipped (fail open at once) for this long before a retry.
RETRY_INTERVAL = 1.0
REPORT_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    # Unix time when the oldest admitted request leaves the window: the next free slot.
    reset: float

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset)),
        }

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.reset - now))


def per_minute_limit(limits: Limits) -> int:
    """Requests per rolling minute: the caller's plan's, else the global limit."""
    return limits.requests_per_minute or from_settings.get("RATE_LIMIT_PER_MINUTE")


class Limiter(Protocol):
    """A backend: each key's log of admission times, checked and added to atomically."""

    # Whether a check is a round trip to another process (Redis), worth overlapping with
    # other work; a local one costs microseconds. Local admissions are this process's state.
    remote: bool

    async def hit(self, key: str, limit: int, now: float, *, consume: bool = True) -> Decision:
        """Admit (and with `consume`, count) one request for `key` at `now`, or refuse it."""

    async def ping(self) -> None:
        """Raise if the backend cannot be reached."""

    async def aclose(self) -> None:
        """Close the running event loop's connections, if any."""


class InProcessLimiter:
    remote = False

    def __init__(self) -> None:
        # Least recently used first, so idle users can be dropped from the front.
        self._admitted: OrderedDict[str, deque[float]] = OrderedDict()

    async def hit(self, key: str, limit: int, now: float, *, consume: bool = True) -> Decision:
        # No await in here: on one event loop this whole check-and-admit is atomic.
        self._forget_idle(now)
        times = self._admitted.pop(key, None) or deque()
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        allowed = len(times) < limit
        if allowed and consume:
            times.append(now)
        if times:
            self._admitted[key] = times
        oldest = times[0] if times else now
        return Decision(allowed, limit, max(0, limit - len(times)), oldest + WINDOW_SECONDS)

    def _forget_idle(self, now: float) -> None:
        while self._admitted:
            key, times = next(iter(self._admitted.items()))
            if times[-1] > now - WINDOW_SECONDS:
                return
            del self._admitted[key]

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


# KEYS[1]: the user's log. ARGV: now (ms), window (ms), limit, unique member, consume (1/0).
# Repeatable: a check sent again with its member (Connections retries a broken connection's
# round trip once) is answered as the first time, not counted or refused a second time.
# Returns {admitted 0/1, entries in the window, oldest entry (ms)}.
_HIT_SCRIPT = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local admitted = 0
if ARGV[5] == '1' and redis.call('ZSCORE', key, ARGV[4]) then
  admitted = 1  -- this very check, sent again after its reply was lost: admitted the first time
elseif count < limit then
  admitted = 1
  if ARGV[5] == '1' then
    redis.call('ZADD', key, now, ARGV[4])
    redis.call('PEXPIRE', key, window)
    count = count + 1
  end
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2] or now
return {admitted, count, tonumber(oldest)}
"""
_HIT = Script(_HIT_SCRIPT)
_WINDOW_MS = b"%d" % (WINDOW_SECONDS * 1000)


class _Hit(NamedTuple):
    """One check of RedisLimiter.hit()."""

    key: str
    limit: int
    now: float
    consume: bool

    def script_call(self) -> tuple[list[str], list]:
        now_ms = int(self.now * 1000)
        # The member only has to differ from other admissions in the same millisecond:
        # 48 random bits, as uuid4().hex[:12] had, for a third of its cost.
        member = f"{now_ms}:{os.urandom(6).hex()}"
        return [f"gateway:rate:{self.key}"], [now_ms, _WINDOW_MS, self.limit, member, b"1" if self.consume else b"0"]

    def decision(self, admitted: int, count: int, oldest_ms: int) -> Decision:
        limit = self.limit
        return Decision(bool(admitted), limit, max(0, limit - int(count)), int(oldest_ms) / 1000 + WINDOW_SECONDS)


class RedisLimiter:
    remote = True

    def __init__(self, url: str) -> None:
        self._url = url
        # Connections are bound to the event loop that made them.
        self._connected: PerLoop[Connections] = PerLoop(self._connect)
        # A worker's concurrent checks go to Redis together: one write, one read.
        self._batches: PerLoop[Batches[_Hit, Decision | Exception]] = PerLoop(lambda: Batches(self._send_hits))

    def _connect(self) -> Connections:
        # A broken connection (a Redis restart) is retried once, at once (the script is
        # repeatable); a refused reconnect fails at once, and a timeout is never retried.
        return Connections(self._url, REDIS_CONNECTIONS, REDIS_TIMEOUT)

    async def hit(self, key: str, limit: int, now: float, *, consume: bool = True) -> Decision:
        decision = await self._batches.get().call(_Hit(key, limit, now, consume))
        if isinstance(decision, Exception):
            raise decision
        return decision

    async def _send_hits(self, hits: Sequence[_Hit]) -> list[Decision | Exception]:
        # The checks that waited for a batch Redis failed fail open at once, not after a
        # round trip of their own to the same Redis.
        if time.monotonic() < _health.skip_until:
            raise RedisConnectionError("skipped: Redis failed a moment ago")
        try:
            replies = await _HIT.each(self._connected.get(), [hit.script_call() for hit in hits])
        except (RedisError, OSError) as error:
            _health.failed(error)
            raise
        return [
            reply if isinstance(reply, Exception) else hit.decision(*reply)
            for hit, reply in zip(hits, replies, strict=True)
        ]

    async def ping(self) -> None:
        await self._connected.get().call("PING")

    async def aclose(self) -> None:
        batches = self._batches.pop()
        if batches is not None:
            await batches.settle()  # the batch out, before its connection closes
        connected = self._connected.pop()
        if connected is not None:
            await connected.aclose()


class _Health:
    """Remembers whether the backend is failing, to fail open fast and report rarely."""

    def __init__(self) -> None:
        self.skip_until = 0.0
        self.reported_at: float | None = None

    def failed(self, error: Exception) -> None:
        now = time.monotonic()
        self.skip_until = now + RETRY_INTERVAL
        if self.reported_at is None or now - self.reported_at >= REPORT_INTERVAL:
            self.reported_at = now
            logger.error(
                "rate limiter: Redis is unreachable (%s: %s); requests pass unlimited until it returns",
                type(error).__name__,
                error,
            )

    def succeeded(self) -> None:
        if self.reported_at is not None:
            self.reported_at = None
            logger.warning("rate limiter: Redis is reachable again; limits apply again")


_backends: dict[str | None, Limiter] = {}
_health = _Health()


def backend() -> Limiter:
    url = from_settings.get("REDIS_URL")
    if url not in _backends:
        _backends[url] = RedisLimiter(url) if url else InProcessLimiter()
    return _backends[url]


async def close() -> None:
    """Close the running event loop's connections to the backends (shutdown, end of tests)."""
    for limiter in list(_backends.values()):
        await limiter.aclose()


@process_state.on_reset
def _forget() -> None:
    """Forget the admissions kept in this process and Redis's health; admissions kept in
    Redis are shared with other processes, not this one's to forget."""
    global _health
    _health = _Health()
    for url in [url for url, limiter in _backends.items() if not limiter.remote]:
        del _backends[url]


async def admit(user_id: str, limits: Limits, now: float) -> Decision | None:
    """Count the caller's request, or refuse it with 429 (not counted).

    Returns the decision for the response headers, or None when the limit cannot be
    known (Redis down) and the request passes unlimited.
    """
    limit = per_minute_limit(limits)
    decision = await check(user_id, limit, now)
    if decision is not None and not decision.allowed:
        raise RateLimited(decision, now)
    return decision


class RateLimited(GatewayError):
    """429, with the decision that refused: `decision.reset` is when a slot frees up."""

    def __init__(self, decision: Decision, now: float) -> None:
        super().__init__(
            429,
            "rate_limit_exceeded",
            f"Rate limit exceeded. {counted(decision.limit, 'request')}/minute.",
            type="requests",
            headers={**decision.headers(), "Retry-After": str(decision.retry_after(now))},
        )
        self.decision = decision


async def peek(user_id: str, limits: Limits, now: float) -> Decision | None:
    """Where the caller stands, without counting a request."""
    return await check(user_id, per_minute_limit(limits), now, consume=False)


async def check(key: str, limit: int, now: float, *, consume: bool = True) -> Decision | None:
    """Admit or refuse one request; None when the limit cannot be known (Redis down)."""
    if time.monotonic() < _health.skip_until:
        return None
    try:
        decision = await backend().hit(key, limit, now, consume=consume)
    except ResponseError as error:
        # Redis answered, refusing this one check (its key holds something else): this
        # request passes unlimited; Redis is not down, so the others' checks go on.
        logger.error("rate limiter: Redis refused the check for %s (%s); it passes unlimited", key, error)
        metrics.redis_failed()
        return None
    except (RedisError, OSError) as error:
        _health.failed(error)
        metrics.redis_failed()
        return None
    _health.succeeded()
    return decision
