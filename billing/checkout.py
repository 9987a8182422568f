"""Customers buy their plan: Stripe Checkout to subscribe, the Billing Portal to change or cancel,
and each plan's price as Stripe states it, for the account page.

The only module that calls Stripe's API. The tier itself is granted by the webhook
(billing.stripe_events) once Stripe says the checkout is paid, never by these calls.
"""

import contextlib
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings

from accounts.models import Account
from billing import money
from billing.models import Plan
from gateway_project.lib import process_state
from gateway_project.lib.errors import GatewayError

logger = logging.getLogger(__name__)

# (connect, read) seconds. Stripe answers these calls within a second or two; its SDK's own
# default of 80 s would hold a worker thread, and a customer at the button, for far too long.
TIMEOUT = (5, 20)
# The SDK retries connection failures, 409s and 5xx itself, with the same idempotency key,
# so a retry never creates a second session.
NETWORK_RETRIES = 2
# What a caller's Idempotency-Key header, or the form's nonce, may hold.
NONCE_PATTERN = re.compile(r"[\x21-\x7e]{1,200}")
# A plan's price is looked up while the account page waits: a short timeout, no retry. A
# Stripe price's amount never changes (a new amount is a new price id), so it is kept an
# hour; a failed lookup is not tried again for a minute, so an outage slows at most one page
# view a minute in each worker.
PRICE_TIMEOUT = (2, 3)
PRICE_KEPT = timedelta(hours=1)
PRICE_RETRY_AFTER = timedelta(minutes=1)
# Currencies Stripe counts in whole units rather than hundredths (its "zero-decimal currencies").
_ZERO_DECIMAL = frozenset(
    ("bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf")
)
# Each worker's price texts by Stripe price id: (text, or "" when unknown; until when it holds).
_prices: dict[str, tuple[str, datetime]] = {}
process_state.on_reset(_prices.clear)


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


@contextlib.contextmanager
def _client(timeout: tuple[int, int] = TIMEOUT, retries: int = NETWORK_RETRIES) -> Iterator[Any]:
    # Imported here: Stripe's SDK adds ~5 MiB to every worker, and only billing needs it.
    import stripe

    # A client, and a connection, per call: purchases are rare, and nothing is left open
    # in the thread that made the call.
    http_client = stripe.RequestsClient(timeout=timeout)
    try:
        yield stripe.StripeClient(
            settings.STRIPE_SECRET_KEY,
            base_addresses={"api": settings.STRIPE_API_BASE},
            max_network_retries=retries,
            http_client=http_client,
        )
    finally:
        http_client.close()


def _call(what: str, request: Callable[[Any], Any]) -> Any:
    """Run `request` with a Stripe client. Stripe's failures become GatewayErrors; neither their
    message nor the log line holds the key or Stripe's own words, only what identifies the error."""
    import stripe

    try:
        with _client() as client:
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


def price_texts(plans: list[Plan], now: datetime) -> dict[str, str | None]:
    """Each plan's price by tier as Stripe states it ("$20.00 a month"); None where it is not
    known: no Stripe price, Stripe unreachable or refusing, or not a fixed amount."""
    texts: dict[str, str | None] = {}
    reachable = enabled()
    for plan in plans:
        kept = _prices.get(plan.stripe_price_id)
        if kept is not None and now < kept[1]:
            text = kept[0]
        elif plan.stripe_price_id and reachable:
            text, reachable = _looked_up(plan.stripe_price_id)
            _prices[plan.stripe_price_id] = (text, now + (PRICE_KEPT if text else PRICE_RETRY_AFTER))
        else:
            text = ""
        texts[plan.tier] = text or None
    return texts


def _looked_up(price_id: str) -> tuple[str, bool]:
    """The price's text ("" when unknown), and whether Stripe could be reached at all: when it
    cannot, the page asks nothing more of it."""
    import stripe

    try:
        with _client(PRICE_TIMEOUT, retries=0) as client:
            price = client.v1.prices.retrieve(price_id).to_dict()
    except stripe.StripeError as error:
        logger.warning(
            "Stripe did not give the price %s: %s (HTTP %s, code %s, request %s)",
            price_id,
            type(error).__name__,
            error.http_status,
            error.code,
            error.request_id,
        )
        return "", not isinstance(error, stripe.APIConnectionError)
    return _price_text(price), True


def _price_text(price: dict) -> str:
    amount, currency = price.get("unit_amount"), str(price.get("currency", "")).lower()
    if not isinstance(amount, int) or not currency:
        return ""  # tiered, metered or customer-chosen amounts: Checkout shows them
    if currency == "usd":
        text = money.usd_text(amount * money.PICO_PER_USD // 100)
    elif currency in _ZERO_DECIMAL:
        text = f"{amount:,} {currency.upper()}"
    else:
        text = f"{Decimal(amount).scaleb(-2):,.2f} {currency.upper()}"
    recurring = price.get("recurring") or {}
    interval, count = recurring.get("interval"), recurring.get("interval_count") or 1
    if not interval:
        return text
    return f"{text} a {interval}" if count == 1 else f"{text} every {count} {interval}s"
