"""Applying Stripe webhook events to accounts: exactly once, and never out of order.

Each event is stored under its unique id in the same transaction as its effect, so a
redelivery, or two deliveries racing, change things once. Each account remembers when
Stripe created the last event applied to it; an older event arriving late is recorded
and ignored rather than undoing a newer one.
"""

from datetime import UTC, datetime

from django.db import IntegrityError, transaction

from accounts.models import USER_ID_PATTERN, Account, Tier, TierChange
from billing.models import Plan, StripeEvent

Outcome = StripeEvent.Outcome
KEEPING_STATUSES = {"active", "trialing"}
ENDING_STATUSES = {"canceled", "unpaid", "incomplete_expired"}
SUBSCRIPTION_CHANGES = {"customer.subscription.created", "customer.subscription.updated"}
# A delayed payment method (a bank debit) completes a checkout unpaid: the payment succeeds later.
CHECKOUT_FINISHED = {"checkout.session.completed", "checkout.session.async_payment_succeeded"}


def apply(event: dict) -> str:
    """Apply one verified event; returns its outcome ("duplicate" for a redelivery)."""
    try:
        with transaction.atomic():
            record = StripeEvent.objects.create(
                event_id=event["id"],
                type=event["type"],
                created=datetime.fromtimestamp(event["created"], tz=UTC),
                outcome=Outcome.INVALID,
                payload=event,
            )
            record.outcome, record.account, record.detail = _handle(event, record.created)
            record.save(update_fields=["outcome", "account", "detail"])
    except IntegrityError:
        if StripeEvent.objects.filter(event_id=event["id"]).exists():
            return "duplicate"
        raise
    return record.outcome


def _handle(event: dict, created: datetime) -> tuple[str, Account | None, str]:
    kind, obj = event["type"], event["data"]["object"]
    if kind in CHECKOUT_FINISHED:
        return _checkout_completed(event["id"], obj, created)
    if kind in SUBSCRIPTION_CHANGES or kind == "customer.subscription.deleted":
        return _subscription_changed(event["id"], kind, obj, created)
    return Outcome.UNHANDLED, None, ""


def _checkout_completed(event_id: str, session: dict, created: datetime) -> tuple[str, Account | None, str]:
    metadata = session.get("metadata") or {}
    user_id = session.get("client_reference_id") or metadata.get("user_id")
    if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
        return Outcome.INVALID, None, "no valid client_reference_id or metadata.user_id"
    Account.objects.get_or_create(user_id=user_id)
    account = Account.objects.select_for_update().get(user_id=user_id)
    if _is_stale(account, created):
        return Outcome.STALE, account, ""
    customer = session.get("customer")
    if isinstance(customer, str) and customer:
        account.stripe_customer_id = customer
    if session.get("payment_status") == "unpaid":
        # Granted by checkout.session.async_payment_succeeded, if the payment ever succeeds.
        _mark_applied(account, created)
        return Outcome.UNCHANGED, account, "payment pending"
    tier = metadata.get("tier")
    changed = tier in Tier.values and account.set_tier(tier, source=TierChange.Source.STRIPE, reference=event_id)
    _mark_applied(account, created)
    return Outcome.APPLIED if changed or customer else Outcome.UNCHANGED, account, ""


def _subscription_changed(event_id: str, kind: str, subscription: dict, created: datetime):
    account = _subscriber(subscription)
    if account is None:
        return Outcome.UNKNOWN_CUSTOMER, None, str(subscription.get("customer", ""))[:255]
    if _is_stale(account, created):
        return Outcome.STALE, account, ""
    status = subscription.get("status", "")
    if kind == "customer.subscription.deleted" or status in ENDING_STATUSES:
        tier = ""
    elif status in KEEPING_STATUSES:
        prices = [item["price"]["id"] for item in (subscription.get("items") or {}).get("data", [])]
        plan = Plan.objects.filter(stripe_price_id__in=prices).exclude(stripe_price_id="").first()
        if plan is None:
            return Outcome.INVALID, account, f"no plan has price {', '.join(prices) or '(none)'}"[:255]
        tier = plan.tier
    else:
        _mark_applied(account, created)
        return Outcome.UNCHANGED, account, f"status {status} keeps the current tier"
    changed = account.set_tier(tier, source=TierChange.Source.STRIPE, reference=event_id)
    _mark_applied(account, created)
    return Outcome.APPLIED if changed else Outcome.UNCHANGED, account, ""


def _subscriber(subscription: dict) -> Account | None:
    """The account by Stripe customer id, or by the user id the checkout put in metadata
    (a subscription event can arrive before its checkout.session.completed)."""
    customer = subscription.get("customer")
    account = Account.objects.select_for_update().filter(stripe_customer_id=customer).first() if customer else None
    user_id = (subscription.get("metadata") or {}).get("user_id")
    if account is None and isinstance(user_id, str) and user_id:
        account = Account.objects.select_for_update().filter(user_id=user_id).first()
        if account is not None and isinstance(customer, str):
            account.stripe_customer_id = customer
    return account


def _is_stale(account: Account, created: datetime) -> bool:
    return account.stripe_event_at is not None and created < account.stripe_event_at


def _mark_applied(account: Account, created: datetime) -> None:
    account.stripe_event_at = created
    account.save(update_fields=["stripe_customer_id", "stripe_event_at", "updated_at"])
