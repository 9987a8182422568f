"""Key identity: callers prove who they are with a gateway API key."""

import pytest
from django.utils import timezone

from accounts import identity
from accounts.models import ApiKey
from gateway_project.lib import table_versions
from tests.personas import trainee


@pytest.fixture
def key_mode(settings):
    settings.AUTH_MODE = "openai"
    settings.GATEWAY_IDENTITY = "key"


def test_a_caller_without_a_key_is_refused_and_not_forwarded(gateway, upstream, key_mode):
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": "alice", "Authorization": "Bearer sk-own"})

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "X-Gateway-Key" in error["message"]
    assert upstream.seen == []
    [row] = gateway.log_rows()
    assert (row.user_id, row.status) == ("", 401)


@pytest.mark.parametrize("key", ["gk_" + "A" * 43, "gk_short", "sk-not-a-gateway-key", "gk_" + "x" * 5000])
def test_unknown_or_malformed_keys_are_refused(gateway, upstream, key_mode, key):
    trainee("alice")
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-Gateway-Key": key})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert upstream.seen == []


def test_a_revoked_key_is_refused(gateway, upstream, key_mode):
    account, key = trainee("alice")
    ApiKey.objects.filter(account=account).revoke()
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-Gateway-Key": key})

    assert response.status_code == 401


def test_a_valid_key_names_the_caller_and_a_spoofed_user_id_is_ignored(gateway, upstream, key_mode):
    trainee("alice")
    _, bobs_key = trainee("bob")
    with gateway.client() as client:
        response = client.get(
            "/v1/models", headers={"X-Gateway-Key": bobs_key, "X-User-ID": "alice", "Authorization": "Bearer sk-bob"}
        )

    assert response.status_code == 200
    seen = upstream.last.headers
    assert seen["x-forwarded-user"] == "bob"
    assert seen["authorization"] == "Bearer sk-bob"  # BYOK: the trainee's own key still passes
    assert "x-gateway-key" not in seen
    assert gateway.log_rows()[0].user_id == "bob"


def _counted_loads(monkeypatch) -> list[str]:
    loads = []
    real_load = identity._key_cache._load

    async def counted_load(digest):
        loads.append(digest)
        return await real_load(digest)

    monkeypatch.setattr(identity._key_cache, "_load", counted_load)
    return loads


def test_a_steady_stream_of_requests_reads_the_key_once(gateway, upstream, key_mode, monkeypatch):
    _, key = trainee("alice")
    loads = _counted_loads(monkeypatch)
    with gateway.client() as client:
        statuses = [client.get("/v1/models", headers={"X-Gateway-Key": key}).status_code for _ in range(5)]

    assert statuses == [200] * 5
    assert len(loads) == 1


def _clock(monkeypatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(identity, "clock", lambda: now[0])
    return now


def _revoked(account) -> None:
    ApiKey.objects.filter(account=account).revoke()


def _revoked_unannounced(account) -> None:
    """Revoked as if its announcement was lost on the way (Redis failing at that moment)."""
    ApiKey.objects.filter(account=account).update(revoked_at=timezone.now())


def _calls_around(gateway, monkeypatch, change, steps: list[float]) -> list[int]:
    """The status of a call with a new trainee's key, then, once `change(account)` is made, of
    one call after each of `steps` seconds."""
    now = _clock(monkeypatch)
    account, key = trainee("alice")
    with gateway.client() as client:
        statuses = [client.get("/v1/models", headers={"X-Gateway-Key": key}).status_code]
        change(account)
        for step in steps:
            now[0] += step
            statuses.append(client.get("/v1/models", headers={"X-Gateway-Key": key}).status_code)
    return statuses


def test_a_revoked_key_stops_at_the_workers_next_check_of_changes(gateway, upstream, key_mode, monkeypatch, settings):
    settings.KEY_CACHE_SECONDS = 10
    settings.CHANGE_CHECK_MS = 500

    assert _calls_around(gateway, monkeypatch, _revoked, [0.4, 0.1]) == [200, 200, 401]


def test_an_unchanged_key_is_looked_up_again_only_after_trusted_seconds(
    gateway, upstream, key_mode, monkeypatch, settings
):
    settings.KEY_CACHE_SECONDS = 10
    now = _clock(monkeypatch)
    loads = _counted_loads(monkeypatch)
    _, key = trainee("alice")
    seen = []
    with gateway.client() as client:
        for step in (0, 60, identity.TRUSTED_SECONDS - 61, 2):
            now[0] += step
            assert client.get("/v1/models", headers={"X-Gateway-Key": key}).status_code == 200
            seen.append(len(loads))

    assert seen == [1, 1, 1, 2]


def test_while_changes_cannot_be_seen_a_lookup_is_trusted_key_cache_seconds(
    gateway, upstream, key_mode, monkeypatch, settings
):
    settings.KEY_CACHE_SECONDS = 10

    async def unreadable(name):
        return None

    monkeypatch.setattr(table_versions, "read", unreadable)

    assert _calls_around(gateway, monkeypatch, _revoked, [9, 1]) == [200, 200, 401]


def test_a_change_whose_announcement_was_lost_applies_within_trusted_seconds(
    gateway, upstream, key_mode, monkeypatch, settings
):
    settings.KEY_CACHE_SECONDS = 10
    steps = [identity.TRUSTED_SECONDS - 1, 1]

    assert _calls_around(gateway, monkeypatch, _revoked_unannounced, steps) == [200, 200, 401]


def test_lookups_read_before_versions_went_unreadable_are_not_trusted_when_they_return(
    gateway, upstream, key_mode, monkeypatch, settings
):
    settings.KEY_CACHE_SECONDS = 10
    real_read = table_versions.read
    readable = [True]

    async def read(name):
        return await real_read(name) if readable[0] else None

    monkeypatch.setattr(table_versions, "read", read)
    now = _clock(monkeypatch)
    account, key = trainee("alice")
    with gateway.client() as client:
        first = client.get("/v1/models", headers={"X-Gateway-Key": key})
        readable[0] = False
        now[0] += 1
        client.get("/v1/models", headers={"X-Gateway-Key": key})  # the version: unreadable
        _revoked_unannounced(account)  # meanwhile, and Redis never heard of it
        readable[0] = True
        now[0] += 1
        back = client.get("/v1/models", headers={"X-Gateway-Key": key})

    assert (first.status_code, back.status_code) == (200, 401)


def test_using_a_key_records_when_it_was_last_used(gateway, upstream, key_mode):
    account, key = trainee("alice")
    with gateway.client() as client:
        client.get("/v1/models", headers={"X-Gateway-Key": key})
    gateway.settle()

    assert ApiKey.objects.get(account=account).last_used_at is not None
