"""The operator's commands for keys, sessions and tiers."""

import base64
import io
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import codex
from accounts.models import Account, ApiKey, CodexCredential, TierChange, hash_key
from tests.personas import link_codex, trainee
from tests.servers import ServerThread


def run(*args, stdin: str = "") -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    import sys

    real_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command(*args, stdout=out, stderr=err)
    finally:
        sys.stdin = real_stdin
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_create_api_key_prints_the_key_once_and_stores_only_its_hash():
    out, err = run("create_api_key", "dana", "--name", "workshop laptop")

    raw_key = out.strip()
    assert raw_key.startswith("gk_") and len(raw_key) >= 35
    assert "Created account dana." in err
    key = ApiKey.objects.get(account__user_id="dana")
    assert (key.key_hash, key.prefix, key.name) == (hash_key(raw_key), raw_key[:10], "workshop laptop")


@pytest.mark.django_db
def test_create_api_key_refuses_an_invalid_user_id():
    with pytest.raises(CommandError, match="user_id"):
        run("create_api_key", "not valid!")


def jwt_with_exp(exp: int) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': exp})}.signature"


@pytest.mark.django_db
def test_set_codex_token_reads_a_token_and_its_jwt_expiry_from_stdin():
    token = jwt_with_exp(1_900_000_000)

    run("set_codex_token", "erin", stdin=f"{token}\nrt-erin\n")

    credential = CodexCredential.objects.get(account__user_id="erin")
    assert (credential.access_token, credential.refresh_token) == (token, "rt-erin")
    assert credential.expires_at == datetime.fromtimestamp(1_900_000_000, tz=UTC)


@pytest.mark.django_db
def test_set_codex_token_reads_a_codex_auth_json():
    trainee("fay")
    auth_json = {"tokens": {"access_token": "at-fay", "refresh_token": "rt-fay"}, "last_refresh": "x"}

    run("set_codex_token", "fay", "--expires-at", "2031-01-02T03:04:05Z", stdin=json.dumps(auth_json))

    credential = CodexCredential.objects.get(account__user_id="fay")
    assert (credential.access_token, credential.refresh_token) == ("at-fay", "rt-fay")
    assert credential.expires_at == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.django_db
def test_set_codex_token_replaces_an_existing_session_and_its_refresh_status():
    run("set_codex_token", "gus", "--expires-in", "600", stdin="at-1")
    CodexCredential.objects.update(last_refreshed_at=datetime(2030, 1, 1, tzinfo=UTC), last_refresh_error="HTTP 400")
    run("set_codex_token", "gus", "--expires-in", "600", stdin="at-2")

    credential = CodexCredential.objects.get(account__user_id="gus")
    assert (credential.access_token, credential.last_refreshed_at, credential.last_refresh_error) == ("at-2", None, "")


@pytest.mark.django_db
def test_set_codex_token_without_a_token_says_how():
    with pytest.raises(CommandError, match="No token given"):
        run("set_codex_token", "hal", stdin="")


CRAFTED_SESSIONS = [
    pytest.param({"tokens": {"access_token": jwt_with_exp(10**20)}}, "exp claim is not a time", id="exp 1e20"),
    pytest.param({"tokens": {"access_token": jwt_with_exp(-(10**20))}}, "exp claim is not a time", id="exp -1e20"),
    pytest.param({"access_token": "at", "expires_in": 1e30}, "expires_in is not a number of seconds", id="in 1e30"),
    pytest.param({"access_token": "at", "expires_in": True}, "expires_in is not a number of seconds", id="in true"),
    pytest.param({"access_token": "at", "expires_at": "soon"}, "expires_at is not a time", id="at soon"),
    pytest.param({"tokens": {"access_token": "at\nrt"}}, "not a single word of printable", id="a line break"),
    pytest.param({"tokens": {"access_token": "a" * 17_000}}, "longer than 16 KiB", id="17 KB"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("document, message", CRAFTED_SESSIONS)
def test_set_codex_token_refuses_a_crafted_auth_json_and_stores_nothing(document, message):
    with pytest.raises(CommandError, match=message) as refusal:
        run("set_codex_token", "hal", stdin=json.dumps(document))

    assert "at\nrt" not in str(refusal.value) and "aaaa" not in str(refusal.value)
    assert not Account.objects.filter(user_id="hal").exists()
    assert not CodexCredential.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--access-token", "at secret"], "access token is not a single word of printable"),
        (["--access-token", "at", "--refresh-token", "rt\x07secret"], "refresh token is not a single word"),
        (["--access-token", "at", "--expires-in", str(10**12)], "expires_in is not a number of seconds"),
        (["--access-token", "at", "--expires-in", "-5"], "expires_in is not a number of seconds"),
        (["--access-token", "at", "--expires-at", "0001-01-01T00:00:00+01:00"], "not a time from 1970 to 2999"),
        (["--access-token", "at", "--expires-at", "2030-13-01T00:00:00Z"], "is not an ISO 8601 time"),
    ],
)
def test_set_codex_token_refuses_unusable_options_and_stores_nothing(args, message):
    trainee("hal")

    with pytest.raises(CommandError, match=message) as refusal:
        run("set_codex_token", "hal", *args)

    assert "secret" not in str(refusal.value)
    assert not CodexCredential.objects.exists()


@pytest.mark.django_db
def test_set_tier_records_the_change_with_its_source():
    trainee("ivy")

    run("set_tier", "ivy", "tier2", "--reference", "TICKET-7")
    run("set_tier", "ivy", "none")

    assert Account.objects.get(user_id="ivy").tier == ""
    history = list(TierChange.objects.order_by("id").values_list("old_tier", "new_tier", "source", "reference"))
    assert history == [("", "tier2", "command", "TICKET-7"), ("tier2", "", "command", "")]


async def token_endpoint_with_an_expiry_no_datetime_holds(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"access_token": "at-new", "refresh_token": "rt-rotated", "expires_in": 1e30}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.django_db
def test_a_refresh_answered_with_an_unusable_expiry_keeps_the_rotated_tokens_for_an_hour(settings):
    server = ServerThread(token_endpoint_with_an_expiry_no_datetime_holds)
    settings.CODEX_TOKEN_URL = f"{server.url}/oauth/token"
    link_codex(trainee("jo")[0], "at-old", refresh_token="rt-old", expires_in=timedelta(minutes=1))
    now = timezone.now()
    try:
        with httpx.Client(trust_env=False) as client:
            report = codex.refresh_expiring(now, timedelta(minutes=10), client)
    finally:
        server.stop()

    assert (report.refreshed, report.failed) == (["jo"], [])
    credential = CodexCredential.objects.get(account__user_id="jo")
    assert (credential.access_token, credential.refresh_token) == ("at-new", "rt-rotated")
    assert credential.expires_at == now + timedelta(hours=1)
