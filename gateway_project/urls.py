from django.conf import settings
from django.contrib import admin
from django.urls import path, re_path
from django.views.static import serve

from proxy import views as proxy_views

urlpatterns = [
    re_path(r"^v1/(?P<path>.*)$", proxy_views.relay, name="proxy-relay"),
    path("health", proxy_views.health, name="proxy-health"),
    path("health/ready", proxy_views.ready, name="proxy-ready"),
    path("admin/", admin.site.urls),
    # Admin's CSS and JS, collected by `collectstatic`. Served by Django itself: only
    # operators load them, so a separate static server would add a moving part for nothing.
    re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT}),
]

handler404 = proxy_views.not_found
