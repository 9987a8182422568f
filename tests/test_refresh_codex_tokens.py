"""`manage.py refresh_codex_tokens` against a real OAuth token endpoint on loopback."""

import io
import json
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import CodexCredential
from gateway_project.stub_upstream import read_body
from tests.personas import link_codex, trainee
from tests.servers import ServerThread


class TokenEndpoint:
    """Answers the refresh_token grant: `rt-good-*` refreshes, `rt-revoked` is refused."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        self.forms.append(form)
        if form.get("refresh_token", "").startswith("rt-good-"):
            status, payload = (
                200,
                {
                    "access_token": f"at-new-for-{form['refresh_token']}",
                    "refresh_token": "rt-good-rotated",
                    "expires_in": 3600,
                    "token_type": "Bearer",
                },
            )
        else:
            status, payload = 400, {"error": "invalid_grant", "error_description": "Refresh token revoked"}
        data = json.dumps(payload).encode()
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": data})


@pytest.fixture
def token_endpoint(settings):
    endpoint = TokenEndpoint()
    server = ServerThread(endpoint)
    settings.CODEX_TOKEN_URL = f"{server.url}/oauth/token"
    settings.CODEX_CLIENT_ID = "app_gateway"
    settings.CODEX_CLIENT_SECRET = "client-secret"
    yield endpoint
    server.stop()


def refresh() -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("refresh_codex_tokens", stdout=out, stderr=err)
        status = 0
    except SystemExit as exit:
        status = exit.code
    return status, out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_it_refreshes_what_expires_soon_records_failures_and_skips_fresh_tokens(token_endpoint):
    alice, _ = trainee("alice")
    bob, _ = trainee("bob")
    carol, _ = trainee("carol")
    link_codex(alice, "at-old-alice", refresh_token="rt-good-alice", expires_in=timedelta(minutes=5))
    link_codex(bob, "at-old-bob", refresh_token="rt-revoked", expires_in=timedelta(minutes=2))
    link_codex(carol, "at-carol", refresh_token="rt-good-carol", expires_in=timedelta(hours=5))

    status, out, err = refresh()

    assert status == 1
    assert "refreshed 1, failed 1, 1 not due" in out
    assert "bob: HTTP 400 invalid_grant Refresh token revoked" in err
    refreshed = CodexCredential.objects.get(account=alice)
    assert refreshed.access_token == "at-new-for-rt-good-alice"
    assert refreshed.refresh_token == "rt-good-rotated"
    assert timedelta(minutes=59) < refreshed.expires_at - timezone.now() <= timedelta(hours=1)
    assert refreshed.last_refreshed_at is not None and refreshed.last_refresh_error == ""
    failed = CodexCredential.objects.get(account=bob)
    assert failed.access_token == "at-old-bob"
    assert failed.last_refresh_error == "HTTP 400 invalid_grant Refresh token revoked"
    assert CodexCredential.objects.get(account=carol).access_token == "at-carol"
    assert sorted(form["refresh_token"] for form in token_endpoint.forms) == ["rt-good-alice", "rt-revoked"]
    assert token_endpoint.forms[0] | {"refresh_token": ""} == {
        "grant_type": "refresh_token",
        "refresh_token": "",
        "client_id": "app_gateway",
        "client_secret": "client-secret",
    }


@pytest.mark.django_db
def test_it_exits_zero_when_every_refresh_succeeds(token_endpoint):
    alice, _ = trainee("alice")
    link_codex(alice, "at-old", refresh_token="rt-good-1", expires_in=timedelta(minutes=1))

    status, out, _ = refresh()

    assert (status, out.strip()) == (0, "refreshed 1, failed 0, 0 not due (expiring later than 0:10:00)")


@pytest.mark.django_db
def test_a_session_without_refresh_token_is_reported(token_endpoint):
    alice, _ = trainee("alice")
    link_codex(alice, "at-old", expires_in=timedelta(minutes=1))

    status, _, err = refresh()

    assert status == 1
    assert "no refresh token is stored" in err
    assert token_endpoint.forms == []


@pytest.mark.django_db
def test_an_unreachable_token_endpoint_is_a_recorded_failure(settings):
    settings.CODEX_TOKEN_URL = "http://127.0.0.1:9/oauth/token"
    alice, _ = trainee("alice")
    link_codex(alice, "at-old", refresh_token="rt-good-1", expires_in=timedelta(minutes=1))

    status, _, err = refresh()

    assert status == 1
    assert "token endpoint unreachable (ConnectError)" in err


@pytest.mark.django_db
def test_it_needs_a_token_url(settings):
    settings.CODEX_TOKEN_URL = None

    with pytest.raises(CommandError, match="CODEX_TOKEN_URL is not set"):
        call_command("refresh_codex_tokens")
