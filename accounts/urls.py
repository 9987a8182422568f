from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.home, name="accounts-home"),
    path("sign-in/", views.sign_in, name="accounts-sign-in"),
    path("sign-in/link/<str:token>", views.sign_in_link, name="accounts-sign-in-link"),
    path("sign-out/", views.sign_out, name="accounts-sign-out"),
    path("keys/", views.create_key, name="accounts-create-key"),
    path("keys/<int:key_id>/revoke", views.revoke_key, name="accounts-revoke-key"),
    path("codex/", views.link_codex, name="accounts-link-codex"),
    path("codex/unlink", views.unlink_codex, name="accounts-unlink-codex"),
]
