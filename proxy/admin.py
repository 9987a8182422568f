from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import OuterRef, Q, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from billing import money, monthly_usage
from billing.models import MonthlyUsage
from gateway_project.lib import request_ids
from gateway_project.lib.large_tables import LargeTableAdmin, RecentValuesFilter
from gateway_project.lib.wording import counted
from proxy import (
    routes,
    routes_admin,  # noqa: F401  (registers the routing pages)
)
from proxy.models import RequestLog, Upstream, UserSummary


class StatusClassFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status_class"
    classes = {
        "2xx": Q(status__gte=200, status__lt=300),
        "4xx": Q(status__gte=400, status__lt=500),
        "429": Q(status=429),
        "402": Q(status=402),
        "5xx": Q(status__gte=500, status__lt=600),
    }

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [
            ("2xx", "2xx success"),
            ("4xx", "4xx refused"),
            ("429", "429 rate limited"),
            ("402", "402 over quota"),
            ("5xx", "5xx upstream or gateway error"),
        ]

    def queryset(self, request, queryset):
        condition = self.classes.get(self.value() or "")
        return queryset if condition is None else queryset.filter(condition)


class _KnownOrUnknownFilter(admin.SimpleListFilter):
    """Rows whose `field_name` is known, or unknown (NULL: never 0)."""

    field_name: str
    unknown_means: str

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [("unknown", f"unknown ({self.unknown_means})"), ("known", "known")]

    def queryset(self, request, queryset):
        if self.value() in ("unknown", "known"):
            return queryset.filter(**{f"{self.field_name}__isnull": self.value() == "unknown"})
        return queryset


class UsageFilter(_KnownOrUnknownFilter):
    title = parameter_name = "usage"
    field_name = "total_tokens"
    unknown_means = "not reported upstream"


class CostFilter(_KnownOrUnknownFilter):
    title = parameter_name = "cost"
    field_name = "cost_pico_usd"
    unknown_means = "no price, or unknown usage"


class EndpointFilter(RecentValuesFilter):
    title = "endpoint (recent)"
    parameter_name = "endpoint"
    field_name = "endpoint"


class ModelFilter(RecentValuesFilter):
    title = "model (recent)"
    parameter_name = "model"
    field_name = "model"


class UpstreamFilter(admin.SimpleListFilter):
    """Choices from the configuration, not the log: listing the names found in the log would
    read it."""

    title = "upstream"
    parameter_name = "upstream"
    NONE = "-"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        # The implicit upstream at OPENCLAW_URL, and the named ones (a small table).
        names = [routes.DEFAULT_UPSTREAM, *Upstream.objects.order_by("name").values_list("name", flat=True)]
        if self.value() not in (None, self.NONE, *names):
            names.append(self.value())  # a name no longer configured, from a link
        return [(self.NONE, "none (the gateway's own answer)"), *((name, name) for name in names)]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(upstream="" if self.value() == self.NONE else self.value())


def usage_text(row: RequestLog) -> str:
    """A row's usage for operators: unknown stays visibly unknown, never 0."""
    if row.total_tokens is None:
        return "unknown"
    if row.input_tokens is None:  # logged before usage was split
        return f"{row.total_tokens}"
    return f"{row.total_tokens} ({row.input_tokens} in, {row.cached_input_tokens} cached, {row.output_tokens} out)"


@admin.display(description="user", ordering="user_id")
def user(row: RequestLog | UserSummary) -> str:
    return row.user_id or "—"


@admin.register(RequestLog)
class RequestLogAdmin(LargeTableAdmin):
    list_display = [
        "time",
        user,
        "method",
        "endpoint",
        "status",
        "latency",
        "tokens",
        "cost",
        "model",
        "upstream",
        "attempts",
        "request_id",
    ]
    list_filter = [
        StatusClassFilter,
        UpstreamFilter,
        UsageFilter,
        CostFilter,
        EndpointFilter,
        ModelFilter,
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["user_id"]
    search_help_text = "An exact request id (X-Request-ID) or user id."
    date_hierarchy = "created_at"
    # The primary key, not created_at: Django would add the pk to created_at to make the order
    # total, and only the primary key's index serves "newest first" on its own.
    ordering = ["-id"]
    # Rows get their id when written, after their request arrived: a date range is also
    # bounded by the ids of its rows, so "newest first" reads only the range.
    id_follows = "created_at"
    pages_hint = "Only the newest requests are listed page by page: filter by date, status or user to reach older ones."

    def get_search_results(self, request, queryset, search_term: str):
        # Exact, so an index answers (request_id's, or (user_id, created_at)); icontains
        # would scan the log. Not one query with OR: its plan may walk the whole log.
        term = search_term.strip()
        if not term:
            return queryset, False
        if request_ids.well_formed(term):
            by_id = queryset.filter(request_id=term)
            if by_id.exists():
                return by_id, False
        return queryset.filter(user_id=term), False

    @admin.display(description="time", ordering="created_at")
    def time(self, row: RequestLog):
        return row.created_at

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, row: RequestLog) -> str:
        return f"{row.latency_ms} ms"

    @admin.display(description="tokens", ordering="total_tokens")
    def tokens(self, row: RequestLog) -> str:
        return usage_text(row)

    @admin.display(description="cost", ordering="cost_pico_usd")
    def cost(self, row: RequestLog) -> str:
        return money.usd_text(row.cost_pico_usd)


@admin.register(UserSummary)
class UserSummaryAdmin(LargeTableAdmin):
    """Reads the `user_summary` view over the per-user rollups: one row per user, whatever the
    size of the log, pruned rows included."""

    _columns = [
        "requests",
        "errors",
        "rate_limited",
        "over_quota",
        "total_tokens",
        "unknown_usage_requests",
        "cost",
        "cost_this_month",
        "avg_latency",
        "first_seen",
        "last_seen",
    ]
    list_display = [user, *_columns]
    fields = ["user_id", *_columns, "request_log"]
    readonly_fields = ["avg_latency", "cost", "cost_this_month", "request_log"]
    search_fields = ["user_id"]
    ordering = ["-last_seen"]

    def get_queryset(self, request):
        this_month = MonthlyUsage.objects.filter(
            user_id=OuterRef("user_id"), month=monthly_usage.month_of(timezone.now())
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                month_cost=Subquery(this_month.values("cost_pico_usd")[:1]),
                month_unknown_cost_requests=Subquery(this_month.values("unknown_cost_requests")[:1]),
            )
        )

    def get_search_results(self, request, queryset, search_term: str):
        term = search_term.strip()
        return (queryset.filter(user_id=term) if term else queryset), False

    @admin.display(description="cost", ordering="cost_pico_usd")
    def cost(self, summary: UserSummary) -> str:
        cost = money.usd_text(summary.cost_pico_usd)
        return (
            f"{cost} (+{counted(summary.unknown_cost_requests, 'call')} of unknown cost)"
            if summary.unknown_cost_requests
            else cost
        )

    # Not sortable: sorting by it would compute it for every user.
    @admin.display(description="cost this month")
    def cost_this_month(self, summary: UserSummary) -> str:
        cost = money.usd_text(summary.month_cost or 0)
        unknown = summary.month_unknown_cost_requests or 0
        return f"{cost} (+{counted(unknown, 'call')} of unknown cost)" if unknown else cost

    @admin.display(description="average latency", ordering="avg_latency_ms")
    def avg_latency(self, summary: UserSummary) -> str:
        return f"{summary.avg_latency_ms:.0f} ms"

    @admin.display(description="requests in the log")
    def request_log(self, summary: UserSummary) -> str:
        url = reverse("admin:proxy_requestlog_changelist") + "?" + urlencode({"q": summary.user_id})
        return format_html('<a href="{}">Requests of {}</a>', url, summary.user_id or "unidentified callers")
