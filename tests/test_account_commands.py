"""The operator's commands for keys, sessions and tiers."""

import base64
import io
import json
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Account, ApiKey, CodexCredential, TierChange, hash_key
from tests.personas import trainee


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
def test_set_codex_token_replaces_an_existing_session():
    run("set_codex_token", "gus", "--expires-in", "600", stdin="at-1")
    run("set_codex_token", "gus", "--expires-in", "600", stdin="at-2")

    assert CodexCredential.objects.get(account__user_id="gus").access_token == "at-2"


@pytest.mark.django_db
def test_set_codex_token_without_a_token_says_how():
    with pytest.raises(CommandError, match="No token given"):
        run("set_codex_token", "hal", stdin="")


@pytest.mark.django_db
def test_set_tier_records_the_change_with_its_source():
    trainee("ivy")

    run("set_tier", "ivy", "tier2", "--reference", "TICKET-7")
    run("set_tier", "ivy", "none")

    assert Account.objects.get(user_id="ivy").tier == ""
    history = list(TierChange.objects.order_by("id").values_list("old_tier", "new_tier", "source", "reference"))
    assert history == [("", "tier2", "command", "TICKET-7"), ("tier2", "", "command", "")]
