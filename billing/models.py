from django.core.validators import MinValueValidator
from django.db import models

from accounts import pins
from accounts.models import Account, Tier


class Plan(models.Model):
    """What a tier buys. Operators edit these in admin; empty limits are unlimited."""

    tier = models.CharField(max_length=16, choices=Tier.choices, unique=True)
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the global RATE_LIMIT_PER_MINUTE."
    )
    monthly_requests = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    monthly_tokens = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    monthly_budget_usd = models.DecimalField(
        "monthly budget (USD)",
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Spend allowed a month, in USD; empty: no budget. Under a budget only priced models may be called.",
    )
    stripe_price_id = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="The Stripe price whose subscription grants this tier."
    )
    pinned_upstream = pins.pinned_upstream_field()

    class Meta:
        ordering = ["tier"]

    def __str__(self) -> str:
        return self.get_tier_display()


class MonthlyUsage(models.Model):
    """Requests admitted and tokens used by one user in one calendar month (UTC)."""

    user_id = models.CharField(max_length=128)
    month = models.DateField(help_text="First day of the month, UTC.")
    requests = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Total tokens of the calls whose usage is known."
    )
    input_tokens = models.PositiveBigIntegerField(default=0, help_text="Cached input tokens included.")
    cached_input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    unknown_usage_requests = models.PositiveIntegerField(
        default=0, help_text="Calls whose usage the upstream never reported: not in the token counts."
    )
    cost_pico_usd = models.PositiveBigIntegerField(
        "cost (pico-USD)", default=0, help_text="Cost of the calls whose cost is known, in 10⁻¹² USD."
    )
    unknown_cost_requests = models.PositiveIntegerField(
        default=0, help_text="Calls of a model without a price, or with unknown usage: not in the cost."
    )
    # While the caller is close to their budget, calls are admitted one at a time: the call
    # admitted holds this until it is written (or the lease runs out, should it never be).
    single_call_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user_id", "month"], name="monthly_usage_user_month")]
        indexes = [models.Index(fields=["month", "-requests"], name="monthly_usage_top")]
        verbose_name_plural = "monthly usage"

    def __str__(self) -> str:
        return f"{self.user_id} {self.month:%Y-%m}"


class ModelMonth(models.Model):
    """Calls of one model in one calendar month (UTC), written with the access log: what each
    model cost, and which models were called without a price."""

    month = models.DateField(help_text="First day of the month, UTC.")
    model = models.CharField(max_length=128, blank=True)
    requests = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Total tokens of the calls whose usage is known."
    )
    cost_pico_usd = models.PositiveBigIntegerField("cost (pico-USD)", default=0)
    unpriced_requests = models.PositiveIntegerField(
        default=0, help_text="Calls that used tokens but had no price in effect: their cost is unknown."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["month", "model"], name="model_month_month_model")]
        verbose_name = "model usage by month"
        verbose_name_plural = "model usage by month"

    def __str__(self) -> str:
        return f"{self.model or '(no model)'} {self.month:%Y-%m}"


class ModelPrice(models.Model):
    """What a model's tokens cost from a date on. A new price gets a new row: rows already
    written keep the cost they were given."""

    model = models.CharField(
        max_length=128,
        help_text="A model name. It also prices the model's dated snapshots (gpt-4o-mini prices "
        "gpt-4o-mini-2024-07-18); an exact name wins over the name it is a snapshot of.",
    )
    effective_from = models.DateField(help_text="Calls from this day on (UTC) are priced so.")
    input_per_million = models.DecimalField(
        "USD per 1M input tokens", max_digits=14, decimal_places=6, validators=[MinValueValidator(0)]
    )
    cached_input_per_million = models.DecimalField(
        "USD per 1M cached input tokens", max_digits=14, decimal_places=6, validators=[MinValueValidator(0)]
    )
    output_per_million = models.DecimalField(
        "USD per 1M output tokens", max_digits=14, decimal_places=6, validators=[MinValueValidator(0)]
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "effective_from"], name="model_price_from")]
        ordering = ["model", "-effective_from"]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d}"


class Rollup(models.Model):
    """Counters of a user's access-log rows, each the exact aggregate of the rows' columns:
    written with the rows, in the same transaction, and rebuilt from them by
    `manage.py rebuild_rollups`. Tokens and cost count the rows where they are known."""

    user_id = models.CharField(max_length=128)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0, help_text="Answered with a status of 400 or more.")
    server_errors = models.BigIntegerField(default=0, help_text="Answered 5xx.")
    rate_limited = models.BigIntegerField(default=0, help_text="Answered 429.")
    over_quota = models.BigIntegerField(default=0, help_text="Answered 402.")
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    unknown_usage_requests = models.BigIntegerField(default=0, help_text="Rows whose usage is unknown.")
    cost_pico_usd = models.BigIntegerField("cost (pico-USD)", default=0)
    unknown_cost_requests = models.BigIntegerField(default=0, help_text="Rows whose cost is unknown.")
    latency_ms_sum = models.BigIntegerField(default=0, help_text="Divided by requests: the average latency.")

    class Meta:
        abstract = True


class HourlyUsage(Rollup):
    """One user's access-log rows of one hour (UTC): charts and windows of hours and days."""

    hour = models.DateTimeField(help_text="The hour's start, UTC.")

    class Meta:
        db_table = "usage_hours"
        constraints = [models.UniqueConstraint(fields=["user_id", "hour"], name="usage_hours_user_hour")]
        indexes = [models.Index(fields=["hour"], name="usage_hours_hour")]
        verbose_name = "hourly usage"
        verbose_name_plural = "hourly usage"


class UserTotal(Rollup):
    """All of one user's access-log rows, pruned ones included: what user summaries read."""

    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        db_table = "user_totals"
        constraints = [models.UniqueConstraint(fields=["user_id"], name="user_totals_user")]
        indexes = [
            models.Index(fields=["-requests"], name="user_totals_requests"),
            models.Index(fields=["-cost_pico_usd"], name="user_totals_cost"),
            models.Index(fields=["-last_seen"], name="user_totals_last_seen"),
        ]


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
