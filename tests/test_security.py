"""Admin for staff only, CSRF and secure cookies, security headers, CORS on /v1 only."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from billing.models import MonthlyUsage
from proxy.models import RequestLog
from tests.test_configuration import start_django

ORIGIN = "https://notebook.workshop.example"


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]


def preflight(gateway, origin: str):
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-user-id, x-stainless-os",
    }
    with gateway.client() as client:
        return client.options("/v1/chat/completions", headers=headers)


def test_a_preflight_from_an_allowed_origin_is_answered_without_reaching_the_upstream(gateway, upstream, cors):
    response = preflight(gateway, ORIGIN)

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    allowed = response.headers["access-control-allow-headers"]
    for header in ("authorization", "content-type", "x-user-id", "x-gateway-key", "x-stainless-os"):
        assert header in allowed
    assert upstream.seen == []
    assert not RequestLog.objects.exists()
    assert not MonthlyUsage.objects.exists()


def test_a_preflight_from_another_origin_gets_no_cors_grant(gateway, upstream, cors):
    response = preflight(gateway, "https://evil.example")

    assert "access-control-allow-origin" not in response.headers
    assert upstream.seen == []


def test_calls_from_an_allowed_origin_are_relayed_with_cors_headers(gateway, upstream, cors):
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"Origin": ORIGIN, "X-User-ID": "browser"})

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-ratelimit-remaining" in response.headers["access-control-expose-headers"]
    assert "access-control-allow-credentials" not in response.headers


def test_cors_applies_to_v1_only(gateway, upstream, cors):
    with gateway.client() as client:
        api = client.get("/api/usage", headers={"Origin": ORIGIN})
        admin = client.get("/admin/login/", headers={"Origin": ORIGIN})

    assert "access-control-allow-origin" not in api.headers
    assert "access-control-allow-origin" not in admin.headers


def test_pages_outside_v1_carry_the_security_headers(gateway, upstream):
    with gateway.client() as client:
        health = client.get("/health")
        login = client.get("/admin/login/")

    for response in (health, login):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert login.headers["x-frame-options"] == "DENY"


@pytest.mark.django_db
def test_the_admin_is_for_staff_only():
    trainee = User.objects.create_user("trainee", password="pw-trainee-1")
    operator = User.objects.create_user("operator", password="pw-operator-1", is_staff=True)
    client = Client()

    assert client.get("/admin/").status_code == 302
    client.force_login(trainee)
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    client.force_login(operator)
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_the_admin_login_needs_its_csrf_token():
    User.objects.create_user("operator", password="pw-operator-1", is_staff=True)
    client = Client(enforce_csrf_checks=True)

    forged = client.post("/admin/login/", {"username": "operator", "password": "pw-operator-1"})

    assert forged.status_code == 403


@pytest.mark.django_db
def test_https_settings_mark_cookies_secure_and_send_hsts(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31536000
    User.objects.create_user("operator", password="pw-operator-1", is_staff=True)
    client = Client()

    response = client.post(
        "/admin/login/",
        {"username": "operator", "password": "pw-operator-1"},
        headers={"X-Forwarded-Proto": "https"},
    )

    assert response.status_code == 302
    assert response.cookies["sessionid"]["secure"] is True
    assert response.cookies["sessionid"]["httponly"] is True
    assert response["Strict-Transport-Security"] == "max-age=31536000"


def printed_settings(**variables: str) -> list[str]:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, "
        "getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.CORS_ALLOWED_ORIGINS)"
    )
    result = start_django(code=code, **variables)
    assert result.returncode == 0, result.stderr
    return result.stdout.split(maxsplit=3)


def test_cookies_are_secure_unless_debug_or_told_otherwise():
    assert printed_settings()[:2] == ["True", "True"]
    assert printed_settings(DEBUG="1")[:2] == ["False", "False"]
    assert printed_settings(SECURE_COOKIES="0")[:2] == ["False", "False"]


def test_https_and_cors_come_from_the_environment():
    secure, _, hsts, rest = printed_settings(
        HSTS_SECONDS="3600", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", CORS_ALLOWED_ORIGINS=ORIGIN
    )
    assert (secure, hsts) == ("True", "3600")
    assert rest == f"('HTTP_X_FORWARDED_PROTO', 'https') ['{ORIGIN}']\n"
