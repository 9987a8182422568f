"""Background probes: every UPSTREAM_PROBE_SECONDS each enabled upstream with a probe (and
the implicit `default` at OPENCLAW_URL) gets a cheap request: its `probe`, GET /v1/models
unless the operator set another, appended to its base URL as calls are, with its extra
headers and its own credential only (the operator's key for auth api_key; nothing for
caller or none). Any status below 500 within its connect and first-byte timeouts means up:
a 401 too, something answered. Each outcome feeds the upstream's circuit breaker
(proxy.breakers), so a dead upstream is skipped before a call finds out and a recovered one
is used again without waiting for a call to probe it, and is recorded for operators
(proxy.health).

Every worker runs the loop (started by the ASGI lifespan); per upstream and interval one
process probes, the one whose conditional update of the upstream's health row succeeds
(proxy.health.leased): the database every process shares is the lease, whatever the backend.
"""

import asyncio
import logging
from dataclasses import dataclass

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection

from gateway_project.lib.periodic import Periodic
from proxy import breakers, health, legs, metrics, routes, timing, upstream
from proxy.routes import Upstream

logger = logging.getLogger(__name__)

USER_AGENT = "organized-gateway-probe"


@dataclass(frozen=True)
class Probe:
    upstream: Upstream
    # A method and a path, e.g. "GET /v1/models".
    request: str


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    seconds: float
    # Why it failed, for operators (never a credential); empty when it did not.
    error: str = ""
    status: int | None = None


def configured() -> list[Probe]:
    """The probes to make: `default` (when OPENCLAW_URL is set), then each enabled upstream
    whose probe is not blank, as the routes hold them (one whose key cannot be decrypted is
    left out there)."""
    upstreams = routes.read_table().upstreams
    found = [Probe(upstreams[name], upstreams[name].probe) for name in sorted(upstreams) if upstreams[name].probe]
    default = routes.default_upstream()
    return ([Probe(default, default.probe)] if default is not None else []) + found


async def probe(target: Probe, timeout: float | None = None) -> Outcome:
    """One probe, with no other effect; `timeout` may shorten the upstream's own."""
    target_upstream = target.upstream
    method, path = target.request.split(" ", 1)
    limit = target_upstream.connect_timeout + target_upstream.first_byte_timeout
    limit = limit if timeout is None else min(limit, timeout)
    headers = {
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        **dict(target_upstream.headers),
        **legs.operator_credential(target_upstream),
    }
    # The relay's transport, not upstream.send(): a failed probe is no failed call, and must
    # not count as one in gateway_upstream_failures_total.
    request = httpx.Request(
        method,
        target_upstream.base_url + path,
        headers=headers,
        extensions={"timeout": {"connect": target_upstream.connect_timeout, "read": limit}},
    )
    started, status = timing.clock.now(), None
    try:
        async with asyncio.timeout(limit):
            response = await upstream.transport().handle_async_request(request)
            status = response.status_code
            await response.aclose()
    except TimeoutError:
        error = f"no answer within {limit:g} s"
    except httpx.HTTPError as failure:
        error = f"{upstream.failure_kind(failure)} ({type(failure).__name__})"
    else:
        error = f"answered {status}" if status >= 500 else ""
    seconds = timing.clock.now() - started
    return Outcome(target_upstream.name, not error, seconds, error and f"probe {target.request}: {error}", status)


async def probe_all() -> list[Outcome]:
    """One round: each upstream whose lease this process takes is probed (all at once), its
    breaker told, its outcome recorded. The outcomes of the probes made here."""
    interval = settings.UPSTREAM_PROBE_SECONDS
    targets = await sync_to_async(_configured_in_thread, thread_sensitive=False)()
    leases = await asyncio.gather(*(health.leased(target.upstream.name, interval) for target in targets))
    outcomes = await asyncio.gather(*(probe(target) for target, mine in zip(targets, leases, strict=True) if mine))
    for outcome in outcomes:
        await _feed(outcome)
    return list(outcomes)


async def _feed(outcome: Outcome) -> None:
    metrics.probed(outcome.name, outcome.ok)
    # This process's copy of the breaker, as every process shares it: a success must close
    # a breaker another process opened. The probe is the upstream's trial once its breaker's
    # cool-down is over (calls then leave it to the probe); during the cool-down a success
    # changes nothing.
    await breakers.breaker(outcome.name)
    if outcome.ok:
        await breakers.succeeded(outcome.name, trial=True)
    else:
        await breakers.failed(outcome.name, outcome.error)
    try:
        await health.probed(outcome.name, outcome.ok, outcome.seconds, outcome.error)
    except DatabaseError as error:
        logger.warning("upstream probes: the probe of %s was not recorded (%s)", outcome.name, error)


def _configured_in_thread() -> list[Probe]:
    try:
        return configured()
    finally:
        connection.close()  # a thread of the loop's executor: its connection is not reused


prober = Periodic("upstream probes", probe_all, lambda: settings.UPSTREAM_PROBE_SECONDS)


def start() -> None:
    """At a worker's startup (the ASGI lifespan); nothing when UPSTREAM_PROBE_SECONDS is 0."""
    prober.start()


async def stop() -> None:
    await prober.stop()
