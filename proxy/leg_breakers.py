"""The circuit breakers (proxy.breakers) as a call's attempts meet them (proxy.routing):
which legs a call may try, the 503 when none, and what an attempt tells its upstream's
breaker."""

import math

from django.conf import settings

from gateway_project.lib.errors import GatewayError
from gateway_project.lib.wording import counted
from proxy import breakers, metrics, routes
from proxy.legs import Leg
from proxy.relay import Answer
from proxy.rescue import is_event_stream


async def usable(legs: list[Leg], model: str) -> list[Leg]:
    """The legs whose breaker lets calls through now (closed, or due for a trial), by this
    process's copies: no round trip here (each attempt syncs its own). When none is left, the
    copies are read again before the call is refused with no_healthy_upstream."""
    found = [leg for leg in legs if leg.refusal is not None or breakers.known_wait(leg.target.upstream.name) == 0]
    if any(leg.refusal is None for leg in found):
        return found
    found = [leg for leg in legs if leg.refusal is not None or await breakers.wait(leg.target.upstream.name) == 0]
    if any(leg.refusal is None for leg in found):
        return found
    raise await no_healthy_upstream(legs, model)


async def enter(leg: Leg) -> str | None:
    """Whether a call may attempt `leg` now (breakers.enter): a call is the trial of an open
    breaker only when no background probe tries that upstream, and holds it as long as its
    attempt may take."""
    target = leg.target.upstream
    lease = target.connect_timeout + target.first_byte_timeout + target.first_event_timeout
    probed = bool(settings.UPSTREAM_PROBE_SECONDS and target.probe)
    entry = await breakers.enter(target.name, lease=lease, may_try=not probed)
    if entry is None:
        metrics.breaker_skipped(target.name)
    return entry


async def no_healthy_upstream(legs: list[Leg], model: str) -> GatewayError:
    names = list(dict.fromkeys(leg.target.upstream.name for leg in legs if leg.refusal is None))
    seconds = min([await breakers.wait(name) for name in names], default=0.0)
    retry = max(math.ceil(seconds), 1)
    route = await routes.route_of(model)
    return GatewayError(
        503,
        "no_healthy_upstream",
        f"No upstream can take this call now: every target of route {route!r} is failing "
        f"({', '.join(names)}, circuit breaker open). The gateway tries again in {counted(retry, 'second')}; "
        "retry after that.",
        type="server_error",
        headers={"Retry-After": str(retry)},
    )


async def tell(name: str, error: str | None, answer: Answer | None, *, trial: bool, failed_before: bool) -> None:
    """What an attempt tells its upstream's breaker. A failure counts once per call
    (`failed_before`: this call's earlier attempt on it failed): one caller's retries must not
    open it for everyone. A stream that started is judged at its end (proxy.relay), so its
    start does not forgive a break; a trial's answer closes the breaker at once."""
    if error is not None:
        if not failed_before or trial:
            await breakers.failed(name, error)
    elif trial or answer is None or answer.rest is None or not is_event_stream(answer.response):
        await breakers.succeeded(name, trial=trial)
