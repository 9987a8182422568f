"""Upstream health as operators read it (admin "Upstreams", manage.py check_upstreams, the
metrics scrape): for a set of upstreams at once, in two queries and, with REDIS_URL, one
Redis round trip, never a query per upstream.

The breaker's state is the one every process shares (Redis) when REDIS_URL is set and Redis
answers; else the database's mirror, as the last process that opened or closed it wrote it
(proxy.health). A breaker whose cool-down is over shows as "probing": the next call or
probe tries the upstream, and its outcome closes or opens the breaker again.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone
from redis.exceptions import RedisError

from gateway_project.lib import shared_redis
from proxy import breakers, routes, timing
from proxy.health import OVER_MS
from proxy.models import RouteTarget, UpstreamHealth, UpstreamMinute

logger = logging.getLogger(__name__)

WINDOW_MINUTES = 5


@dataclass
class Health:
    """One upstream's health; calls and failures over the last WINDOW_MINUTES."""

    name: str
    state: str = breakers.CLOSED
    since: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    probed_at: datetime | None = None
    probe_ok: bool | None = None
    probe_latency_ms: int | None = None
    calls: int = 0
    failures: int = 0
    # The latency bucket where half the calls are counted (its upper bound, ms).
    p50_ms: int | None = None

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.calls if self.calls else None

    @property
    def calls_per_minute(self) -> float:
        return self.calls / WINDOW_MINUTES


def health_of(names: Iterable[str], *, with_calls: bool = True) -> dict[str, Health]:
    """The health of upstreams `names`, by name (an upstream never seen: closed, no calls);
    without `with_calls`, the breakers and probes only (one query)."""
    names = list(dict.fromkeys(names))
    found = {name: Health(name) for name in names}
    for row in UpstreamHealth.objects.filter(name__in=names):
        health = found[row.name]
        health.state, health.since = _shown(row.state == breakers.OPEN, _seconds(row.open_until)), row.state_since
        health.last_error, health.last_error_at = row.last_error, row.last_error_at
        health.probed_at, health.probe_ok, health.probe_latency_ms = row.probed_at, row.probe_ok, row.probe_latency_ms
    for name, breaker in (shared(names) or {}).items():
        health = found[name]
        health.state = _shown(bool(breaker.open_until), breaker.open_until)
        if breaker.since:
            health.since = datetime.fromtimestamp(breaker.since, UTC)
    if with_calls:
        _add_recent_calls(found)
    return found


def states() -> dict[str, str]:
    """The breaker state of every known upstream, by name (the metrics scrape)."""
    return {name: health.state for name, health in health_of(known_names(), with_calls=False).items()}


def _add_recent_calls(found: dict[str, Health]) -> None:
    start = datetime.fromtimestamp(timing.clock.wall(), UTC) - timedelta(minutes=WINDOW_MINUTES)
    buckets: dict[str, list[tuple[int, int]]] = defaultdict(list)
    rows = (
        UpstreamMinute.objects.filter(upstream__in=list(found), minute__gte=start)
        .values_list("upstream", "latency_le_ms")
        .annotate(calls=Sum("calls"), failures=Sum("failures"))
        .order_by("upstream", "latency_le_ms")
    )
    for name, bucket, calls, failures in rows:
        found[name].calls += calls
        found[name].failures += failures
        buckets[name].append((bucket, calls))
    for name, counted in buckets.items():
        found[name].p50_ms = median_bucket(counted)


def median_bucket(buckets: list[tuple[int, int]]) -> int | None:
    """The first bucket (by upper bound) where the cumulative count reaches half the calls."""
    total, seen = sum(calls for _, calls in buckets), 0
    for bucket, calls in sorted(buckets):
        seen += calls
        if total and seen * 2 >= total:
            return bucket
    return None


def latency_text(bucket_ms: int | None) -> str:
    if bucket_ms is None:
        return "—"
    if bucket_ms == OVER_MS:
        return "> 60 s"
    return f"≤ {bucket_ms} ms" if bucket_ms < 1000 else f"≤ {bucket_ms / 1000:g} s"


def _shown(opened: bool, open_until: float | None) -> str:
    """As breakers.Breaker.state tells it."""
    if not opened:
        return breakers.CLOSED
    return breakers.OPEN if open_until and timing.clock.wall() < open_until else breakers.PROBING


def _seconds(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def shared(names: list[str]) -> dict[str, breakers.Breaker] | None:
    """The breakers of `names` as every process shares them, read without an event loop;
    None without REDIS_URL, with breakers off, or while Redis does not answer."""
    if not settings.REDIS_URL or settings.BREAKER_FAILURES <= 0 or not names:
        return None
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=shared_redis.TIMEOUT, socket_connect_timeout=shared_redis.TIMEOUT
    )
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                hash_key, lease_key = breakers.keys(name)
                pipe.hmget(hash_key, "failures", "open_until", "since", "last_error")
                pipe.pttl(lease_key)
            found = pipe.execute()
    except (RedisError, OSError) as error:
        logger.warning("upstream health: Redis is unreachable (%s); showing the database's copy", type(error).__name__)
        return None
    finally:
        client.close()
    now = timing.clock.wall()
    return {name: breakers.from_redis(*found[2 * i], found[2 * i + 1], now) for i, name in enumerate(names)}


def routes_using(names: Iterable[str]) -> dict[str, list[str]]:
    """The routes whose targets name each upstream, by upstream, in one query; `default`
    serves the models no route names when there is no catch-all route."""
    names = list(names)
    found: dict[str, list[str]] = {name: [] for name in names}
    rows = RouteTarget.objects.filter(upstream__name__in=names).values_list("upstream__name", "route__model")
    for name, route in rows.order_by("route__model").distinct():
        found[name].append(route)
    catch_all = RouteTarget.objects.filter(route__model=routes.CATCH_ALL, upstream__enabled=True)
    if routes.DEFAULT_UPSTREAM in found and settings.OPENCLAW_URL and not catch_all.exists():
        found[routes.DEFAULT_UPSTREAM].append(f"{routes.CATCH_ALL} (models no route names)")
    return found


def known_names() -> list[str]:
    """Every upstream operators may ask about: `default` when OPENCLAW_URL is set, the
    configured ones, and any other the health table remembers."""
    from proxy.models import Upstream

    names = [routes.DEFAULT_UPSTREAM] if settings.OPENCLAW_URL else []
    names += Upstream.objects.order_by("name").values_list("name", flat=True)
    names += UpstreamHealth.objects.order_by("name").values_list("name", flat=True)
    return list(dict.fromkeys(names))


def local(moment: datetime | None) -> str:
    """A moment in the server's time zone: its time alone when it is today."""
    if not moment:
        return "—"
    moment = timezone.localtime(moment)
    today = moment.date() == timezone.localdate()
    return moment.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S")
