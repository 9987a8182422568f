from django.urls import path, re_path

from bench.bare import views

urlpatterns = [
    path("constant/v1/chat/completions", views.constant),
    re_path(r"^v1/(?P<path>.*)$", views.relay),
]
