"""Circuit breakers: one per upstream, shared by every gateway process.

A breaker counts an upstream's consecutive failing calls (no connection, a reset, a 5xx,
silence, a stream broken after its start; never a 4xx; a call's retries count once). At
BREAKER_FAILURES it opens for BREAKER_COOLDOWN seconds: calls skip the upstream without an
attempt and go to the route's next target. Once the cool-down is over, one trial at a time
tries it (a lease, so two processes never try together): the background probe
(proxy.probes) when it probes that upstream, so that no caller waits on a dead upstream;
otherwise one call, with a single attempt. A trial's success closes the breaker, its failure
opens it for another cool-down. Any other success while it is open (a call admitted before
it opened, a probe during the cool-down) changes nothing.

The state lives in Redis when REDIS_URL is set: a hash per upstream, changed by one script
per event, so every process counts the same failures and one trial serves them all. Each
process keeps a copy, read again at most every SYNC_SECONDS: a closed breaker costs the
request path no round trip. Without Redis, or while it is unreachable, the copy is the
state (per process); Redis is tried again after RETRY_SECONDS.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from django.conf import settings
from redis.exceptions import RedisError

from gateway_project.lib import from_settings, process_state, shared_redis
from proxy import metrics, timing

logger = logging.getLogger(__name__)

CLOSED, OPEN, PROBING = "closed", "open", "probing"
STATES = (CLOSED, OPEN, PROBING)
# How stale a process's copy of a shared breaker may be.
SYNC_SECONDS = 0.5
# After Redis failed, breakers are per process for this long before Redis is tried again.
RETRY_SECONDS = 5.0
# A breaker nobody changed for this long is forgotten (an upstream since removed).
KEEP_SECONDS = 24 * 3600
ERROR_TEXT_MAX = 300
# What a call is told to wait while another call probes the upstream.
PROBE_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class Breaker:
    """One upstream's breaker as this process knows it; times are wall-clock seconds."""

    failures: int = 0
    # While open, the end of its cool-down; 0 while closed.
    open_until: float = 0.0
    # The end of the lease of the call probing it (0: none).
    probe_until: float = 0.0
    # When it last opened or closed (0: never changed).
    since: float = 0.0
    last_error: str = ""

    def state(self, now: float) -> str:
        """CLOSED; OPEN while cooling down; PROBING once the cool-down is over (half-open:
        the next call or background probe tries the upstream)."""
        if not self.open_until:
            return CLOSED
        return OPEN if now < self.open_until else PROBING

    def wait(self, now: float) -> float:
        """Seconds until a call may try the upstream (0: now). While a call probes it, the
        probe's outcome is usually a moment away: PROBE_WAIT, however long its lease."""
        if not self.open_until:
            return 0.0
        if self.open_until <= now < self.probe_until:
            return min(self.probe_until - now, PROBE_WAIT)
        return max(self.open_until - now, 0.0)


_CLOSED = Breaker()


@dataclass
class _Copy:
    breaker: Breaker
    # timing.clock.now() of the last read from Redis.
    synced: float = float("-inf")


# Redis: one hash per upstream (failures, open_until, since, last_error) and a probe lease
# key. KEYS: hash, lease. ARGV: now, threshold, cool-down, error, keep (all ms but error).
_FAILED = """
local now, threshold, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'failures', 'open_until', 'since')
local failures = tonumber(held[1] or '0') + 1
local open_until, since = tonumber(held[2] or '0'), tonumber(held[3] or '0')
local opened = 0
if (open_until > 0 and open_until <= now) or (open_until == 0 and failures >= threshold) then
    open_until, since, opened = now + cooldown, now, 1
    redis.call('DEL', KEYS[2])
end
redis.call('HSET', KEYS[1], 'failures', failures, 'open_until', open_until, 'since', since, 'last_error', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {failures, open_until, since, opened}
"""
# KEYS: hash, lease. ARGV: now (ms), keep (ms), trial (1: the success of a trial, which
# closes a breaker whose cool-down is over; 0: any other, which only resets the count).
# Returns 1 when it closed the breaker, 0 when there was nothing to change, -1 when ignored.
_SUCCEEDED = """
local held = redis.call('HMGET', KEYS[1], 'open_until', 'failures')
local open_until, failures = tonumber(held[1] or '0'), tonumber(held[2] or '0')
if open_until == 0 and failures == 0 then return 0 end
if open_until > 0 and (ARGV[3] == '0' or open_until > tonumber(ARGV[1])) then return -1 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'failures', 0, 'open_until', 0)
if open_until > 0 then redis.call('HSET', KEYS[1], 'since', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return open_until > 0 and 1 or 0
"""


class Breakers:
    def __init__(self) -> None:
        self._copies: dict[str, _Copy] = {}
        # While Redis fails: when to try it again (timing.clock.now()); 0 while it answers.
        self._redis_back_at = 0.0

    # The request path.

    async def wait(self, name: str) -> float:
        """Seconds until a call may try upstream `name`: 0 when closed or due for a trial."""
        if not _enabled():
            return 0.0
        return (await self._synced(name)).wait(timing.clock.wall())

    async def closed(self, name: str) -> bool:
        return not _enabled() or not (await self._synced(name)).open_until

    def known_wait(self, name: str) -> float:
        """As `wait`, from this process's copy alone: no round trip."""
        if not _enabled():
            return 0.0
        return self._copy(name).breaker.wait(timing.clock.wall())

    async def enter(self, name: str, *, lease: float, may_try: bool = True) -> str | None:
        """Whether this call may make an attempt on `name` now: CLOSED while closed (retries
        allowed); PROBING for the one call that takes the trial lease once the cool-down is
        over, for `lease` seconds (as long as the attempt may take), when `may_try` (no
        background probe tries the upstream); None: skip it."""
        if not _enabled():
            return CLOSED
        breaker = await self._synced(name)
        now = timing.clock.wall()
        if not breaker.open_until:
            return CLOSED
        if not may_try or breaker.wait(now) > 0:
            return None
        lease = max(lease, 1.0)
        client = self._redis()
        if client is not None:
            try:
                taken = await client.set(_lease_key(name), "1", nx=True, px=_ms(lease))
            except (RedisError, OSError) as error:
                self._redis_failed(error)
            else:
                self._redis_answered()
                self._keep(name, replace(breaker, probe_until=now + lease if taken else now + PROBE_WAIT))
                return PROBING if taken else None
        self._keep(name, replace(breaker, probe_until=now + lease))
        return PROBING

    async def succeeded(self, name: str, *, trial: bool = False) -> None:
        """The upstream answered (any status but a 5xx). `trial`: the answer of a trial (the
        call holding the lease, or the background probe), which closes a breaker whose
        cool-down is over; any other success only starts the count of failures again."""
        if not _enabled():
            return
        known = self._copy(name).breaker
        now = timing.clock.wall()
        if not known.failures and not known.open_until:
            return  # nothing to reset: no round trip on the usual path
        if known.open_until and not (trial and known.open_until <= now):
            return  # open: only a trial after the cool-down closes it
        closing = bool(known.open_until)
        client = self._redis()
        if client is not None:
            try:
                script = client.register_script(_SUCCEEDED)
                outcome = await script(keys=keys(name), args=[_ms(now), _ms(KEEP_SECONDS), int(trial)])
            except (RedisError, OSError) as error:
                self._redis_failed(error)
            else:
                self._redis_answered()
                if outcome < 0:
                    return
                closing = outcome == 1
        breaker = Breaker(since=now if closing else known.since, last_error=known.last_error)
        self._keep(name, breaker)
        if closing:
            logger.warning("upstream %s answered again: its circuit breaker is closed", name)
            self._changed(name, breaker, CLOSED)

    async def failed(self, name: str, error: str) -> None:
        """The upstream failed a call or a probe (`error`: what happened, for operators)."""
        if not _enabled():
            return
        error = error[:ERROR_TEXT_MAX]
        known = self._copy(name).breaker
        now = timing.clock.wall()
        threshold, cooldown = settings.BREAKER_FAILURES, settings.BREAKER_COOLDOWN
        client = self._redis()
        if client is not None:
            try:
                script = client.register_script(_FAILED)
                args = [_ms(now), threshold, _ms(cooldown), error, _ms(KEEP_SECONDS)]
                failures, open_until, since, opened = await script(keys=keys(name), args=args)
            except (RedisError, OSError) as redis_error:
                self._redis_failed(redis_error)
            else:
                self._redis_answered()
                breaker = Breaker(failures, open_until / 1000, 0.0, since / 1000, error)
                self._keep(name, breaker, synced=True)
                if opened:
                    self._opened(name, breaker)
                return
        breaker = _failed_locally(known, now, threshold, cooldown, error)
        self._keep(name, breaker)
        if breaker.open_until and breaker.open_until != known.open_until:
            self._opened(name, breaker)

    # What operators see.

    async def breaker(self, name: str) -> Breaker:
        """Upstream `name`'s breaker as all processes share it (this process's copy
        without Redis)."""
        return await self._synced(name, force=True)

    # The copies and Redis.

    def _copy(self, name: str) -> _Copy:
        copy = self._copies.get(name)
        if copy is None:
            copy = self._copies[name] = _Copy(_CLOSED)
        return copy

    def _keep(self, name: str, breaker: Breaker, *, synced: bool = False) -> None:
        copy = self._copy(name)
        copy.breaker = breaker
        if synced:
            copy.synced = timing.clock.now()

    async def _synced(self, name: str, *, force: bool = False) -> Breaker:
        copy = self._copy(name)
        if not force and timing.clock.now() - copy.synced < SYNC_SECONDS:
            return copy.breaker
        client = self._redis()
        if client is None:
            return copy.breaker
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hmget(_key(name), "failures", "open_until", "since", "last_error")
                pipe.pttl(_lease_key(name))
                (failures, open_until, since, error), lease_ms = await pipe.execute()
        except (RedisError, OSError) as error:
            self._redis_failed(error)
            return copy.breaker
        self._redis_answered()
        copy.breaker = from_redis(failures, open_until, since, error, lease_ms, timing.clock.wall())
        copy.synced = timing.clock.now()
        return copy.breaker

    def _redis(self):
        url = settings.REDIS_URL
        if not url or timing.clock.now() < self._redis_back_at:
            return None
        return shared_redis.client(url)

    def _redis_failed(self, error: BaseException) -> None:
        if not self._redis_back_at:
            logger.error(
                "circuit breakers: Redis is unreachable (%s: %s); each process keeps its own breakers until it answers",
                type(error).__name__,
                error,
            )
        self._redis_back_at = timing.clock.now() + RETRY_SECONDS

    def _redis_answered(self) -> None:
        if self._redis_back_at:
            self._redis_back_at = 0.0
            logger.warning("circuit breakers: Redis answers again; breakers are shared by every process again")

    def _opened(self, name: str, breaker: Breaker) -> None:
        logger.warning(
            "upstream %s failed %d times in a row (last: %s): its circuit breaker is open, calls skip it for %s s",
            name,
            breaker.failures,
            breaker.last_error or "unknown",
            f"{settings.BREAKER_COOLDOWN:g}",
        )
        self._changed(name, breaker, OPEN)

    def _changed(self, name: str, breaker: Breaker, state: str) -> None:
        metrics.breaker_changed(name, state)
        for listener in _listeners:
            try:
                listener(name, breaker)
            except Exception:
                logger.exception("circuit breakers: a listener failed for %s", name)


def _failed_locally(known: Breaker, now: float, threshold: int, cooldown: float, error: str) -> Breaker:
    """The Redis script's rule, for a process on its own."""
    failures = known.failures + 1
    due = known.open_until and known.open_until <= now
    if due or (not known.open_until and failures >= threshold):
        return Breaker(failures, now + cooldown, 0.0, now, error)
    return replace(known, failures=failures, last_error=error)


def from_redis(failures, open_until, since, error, lease_ms: int, now: float) -> Breaker:
    """A breaker from its Redis hash's fields and its lease's time to live."""
    return Breaker(
        int(failures or 0),
        int(open_until or 0) / 1000,
        now + lease_ms / 1000 if lease_ms > 0 else 0.0,
        int(since or 0) / 1000,
        (error or b"").decode("utf-8", "replace"),
    )


def _enabled() -> bool:
    return from_settings.get("BREAKER_FAILURES") > 0


def _key(name: str) -> str:
    return f"gateway:breaker:{name}"


def _lease_key(name: str) -> str:
    return f"gateway:breaker:{name}:probe"


def keys(name: str) -> list[str]:
    """Upstream `name`'s keys in Redis: its hash, and its probe lease."""
    return [_key(name), _lease_key(name)]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


_breakers = Breakers()


async def wait(name: str) -> float:
    return await _breakers.wait(name)


def known_wait(name: str) -> float:
    return _breakers.known_wait(name)


async def closed(name: str) -> bool:
    """Whether upstream `name`'s breaker is closed (calls go through, retries allowed)."""
    return await _breakers.closed(name)


async def enter(name: str, *, lease: float, may_try: bool = True) -> str | None:
    return await _breakers.enter(name, lease=lease, may_try=may_try)


async def succeeded(name: str, *, trial: bool = False) -> None:
    await _breakers.succeeded(name, trial=trial)


async def failed(name: str, error: str) -> None:
    await _breakers.failed(name, error)


async def breaker(name: str) -> Breaker:
    return await _breakers.breaker(name)


def on_change(listener: Callable[[str, Breaker], None]) -> None:
    """Have `listener(upstream, breaker)` called when this process opens or closes a breaker."""
    _listeners.append(listener)


_listeners: list[Callable[[str, Breaker], None]] = []


@process_state.on_reset
def _forget() -> None:
    global _breakers
    _breakers = Breakers()
