"""GET /v1/models once routes exist: the models callers can call, in OpenAI's list shape.

The routed names, then what the upstreams serving every other model list (the catch-all
route's upstreams, or the default upstream when there is no catch-all), merged; an upstream
that cannot be asked is left out (and logged). With no routes the call is relayed as before.
"""

import asyncio
import json
import logging

import httpx
from django.http import HttpRequest
from django.utils import timezone

from accounts.credentials import upstream_credential
from accounts.identity import Caller
from gateway_project.lib.errors import GatewayError
from proxy import routes, upstream
from proxy.relay import Answer
from proxy.routes import CATCH_ALL, RouteTable, Upstream

logger = logging.getLogger(__name__)

OWNER = "organized-gateway"


async def models_response(request: HttpRequest, caller: Caller) -> Answer | None:
    """The gateway's own answer to GET /v1/models, or None: relay the call as today."""
    if request.method != "GET" or request.path_info.rstrip("/") != "/v1/models":
        return None
    table = await routes.table()
    if not table.routes:
        return None
    models = {
        name: {"id": name, "object": "model", "created": 0, "owned_by": OWNER}
        for name in sorted(table.routes)
        if name != CATCH_ALL
    }
    lists = await asyncio.gather(*(_listed(source, request, caller) for source in _listing_upstreams(table)))
    for entries in lists:
        for entry in entries:
            models.setdefault(entry["id"], entry)
    body = json.dumps({"object": "list", "data": list(models.values())}).encode()
    # Relayed as an upstream's answer read whole before the commit.
    return Answer(httpx.Response(200, headers={"content-type": "application/json"}), head=body, rest=None)


def _listing_upstreams(table: RouteTable) -> list[Upstream]:
    """The upstreams that serve any model by the caller's name: the catch-all's targets that
    keep the caller's model, or the default upstream where no catch-all exists."""
    if CATCH_ALL in table.routes:
        found = [choice.target.upstream for choice in table.routes[CATCH_ALL] if choice.target.model is None]
    else:
        default = routes.default_upstream()
        found = [default] if default is not None else []
    return list({source.name: source for source in found}.values())


async def _listed(source: Upstream, request: HttpRequest, caller: Caller) -> list[dict]:
    try:
        headers = {**dict(source.headers), **_credential(source, request, caller)}
        headers.update({"Accept": "application/json", "Accept-Encoding": "identity"})
        answer = await upstream.transport().handle_async_request(
            httpx.Request(
                "GET",
                f"{source.base_url}/v1/models",
                headers=headers,
                extensions={"timeout": {"connect": source.connect_timeout, "read": source.first_byte_timeout}},
            )
        )
        try:
            content = await answer.aread()
        finally:
            await answer.aclose()
        if answer.status_code != 200:
            raise ValueError(f"status {answer.status_code}")
        entries = json.loads(content)["data"]
        return [entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str)]
    except (httpx.HTTPError, GatewayError, ValueError, KeyError, TypeError) as error:
        # The reason only: a credential never reaches the log.
        logger.warning("models list: upstream %s left out (%s)", source.name, type(error).__name__)
        return []


def _credential(source: Upstream, request: HttpRequest, caller: Caller) -> dict[str, str]:
    if source.auth == "api_key":
        return {"Authorization": f"Bearer {source.api_key}"}
    if source.auth == "caller":
        return upstream_credential(request, caller, now=timezone.now())
    return {}
