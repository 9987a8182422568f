"""Loading a routes file (proxy.routes_file) into the tables: everything checked first, then
written in one transaction, so a bad file changes nothing; a file loaded again changes nothing.

The file is the whole routing: upstreams and routes it does not name are removed. Pins it does
not name are left as they are (accounts and plans are managed elsewhere).
"""

import os
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction

from accounts import caller_changes
from accounts.models import Account
from billing.models import Plan
from gateway_project.lib.wording import counted
from proxy import routes, routes_file
from proxy.models import Route, RouteTarget, Upstream
from proxy.routes_file import RoutesFile, RoutesFileError, TargetSpec, current_targets, parse

# Fields of an upstream a file sets (api_key apart: kept when the file names no variable).
_FIELDS = ("base_url", "auth", "headers", "retries", "enabled", "probe", *routes_file.TIMEOUTS)


@dataclass
class Summary:
    upstreams: list[int] = field(default_factory=lambda: [0, 0, 0])  # added, changed, removed
    routes: list[int] = field(default_factory=lambda: [0, 0, 0])
    pins: int = 0

    @property
    def changed(self) -> bool:
        return any(self.upstreams) or any(self.routes) or bool(self.pins)

    def text(self, wanted: RoutesFile) -> str:
        size = (
            f"{counted(len(wanted.upstreams), 'upstream')}, {counted(len(wanted.routes), 'route')}, "
            f"{counted(len(wanted.account_pins) + len(wanted.plan_pins), 'pin')}"
        )
        if not self.changed:
            return f"{size}: nothing changed (the tables already say what the file says)."
        added, changed, removed = self.upstreams
        text = f"{size}: upstreams {added} added, {changed} changed, {removed} removed; "
        added, changed, removed = self.routes
        return text + f"routes {added} added, {changed} changed, {removed} removed; pins {self.pins} changed."


def load(text: str, environ: dict[str, str] | None = None) -> tuple[RoutesFile, Summary]:
    """Check `text` whole, then make the tables say what it says. Raises RoutesFileError."""
    wanted = parse(text, dict(os.environ) if environ is None else environ)
    try:
        return wanted, _load_checked(wanted)
    except IntegrityError:
        # Another process loading at the same moment (hosts starting together) won the race:
        # its rows are committed now, and a second pass finds them.
        return wanted, _load_checked(wanted)


def _load_checked(wanted: RoutesFile) -> Summary:
    summary = Summary()
    with transaction.atomic():
        _check_against_database(wanted)
        stored = {row.name: row for row in Upstream.objects.select_for_update()}
        for name, values in wanted.upstreams.items():
            _save_upstream(stored.get(name), values, summary)
        for model, targets in wanted.routes.items():
            _save_route(model, sorted(targets, key=lambda t: t.priority), summary)
        summary.routes[2] = Route.objects.exclude(model__in=list(wanted.routes)).delete()[1].get("proxy.Route", 0)
        gone = Upstream.objects.exclude(name__in=list(wanted.upstreams))
        summary.upstreams[2] = gone.delete()[1].get("proxy.Upstream", 0)
        summary.pins = _set_pins(Account, "user_id", wanted.account_pins) + _set_pins(Plan, "tier", wanted.plan_pins)
        if summary.pins:
            # QuerySet.update() sends no signal: an account's pin is part of its callers' lookups.
            routes.changed()
            caller_changes.changed()
    return summary


def _check_against_database(wanted: RoutesFile) -> None:
    for model, key, pins in ((Account, "user_id", wanted.account_pins), (Plan, "tier", wanted.plan_pins)):
        kind = "accounts" if model is Account else "plans"
        found = set(model.objects.filter(**{f"{key}__in": list(pins)}).values_list(key, flat=True))
        for owner in pins:
            if owner not in found:
                raise RoutesFileError(f"pins.{kind}.{owner}: no such {model._meta.verbose_name}.")
        # A pin must not be left naming an upstream the file removes.
        pinned = model.objects.exclude(pinned_upstream="").exclude(**{f"{key}__in": list(pins)})
        for owner, upstream in pinned.values_list(key, "pinned_upstream"):
            if upstream not in wanted.upstreams:
                raise RoutesFileError(
                    f"upstreams: {upstream!r} is missing, and {model._meta.verbose_name} {owner} is pinned to it; "
                    f"keep it in the file, or set pins.{kind}.{owner}."
                )
    keyed = set(Upstream.objects.exclude(api_key="").values_list("name", flat=True))
    for name, values in wanted.upstreams.items():
        if values["auth"] == Upstream.Auth.API_KEY and values["api_key"] is None and name not in keyed:
            raise RoutesFileError(
                f"upstreams.{name}.api_key_env: auth api_key needs a key; name the environment variable holding it."
            )


def _save_upstream(row: Upstream | None, values: dict, summary: Summary) -> None:
    if row is None:
        Upstream.objects.create(**{**values, "api_key": values["api_key"] or ""})
        summary.upstreams[0] += 1
        return
    changes = {name: values[name] for name in _FIELDS if getattr(row, name) != values[name]}
    if values["api_key"] is not None and row.api_key != values["api_key"]:
        changes["api_key"] = values["api_key"]
    if changes:
        for name, value in changes.items():
            setattr(row, name, value)
        # No key is read back as None (accounts.fields), and the column holds '' for none.
        row.api_key = row.api_key or ""
        row.save()
        summary.upstreams[1] += 1


def _save_route(model: str, targets: list[TargetSpec], summary: Summary) -> None:
    route, created = Route.objects.get_or_create(model=model)
    if not created and current_targets(route) == targets:
        return
    RouteTarget.objects.filter(route=route).delete()
    names = dict(Upstream.objects.values_list("name", "id"))
    for target in targets:
        RouteTarget.objects.create(
            route=route,
            upstream_id=names[target.upstream],
            model=target.model,
            priority=target.priority,
            weight=target.weight,
            continuation=target.continuation,
        )
    summary.routes[0 if created else 1] += 1


def _set_pins(model, key: str, pins: dict[str, str]) -> int:
    changed = 0
    for owner, upstream in pins.items():
        changed += (
            model.objects.filter(**{key: owner}).exclude(pinned_upstream=upstream).update(pinned_upstream=upstream)
        )
    return changed
