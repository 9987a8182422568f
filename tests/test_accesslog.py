"""What the access log stores, and that its failures never reach the caller."""

import hashlib
import hmac
import logging

from gateway_project.lib import client_addresses
from proxy import accesslog


def test_the_ip_hash_is_a_keyed_hash_of_the_client_address(gateway, upstream, settings):
    settings.IP_HASH_KEY = "server-side-key"
    with gateway.client() as client:
        client.get("/v1/models")

    [row] = gateway.log_rows()
    expected = hmac.new(b"server-side-key", b"127.0.0.1", hashlib.sha256).hexdigest()[:8]
    assert row.ip_hash == expected
    assert row.ip_hash != hashlib.sha256(b"127.0.0.1").hexdigest()[:8]


def test_the_client_ip_header_is_used_when_configured(gateway, upstream, settings):
    settings.CLIENT_IP_HEADER = "CF-Connecting-IP"
    with gateway.client() as client:
        client.get("/v1/models", headers={"CF-Connecting-IP": "203.0.113.9"})
        client.get("/v1/models")

    first, second = gateway.log_rows()
    assert first.ip_hash == client_addresses.hash_ip("203.0.113.9")
    assert second.ip_hash == client_addresses.hash_ip("127.0.0.1")


def test_the_log_records_latency_and_arrival_time(gateway, upstream):
    with gateway.client() as client:
        client.get("/v1/models")

    [row] = gateway.log_rows()
    assert 0 <= row.latency_ms < 5000
    assert row.created_at is not None


def test_a_failing_log_write_never_breaks_the_response_and_is_reported(gateway, upstream, monkeypatch, caplog):
    calls = []
    real_insert = accesslog._insert

    async def failing_once(rows):
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("database is gone")
        return await real_insert(rows)

    monkeypatch.setattr(accesslog, "_insert", failing_once)
    monkeypatch.setattr(accesslog, "RETRY_DELAYS", (0.0,))
    with caplog.at_level(logging.ERROR, logger="proxy.accesslog"), gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": "dora"})

    assert response.status_code == 200
    # The row was kept and written on the retry, not lost.
    assert [row.user_id for row in gateway.log_rows()] == ["dora"]
    assert "could not write 1 rows (RuntimeError: database is gone)" in caplog.text


def test_a_row_the_database_refuses_does_not_hold_back_the_others(gateway, upstream, caplog):
    from django.utils import timezone

    def row(status: int) -> accesslog.LogRow:
        return accesslog.LogRow(
            "erin", "GET", "/v1/x", status, 1, 0, 0, 0, 0, None, "", "0", timezone.now(), "r", "", 0
        )

    async def record_batch():
        for status in (200, -1, 201):  # -1 breaks the column's check constraint
            accesslog.access_log.record(accesslog._Entry(row(status), None))
        await accesslog.access_log.flush()

    with caplog.at_level(logging.ERROR, logger="proxy.accesslog"):
        gateway.server.call(record_batch())

    assert [r.status for r in gateway.log_rows()] == [200, 201]
    assert "the database rejected 1 rows: GET /v1/x (IntegrityError" in caplog.text


def test_a_nul_in_the_path_or_model_does_not_cost_the_row(gateway, upstream):
    with gateway.client() as client:
        client.get("/v1/models%00x")
        client.post("/v1/echo", json={"model": "gpt\u0000-4o"})

    refused, relayed = gateway.log_rows()
    assert (refused.status, refused.endpoint) == (400, "/v1/modelsx")
    assert (relayed.status, relayed.model) == (200, "gpt-4o")
