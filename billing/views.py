import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import stripe_events
from gateway_project.errors import GatewayError

logger = logging.getLogger(__name__)

SIGNATURE_TOLERANCE = 300


@csrf_exempt  # Stripe signs its requests instead; this is the only CSRF-exempt view.
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    # Imported here: Stripe's SDK adds ~5 MiB to every worker, and only webhooks need it.
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
