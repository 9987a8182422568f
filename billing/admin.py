import json
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.db import models
from django.utils import timezone
from django.utils.html import format_html

from accounts.admin import AccountRecordAdmin
from billing import money, monthly_usage
from billing.models import ModelMonth, ModelPrice, MonthlyUsage, Plan, StripeEvent
from gateway_project.lib.read_only_admin import ReadOnlyAdmin


class _UsdField(forms.DecimalField):
    """Shows a stored amount of dollars as money reads elsewhere ("25.00", "0.005015"), not with
    its column's six decimals."""

    def prepare_value(self, value):
        return money.usd_input_text(value) if isinstance(value, Decimal) and value >= 0 else value


_USD_FIELDS = {models.DecimalField: {"form_class": _UsdField}}


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    formfield_overrides = _USD_FIELDS
    list_display = [
        "tier",
        "requests_per_minute",
        "monthly_requests",
        "monthly_tokens",
        "monthly_budget_usd",
        "stripe_price_id",
    ]
    list_editable = [
        "requests_per_minute",
        "monthly_requests",
        "monthly_tokens",
        "monthly_budget_usd",
        "stripe_price_id",
    ]


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    formfield_overrides = _USD_FIELDS
    list_display = ["model", "effective_from", "input_price", "cached_input_price", "output_price"]
    list_filter = ["effective_from"]
    search_fields = ["model"]

    @admin.display(description="input / 1M tokens", ordering="input_per_million")
    def input_price(self, price: ModelPrice) -> str:
        return money.usd_amount_text(price.input_per_million)

    @admin.display(description="cached input / 1M tokens", ordering="cached_input_per_million")
    def cached_input_price(self, price: ModelPrice) -> str:
        return money.usd_amount_text(price.cached_input_per_million)

    @admin.display(description="output / 1M tokens", ordering="output_per_million")
    def output_price(self, price: ModelPrice) -> str:
        return money.usd_amount_text(price.output_per_million)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "unpriced": unpriced_models(timezone.now())}
        return super().changelist_view(request, extra_context)


def unpriced_models(now) -> list[ModelMonth]:
    """Models called this month without a price in effect (most such calls first)."""
    return list(
        ModelMonth.objects.filter(month=monthly_usage.month_of(now), unpriced_requests__gt=0).order_by(
            "-unpriced_requests", "model"
        )[:50]
    )


@admin.register(ModelMonth)
class ModelMonthAdmin(ReadOnlyAdmin):
    list_display = ["month", "model", "requests", "total_tokens", "cost", "unpriced_requests"]
    list_filter = ["month"]
    search_fields = ["model"]
    ordering = ["-month", "-cost_pico_usd"]

    @admin.display(description="cost", ordering="cost_pico_usd")
    def cost(self, row: ModelMonth) -> str:
        return money.usd_text(row.cost_pico_usd)


@admin.register(MonthlyUsage)
class MonthlyUsageAdmin(ReadOnlyAdmin):
    # Every counter, the cost in dollars rather than pico-dollars.
    list_display = ["user_id", "month", *("cost" if c == "cost_pico_usd" else c for c in monthly_usage.COUNTERS)]
    list_filter = ["month"]
    search_fields = ["user_id"]
    ordering = ["-month", "-requests"]
    show_full_result_count = False

    @admin.display(description="cost", ordering="cost_pico_usd")
    def cost(self, row: MonthlyUsage) -> str:
        return money.usd_text(row.cost_pico_usd)


@admin.register(StripeEvent)
class StripeEventAdmin(AccountRecordAdmin):
    list_display = ["received_at", "type", "event_id", "account", "outcome", "detail"]
    list_filter = ["outcome", "type"]
    search_fields = ["event_id", "account__user_id"]
    fields = ["event_id", "type", "created", "received_at", "account", "outcome", "detail", "formatted_payload"]

    @admin.display(description="payload")
    def formatted_payload(self, event: StripeEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2, sort_keys=True))
