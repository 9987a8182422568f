import json

from django.contrib import admin
from django.utils.html import format_html

from billing.models import MonthlyUsage, Plan, StripeEvent
from gateway_project.admin_base import ReadOnlyAdmin


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["tier", "requests_per_minute", "monthly_requests", "monthly_tokens", "stripe_price_id"]
    list_editable = ["requests_per_minute", "monthly_requests", "monthly_tokens", "stripe_price_id"]


@admin.register(MonthlyUsage)
class MonthlyUsageAdmin(ReadOnlyAdmin):
    list_display = [
        "user_id",
        "month",
        "requests",
        "tokens",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "unknown_usage_requests",
    ]
    list_filter = ["month"]
    search_fields = ["user_id"]
    ordering = ["-month", "-requests"]
    show_full_result_count = False


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "type", "event_id", "account", "outcome", "detail"]
    list_filter = ["outcome", "type"]
    search_fields = ["event_id", "account__user_id"]
    list_select_related = ["account"]
    fields = ["event_id", "type", "created", "received_at", "account", "outcome", "detail", "formatted_payload"]

    @admin.display(description="payload")
    def formatted_payload(self, event: StripeEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2, sort_keys=True))
