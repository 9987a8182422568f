"""A routes file (TOML): the upstreams, the routes and pins a deployment keeps in git.

    [upstreams.bridge]                 # one table per upstream, by name
    base_url = "http://100.64.0.11:8080"
    auth = "caller"                    # caller | api_key | none
    api_key_env = "OPENAI_API_KEY"     # auth api_key: the variable holding the key
    headers = { X-Title = "Workshop" }
    connect_timeout = 5                # seconds; also first_byte_, first_event_, idle_timeout
    retries = 2
    enabled = true
    probe = "GET /v1/models"           # the background probe (the default); "" for none

    [routes]                           # model (or its base name, or "*") → targets in order
    "*" = [{ upstream = "bridge", model = "", priority = 1, weight = 1, continuation = "" }]
    # continuation: "" (no) | "prefill" | "restart": may finish a stream an earlier target broke

    [pins.accounts]                    # user id → upstream; [pins.plans]: tier → upstream
    acme = "bridge"

This module reads and checks a file; nothing here writes (see proxy.routes_loader).
"""

import math
import tomllib
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from proxy.models import DEFAULT_PROBE, UPSTREAM_TIMEOUTS, Route, RouteTarget, Upstream

TOP_KEYS = ("upstreams", "routes", "pins")
UPSTREAM_KEYS = (
    "base_url",
    "auth",
    "api_key_env",
    "headers",
    *UPSTREAM_TIMEOUTS,
    "retries",
    "enabled",
    "probe",
)
TIMEOUTS = UPSTREAM_TIMEOUTS
TARGET_KEYS = ("upstream", "model", "priority", "weight", "continuation")
CONTINUATIONS = tuple(RouteTarget.Continuation.values)
MODEL_MAX_LENGTH = Route._meta.get_field("model").max_length


class RoutesFileError(ValueError):
    """A file that cannot be loaded; the message names the line or the key."""


@dataclass(frozen=True)
class TargetSpec:
    upstream: str
    model: str = ""
    priority: int = 1
    weight: int = 1
    continuation: str = ""


@dataclass
class RoutesFile:
    # name → the Upstream fields the file gives it (api_key: None when the file names no variable)
    upstreams: dict[str, dict] = field(default_factory=dict)
    routes: dict[str, list[TargetSpec]] = field(default_factory=dict)
    account_pins: dict[str, str] = field(default_factory=dict)
    plan_pins: dict[str, str] = field(default_factory=dict)


def parse(text: str, environ: dict[str, str]) -> RoutesFile:
    """The file's contents, checked on their own (a key the database must confirm, such as a
    pinned account, is checked by the loader)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RoutesFileError(f"not valid TOML: {error}") from None
    _only_keys(data, TOP_KEYS, "the file")
    parsed = RoutesFile()
    for name, spec in _table(data, "upstreams").items():
        parsed.upstreams[name] = _upstream(name, _table_value(spec, f"upstreams.{name}"), environ)
    for model, targets in _table(data, "routes").items():
        parsed.routes[model] = _targets(model, targets, parsed.upstreams)
    pins = _table(data, "pins")
    _only_keys(pins, ("accounts", "plans"), "pins")
    parsed.account_pins = _pins(pins, "accounts", parsed.upstreams)
    parsed.plan_pins = _pins(pins, "plans", parsed.upstreams)
    return parsed


def _upstream(name: str, spec: dict, environ: dict[str, str]) -> dict:
    where = f"upstreams.{name}"
    if "api_key" in spec:
        raise RoutesFileError(
            f"{where}.api_key: never write a key in the file; name the environment variable that holds it "
            'with api_key_env = "VARIABLE".'
        )
    _only_keys(spec, UPSTREAM_KEYS, where)
    if "base_url" not in spec:
        raise RoutesFileError(f"{where}: base_url is missing.")
    values = {
        "name": name,
        "base_url": _text(spec["base_url"], f"{where}.base_url").rstrip("/"),
        "auth": _text(spec.get("auth", Upstream.Auth.CALLER), f"{where}.auth"),
        "headers": spec.get("headers", {}),
        "retries": _integer(spec.get("retries", Upstream._meta.get_field("retries").default), f"{where}.retries"),
        "enabled": spec.get("enabled", True),
        "probe": _text(spec.get("probe", DEFAULT_PROBE), f"{where}.probe"),
        "api_key": None,
    }
    if not isinstance(values["enabled"], bool):
        raise RoutesFileError(f"{where}.enabled: true or false.")
    for timeout in TIMEOUTS:
        values[timeout] = _seconds(spec[timeout], f"{where}.{timeout}") if timeout in spec else None
    if "api_key_env" in spec:
        variable = _text(spec["api_key_env"], f"{where}.api_key_env")
        if not environ.get(variable):
            raise RoutesFileError(f"{where}.api_key_env: the environment variable {variable} is not set.")
        values["api_key"] = environ[variable]
    row = Upstream(**{**values, "api_key": values["api_key"] or "kept"})
    try:
        row.full_clean(exclude=["api_key"], validate_unique=False)
    except ValidationError as error:
        key, problems = next(iter(error.message_dict.items()))
        raise RoutesFileError(f"{where}{'.' + key if key != '__all__' else ''}: {' '.join(problems)}") from None
    values["probe"] = row.probe  # as clean() wrote it
    return values


def _targets(model: str, targets: object, upstreams: dict[str, dict]) -> list[TargetSpec]:
    where = f"routes.{_quoted(model)}"
    if not model or len(model) > MODEL_MAX_LENGTH:
        raise RoutesFileError(f"{where}: a model name of 1 to {MODEL_MAX_LENGTH} characters, or *.")
    if not isinstance(targets, list) or not targets:
        raise RoutesFileError(f'{where}: a list of targets, e.g. [{{ upstream = "bridge" }}].')
    specs = []
    for index, target in enumerate(targets):
        key = f"{where}[{index}]"
        target = _table_value(target, key)
        _only_keys(target, TARGET_KEYS, key)
        upstream = _text(target.get("upstream", ""), f"{key}.upstream")
        if upstream not in upstreams:
            raise RoutesFileError(f"{key}.upstream: no upstream {upstream!r} in the file's [upstreams].")
        spec = TargetSpec(
            upstream,
            _text(target.get("model", ""), f"{key}.model"),
            _integer(target.get("priority", 1), f"{key}.priority"),
            _integer(target.get("weight", 1), f"{key}.weight", minimum=1),
            _continuation(target.get("continuation", ""), f"{key}.continuation"),
        )
        if len(spec.model) > MODEL_MAX_LENGTH:
            raise RoutesFileError(f"{key}.model: at most {MODEL_MAX_LENGTH} characters.")
        if any((s.upstream, s.model) == (spec.upstream, spec.model) for s in specs):
            raise RoutesFileError(f"{key}: {upstream} with this model is already a target of this route.")
        specs.append(spec)
    return specs


def _pins(pins: dict, kind: str, upstreams: dict[str, dict]) -> dict[str, str]:
    found = {}
    for owner, upstream in _table(pins, kind).items():
        key = f"pins.{kind}.{_quoted(owner)}"
        upstream = _text(upstream, key)
        if upstream and upstream not in upstreams:
            raise RoutesFileError(f"{key}: no upstream {upstream!r} in the file's [upstreams].")
        found[owner] = upstream
    return found


def _table(data: dict, key: str) -> dict:
    return _table_value(data.get(key, {}), key)


def _table_value(value: object, key: str) -> dict:
    if not isinstance(value, dict):
        raise RoutesFileError(f"{key}: a table is expected here.")
    return value


def _only_keys(data: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise RoutesFileError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)}).")


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise RoutesFileError(f"{key}: a string is expected, not {value!r}.")
    return value.strip()


def _integer(value: object, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RoutesFileError(f"{key}: a whole number of at least {minimum} is expected, not {value!r}.")
    return value


def _continuation(value: object, key: str) -> str:
    if value not in CONTINUATIONS:
        allowed = ", ".join(f'"{name}"' for name in CONTINUATIONS)
        raise RoutesFileError(f"{key}: one of {allowed}, not {value!r}.")
    return value


def _seconds(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise RoutesFileError(f"{key}: a number of seconds is expected, not {value!r}.")
    return float(value)


def _quoted(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else f'"{name}"'


def current_targets(route: Route) -> list[TargetSpec]:
    """A stored route's targets as a file gives them, to compare."""
    rows = RouteTarget.objects.filter(route=route).order_by("priority", "id")
    fields = ("upstream__name", "model", "priority", "weight", "continuation")
    return [TargetSpec(*row) for row in rows.values_list(*fields)]
