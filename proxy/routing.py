"""Attempts: a call goes to its route's targets in order, retried or failed over until an
answer is in hand, before the caller has a byte.

The caller's status line goes out only once the answer has started: the first event of a
stream, or the whole body of a JSON answer (up to UPSTREAM_HOLD_BYTES). Until then a failed
attempt costs the caller only time. Each attempt is one call of proxy.upstream.send.

What a failed attempt leads to (issue 21):
- connect failure, reset before the status line, 500/502/503/504: the same target again
  after an exponential, jittered back-off, up to its retry count; then the next target. A
  reset is first retried at once: a pooled connection the upstream had just closed.
- 429: after its Retry-After when within UPSTREAM_RETRY_AFTER_MAX, else after a back-off.
- silence (no headers in time), no first event in time, a body broken before the commit,
  400 context_length_exceeded (never sent to that model again): the next target at once.
- any other answer (401, 403, 404, 422, content filters...): the caller's, as it came.
Never more than two attempts on one target within WINDOW seconds; nothing starts past
UPSTREAM_DEADLINE. When every target failed: the last upstream answer, else 502/504.

After the commit, a chat stream that breaks may be finished by a later target that allows
continuation (proxy.rescue): the answer carries what that needs, its attempts made here.
"""

import asyncio
import logging
import re
from dataclasses import dataclass, field

import httpx
from django.conf import settings

from gateway_project.lib import from_settings
from gateway_project.lib.errors import GatewayError
from proxy import breakers, health, leg_breakers, metrics, rescue, timing, upstream
from proxy.accesslog import Exchange
from proxy.legs import Leg, no_upstream
from proxy.relay import Answer
from proxy.request_body import with_model
from proxy.routes import Upstream
from proxy.upstream import UpstreamFailure, retry_after

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset((500, 502, 503, 504))
# Back-off before retry n: BACKOFF_FIRST * 2**(n-1), at most BACKOFF_MAX, jittered to 50-100 %.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 8.0
# Never more than two attempts on one target within this many seconds.
WINDOW = 1.5
CONTEXT_LENGTH = b"context_length_exceeded"
# A response's own model is looked for this far into its first bytes.
_MODEL_MEMBER = re.compile(rb'"model"\s*:\s*"([^"\\]{1,128})"')
_MODEL_SEARCH_BYTES = 64 * 1024
# Outcomes of an attempt, as metrics label them. Final: the attempt's answer goes to the caller.
FINAL = frozenset(("ok", "error"))
RETRIED = frozenset(("connect", "reset", "server_error", "rate_limited"))
OUTCOMES = (*FINAL, *RETRIED, "timeout", "no_first_event", "broken", "context_length", "no_credential")
# Outcomes of an upstream that is up, whatever it answered (a 5xx excepted): they close its breaker.
ALIVE = frozenset(("ok", "error", "rate_limited", "context_length"))


@dataclass(slots=True)
class _Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    model: str
    deadline: float
    attempts: int = 0
    # The route's last target: its last attempt is the call's last chance (see _once).
    last_leg: Leg | None = None
    # The last upstream answer that failed, held whole: the caller's if nothing better comes.
    held: tuple[Leg, Answer] | None = None
    # The last failure no upstream answered for (connect, silence...).
    failure: GatewayError | None = None
    spent_models: set[str] = field(default_factory=set)

    def left(self) -> float:
        return self.deadline - timing.clock.now()


async def attempt(
    legs: list[Leg], method: str, path: str, headers: dict[str, str], body: bytes, exchange: Exchange
) -> Answer:
    """The answer the caller gets (exchange: upstream, model, attempts set), or the failure
    raised when no upstream answered."""
    if not legs:
        raise no_upstream(exchange.model)
    usable = await leg_breakers.usable(legs, exchange.model)
    deadline = timing.clock.now() + from_settings.get("UPSTREAM_DEADLINE")
    call = _Call(method, path, headers, body, exchange.model, deadline)
    call.last_leg = usable[-1]
    entered, usable_ids = False, {id(leg) for leg in usable}
    try:
        for number, leg in enumerate(legs):
            if id(leg) not in usable_ids:
                metrics.breaker_skipped(leg.target.upstream.name)
                continue
            if leg.refusal is not None:
                call.failure = leg.refusal
                metrics.attempted(leg.target.upstream.name, "no_credential")
                continue
            if _sent_model(call, leg) in call.spent_models:
                continue
            entry = await leg_breakers.enter(leg)
            if entry is None:
                continue  # open, or another call or the background probe is trying it
            entered = True
            answer = await _on_target(call, leg, trial=entry == breakers.PROBING)
            if answer is not None:
                answer.rescue = _rescue(call, legs[number + 1 :], exchange, answer)
                return _answered(exchange, leg, answer, renamed=leg is not legs[0] or leg.target.model is not None)
            if call.left() <= 0:
                break
            if leg is not usable[-1]:
                # The operator's view of a fail-over; the final outcome is logged where it is relayed.
                logger.warning(
                    "upstream %s failed %s %s (attempt %d); trying the next target",
                    leg.target.upstream.name,
                    exchange.method,
                    exchange.endpoint,
                    call.attempts,
                )
                metrics.failed_over(leg.target.upstream.name)
    finally:
        exchange.attempts = call.attempts
    if not entered:  # every usable target was skipped at the last moment
        raise await leg_breakers.no_healthy_upstream(legs, exchange.model)
    if call.held is not None:
        leg, answer = call.held
        return _answered(exchange, leg, answer, renamed=leg is not legs[0] or leg.target.model is not None)
    raise call.failure or upstream.failure(TimeoutError(), settings.UPSTREAM_DEADLINE)


async def _on_target(call: _Call, leg: Leg, *, trial: bool = False) -> Answer | None:
    """Attempts on one target: its answer, or None to go on to the next target. A call that
    is the trial of the target's open breaker makes one attempt only."""
    target = leg.target.upstream
    retries, reset_retried, times, failed, outcome = 0, trial, [], False, ""
    while True:
        times.append(timing.clock.now())
        call.attempts += 1
        last_chance = leg is call.last_leg and (trial or retries >= target.retries)
        # After a reset, the other idle connections in the pool may be as dead as that one.
        outcome, answer = await _once(call, leg, last_chance=last_chance, fresh=outcome == "reset")
        metrics.attempted(target.name, outcome)
        error = _error_of(outcome, answer, call.failure)
        health.attempted(target.name, error, timing.clock.now() - times[-1])
        await leg_breakers.tell(target.name, error, answer, trial=trial, failed_before=failed)
        failed = failed or error is not None
        if outcome in FINAL:
            return answer
        if answer is not None:
            call.held = (leg, answer)
        if outcome == "context_length":
            call.spent_models.add(_sent_model(call, leg))
        if outcome not in RETRIED:
            return None
        if outcome == "reset" and not reset_retried:
            reset_retried, pause = True, 0.0
        elif retries < target.retries and not trial:
            retries += 1
            pause = _pause(outcome, answer, retries)
        else:
            return None
        if len(times) >= 2:
            pause = max(pause, times[-2] + WINDOW - timing.clock.now())
        if pause >= call.left():
            return None
        logger.info("upstream %s: %s on attempt %d; again in %.2f s", target.name, outcome, call.attempts, pause)
        metrics.retried(target.name)
        if pause > 0:
            await timing.clock.sleep(pause)


def _error_of(outcome: str, answer: Answer | None, failure: GatewayError | None) -> str | None:
    """Why an attempt counts against its upstream (its breaker, its error rate); None for an
    answer that is not a 5xx."""
    status = answer.response.status_code if answer is not None else 0
    if outcome in ALIVE and status < 500:
        return None
    return f"answered {status}" if answer is not None else _failure_text(outcome, failure)


def _failure_text(outcome: str, failure: GatewayError | None) -> str:
    cause = failure.__context__ if failure is not None else None
    detail = f": {type(cause).__name__}" if cause is not None else ""
    return f"{outcome.replace('_', ' ')}{detail}"


def _pause(outcome: str, answer: Answer | None, retry: int) -> float:
    if outcome == "rate_limited" and answer is not None:
        after = retry_after(answer.response.headers, timing.clock.wall())
        if after is not None and after <= settings.UPSTREAM_RETRY_AFTER_MAX:
            return after
    return backoff(retry)


def backoff(retry: int) -> float:
    """Seconds before retry `retry` (1, 2...): 0.5-1 s, then 1-2 s, 2-4 s... up to BACKOFF_MAX."""
    ceiling = min(BACKOFF_FIRST * 2 ** (retry - 1), BACKOFF_MAX)
    return ceiling * (0.5 + timing.clock.jitter() / 2)


def _sent_model(call: _Call, leg: Leg) -> str:
    return leg.target.model or call.model


async def _once(call: _Call, leg: Leg, *, last_chance: bool = False, fresh: bool = False) -> tuple[str, Answer | None]:
    """One attempt: its outcome, and the upstream's answer when one came. On the last chance
    a success goes to the caller as soon as its headers are in: nothing is left to fail over
    to, so the answer is relayed as it comes (keep-alive comments included), as a single
    upstream's always was."""
    target = leg.target.upstream
    headers = {**call.headers, **leg.headers} if target.auth == "caller" else _for_operator(call.headers, leg.headers)
    body = call.body if leg.target.model is None else with_model(call.body, call.model, leg.target.model)
    send = upstream.send(target, call.method, call.path, headers, body, fresh=fresh)
    try:
        first_byte = target.connect_timeout + target.first_byte_timeout
        timer = _timer(call, first_byte, target.connect_timeout + upstream.read_timeout(target))
        response = await (send if timer is None else _within(send, timer))
    except UpstreamFailure as failure:
        return _failed(call, target, failure, failure.kind)
    except TimeoutError as error:
        return _failed(call, target, upstream.failure(error, target.first_byte_timeout), "timeout")
    if 200 <= response.status_code < 300:
        content_type = response.headers.get("content-type", "")
        if last_chance:
            started = False if content_type.startswith("text/event-stream") else None
            # A body that came whole with its headers goes out whole: nothing was waited for.
            if started is None and (body := upstream.arrived_whole(response)) is not None:
                return "ok", Answer(response, body, None, target.idle_timeout)
            rest = upstream.rest_of(response.aiter_raw(), target, started=started)
            return "ok", Answer(response, b"", rest, target.idle_timeout if started is None else target.stream_idle)
        if content_type.startswith("text/event-stream"):
            return await _first_event(call, target, response)
        if "json" not in content_type:
            return "ok", Answer(response, b"", upstream.rest_of(response.aiter_raw(), target), target.idle_timeout)
    return await _whole(call, target, response)


# The caller's own account at OpenAI, and who they are: for an upstream that knows them by
# their own credential only.
_CALLERS_OWN = frozenset(("openai-organization", "openai-project", "x-forwarded-user"))


def _for_operator(headers: dict[str, str], leg_headers: dict[str, str]) -> dict[str, str]:
    """Headers for an upstream called with the operator's key (or none)."""
    return {**{name: value for name, value in headers.items() if name.lower() not in _CALLERS_OWN}, **leg_headers}


def _failed(call: _Call, target: Upstream, failure: UpstreamFailure, outcome: str) -> tuple[str, None]:
    failure.upstream = target.name
    call.failure = failure
    return outcome, None


async def _first_event(call: _Call, target: Upstream, response: httpx.Response) -> tuple[str, Answer | None]:
    """A stream: its first event in hand, or the next target."""
    raw = response.aiter_raw()
    ends = timing.clock.now() + min(target.first_event_timeout, call.left())
    head, read = b"", upstream.read_timeout(target)
    try:
        while b"data:" not in head:
            timer = _timer(call, ends - timing.clock.now(), read)
            head += await (raw.__anext__() if timer is None else _within(raw.__anext__(), timer))
    except StopAsyncIteration:
        # Ended before any event: an empty answer, worth the next target.
        await _discard(raw, response)
        ended = httpx.RemoteProtocolError("the stream ended before its first event")
        return _failed(call, target, upstream.failure(ended, target.first_event_timeout), "broken")
    except (httpx.HTTPError, TimeoutError) as error:
        await _discard(raw, response)
        kind = "no_first_event" if upstream.failure_kind(error) == "timeout" else "broken"
        return _failed(call, target, upstream.failure(error, target.first_event_timeout), kind)
    except BaseException:  # the caller left: this answer will never be relayed
        await _discard(raw, response)
        raise
    return "ok", Answer(response, head, upstream.rest_of(raw, target, started=True), target.stream_idle)


async def _whole(call: _Call, target: Upstream, response: httpx.Response) -> tuple[str, Answer | None]:
    """A JSON answer, or any other status: read whole (up to UPSTREAM_HOLD_BYTES), then judged."""
    body = upstream.arrived_whole(response)
    if body is not None:  # the usual small answer, in with its headers: nothing to wait for
        return _judged(response.status_code, body), Answer(response, body, None, target.idle_timeout)
    raw = response.aiter_raw()
    chunks, size, cap, read = [], 0, from_settings.get("UPSTREAM_HOLD_BYTES"), upstream.read_timeout(target)
    try:
        while size <= cap:
            timer = _timer(call, call.left(), read)
            chunk = await (raw.__anext__() if timer is None else _within(raw.__anext__(), timer))
            chunks.append(chunk)
            size += len(chunk)
    except StopAsyncIteration:
        await response.aclose()  # all read: nothing left to relay from the upstream
    except (httpx.HTTPError, TimeoutError) as error:
        await _discard(raw, response)
        return _failed(call, target, upstream.failure(error, target.idle_timeout), "broken")
    except BaseException:
        await _discard(raw, response)
        raise
    else:  # too large to hold: relayed as it comes, whatever it is
        outcome = "ok" if 200 <= response.status_code < 300 else "error"
        return outcome, Answer(response, b"".join(chunks), upstream.rest_of(raw, target), target.idle_timeout)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return _judged(response.status_code, body), Answer(response, body, None, target.idle_timeout)


def _judged(status: int, body: bytes) -> str:
    if 200 <= status < 300:
        return "ok"
    if status in RETRYABLE_STATUSES:
        return "server_error"
    if status == 429:
        return "rate_limited"
    if status == 400 and CONTEXT_LENGTH in body:
        return "context_length"
    return "error"


def _timer(call: _Call, seconds: float, covered: float) -> float | None:
    """Seconds to time a read by (at most the deadline), or None when the transport's own
    timeouts end it within `covered` seconds, soon enough: no timer on the usual path."""
    limit = min(seconds, call.left())
    return limit if limit < covered else None


async def _within(awaitable, seconds: float):
    # Only where the transport's own timeouts would end the wait too late: off the usual path.
    async with asyncio.timeout(max(seconds, 0.0)):
        return await awaitable


async def _discard(raw, response: httpx.Response) -> None:
    await raw.aclose()
    await response.aclose()


def _rescue(call: _Call, later: list[Leg], exchange: Exchange, answer: Answer) -> rescue.Rescue | None:
    """What a chat stream that breaks after its start needs to be finished by a later target
    that allows it (proxy.rescue); None when no later target does, or the call is no such stream."""
    legs = tuple(leg for leg in later if leg.target.continuation and leg.refusal is None)
    if not legs or not rescue.may_continue(exchange.endpoint, answer.response, call.body):
        return None

    async def attempt(leg: Leg, body: bytes) -> Answer | None:
        name = leg.target.upstream.name
        if not await breakers.closed(name):
            metrics.breaker_skipped(name)
            return None  # a continuation is no trial: only upstreams known well
        # Its own deadline, counted from the break: the stream may have run for minutes.
        deadline = timing.clock.now() + settings.UPSTREAM_DEADLINE
        again = _Call(call.method, call.path, call.headers, body, call.model, deadline)
        started = timing.clock.now()
        outcome, answer = await _once(again, leg)
        exchange.attempts += 1
        metrics.attempted(name, outcome)
        error = _error_of(outcome, answer, again.failure)
        health.attempted(name, error, timing.clock.now() - started)
        await leg_breakers.tell(name, error, answer, trial=False, failed_before=False)
        return answer

    return rescue.Rescue(legs, call.body, attempt)


def _answered(exchange: Exchange, leg: Leg, answer: Answer, *, renamed: bool) -> Answer:
    """Names the answer's upstream and model on the log row. A fallback or a renamed target
    answered: the response's own model (the one to price), else the name sent to it."""
    exchange.upstream = leg.target.upstream.name
    if renamed:
        found = _MODEL_MEMBER.search(answer.head, 0, _MODEL_SEARCH_BYTES)
        exchange.model = found[1].decode("utf-8", "replace") if found else (leg.target.model or exchange.model)
    return answer
