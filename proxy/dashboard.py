"""The operators' live dashboard (staff only): a page over proxy.activity that reloads itself."""

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from gateway_project.lib import charts
from proxy import activity

REFRESH_SECONDS = 5
DEFAULT_MINUTES = 5


def dashboard(request: HttpRequest) -> TemplateResponse:
    current = activity.gather(timezone.now(), _minutes(request.GET.get("minutes")))
    context = {
        **admin.site.each_context(request),
        "title": "Live activity",
        "activity": current,
        "chart": charts.requests_per_minute(current.per_minute),
        "refresh_seconds": REFRESH_SECONDS,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def _minutes(value: str | None) -> int:
    # activity.gather keeps the window to 1..60 minutes.
    try:
        return int(value or DEFAULT_MINUTES)
    except ValueError:
        return DEFAULT_MINUTES
