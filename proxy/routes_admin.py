"""Admin for routing: upstreams (their API key write-only), routes and their targets.

Every save reaches the workers within CHANGE_CHECK_MS (proxy.routes.follow_changes).
"""

from django import forms
from django.contrib import admin

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


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    form = UpstreamForm
    list_display = ["name", "base_url", "auth", "api_key_set", "retries", "enabled"]
    list_filter = ["enabled", "auth"]
    search_fields = ["name", "base_url"]

    @admin.display(description="API key", boolean=True)
    def api_key_set(self, upstream: Upstream) -> bool:
        return bool(upstream.api_key)


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
