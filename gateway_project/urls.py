from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve

from billing import views as billing_views
from proxy import dashboard, metrics
from proxy import views as proxy_views
from proxy.api import api

urlpatterns = [
    re_path(r"^v1/(?P<path>.*)$", proxy_views.relay, name="proxy-relay"),
    path("health", proxy_views.health, name="proxy-health"),
    path("health/ready", proxy_views.ready, name="proxy-ready"),
    path("metrics", metrics.scrape, name="proxy-metrics"),
    path("api/", api.urls),
    path("account/", include("accounts.urls")),
    path("billing/stripe/webhook", billing_views.stripe_webhook, name="billing-stripe-webhook"),
    path("account/billing/checkout", billing_views.account_checkout, name="billing-account-checkout"),
    path("account/billing/portal", billing_views.account_portal, name="billing-account-portal"),
    path("admin/dashboard/", admin.site.admin_view(dashboard.dashboard), name="proxy-dashboard"),
    path("admin/", admin.site.urls),
    # Admin's CSS and JS, collected by `collectstatic`. Served by Django itself: only
    # operators load them, so a separate static server would add a moving part for nothing.
    re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT}),
]

handler404 = proxy_views.not_found
handler500 = proxy_views.server_error
