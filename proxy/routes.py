"""Where a call may go: named upstreams, and routes from a model name to ordered targets.

With only OPENCLAW_URL set and no routes, every model goes to the implicit `default`
upstream at that URL, exactly as a single-upstream gateway does. A model no route names goes
there too (when OPENCLAW_URL is set).

Each worker holds the tables in memory (RouteTable) and reads them again when their version
("routes") changes: no database read per call, a change applies within CHANGE_CHECK_MS.
"""

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db.models import TextField
from django.db.models.functions import Cast

from accounts import crypto
from billing.cached import Reloaded
from billing.prices import names_for
from gateway_project.lib import table_versions
from gateway_project.lib.errors import GatewayError
from gateway_project.lib.from_settings import held

logger = logging.getLogger(__name__)

# The name the access log and routes give the upstream at OPENCLAW_URL.
DEFAULT_UPSTREAM = "default"
# What an upstream is probed with unless the operator says otherwise (proxy.probes).
DEFAULT_PROBE = "GET /v1/models"
# The route of every model no other route names.
CATCH_ALL = "*"
TABLE = "routes"
# Where targets of one priority get their order (weighted): injected, so tests choose it.
chance: Callable[[], float] = random.random


@dataclass(frozen=True, slots=True)
class Upstream:
    """An upstream as a worker holds it in memory (secrets decrypted, never logged)."""

    name: str
    base_url: str
    # "caller": the caller's credential as a single-upstream gateway sends it (their
    # Authorization, or their stored Codex session under AUTH_MODE=codex); "api_key": the
    # operator's key, sent as `Authorization: Bearer`; "none": no credential.
    auth: str
    api_key: str | None
    # Extra headers sent with every call (e.g. OpenRouter's HTTP-Referer / X-Title).
    headers: tuple[tuple[str, str], ...]
    connect_timeout: float
    # Response headers must arrive within this many seconds of the request being sent.
    first_byte_timeout: float
    # A stream's first event must arrive within this many seconds of its headers.
    first_event_timeout: float
    # The longest silence allowed between two chunks once the answer has started.
    idle_timeout: float
    # Further attempts on this upstream after a failure worth retrying.
    retries: int
    # The longest silence between a stream's events once its first one is in (proxy.rescue
    # takes over then); None: idle_timeout.
    stream_idle_timeout: float | None = None
    # What the background probe sends it ("GET /v1/models"); empty: it is not probed.
    probe: str = ""

    @property
    def stream_idle(self) -> float:
        return self.stream_idle_timeout or self.idle_timeout

    def __repr__(self) -> str:  # never the key
        return f"Upstream({self.name!r}, {self.base_url!r}, auth={self.auth!r})"


@dataclass(frozen=True, slots=True)
class Target:
    upstream: Upstream
    # The model name to send; None: the caller's, as they sent it.
    model: str | None = None
    # Whether a stream broken after its start may be continued here (proxy.rescue):
    # "" no, "prefill" (it continues the text sent as an assistant message), "restart".
    continuation: str = ""


@held
def default_upstream() -> Upstream | None:
    """The implicit upstream at OPENCLAW_URL, or None when it is unset (built once: held
    until a setting changes)."""
    if not settings.OPENCLAW_URL:
        return None
    return Upstream(
        name=DEFAULT_UPSTREAM,
        base_url=settings.OPENCLAW_URL,
        auth="caller",
        api_key=None,
        headers=(),
        connect_timeout=settings.UPSTREAM_CONNECT_TIMEOUT,
        first_byte_timeout=settings.UPSTREAM_TIMEOUT,
        first_event_timeout=settings.UPSTREAM_TIMEOUT,
        idle_timeout=settings.UPSTREAM_TIMEOUT,
        retries=0,
        stream_idle_timeout=_stream_idle(None),
        probe=DEFAULT_PROBE,
    )


def _stream_idle(own: float | None) -> float:
    """An upstream's own idle timeout, else STREAM_IDLE_TIMEOUT (never past UPSTREAM_TIMEOUT,
    the silence allowed between any two bytes)."""
    return own or min(settings.STREAM_IDLE_TIMEOUT, settings.UPSTREAM_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Choice:
    """A route's target with its place among the others."""

    target: Target
    priority: int
    weight: int


@dataclass(frozen=True)
class RouteTable:
    # Enabled upstreams by name (what pins and targets may use).
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    # Route name (a model, a base name or CATCH_ALL) → its targets on enabled upstreams,
    # by priority; routes left without any are absent.
    routes: dict[str, tuple[Choice, ...]] = field(default_factory=dict)

    def route_name(self, model: str) -> str | None:
        """The route `model` follows: its own name, the name it is a dated snapshot of, or
        the catch-all; None when no route serves it."""
        return next((name for name in [*names_for(model), CATCH_ALL] if name in self.routes), None)

    def targets(
        self, model: str, *, pin: str | None, default: Upstream | None, chance: Callable[[], float]
    ) -> list[Target]:
        found = []
        if pin and pin in self.upstreams:
            found.append(Target(self.upstreams[pin]))
        name = self.route_name(model)
        if name is None:
            found.extend([Target(default)] if default is not None else [])
        else:
            choices = self.routes[name]
            for priority in sorted({choice.priority for choice in choices}):
                found.extend(_weighted_order([c for c in choices if c.priority == priority], chance))
        unique, seen = [], set()
        for target in found:
            if (target.upstream, target.model) not in seen:  # a pin names no continuation
                seen.add((target.upstream, target.model))
                unique.append(target)
        return unique


def _weighted_order(choices: list[Choice], chance: Callable[[], float]) -> list[Target]:
    """Targets of one priority, each next one drawn among those left with odds by weight."""
    left, ordered = list(choices), []
    while len(left) > 1:
        point = chance() * sum(choice.weight for choice in left)
        index = len(left) - 1
        for position, choice in enumerate(left):
            point -= choice.weight
            if point < 0:
                index = position
                break
        ordered.append(left.pop(index).target)
    return ordered + [choice.target for choice in left]


def read_table() -> RouteTable:
    from proxy.models import RouteTarget

    upstreams = _enabled_upstreams()
    routes: dict[str, list[Choice]] = defaultdict(list)
    rows = RouteTarget.objects.order_by("route__model", "priority", "id").values_list(
        "route__model", "upstream__name", "model", "priority", "weight", "continuation"
    )
    for route, upstream, model, priority, weight, continuation in rows:
        if upstream in upstreams:
            target = Target(upstreams[upstream], model or None, continuation)
            routes[route].append(Choice(target, priority, weight))
    return RouteTable(upstreams, {name: tuple(choices) for name, choices in routes.items()})


def _enabled_upstreams() -> dict[str, Upstream]:
    """The enabled upstreams, keys decrypted one by one: an upstream whose key cannot be read
    (GATEWAY_ENCRYPTION_KEYS changed without a rotation) is left out, not every call failed."""
    from proxy.models import Upstream as UpstreamRow

    found = {}
    rows = UpstreamRow.objects.filter(enabled=True).defer("api_key").annotate(sealed=Cast("api_key", TextField()))
    for row in rows:
        try:
            row.api_key = crypto.decrypt(row.sealed) if row.sealed else ""
        except (InvalidToken, ValueError):
            logger.error(
                "upstream %s: its API key cannot be decrypted with GATEWAY_ENCRYPTION_KEYS; routes skip it "
                "until the key is entered again (admin or manage.py load_routes)",
                row.name,
            )
            continue
        found[row.name] = upstream_of(row)
    return found


def upstream_of(row) -> Upstream:
    """A proxy.models.Upstream row as workers hold it; empty timeouts are the settings'."""
    return Upstream(
        name=row.name,
        base_url=row.base_url.rstrip("/"),
        auth=row.auth,
        api_key=row.api_key or None,
        headers=tuple(sorted(row.headers.items())),
        connect_timeout=row.connect_timeout or settings.UPSTREAM_CONNECT_TIMEOUT,
        first_byte_timeout=row.first_byte_timeout or settings.UPSTREAM_TIMEOUT,
        first_event_timeout=row.first_event_timeout or settings.UPSTREAM_TIMEOUT,
        idle_timeout=row.idle_timeout or settings.UPSTREAM_TIMEOUT,
        retries=row.retries,
        stream_idle_timeout=_stream_idle(row.idle_timeout),
        probe=row.probe,
    )


_cache = Reloaded(read_table, "routes", table=TABLE)
_EMPTY = RouteTable()


def follow_changes() -> None:
    """Have every save and delete of an upstream, route or target reach the workers."""
    from proxy.models import Route, RouteTarget
    from proxy.models import Upstream as UpstreamRow

    for model in (UpstreamRow, Route, RouteTarget):
        table_versions.bump_on_change(model, TABLE)


def changed() -> None:
    """Tell the workers the routes changed (called in the change's transaction, sent once it
    commits), for changes the ORM sends no signal for."""
    table_versions.bump(TABLE)


async def table() -> RouteTable:
    """This worker's copy of the routes. While the database cannot be read, the copy read
    last (none: no routes, so the default upstream), so that routing never stops the relay."""
    try:
        return await _cache.get()
    except GatewayError:
        return _cache._value or _EMPTY


async def targets_for(model: str, *, pin: str | None = None) -> list[Target]:
    """The targets a call of `model` tries, in order: the pinned upstream first (with the
    caller's model), then the model's route, by priority, weighted within one priority; the
    default upstream when no route serves the model. Empty when nothing can serve it."""
    return (await table()).targets(model, pin=pin, default=default_upstream(), chance=chance)


async def route_of(model: str) -> str:
    """The name of the route `model` follows, as operators know it (CATCH_ALL for the
    default upstream)."""
    return (await table()).route_name(model) or CATCH_ALL
