from django.db import models

from accounts.models import Account, Tier


class Plan(models.Model):
    """What a tier buys. Operators edit these in admin; empty limits are unlimited."""

    tier = models.CharField(max_length=16, choices=Tier.choices, unique=True)
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the global RATE_LIMIT_PER_MINUTE."
    )
    monthly_requests = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    monthly_tokens = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    stripe_price_id = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="The Stripe price whose subscription grants this tier."
    )

    class Meta:
        ordering = ["tier"]

    def __str__(self) -> str:
        return self.get_tier_display()


class MonthlyUsage(models.Model):
    """Requests admitted and tokens used by one user in one calendar month (UTC)."""

    user_id = models.CharField(max_length=128)
    month = models.DateField(help_text="First day of the month, UTC.")
    requests = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0, help_text="Total tokens of the calls whose usage is known.")
    input_tokens = models.PositiveBigIntegerField(default=0, help_text="Cached input tokens included.")
    cached_input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    unknown_usage_requests = models.PositiveIntegerField(
        default=0, help_text="Calls whose usage the upstream never reported: not in the token counts."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user_id", "month"], name="monthly_usage_user_month")]
        indexes = [models.Index(fields=["month", "-requests"], name="monthly_usage_top")]
        verbose_name_plural = "monthly usage"

    def __str__(self) -> str:
        return f"{self.user_id} {self.month:%Y-%m}"


class StripeEvent(models.Model):
    """Every webhook event received, once: the unique id makes redelivery a no-op."""

    class Outcome(models.TextChoices):
        APPLIED = "applied"
        UNCHANGED = "unchanged"
        STALE = "stale", "ignored: older than the last event applied"
        UNKNOWN_CUSTOMER = "unknown_customer", "ignored: unknown customer"
        UNHANDLED = "unhandled", "ignored: event type not handled"
        INVALID = "invalid", "ignored: missing or invalid data"

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    created = models.DateTimeField(help_text="When Stripe created the event.")
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    detail = models.CharField(max_length=255, blank=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"
