"""What operators read when the database fails: the database's own reason (not only the
exception's class), in operator wording (never the "Try again shortly" written for callers),
and never a password."""

import logging

import pytest
from django.db import DatabaseError, OperationalError

from billing import monthly_usage, prices
from billing.models import Plan
from gateway_project.lib import async_sql
from proxy import accesslog
from tests.personas import trainee

REASON = 'connection to postgres://gw:hunter2@db.internal/gateway failed: FATAL: too many connections for role "gw"'
SHOWN = REASON.replace("hunter2", "***")


async def failing(*args, **kwargs):
    raise DatabaseError(REASON)


@pytest.fixture
def errors(caplog):
    caplog.set_level(logging.ERROR)
    return caplog


def lines(caplog, start: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith(start)]


def test_a_failed_caller_lookup_is_logged_with_the_database_reason_without_its_password(
    gateway, upstream, monkeypatch, errors
):
    monkeypatch.setattr(async_sql, "fetchone", failing)
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": "ula"})

    assert response.status_code == 503
    assert "Try again shortly" in response.json()["error"]["message"]  # the caller's wording stays theirs
    [line] = lines(errors, "identity: lookup failed")
    assert f"(DatabaseError: {SHOWN})" in line
    assert "hunter2" not in errors.text


def test_a_failed_quota_count_is_logged_with_the_database_reason(gateway, upstream, monkeypatch, errors, settings):
    settings.GATEWAY_IDENTITY = "key"
    Plan.objects.update_or_create(tier="tier1", defaults={"monthly_requests": 100, "monthly_tokens": None})
    _, key = trainee("quentin", tier="tier1")
    monkeypatch.setattr(monthly_usage, "count_if_under", failing)
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-Gateway-Key": key})

    assert response.status_code == 503
    [line] = lines(errors, "quota: usage could not be counted")
    assert f"(DatabaseError: {SHOWN}); refusing metered requests" in line
    assert "hunter2" not in errors.text


def test_an_access_log_write_held_up_by_prices_names_the_database_error_in_operator_wording(
    gateway, upstream, monkeypatch, errors
):
    # The writer needs the prices for each row's cost; their read fails once, then works.
    failures = iter([OperationalError("the database is away")])
    read_book = prices._cache._read

    def flaky_read():
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return read_book()

    monkeypatch.setattr(prices._cache, "_read", flaky_read)
    monkeypatch.setattr(accesslog, "RETRY_DELAYS", (0.0,))
    with gateway.client() as client:
        assert client.get("/v1/models", headers={"X-User-ID": "ada"}).status_code == 200

    assert [row.user_id for row in gateway.log_rows()] == ["ada"]
    [line] = lines(errors, "access log: could not write")
    assert line == "access log: could not write 1 rows (OperationalError: the database is away); retrying in 0.0 s"
    assert "prices: could not be loaded (OperationalError: the database is away)" in errors.text
    assert "Try again shortly" not in errors.text
