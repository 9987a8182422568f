"""Prometheus metrics, scraped at /metrics with METRICS_TOKEN (docs/operators/monitoring.md).

Every process counts in its own memory. Under gunicorn each worker also publishes its counts
every second, and a scrape, answered by any one worker, merges them all
(proxy.metric_snapshots). Without gunicorn (one process: uvicorn, the tests' server thread)
the scrape serves this process's registry.

Most counting happens off the request's path: `count_rows` runs in the access-log writer
with each batch of rows written. On the path there are only the stream gauge, the
first-byte histogram and counters of attempts, refusals and failures, each an addition in
memory under a lock (~0.4-1 µs). No hook may break a request or the writer: each logs and
goes on.

Label values are bounded: endpoint is the /v1 path's family (ENDPOINT_FAMILIES or
"other"), model a name the upstream has served in this worker (up to MODEL_LABELS_MAX),
and no label ever holds a user id.
"""

import functools
import hmac
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ParamSpec

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from gateway_project.lib import process_state
from gateway_project.lib.bearer import bearer_token
from gateway_project.lib.errors import GatewayError
from proxy import metric_snapshots
from proxy.breaker_states import BREAKER_STATES

if TYPE_CHECKING:
    from proxy.accesslog import Exchange, LogRow

logger = logging.getLogger(__name__)

ENDPOINT_FAMILIES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/models",
    "/v1/moderations",
    "/v1/images",
    "/v1/audio",
    "/v1/files",
    "/v1/batches",
)
# Models get a label of their own once the upstream has answered a call for them with a
# 2xx (names a trainee mistypes get the upstream's 404 and stay "other"), up to this many
# per worker, cut to MODEL_LABEL_LENGTH characters.
MODEL_LABELS_MAX = 50
MODEL_LABEL_LENGTH = 64
NO_MODEL = "none"
OTHER = "other"

# Few buckets: each is a series per label set, in every worker's snapshot.
DURATION_BUCKETS = (0.01, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FIRST_BYTE_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PICO = 10**12

# A counter's `_created` sample per label set: noise here, and meaningless summed over workers.
disable_created_metrics()

REQUESTS = Counter(
    "gateway_requests",
    "/v1 requests, counted when their access-log row is written.",
    ["status_class", "endpoint", "model"],
)
DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from a /v1 request's arrival to the end of its response (the row's latency).",
    ["endpoint", "status_class"],
    buckets=DURATION_BUCKETS,
)
FIRST_BYTE = Histogram(
    "gateway_time_to_first_byte_seconds",
    "Time from a /v1 request's arrival until the first chunk of the upstream's body reached the client.",
    ["endpoint"],
    buckets=FIRST_BYTE_BUCKETS,
)
UPSTREAM_FAILURES = Counter(
    "gateway_upstream_failures",
    "Attempts an upstream failed: connect (unreachable), reset (closed before the status line), "
    "timeout (silent), broken (broke off the exchange).",
    ["kind"],
)
ATTEMPTS = Counter(
    "gateway_upstream_attempts",
    "Attempts made on upstreams, by upstream and outcome (proxy.routing.OUTCOMES); a request makes one or more.",
    ["upstream", "outcome"],
)
RETRIES = Counter("gateway_upstream_retries", "Attempts sent again to the same upstream after a failure.", ["upstream"])
FAILOVERS = Counter(
    "gateway_upstream_failovers", "Calls that left an upstream for the next target of their route.", ["upstream"]
)
BREAKER_CHANGES = Counter(
    "gateway_breaker_changes",
    "Circuit breakers opened or closed, by upstream and the state entered.",
    ["upstream", "state"],
)
PROBES = Counter(
    "gateway_upstream_probes",
    "Background probes of upstreams (proxy.probes), by upstream and outcome: ok (any status below 500), failed.",
    ["upstream", "outcome"],
)
BREAKER_SKIPS = Counter(
    "gateway_breaker_skips", "Calls that skipped an upstream because its circuit breaker was open.", ["upstream"]
)
RESCUES = Counter(
    "gateway_stream_rescues",
    "Streams broken after their start that later targets were asked to finish (proxy.rescue), by outcome.",
    ["outcome"],
)
REFUSALS = Counter(
    "gateway_refusals",
    "Requests the gateway refused itself (429 rate limit, 402 quota or budget, 401, 400, 503...), by status and code.",
    ["status", "code"],
)
TOKENS = Counter(
    "gateway_tokens",
    "Tokens as the upstream reported them; cached input tokens are part of the input tokens.",
    ["model", "kind"],
)
COST = Counter("gateway_cost_usd", "Cost of calls at the price in effect at their time, in USD.", ["model"])
COST_UNKNOWN = Counter(
    "gateway_cost_unknown",
    "Calls whose cost is unknown (usage unreported, or a model without a price): not in gateway_cost_usd_total.",
    ["model"],
)
QUEUE_DEPTH = Gauge(
    "gateway_access_log_queue_depth",
    "Access-log rows waiting to be written, sampled as each batch is taken and written.",
)
ROWS_DROPPED = Counter(
    "gateway_access_log_dropped_rows",
    "Access-log rows lost: overflow (the queue was full while the database was down), rejected (by the database).",
    ["reason"],
)
DATABASE_FAILURES = Counter(
    "gateway_database_failures",
    "Database failures: a request answered 503 (during=request), an access-log batch not written (during=access_log).",
    ["during"],
)
REDIS_FAILURES = Counter(
    "gateway_redis_failures",
    "Rate-limit checks Redis failed; those requests passed without a limit.",
)
OPEN_STREAMS = Gauge(
    "gateway_open_streams",
    "Upstream responses being relayed to clients now (event streams and plain bodies alike).",
)
# Read when scraped (proxy.breaker_states): right whichever worker answers.
REGISTRY.register(BREAKER_STATES)
ANALYTICS_DROPPED = Counter(
    "gateway_analytics_events_dropped",
    "Analytics events that could not be exported and were dropped.",
)
OWN = (
    REQUESTS, DURATION, FIRST_BYTE, UPSTREAM_FAILURES, ATTEMPTS, RETRIES, FAILOVERS, BREAKER_CHANGES, PROBES,
    BREAKER_SKIPS, RESCUES, REFUSALS, TOKENS, COST, COST_UNKNOWN, QUEUE_DEPTH, ROWS_DROPPED, DATABASE_FAILURES,
    REDIS_FAILURES, OPEN_STREAMS, ANALYTICS_DROPPED,
)  # fmt: skip

P = ParamSpec("P")
_reported: set[str] = set()
process_state.on_reset(_reported.clear)


def _never_raises(hook: Callable[P, object]) -> Callable[P, None]:
    """A metrics failure (a bug, a label value the client refuses) must not fail a request
    or stop the access-log writer: it is logged once per hook and ignored."""

    @functools.wraps(hook)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            if hook.__name__ not in _reported:
                _reported.add(hook.__name__)
                logger.exception("metrics: %s failed; counts may be missing", hook.__name__)

    return guarded


# Hooks on the request's path.


@_never_raises
def stream_opened() -> None:
    OPEN_STREAMS.inc()


@_never_raises
def stream_closed() -> None:
    OPEN_STREAMS.dec()


def first_byte(exchange: "Exchange") -> bool:
    """Observe the time to the first relayed chunk; returns True (the caller's "seen" flag)."""
    _observe_first_byte(exchange.endpoint, time.monotonic() - exchange.started)
    return True


@_never_raises
def _observe_first_byte(endpoint: str, seconds: float) -> None:
    _first_byte_by_endpoint[endpoint_family(endpoint)].observe(seconds)


@_never_raises
def refused(refusal: GatewayError) -> None:
    """A refusal the relay answered. Upstream failures are counted by `upstream_failed`."""
    from proxy.upstream import UpstreamFailure  # here: proxy.upstream imports this module

    if isinstance(refusal, UpstreamFailure):
        return
    REFUSALS.labels(str(refusal.status), refusal.code).inc()
    if refusal.code == "service_unavailable":  # gateway_project.lib.errors.service_unavailable: the database
        DATABASE_FAILURES.labels("request").inc()


@_never_raises
def upstream_failed(kind: str) -> None:
    UPSTREAM_FAILURES.labels(kind).inc()


@_never_raises
def attempted(upstream: str, outcome: str) -> None:
    """One attempt's outcome. Label values are bounded: upstream names come from the
    configuration, outcomes from a fixed list."""
    child = _attempts.get((upstream, outcome))
    if child is None:
        child = _attempts[upstream, outcome] = ATTEMPTS.labels(upstream, outcome)
    child.inc()


@_never_raises
def retried(upstream: str) -> None:
    RETRIES.labels(upstream).inc()


@_never_raises
def failed_over(upstream: str) -> None:
    FAILOVERS.labels(upstream).inc()


@_never_raises
def breaker_changed(upstream: str, state: str) -> None:
    BREAKER_CHANGES.labels(upstream, state).inc()


@_never_raises
def probed(upstream: str, ok: bool) -> None:
    PROBES.labels(upstream, "ok" if ok else "failed").inc()


@_never_raises
def breaker_skipped(upstream: str) -> None:
    BREAKER_SKIPS.labels(upstream).inc()


@_never_raises
def rescued(outcome: str) -> None:
    """A rescue's outcome: rescued, or failed (the stream ended with its error event)."""
    RESCUES.labels(outcome).inc()


# Looked up once per label set: an attempt is counted on the request's path.
_attempts: dict[tuple[str, str], Counter] = {}


@_never_raises
def redis_failed() -> None:
    REDIS_FAILURES.inc()


@_never_raises
def analytics_dropped(count: int = 1) -> None:
    """For the analytics export: `count` events it gave up on."""
    if count > 0:
        ANALYTICS_DROPPED.inc(count)


# Hooks in the access-log writer (off the request's path).


@_never_raises
def count_rows(rows: "Iterable[LogRow]") -> None:
    """Rows just written, with their cost: requests, durations, tokens and cost."""
    requests: Tally[tuple[str, str, str]] = Tally()
    tokens: Tally[tuple[str, str]] = Tally()
    cost: Tally[str] = Tally()
    unknown_cost: Tally[str] = Tally()
    for row in rows:
        endpoint = endpoint_family(row.endpoint)
        model = _model_label(row.model, row.status)
        status_class = _status_class(row.status)
        requests[status_class, endpoint, model] += 1
        DURATION.labels(endpoint, status_class).observe(row.latency_ms / 1000)
        if row.input_tokens is not None:
            tokens[model, "input"] += row.input_tokens
            tokens[model, "cached_input"] += row.cached_input_tokens or 0
            tokens[model, "output"] += row.output_tokens or 0
        if row.cost_pico_usd is None:
            unknown_cost[model] += 1
        elif row.cost_pico_usd:
            cost[model] += row.cost_pico_usd
    # One write per label set rather than per row.
    for labels, count in requests.items():
        REQUESTS.labels(*labels).inc(count)
    for labels, count in tokens.items():
        if count:
            TOKENS.labels(*labels).inc(count)
    for model, pico in cost.items():
        COST.labels(model).inc(pico / PICO)
    for model, count in unknown_cost.items():
        COST_UNKNOWN.labels(model).inc(count)


@_never_raises
def access_log_queued(depth: int) -> None:
    QUEUE_DEPTH.set(depth)


@_never_raises
def access_log_dropped(count: int, reason: str = "overflow") -> None:
    if count > 0:
        ROWS_DROPPED.labels(reason).inc(count)


@_never_raises
def access_log_failed(dropped: int) -> None:
    """A batch write failed (it is retried); `dropped` rows no longer fitted the queue."""
    DATABASE_FAILURES.labels("access_log").inc()
    if dropped > 0:
        ROWS_DROPPED.labels("overflow").inc(dropped)


@_never_raises
def access_log_written(depth: int, rejected: int) -> None:
    QUEUE_DEPTH.set(depth)
    if rejected:
        ROWS_DROPPED.labels("rejected").inc(rejected)


# Labels.


@functools.lru_cache(maxsize=1024)
def endpoint_family(path: str) -> str:
    """/v1/chat/completions for that path and the paths under it; "other" for the rest."""
    for family in ENDPOINT_FAMILIES:
        if path == family or path.startswith(family + "/"):
            return family
    return OTHER


_served_models: set[str] = set()
process_state.on_reset(_served_models.clear)


def _model_label(model: str, status: int) -> str:
    if not model:
        return NO_MODEL
    name = model[:MODEL_LABEL_LENGTH]
    if name in _served_models:
        return name
    if 200 <= status < 300 and len(_served_models) < MODEL_LABELS_MAX:
        _served_models.add(name)
        return name
    return OTHER


def _status_class(status: int) -> str:
    return f"{min(max(status // 100, 1), 5)}xx"


# Looked up once: `labels()` costs as much as the observation itself, on the request's path.
_first_byte_by_endpoint = {family: FIRST_BYTE.labels(family) for family in (*ENDPOINT_FAMILIES, OTHER)}


# The scrape.


# Exempt: it changes nothing and answers GET only; without this a POST would meet the CSRF
# check before the token's, and get a 403 page instead of 401 or 405.
@csrf_exempt
def scrape(request: HttpRequest) -> HttpResponse:
    """GET /metrics with `Authorization: Bearer <METRICS_TOKEN>`; 404 while METRICS_TOKEN is unset."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("metrics are off: METRICS_TOKEN is unset")
    presented = bearer_token(request)
    if not presented or not hmac.compare_digest(presented.encode(), token.encode()):
        response = HttpResponse("Send the metrics token as Authorization: Bearer.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(_registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def _registry() -> CollectorRegistry:
    directory = metric_snapshots.worker_directory()
    if not directory:
        return REGISTRY
    # Every worker's counts, merged now: a fresh registry per scrape, as prometheus_client asks.
    registry = CollectorRegistry()
    registry.register(metric_snapshots.MergedCollector(directory, families))
    registry.register(BREAKER_STATES)
    return registry


def families() -> list[Metric]:
    """The gateway's own metrics, as a worker publishes them for the others' scrapes (not
    prometheus_client's process and GC collectors, which mean nothing summed)."""
    return [family for metric in OWN for family in metric.collect()]
