"""The legs of a call: the targets of its route, each with the credential it sends.

An upstream's `auth` decides: "caller", the caller's own credential as a single-upstream
gateway sends it (accounts.credentials); "api_key", the operator's key as a Bearer token;
"none", nothing. A caller without a credential of their own (no Codex session) may still
use the other upstreams of the route.
"""

from dataclasses import dataclass
from datetime import datetime

from django.http import HttpRequest

from accounts.credentials import upstream_credential
from accounts.identity import Caller
from billing import prices
from gateway_project.lib.errors import GatewayError
from proxy import routes, upstream
from proxy.routes import Target, Upstream


@dataclass(frozen=True, slots=True)
class Leg:
    """A target and the headers its attempts add (credential, the upstream's own); or why the
    caller cannot use it (no credential for a "caller" upstream)."""

    target: Target
    headers: dict[str, str]
    refusal: GatewayError | None = None


async def priced_only(legs: list[Leg], now: datetime) -> list[Leg]:
    """The legs a budget can count: a target that renames the model must send a priced one,
    or the call it serves would be free (the caller's own model was checked at admission)."""
    book = await prices.book()
    return [leg for leg in legs if leg.target.model is None or book.price_for(leg.target.model, now) is not None]


async def legs_for(request: HttpRequest, caller: Caller, model: str, now: datetime, pin: str = "") -> list[Leg]:
    """The legs a call tries, credentials resolved, the upstream the caller's account or plan
    is pinned to (`pin`) first. Refused before admission, as a single upstream gateway
    refuses, when there is none, or none the caller has a credential for."""
    targets = await routes.targets_for(model, pin=pin or None)
    if not targets:
        return []  # refused when a call is to go upstream (routing): /v1/models may not need one
    legs, own, refusal = [], None, None
    for target in targets:
        auth = target.upstream.auth
        if auth == "caller" and own is None and refusal is None:
            try:
                own = upstream_credential(request, caller, now)
                upstream.refuse_non_ascii(own)
            except GatewayError as error:
                refusal = error
        if auth == "caller" and refusal is not None:
            legs.append(Leg(target, {}, refusal))
            continue
        credential = own if auth == "caller" else operator_credential(target.upstream)
        extra = target.upstream.headers
        legs.append(Leg(target, {**credential, **dict(extra)} if extra else credential))
    if all(leg.refusal is not None for leg in legs):
        raise legs[0].refusal
    return legs


def no_upstream(model: str) -> GatewayError:
    for_model = f" for model {model!r}" if model else ""
    return GatewayError(
        503,
        "upstream_not_configured",
        f"The gateway has no upstream{for_model}: OPENCLAW_URL is unset and no route serves it. Tell the operator.",
        type="server_error",
    )


def operator_credential(target: Upstream) -> dict[str, str]:
    """The operator's key as a Bearer token, for an upstream with auth api_key; else nothing."""
    return {"Authorization": f"Bearer {target.api_key}"} if target.auth == "api_key" and target.api_key else {}
