"""Each upstream's health in a terminal, and whether every route can still be served: for
cron and monitoring.

    manage.py check_upstreams [--no-probe] [--json] [--timeout 10]

Lists each upstream (`default` at OPENCLAW_URL, the configured ones): its circuit breaker's
state and since when, its last error, its errors and latency over the last minutes, and the
outcome of a probe made now (all at once, each within its own timeouts and --timeout; none
with --no-probe, which shows the last background probe). These probes change nothing: no
breaker, no record.

Exits 1 when a route has no usable target, naming it on stderr: a target is usable when its
upstream is enabled, its breaker is not open, and its probe (when one was made) succeeded.
The models no route names count as a route of their own (`*`, served by `default`).
"""

import asyncio
import json
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand

from proxy import breakers, health_view, probes, routes, upstream
from proxy.health_view import Health, latency_text, local
from proxy.models import Route
from proxy.probes import Outcome

DEFAULT_TIMEOUT = 10.0


@dataclass
class RouteCheck:
    route: str
    targets: list[str]
    usable: list[str]


class Command(BaseCommand):
    help = "Each upstream's state, latency and last error; exits 1 when a route has no usable target."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-probe", action="store_true", help="do not probe the upstreams now")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON instead of tables")
        parser.add_argument(
            "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a probe may take at most (default 10)"
        )

    def handle(self, *args, no_probe: bool, as_json: bool, timeout: float, **options) -> None:
        table = routes.read_table()
        names = health_view.known_names()
        found = health_view.health_of(names)
        probed = {} if no_probe else _probe_now(timeout)
        enabled = set(table.upstreams) | ({routes.DEFAULT_UPSTREAM} if settings.OPENCLAW_URL else set())
        usable = {
            name
            for name in names
            if name in enabled and found[name].state != breakers.OPEN and (name not in probed or probed[name].ok)
        }
        checks = _route_checks(table, usable)
        if as_json:
            self.stdout.write(_as_json(names, found, probed, enabled, checks))
        else:
            self.stdout.write(_upstream_table(names, found, probed, enabled))
            self.stdout.write("")
            self.stdout.write(_route_table(checks))
        failing = [check for check in checks if not check.usable]
        for check in failing:
            reasons = "; ".join(_why_not(name, found, probed, enabled) for name in check.targets)
            self.stderr.write(f"route {check.route!r} has no usable target ({reasons or 'no enabled target'})")
        if failing:
            raise SystemExit(1)


def _probe_now(timeout: float) -> dict[str, Outcome]:
    targets = probes.configured()

    async def all_at_once() -> list[Outcome]:
        try:
            return await asyncio.gather(*(probes.probe(target, timeout) for target in targets))
        finally:
            await upstream.close_client()

    return {outcome.name: outcome for outcome in asyncio.run(all_at_once())}


def _route_checks(table: routes.RouteTable, usable: set[str]) -> list[RouteCheck]:
    """Every route (those left without an enabled target too), and the models no route names."""
    checks = []
    for name in Route.objects.order_by("model").values_list("model", flat=True):
        targets = list(dict.fromkeys(choice.target.upstream.name for choice in table.routes.get(name, ())))
        checks.append(RouteCheck(name, targets, [target for target in targets if target in usable]))
    if routes.CATCH_ALL not in table.routes:
        default = [routes.DEFAULT_UPSTREAM] if settings.OPENCLAW_URL else []
        checks.append(RouteCheck(routes.CATCH_ALL, default, [name for name in default if name in usable]))
    return checks


def _why_not(name: str, found: dict[str, Health], probed: dict[str, Outcome], enabled: set[str]) -> str:
    if name not in enabled:
        return f"{name}: disabled"
    if found[name].state == breakers.OPEN:
        return f"{name}: circuit breaker open since {local(found[name].since)}"
    if name in probed and not probed[name].ok:
        return f"{name}: {probed[name].error}"
    return f"{name}: usable"


def _probe_text(name: str, health: Health, probed: dict[str, Outcome]) -> str:
    if name in probed:
        outcome = probed[name]
        return f"ok, {outcome.seconds * 1000:.0f} ms ({outcome.status})" if outcome.ok else f"failed: {outcome.error}"
    if health.probed_at is None or health.probe_ok is None:
        return "—"
    return f"{'ok' if health.probe_ok else 'failed'}, {health.probe_latency_ms} ms at {local(health.probed_at)}"


def _upstream_table(names, found, probed, enabled) -> str:
    rows = [("upstream", "state", "since", "probe", "errors (5 min)", "p50", "last error")]
    for name in names:
        health = found[name]
        rate = "—" if health.error_rate is None else f"{health.error_rate:.0%} of {health.calls}"
        error = f"{health.last_error} ({local(health.last_error_at)})" if health.last_error else "—"
        state = health.state if name in enabled else f"{health.state} (disabled)"
        rows.append(
            (
                name,
                state,
                local(health.since),
                _probe_text(name, health, probed),
                rate,
                latency_text(health.p50_ms),
                error,
            )
        )
    return _aligned(rows)


def _route_table(checks: list[RouteCheck]) -> str:
    rows = [("route", "targets", "usable")]
    rows += [(c.route, ", ".join(c.targets) or "—", ", ".join(c.usable) or "NONE") for c in checks]
    return _aligned(rows)


def _aligned(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _as_json(names, found, probed, enabled, checks: list[RouteCheck]) -> str:
    def moment(value) -> str | None:
        return value.isoformat() if value else None

    upstreams = []
    for name in names:
        health = found[name]
        outcome = probed.get(name)
        upstreams.append(
            {
                "name": name,
                "enabled": name in enabled,
                "state": health.state,
                "since": moment(health.since),
                "last_error": health.last_error or None,
                "last_error_at": moment(health.last_error_at),
                "calls": health.calls,
                "error_rate": health.error_rate,
                "latency_p50_ms": health.p50_ms,
                "probe": None
                if outcome is None
                else {"ok": outcome.ok, "latency_ms": round(outcome.seconds * 1000), "error": outcome.error or None},
            }
        )
    routes_ = [{"route": c.route, "targets": c.targets, "usable": c.usable} for c in checks]
    return json.dumps({"ok": all(c.usable for c in checks), "upstreams": upstreams, "routes": routes_}, indent=2)
