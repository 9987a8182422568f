"""/api/billing: buy a plan, manage it. Mounted by proxy.api, whose error schema it documents."""

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest
from ninja import Field, Router, Schema

from accounts.identity import identify_by_key
from accounts.models import Account
from billing import checkout
from gateway_project.lib.api_errors import ErrorOut
from gateway_project.lib.errors import GatewayError

router = Router(tags=["billing"])

PROOF = (
    "Needs the caller's gateway key (X-Gateway-Key, or `Authorization: Bearer gk_...`) whatever the "
    "gateway's identity mode: X-User-ID alone is no proof of who may spend or see an account's invoices."
)
CHECKOUT_ERRORS = dict.fromkeys((400, 401, 409, 502, 503), ErrorOut)
PORTAL_ERRORS = dict.fromkeys((401, 409, 502, 503), ErrorOut)


class CheckoutIn(Schema):
    tier: str = Field(description="The tier whose plan to buy, e.g. tier2.", examples=["tier2"])


class UrlOut(Schema):
    url: str = Field(description="Where to send the customer (a Stripe page).")


@router.post(
    "/checkout",
    response={200: UrlOut, **CHECKOUT_ERRORS},
    summary="Start buying a plan: a Stripe Checkout URL",
    description=(
        f"{PROOF} Send an `Idempotency-Key` header (1 to 200 visible ASCII characters) to make a "
        "retry return the same Checkout Session. The tier is granted once Stripe reports the payment. "
        "409 `already_subscribed`: change the plan in the billing portal instead."
    ),
)
async def create_checkout(request: HttpRequest, body: CheckoutIn):
    caller = await identify_by_key(request)
    nonce = request.headers.get("Idempotency-Key")
    url = await sync_to_async(_checkout, thread_sensitive=False)(caller.account_id, body.tier, nonce)
    return {"url": url}


@router.post(
    "/portal",
    response={200: UrlOut, **PORTAL_ERRORS},
    summary="Manage the plan: a Stripe Billing Portal URL",
    description=f"{PROOF} 409 `no_billing_account` until a plan was bought.",
)
async def create_portal(request: HttpRequest):
    caller = await identify_by_key(request)
    url = await sync_to_async(_portal, thread_sensitive=False)(caller.account_id)
    return {"url": url}


def _checkout(account_id: int, tier: str, nonce: str | None) -> str:
    try:
        account = _account(account_id)
        return checkout.checkout_url(account, tier, checkout.idempotency_key(account, tier, nonce))
    finally:
        connection.close()  # this pool thread's connection would otherwise outlive the request


def _portal(account_id: int) -> str:
    try:
        return checkout.portal_url(_account(account_id))
    finally:
        connection.close()


def _account(account_id: int) -> Account:
    account = Account.objects.filter(pk=account_id).first()
    if account is None:  # deleted while its key was still in a worker's cache
        raise GatewayError(
            401,
            "invalid_api_key",
            "This gateway API key is not valid: unknown or revoked.",
            type="authentication_error",
        )
    return account
