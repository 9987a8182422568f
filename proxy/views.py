"""The /v1 relay and the health probes. Each pipeline step is one call into its module."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as django_server_error

from accounts.identity import identify
from billing import plans
from billing.call_usage import NO_USAGE
from gateway_project.lib.errors import GatewayError, error_body
from proxy import admission, concurrency_gate, metrics, models_list, paths, ratelimit, routing, upstream
from proxy.accesslog import Exchange
from proxy.legs import legs_for, priced_only
from proxy.relay import CLIENT_CLOSED_REQUEST, quiet_django_request_log, relay_response, unreported
from proxy.request_body import model_named, model_of, request_body, request_payload, with_stream_usage

logger = logging.getLogger(__name__)

READINESS_TIMEOUT = 3.0


async def relay(request: HttpRequest, path: str) -> HttpResponseBase:
    exchange = Exchange.begin(request)
    limits = None
    forwarded = False
    try:
        async with concurrency_gate.slot():
            upstream_path = paths.upstream_path(request)
            caller = await identify(request)
            exchange.user_id = caller.user_id
            body = request_body(request)
            payload = request_payload(request)
            exchange.model = model_of(payload)
            plan = await plans.limits_for(caller.tier)
            legs = await legs_for(request, caller, exchange.model, exchange.created_at, pin=caller.pin or plan.pin)
            if plan.budgeted:
                legs = await priced_only(legs, exchange.created_at)
            headers = upstream.request_headers(request, caller.user_id, exchange.request_id)
            # A budget must see every stream's usage, whatever STREAM_USAGE says.
            body, drop_usage_chunk = with_stream_usage(request.path_info, body, payload, always=plan.budgeted)
            limits, exchange.charge = await admission.admit(
                caller.user_id, plan, now=exchange.created_at, method=request.method, model=exchange.model
            )
        forwarded = True
        answer = await models_list.models_response(request, caller)  # None: relayed
        if answer is None:
            answer = await routing.attempt(legs, request.method, upstream_path, headers, body, exchange)
        response = relay_response(answer, exchange, drop_usage_chunk=drop_usage_chunk)
    except GatewayError as refusal:
        response = _refused(request, exchange, refusal)
    except asyncio.CancelledError:
        # The client left before the response started (Django cancels the view).
        exchange.finish(CLIENT_CLOSED_REQUEST, unreported(request.method) if forwarded else NO_USAGE)
        raise
    except Exception:
        # A failure nothing above maps: Django answers 500; the log still gets its row.
        exchange.finish(500)
        raise
    if limits is not None:
        for name, value in limits.headers().items():
            response[name] = value
    return response


def _refused(request: HttpRequest, exchange: Exchange, refusal: GatewayError) -> HttpResponseBase:
    """The answer to a request the gateway refused, or that the upstream failed before the
    response started, with its row."""
    # Refused before its body was read (a bad user id, an unknown key): the row
    # still names the model the caller asked for.
    exchange.model = exchange.model or model_named(request)
    reached = False
    if isinstance(refusal, upstream.UpstreamFailure):
        # An upstream that got the request may have served it: its usage is unknown.
        reached = refusal.reached
        # The operator's side of a trainee's 502/504 (the line carries the request id).
        logger.warning(
            "upstream failed %s %s before the response started: %s (%s) at upstream %s",
            exchange.method,
            exchange.endpoint,
            refusal.code,
            # Timeouts the attempts detect themselves have no exception behind them: their kind.
            type(refusal.__context__).__name__ if refusal.__context__ else refusal.kind,
            refusal.upstream,
        )
    exchange.finish(refusal.status, unreported(request.method) if reached else NO_USAGE)
    metrics.refused(refusal)
    response = refusal.response()
    if isinstance(refusal, upstream.UpstreamFailure):
        quiet_django_request_log(response)  # logged above, at WARNING: not the gateway's crash
    return response


async def health(request: HttpRequest) -> JsonResponse:
    """Liveness: answers from the process alone, touching no database, cache or upstream."""
    return JsonResponse({"status": "ok", "gateway": "organized-gateway"})


async def ready(request: HttpRequest) -> JsonResponse:
    """Readiness: can this process reach the services it needs?"""
    checks = {"database": sync_to_async(_check_database, thread_sensitive=False), "cache": ratelimit.backend().ping}
    results = await asyncio.gather(*(_probe(name, check) for name, check in checks.items()))
    state = dict(zip(checks, results, strict=True))
    down = [name for name, ok in state.items() if not ok]
    body = {
        "status": "ok" if not down else "unavailable",
        **{name: "ok" if ok else "down" for name, ok in state.items()},
    }
    if down:
        body["down"] = down
    return JsonResponse(body, status=503 if down else 200)


async def _probe(name: str, check: Callable[[], Awaitable[None]]) -> bool:
    try:
        await asyncio.wait_for(check(), READINESS_TIMEOUT)
    except Exception as error:
        logger.warning("readiness: %s is down (%s: %s)", name, type(error).__name__, error)
        return False
    return True


def _check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


def not_found(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    """404 in OpenAI's shape for API clients; admin keeps Django's page."""
    if request.path.startswith("/admin/"):
        return page_not_found(request, exception)
    message = (
        f"Unknown path {request.path}. The gateway serves the OpenAI API under /v1/: "
        "set your SDK's base_url to this gateway's address followed by /v1."
    )
    return JsonResponse(error_body("unknown_path", message), status=404)


def server_error(request: HttpRequest) -> HttpResponseBase:
    """500 in OpenAI's shape for API clients; admin keeps Django's page."""
    if request.path.startswith("/admin/"):
        return django_server_error(request)
    message = "The gateway failed to handle this request. Try again; if it keeps happening, tell the operator."
    return JsonResponse(error_body("internal_error", message, type="server_error"), status=500)
