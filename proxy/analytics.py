"""The analytics export: one PostHog LLM-analytics event per model call, built from its
access-log row once the row is written, and sent by PostHog's SDK in batches.

Opt-in: without POSTHOG_API_KEY nothing here runs and the SDK is never imported (it takes
about a second to import). The relay never waits on it. The access-log writer hands over the
rows it has just written (`export`, on the event loop: a filter and a hand-off, nothing else);
a thread of its own turns them into events and gives them to the SDK, whose capture costs
~0.2 ms of CPU per event (it reads the OS release on each call) and must stay off the loop;
the SDK's consumer thread posts them. Events are dropped, and counted in the metrics
(gateway_analytics_events_dropped), rather than kept or retried for long: when the hand-off
or the SDK's queue is full, when PostHog refused a batch or could not be reached after
MAX_RETRIES retries, and when still queued at the end of the shutdown's bound.

Exported rows: POST /v1/chat/completions, /v1/completions and /v1/responses (`$ai_generation`)
and /v1/embeddings (`$ai_embedding`, as PostHog's own wrappers name them) that an upstream
answered (the row names it), whatever the status. The gateway's own refusals (401, 402, 429,
400 before forwarding) and calls no upstream answered (unreachable, silent) are not exported.

An event carries the model, tokens, latency, status, request id and cost; never a prompt, a
completion, a key or anything about the caller's address.
"""

import asyncio
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from django.conf import settings

from billing import money, prices
from proxy import metrics

if TYPE_CHECKING:
    from proxy.accesslog import LogRow

logger = logging.getLogger(__name__)

EVENTS = {
    "/v1/chat/completions": "$ai_generation",
    "/v1/completions": "$ai_generation",
    "/v1/responses": "$ai_generation",
    "/v1/embeddings": "$ai_embedding",
}
# The API every upstream speaks; PostHog matches models within a provider.
PROVIDER = "openai"

# Rows handed over and not yet given to the SDK (a thread stalled, not PostHog down).
MAX_PENDING = 10_000
# The SDK's own queue: events waiting for its consumer thread, as while PostHog is down.
MAX_QUEUE = 10_000
# A batch is posted when this many events are queued, or FLUSH_INTERVAL seconds after its first.
FLUSH_AT = 100
FLUSH_INTERVAL = 5.0
# Per batch: at most 1 + MAX_RETRIES posts of at most TIMEOUT seconds each, 1 s then 2 s apart
# (a Retry-After from PostHog can stretch one pause to 30 s, the SDK's ceiling): a PostHog
# that is down costs a batch ~18 s at most, then its events are dropped and counted.
MAX_RETRIES = 2
TIMEOUT = 5.0
# At shutdown, after the access log's last rows: how long PostHog gets to take what is left.
SHUTDOWN_TIMEOUT = 2.0


def export(rows: "list[LogRow]") -> None:
    """Hand the model calls among `rows` (just written to the access log) to the export
    thread. Called on the event loop by the access-log writer: never blocks, never raises."""
    try:
        if not settings.POSTHOG_API_KEY:
            return
        calls = [row for row in rows if event_name(row)]
        if calls:
            _exporter_for(settings.POSTHOG_API_KEY, settings.POSTHOG_HOST).offer(calls)
    except Exception:
        logger.exception("analytics: %d rows could not be handed to the export", len(rows))


def start() -> None:
    """At start-up, when configured: start the export thread, which imports the SDK, before
    the first call needs it."""
    if settings.POSTHOG_API_KEY:
        _exporter_for(settings.POSTHOG_API_KEY, settings.POSTHOG_HOST)


async def close(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """At shutdown, after the access log's last rows: give PostHog up to `timeout` seconds to
    take the events still queued, then stop the export."""
    global _exporter
    exporter, _exporter = _exporter, None
    if exporter is None:
        return
    exporter.stop(timeout)
    # A little beyond the deadline: the thread notices it between two waits.
    if not await asyncio.to_thread(exporter.finished.wait, timeout + 1.0):
        logger.error("analytics: the export did not finish within %.1f s of shutdown; its events are lost", timeout)


def settle(timeout: float = 10.0) -> bool:
    """Block until every row handed over so far is an event in the SDK's queue or counted as
    dropped (for tests; on a thread other than the event loop). False when `timeout` ran out."""
    exporter = _exporter
    return True if exporter is None else exporter.settle(time.monotonic() + timeout)


def flush(timeout: float = 10.0) -> bool:
    """Block until every event handed over so far was sent or given up on (for tests; on a
    thread other than the event loop). False when `timeout` ran out first."""
    exporter = _exporter
    return True if exporter is None else exporter.flush(timeout)


def event_name(row: "LogRow") -> str | None:
    """The event a row is exported as, or None when it is not a model call an upstream
    answered (see the module's docstring)."""
    if row.method != "POST" or not row.user_id or not row.upstream:
        return None
    return EVENTS.get(row.endpoint)


def properties(row: "LogRow") -> dict[str, Any]:
    """PostHog's `$ai_*` properties of a model call. Unknown tokens or cost are left out,
    never sent as 0."""
    found = {
        "$ai_provider": PROVIDER,
        "$ai_model": row.model,
        "$ai_http_status": row.status,
        "$ai_latency": row.latency_ms / 1000,
        "$ai_input_tokens": row.input_tokens,
        "$ai_cache_read_input_tokens": row.cached_input_tokens,
        "$ai_output_tokens": row.output_tokens,
        "$ai_total_tokens": row.total_tokens,
        # One call, one trace: PostHog groups a trace's events by it.
        "$ai_trace_id": row.request_id or None,
        "request_id": row.request_id or None,
        "endpoint": row.endpoint,
        # Callers are not PostHog persons of a product: no profile is created or updated.
        "$process_person_profile": False,
    }
    if row.status >= 400:
        found["$ai_is_error"] = True
    if row.cost_pico_usd is not None:
        found["$ai_total_cost_usd"] = _usd(row.cost_pico_usd)
        # With both parts PostHog keeps the gateway's cost instead of pricing the call again.
        parts = _cost_parts(row)
        if parts is not None:
            found["$ai_input_cost_usd"], found["$ai_output_cost_usd"] = map(_usd, parts)
    return {name: value for name, value in found.items() if value is not None}


def _usd(pico: int) -> float:
    # PostHog wants a number: the float nearest the exact amount.
    return float(money.to_usd(pico))


def _cost_parts(row: "LogRow") -> tuple[int, int] | None:
    """The row's cost split into input (cached input included) and output, in pico-dollars:
    only when the price that made it is at hand and the parts add up to it exactly."""
    book = prices.loaded_book()
    if book is None or row.input_tokens is None or row.output_tokens is None:
        return None
    price = book.price_for(row.model, row.created_at)
    if price is None:
        return None
    cached = row.cached_input_tokens or 0
    input_part = (row.input_tokens - cached) * price.input + cached * price.cached_input
    output_part = row.output_tokens * price.output
    return (input_part, output_part) if input_part + output_part == row.cost_pico_usd else None


class _Exporter:
    """The export thread and the SDK client it owns, for one API key and host."""

    def __init__(self, api_key: str, host: str) -> None:
        self.config = (api_key, host)
        self.finished = threading.Event()
        self._rows: deque[LogRow] = deque()
        self._changed = threading.Condition()
        self._busy = False
        self._closing = False
        self._deadline = 0.0
        self._client = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="analytics-export", daemon=True)
        self._thread.start()

    def offer(self, rows: "list[LogRow]") -> None:
        with self._changed:
            room = 0 if self._closing else max(0, MAX_PENDING - len(self._rows))
            kept = rows[:room]
            self._rows.extend(kept)
            self._changed.notify_all()
        if len(kept) < len(rows):
            metrics.analytics_dropped(len(rows) - len(kept))

    def stop(self, timeout: float) -> None:
        with self._changed:
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._changed.notify_all()

    def settle(self, deadline: float) -> bool:
        with self._changed:
            while self._rows or self._busy:
                if not self._changed.wait(deadline - time.monotonic()):
                    return False
        return True

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self.settle(deadline):
            return False
        if self._client is not None:
            self._client.flush(timeout_seconds=max(0.0, deadline - time.monotonic()))
        return time.monotonic() < deadline

    def _run(self) -> None:
        try:
            self._client = self._connect()
        except Exception:
            logger.exception("analytics: the PostHog client could not be started; events are dropped")
        while True:
            with self._changed:
                while not self._rows and not self._closing:
                    self._changed.wait()
                if not self._rows:
                    break
                batch = list(self._rows)
                self._rows.clear()
                self._busy = True
            try:
                self._capture(batch)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
        self._shut_down()

    def _connect(self):
        from posthog import Posthog  # ~1 s: only where the export is configured, off the loop

        api_key, host = self.config
        return Posthog(
            api_key,
            host=host,
            max_queue_size=MAX_QUEUE,
            flush_at=FLUSH_AT,
            flush_interval=FLUSH_INTERVAL,
            gzip=True,
            max_retries=MAX_RETRIES,
            timeout=TIMEOUT,
            on_error=self._failed,
            # The legacy /batch/ protocol, whatever POSTHOG_CAPTURE_MODE says: the retry
            # bounds above are the ones it follows.
            capture_mode="v0",
            disable_geoip=True,
        )

    def _capture(self, rows: "list[LogRow]") -> None:
        lost = 0
        for row in rows:
            try:
                captured = self._client is not None and self._client.capture(
                    event_name(row),
                    distinct_id=row.user_id,
                    properties=properties(row),
                    timestamp=row.created_at,
                )
            except Exception:
                logger.exception("analytics: a %s row could not be exported", row.endpoint)
                captured = None
            if not captured:  # the SDK's queue is full, or there is no client
                lost += 1
            # Hands the GIL to the event loop's thread if it waits for it: a burst of events
            # holds the loop up for one capture at most, not for the 5 ms switch interval.
            time.sleep(0)
        if lost:
            metrics.analytics_dropped(lost)

    def _failed(self, error: Exception, batch: list) -> None:
        # The SDK's consumer thread, after the batch's last retry.
        if not self._abandoned:
            metrics.analytics_dropped(len(batch))

    def _shut_down(self) -> None:
        client = self._client
        try:
            if client is not None:
                client.flush(timeout_seconds=max(0.0, self._deadline - time.monotonic()))
                # Counted once, here: a post still in flight must not count them again.
                self._abandoned = True
                left = _unsent(client)
                if left:
                    metrics.analytics_dropped(left)
                    logger.error("analytics: %d events PostHog had not taken before shutdown are lost", left)
                else:
                    client.shutdown()  # nothing queued or in flight: stops its thread at once
        finally:
            self.finished.set()


def _unsent(client) -> int:
    # Events queued or in flight in the SDK (its analytics lane's queue.Queue); 0 if the
    # SDK ever arranges them otherwise.
    lane = getattr(client, "_analytics_lane", None)
    return getattr(getattr(lane, "queue", None), "unfinished_tasks", 0)


_exporter: _Exporter | None = None


def _exporter_for(api_key: str, host: str) -> _Exporter:
    global _exporter
    if _exporter is None or _exporter.config != (api_key, host):
        if _exporter is not None:  # the settings changed (tests): the old one winds down alone
            _exporter.stop(0.0)
        _exporter = _Exporter(api_key, host)
    return _exporter
