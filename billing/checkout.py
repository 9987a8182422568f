"""Customers buy their plan: Stripe Checkout to subscribe, the Billing Portal to change or cancel.

The only module that calls Stripe's API. The tier itself is granted by the webhook
(billing.stripe_events) once Stripe says the checkout is paid, never by these calls.
"""

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings

from accounts.models import Account
from billing.models import Plan
from gateway_project.errors import GatewayError

logger = logging.getLogger(__name__)

# (connect, read) seconds. Stripe answers these calls within a second or two; its SDK's own
# default of 80 s would hold a worker thread, and a customer at the button, for far too long.
TIMEOUT = (5, 20)
# The SDK retries connection failures, 409s and 5xx itself, with the same idempotency key,
# so a retry never creates a second session.
NETWORK_RETRIES = 2
# What a caller's Idempotency-Key header, or the form's nonce, may hold.
NONCE_PATTERN = re.compile(r"[\x21-\x7e]{1,200}")


def enabled() -> bool:
    """Whether customers can buy: without STRIPE_SECRET_KEY the buttons are hidden."""
    return bool(settings.STRIPE_SECRET_KEY)


def purchasable_plans(account: Account) -> list[Plan]:
    """The plans `account` may start a checkout for, by tier: those with a Stripe price, and
    none once the account holds a subscription (it changes plan in the billing portal)."""
    if _subscribed(account):
        return []
    return list(Plan.objects.exclude(stripe_price_id="").order_by("tier"))


def new_nonce() -> str:
    """A nonce for the account page's checkout form: submitting the same form twice then
    gives the same Checkout Session."""
    return secrets.token_urlsafe(16)


def idempotency_key(account: Account, tier: str, nonce: str | None) -> str:
    """Stripe's idempotency key for one attempt to buy `tier`: the same account, tier and nonce
    (the API caller's Idempotency-Key, the form's nonce) give the same Checkout Session; no
    nonce gives a new session each time."""
    if nonce is None:
        nonce = new_nonce()
    elif not NONCE_PATTERN.fullmatch(nonce):
        raise GatewayError(
            400,
            "invalid_idempotency_key",
            "The idempotency key (the Idempotency-Key header) must be 1 to 200 visible ASCII characters.",
        )
    # The digest covers all three, so two accounts never share a key; the user id and tier are
    # there to be read in Stripe's dashboard. At most 176 characters: Stripe allows 255.
    digest = hashlib.sha256(f"{account.user_id}\n{tier}\n{nonce}".encode()).hexdigest()[:32]
    return f"checkout-{account.user_id}-{tier}-{digest}"


def checkout_url(account: Account, tier: str, idempotency_key: str) -> str:
    """The URL of a new subscription-mode Checkout Session for the plan of `tier`."""
    _require_enabled()
    if _subscribed(account):
        raise GatewayError(
            409,
            "already_subscribed",
            f"You already have a subscription ({account.get_tier_display()}): change or cancel your plan "
            "in the billing portal rather than buying a second one.",
        )
    plan = Plan.objects.exclude(stripe_price_id="").filter(tier=tier).first()
    if plan is None:
        on_sale = ", ".join(p.tier for p in purchasable_plans(account)) or "none yet"
        raise GatewayError(
            400, "plan_not_purchasable", f"No plan {tier[:32]!r} can be bought. Plans for sale: {on_sale}."
        )
    about = {"user_id": account.user_id, "tier": plan.tier}
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": plan.stripe_price_id, "quantity": 1}],
        "client_reference_id": account.user_id,
        "metadata": about,
        # Read by the webhook when a subscription event arrives before its checkout's.
        "subscription_data": {"metadata": about},
        "success_url": settings.STRIPE_SUCCESS_URL,
        "cancel_url": settings.STRIPE_CANCEL_URL,
    }
    if account.stripe_customer_id:
        params["customer"] = account.stripe_customer_id  # one customer, one invoice history
    elif account.email:
        params["customer_email"] = account.email
    session = _call(
        "checkout session",
        lambda client: client.v1.checkout.sessions.create(params=params, options={"idempotency_key": idempotency_key}),
    )
    return session.url


def portal_url(account: Account) -> str:
    """The URL of a new Billing Portal session for the account's Stripe customer."""
    _require_enabled()
    if not account.stripe_customer_id:
        raise GatewayError(
            409, "no_billing_account", "You have no billing account yet: buy a plan first, then manage it here."
        )
    params = {"customer": account.stripe_customer_id, "return_url": settings.STRIPE_PORTAL_RETURN_URL}
    session = _call("billing portal session", lambda client: client.v1.billing_portal.sessions.create(params=params))
    return session.url


def _subscribed(account: Account) -> bool:
    return bool(account.tier and account.stripe_customer_id)


def _require_enabled() -> None:
    if not enabled():
        raise GatewayError(
            503,
            "billing_not_configured",
            "Buying a plan is not available on this gateway: its operator has not set STRIPE_SECRET_KEY.",
            type="server_error",
        )


def _call(what: str, request: Callable[[Any], Any]) -> Any:
    """Run `request` with a Stripe client. Stripe's failures become GatewayErrors; neither their
    message nor the log line holds the key or Stripe's own words, only what identifies the error."""
    # Imported here: Stripe's SDK adds ~5 MiB to every worker, and only billing needs it.
    import stripe

    # A client, and a connection, per call: purchases are rare, and nothing is left open
    # in the thread that made the call.
    http_client = stripe.RequestsClient(timeout=TIMEOUT)
    client = stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=NETWORK_RETRIES,
        http_client=http_client,
    )
    try:
        return request(client)
    except stripe.StripeError as error:
        logger.error(
            "Stripe did not create a %s: %s (HTTP %s, code %s, request %s)",
            what,
            type(error).__name__,
            error.http_status,
            error.code,
            error.request_id,
        )
        if isinstance(error, stripe.IdempotencyError):
            raise GatewayError(
                409,
                "idempotency_key_reused",
                "This idempotency key was already used for a different purchase; send a new one.",
            ) from None
        if isinstance(error, stripe.APIConnectionError):
            message = f"Stripe could not be reached to create your {what}. Try again in a minute."
        else:
            message = (
                f"Stripe refused to create your {what}. Try again in a minute; if it keeps failing, "
                "tell the gateway's operator (its log holds Stripe's request id)."
            )
        raise GatewayError(502, "stripe_error", message, type="server_error") from None
    finally:
        http_client.close()
