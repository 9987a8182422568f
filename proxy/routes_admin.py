"""Admin for routing: upstreams (their API key write-only, their health), routes and their
targets.

Every save reaches the workers within CHANGE_CHECK_MS (proxy.routes.follow_changes).
"""

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList

from gateway_project.lib.wording import counted
from proxy import health_view, routes
from proxy.health_view import Health, latency_text, local
from proxy.models import UPSTREAM_TIMEOUTS, Route, RouteTarget, Upstream


class UpstreamForm(forms.ModelForm):
    """The API key is write-only: never rendered back; left blank on change, it stays."""

    api_key = forms.CharField(
        label="API key", widget=forms.PasswordInput(render_value=False), required=False, strip=True
    )
    remove_api_key = forms.BooleanField(required=False, label="Remove the stored API key")

    class Meta:
        model = Upstream
        fields = [
            "name",
            "base_url",
            "auth",
            "api_key",
            "remove_api_key",
            "headers",
            *UPSTREAM_TIMEOUTS,
            "retries",
            "enabled",
            "probe",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.pop("api_key", None)
        stored = self.instance.pk and Upstream.objects.filter(pk=self.instance.pk).exclude(api_key="").exists()
        self.fields["api_key"].help_text = (
            "A key is stored (encrypted). Type a new one to replace it; leave blank to keep it."
            if stored
            else "Sent as Authorization: Bearer with auth api_key; stored encrypted, never shown again."
        )

    def _post_clean(self) -> None:
        # The model's clean() must see the key the row will keep, not the blank field.
        if self.instance.pk and not self.cleaned_data.get("api_key") and not self.cleaned_data.get("remove_api_key"):
            self.cleaned_data["api_key"] = Upstream.objects.get(pk=self.instance.pk).api_key or ""
        if self.cleaned_data.get("remove_api_key"):
            self.cleaned_data["api_key"] = ""
        super()._post_clean()


class RouteTargetInline(admin.TabularInline):
    model = RouteTarget
    fields = ["upstream", "model", "priority", "weight", "continuation"]
    extra = 1


class UpstreamChangeList(ChangeList):
    """Reads the health of the page's upstreams at once (proxy.health_view): a few queries,
    none per row."""

    def get_results(self, request) -> None:
        super().get_results(request)
        names = [upstream.name for upstream in self.result_list]
        found = health_view.health_of(names)
        used = health_view.routes_using(names)
        for upstream in self.result_list:
            upstream.health, upstream.used_by = found[upstream.name], used[upstream.name]


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    form = UpstreamForm
    # Health first: the URL, auth and key are on each upstream's page.
    list_display = [
        "name",
        "enabled",
        "state",
        "since",
        "last_error",
        "error_rate",
        "latency_p50",
        "calls_per_minute",
        "used_by_routes",
    ]
    search_fields = ["name", "base_url"]
    change_list_template = "admin/proxy/upstream/change_list.html"

    def get_changelist(self, request, **kwargs):
        return UpstreamChangeList

    def changelist_view(self, request, extra_context=None):
        # `default` (OPENCLAW_URL) has no row of its own: its health is shown above the list.
        context = {
            "window_minutes": health_view.WINDOW_MINUTES,
            "breaker_failures": settings.BREAKER_FAILURES,
            **(extra_context or {}),
        }
        if settings.OPENCLAW_URL:
            name = routes.DEFAULT_UPSTREAM
            default = Upstream(name=name, base_url=settings.OPENCLAW_URL)
            default.health = health_view.health_of([name])[name]
            default.used_by = health_view.routes_using([name])[name]
            context["default_row"] = [self.state(default), self.since(default), self.last_error(default)]
            context["default_row"] += [self.error_rate(default), self.latency_p50(default)]
            context["default_row"] += [self.calls_per_minute(default), self.used_by_routes(default)]
        return super().changelist_view(request, extra_context=context)

    @admin.display(description="state")
    def state(self, upstream: Upstream) -> str:
        return _health(upstream).state

    @admin.display(description="since")
    def since(self, upstream: Upstream) -> str:
        return local(_health(upstream).since)

    @admin.display(description="last error")
    def last_error(self, upstream: Upstream) -> str:
        health = _health(upstream)
        return f"{health.last_error} ({local(health.last_error_at)})" if health.last_error else "—"

    @admin.display(description="errors (5 min)")
    def error_rate(self, upstream: Upstream) -> str:
        health = _health(upstream)
        if health.error_rate is None:
            return "—"
        return f"{health.error_rate:.0%} ({health.failures} of {counted(health.calls, 'call')})"

    @admin.display(description="latency p50 (5 min)")
    def latency_p50(self, upstream: Upstream) -> str:
        return latency_text(_health(upstream).p50_ms)

    @admin.display(description="calls / minute")
    def calls_per_minute(self, upstream: Upstream) -> str:
        return f"{_health(upstream).calls_per_minute:.1f}"

    @admin.display(description="routes")
    def used_by_routes(self, upstream: Upstream) -> str:
        return ", ".join(getattr(upstream, "used_by", [])) or "—"


def _health(upstream: Upstream) -> Health:
    # Set for the page by UpstreamChangeList; an upstream shown elsewhere: read alone.
    found = getattr(upstream, "health", None)
    return found if found is not None else health_view.health_of([upstream.name])[upstream.name]


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ["model", "targets_in_order"]
    search_fields = ["model"]
    inlines = [RouteTargetInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("targets__upstream")

    @admin.display(description="targets (by priority)")
    def targets_in_order(self, route: Route) -> str:
        targets = sorted(route.targets.all(), key=lambda t: (t.priority, t.id))
        return ", ".join(f"{t.priority}: {t}" + (f" ×{t.weight}" if t.weight != 1 else "") for t in targets) or "—"
