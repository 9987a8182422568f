"""Relaying the upstream response to the caller, chunk by chunk, and logging it at the end."""

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass

import httpx
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse

from billing.call_usage import NO_USAGE, Usage
from proxy import breakers, metrics, rescue, upstream
from proxy.accesslog import Exchange
from proxy.rescue import Rescue
from proxy.usage_scanner import UsageScanner

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499


@dataclass(slots=True)
class Answer:
    """An upstream's answer as the relay gets it (proxy.routing): the response, its headers
    read; `head`, the part of its body read before the commit; `rest`, the body still to
    read (None: `head` is all of it); `idle_timeout`, the upstream's allowed silence."""

    response: httpx.Response
    head: bytes
    rest: AsyncIterator[bytes] | None
    idle_timeout: float | None = None
    # How a chat stream that breaks after its start may be finished elsewhere (proxy.rescue).
    rescue: "Rescue | None" = None


class RelayResponse(StreamingHttpResponse):
    """Hands Django the relay generator itself rather than a wrapper around it.

    Django closes only the iterator it gets from `__aiter__`. When the client goes
    away while Django is blocked sending, closing a wrapper would leave our generator
    (and its upstream connection) open until garbage collection.
    """

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterator


# Answers with no body to send whole: their length is not the body's (HEAD) or not allowed.
_NO_BODY_STATUSES = frozenset((204, 304))


class WholeResponse(HttpResponse):
    """An answer whose whole body is in hand (a JSON answer, an upstream's error), sent in
    one piece with its Content-Length: no generator, no chunked encoding.

    Its row is written once it is sent, or the client left first: the relay's handler
    sends it within `relaying()` (gateway_project.asgi.RelayHandler).
    """

    def __init__(self, body: bytes, status: int, exchange: Exchange, scanner: UsageScanner) -> None:
        super().__init__(body, status=status)
        self["Content-Length"] = str(len(body))
        self._exchange = exchange
        self._scanner = scanner

    @contextmanager
    def relaying(self) -> Iterator[None]:
        exchange, delivered = self._exchange, False
        metrics.stream_opened()
        try:
            yield
            delivered = True
            if self.content:
                metrics.first_byte(exchange)
        finally:
            status = self.status_code if delivered else CLIENT_CLOSED_REQUEST
            exchange.finish(*_row(exchange.method, self.status_code, status, self._scanner, None, delivered))
            metrics.stream_closed()


def relay_response(answer: Answer, exchange: Exchange, *, drop_usage_chunk: bool = False) -> HttpResponseBase:
    """The upstream's answer for the caller. With `drop_usage_chunk` the stream's
    usage-only chunk (asked for by the gateway, not the client) is not relayed."""
    response = answer.response
    if _sent_whole(answer, exchange.method):
        scanner = _scanner(response, drop_usage_chunk)
        body = scanner.feed(answer.head) + scanner.finish()
        relayed = WholeResponse(body, response.status_code, exchange, scanner)
    else:
        relayed = RelayResponse(_relay_body(answer, exchange, drop_usage_chunk), status=response.status_code)
    del relayed["Content-Type"]  # Django's default; only the upstream's own may pass.
    for name, value in upstream.response_headers(response).items():
        relayed[name] = value
    if _is_event_stream(response):
        relayed.setdefault("Cache-Control", "no-cache")
        # Tell a buffering reverse proxy (nginx) in front to pass events at once.
        relayed["X-Accel-Buffering"] = "no"
    quiet_django_request_log(relayed)
    if response.status_code >= 500 or response.status_code == 429:
        # The provider's trouble, not the gateway's: one line for the operator, at WARNING.
        logger.warning(
            "upstream %s answered %s %s with %d",
            exchange.upstream,
            exchange.method,
            exchange.endpoint,
            response.status_code,
        )
    return relayed


def _sent_whole(answer: Answer, method: str) -> bool:
    """Whether the answer goes out in one piece: its body is all in hand and is no stream
    (a stream held whole before its commit is relayed as one, watched for its end)."""
    response = answer.response
    return (
        answer.rest is None
        and method != "HEAD"
        and response.status_code not in _NO_BODY_STATUSES
        and not (response.is_success and _is_event_stream(response))
    )


def _scanner(response: httpx.Response, drop_usage_chunk: bool) -> UsageScanner:
    headers = response.headers
    return UsageScanner(headers.get("content-type", ""), headers.get("content-length"), drop_usage_chunk)


def quiet_django_request_log(response: HttpResponseBase) -> None:
    """Keep Django's request logger from reporting this response as the gateway's own
    error ("Internal Server Error: /v1/...") at ERROR: the gateway logs it itself."""
    response._has_been_logged = True  # Django's own flag (django.utils.log.log_response)


async def _relay_body(answer: Answer, exchange: Exchange, drop_usage_chunk: bool) -> AsyncIterator[bytes]:
    response = answer.response
    scanner = _scanner(response, drop_usage_chunk)
    watch = rescue.watch(answer, exchange.endpoint, drop_usage_chunk)
    ending = None  # a stream broken after its start: how it ended (proxy.rescue)
    status = CLIENT_CLOSED_REQUEST  # unless the body is relayed to its end or the upstream fails
    # Whether everything read so far has been handed to the client.
    delivered = True
    first_byte_seen = False
    metrics.stream_opened()
    try:
        try:
            async with aclosing(_upstream_body(answer, scanner, watch)) as body:
                async for relayed in body:
                    delivered = False
                    yield relayed
                    # Measured once it is sent, so the metric never delays the first event.
                    first_byte_seen = first_byte_seen or metrics.first_byte(exchange)
                    delivered = True
            status = response.status_code
            if watch is not None and exchange.upstream:  # a whole stream: its upstream is well
                await breakers.succeeded(exchange.upstream)
        except httpx.HTTPError as error:
            if scanner.complete:  # broke off after its last event: the caller has the whole answer
                status = response.status_code
                return
            failure = upstream.failure(error, answer.idle_timeout)
            status = failure.status
            if exchange.upstream:  # a break after the start counts against the upstream's breaker
                await breakers.failed(exchange.upstream, f"stream broke off after it started: {failure.code}")
            if watch is None:
                logger.warning("upstream broke off %s after the response started: %s", exchange.endpoint, failure.code)
            else:
                ending = rescue.Ending()
                await response.aclose()  # the broken upstream's connection: not held through the rescue
                async with aclosing(rescue.finish(watch, failure, exchange, ending)) as rest:
                    async for relayed in rest:
                        delivered = False
                        yield relayed
                        delivered = True
    finally:
        # Log first: closing the upstream may itself be interrupted.
        exchange.finish(*_row(exchange.method, response.status_code, status, scanner, ending, delivered))
        metrics.stream_closed()
        await response.aclose()


async def _upstream_body(answer: Answer, scanner: UsageScanner, watch: rescue.Watch | None) -> AsyncIterator[bytes]:
    """The upstream's body as the caller gets it (`head`, read before the commit, then the
    rest). A stream cut off before its last event raises as a broken one does."""
    async for chunk in rescue.answer_body(answer):
        relayed = scanner.feed(chunk)
        if watch is not None:
            relayed = watch.feed(relayed)
        if relayed:
            yield relayed
    rest = scanner.finish()
    if watch is not None:
        if watch.cut(scanner.complete):
            raise httpx.RemoteProtocolError("the stream ended before its last event")
        rest = watch.feed(rest) + watch.release()
    if rest:
        yield rest


def _row(
    method: str, upstream_status: int, status: int, scanner: UsageScanner, ending: rescue.Ending | None, delivered: bool
) -> tuple[int, Usage | None]:
    """The status and usage of the call's row."""
    if ending is not None:
        if ending.rescued:
            return (upstream_status if delivered else CLIENT_CLOSED_REQUEST), ending.usage
        return ending.status or CLIENT_CLOSED_REQUEST, _usage(method, upstream_status, scanner.usage)
    if status == CLIENT_CLOSED_REQUEST:
        scanner.finish()
        # Clients close as soon as they hold the last event (openai-python's sync
        # stream after [DONE], Codex after response.completed), often before the
        # upstream ends its body: that call was complete, not abandoned.
        if delivered and scanner.complete:
            status = upstream_status
    return status, _usage(method, upstream_status, scanner.usage)


def _usage(method: str, upstream_status: int, reported: Usage | None) -> Usage | None:
    """The call's usage for the log and the month; None when it is unknown.

    A successful POST is a model call whatever its path, so usage its response never
    reported is unknown, not 0. The upstream's refusals and errors use no tokens.
    """
    if reported is not None:
        return reported
    return unreported(method) if 200 <= upstream_status < 300 else NO_USAGE


def unreported(method: str) -> Usage | None:
    """Usage of a call the upstream may have served without reporting it (a success
    without usage, or an answer cut off or never received): unknown for a POST, a model
    call whatever its path; reads (GET, DELETE…) use no tokens."""
    return None if method == "POST" else NO_USAGE


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")
