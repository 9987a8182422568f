"""Relaying the upstream response to the caller, chunk by chunk, and logging it at the end."""

import json
import logging
from collections.abc import AsyncIterator

import httpx
from django.http import StreamingHttpResponse

from gateway_project.errors import GatewayError
from proxy import upstream
from proxy.accesslog import Exchange
from proxy.payload import UsageScanner

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499


class RelayResponse(StreamingHttpResponse):
    """Hands Django the relay generator itself rather than a wrapper around it.

    Django closes only the iterator it gets from `__aiter__`. When the client goes
    away while Django is blocked sending, closing a wrapper would leave our generator
    (and its upstream connection) open until garbage collection.
    """

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterator


def relay_response(response: httpx.Response, exchange: Exchange) -> RelayResponse:
    relayed = RelayResponse(_relay_body(response, exchange), status=response.status_code)
    del relayed["Content-Type"]  # Django's default; only the upstream's own may pass.
    for name, value in upstream.response_headers(response).items():
        relayed[name] = value
    if _is_event_stream(response):
        relayed.setdefault("Cache-Control", "no-cache")
        # Tell a buffering reverse proxy (nginx) in front to pass events at once.
        relayed["X-Accel-Buffering"] = "no"
    return relayed


async def _relay_body(response: httpx.Response, exchange: Exchange) -> AsyncIterator[bytes]:
    usage = UsageScanner(response.headers.get("content-type", ""))
    status = CLIENT_CLOSED_REQUEST  # unless the loop below completes or the upstream fails
    try:
        try:
            async for chunk in response.aiter_raw():
                usage.feed(chunk)
                yield chunk
            status = response.status_code
        except httpx.HTTPError as error:
            failure = upstream.failure(error)
            status = failure.status
            logger.warning("upstream broke off %s after the response started: %s", exchange.endpoint, failure.code)
            if _is_event_stream(response):
                # An error event makes OpenAI SDKs raise instead of taking a cut-off
                # stream for a complete one.
                yield _error_event(failure)
    finally:
        # Log first: closing the upstream may itself be interrupted.
        exchange.finish(status, usage.finish())
        await response.aclose()


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _error_event(failure: GatewayError) -> bytes:
    return b"data: " + json.dumps(failure.body()).encode() + b"\n\n"
