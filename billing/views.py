import logging

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.sessions import customer_required
from billing import checkout, stripe_events
from gateway_project.lib.errors import GatewayError

logger = logging.getLogger(__name__)

SIGNATURE_TOLERANCE = 300


@csrf_exempt  # Stripe signs its requests instead; this is the only CSRF-exempt view.
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    # Imported here: Stripe's SDK adds ~5 MiB to every worker, and only Stripe's calls need it.
    import stripe

    if not settings.STRIPE_WEBHOOK_SECRET:
        logger.error("Stripe webhook received but STRIPE_WEBHOOK_SECRET is not set; refusing it")
        return GatewayError(503, "webhook_not_configured", "STRIPE_WEBHOOK_SECRET is not set.").response()
    try:
        # The raw body: a re-serialised one would not match the signature.
        event = stripe.Webhook.construct_event(
            request.body,
            request.headers.get("Stripe-Signature"),
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=SIGNATURE_TOLERANCE,
        )
    except (ValueError, stripe.SignatureVerificationError) as error:
        logger.warning("Stripe webhook refused: %s", type(error).__name__)
        return GatewayError(400, "invalid_signature", "Missing, invalid or expired Stripe signature.").response()
    outcome = stripe_events.apply(event.to_dict())
    return JsonResponse({"received": True, "outcome": outcome})


# The account page's buttons: forms posted with the CSRF token, answered with 303 so the
# browser follows with a GET (to Stripe, or back to the page with the reason).


@require_POST
@customer_required
def account_checkout(request: HttpRequest) -> HttpResponseRedirect:
    """Form fields `tier`, and `nonce` (checkout.new_nonce()): the same form posted twice is
    the same Checkout Session."""
    account, tier = request.account, request.POST.get("tier", "")
    try:
        key = checkout.idempotency_key(account, tier, request.POST.get("nonce") or None)
        url = checkout.checkout_url(account, tier, key)
    except GatewayError as error:
        return _back_to_account(request, error)
    return _see_other(url)


@require_POST
@customer_required
def account_portal(request: HttpRequest) -> HttpResponseRedirect:
    try:
        url = checkout.portal_url(request.account)
    except GatewayError as error:
        return _back_to_account(request, error)
    return _see_other(url)


def _back_to_account(request: HttpRequest, error: GatewayError) -> HttpResponseRedirect:
    messages.error(request, error.message)
    return _see_other(reverse("accounts-home"))


def _see_other(url: str) -> HttpResponseRedirect:
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response
