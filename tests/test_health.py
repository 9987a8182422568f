"""Liveness and readiness probes."""

import pytest
from django.core.cache import cache
from django.db import connection


@pytest.fixture
def no_services(monkeypatch):
    """Any touch of the database or the cache fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the probe touched a service")

    monkeypatch.setattr(connection, "cursor", refuse)
    monkeypatch.setattr(connection, "ensure_connection", refuse)
    for method in ("get", "set", "add", "incr"):
        monkeypatch.setattr(cache, method, refuse)


def test_health_answers_from_the_process_alone(client, no_services, settings):
    settings.OPENCLAW_URL = "http://127.0.0.1:9"  # an upstream it must not contact
    response = client.get("/health")

    assert response.status_code == 200
    assert response.content == b'{"status": "ok", "gateway": "organized-gateway"}'


@pytest.mark.django_db(transaction=True)
def test_ready_reports_database_and_cache_up(client):
    response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}


@pytest.mark.django_db(transaction=True)
def test_ready_names_the_service_that_is_down(client, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("cache server refused the connection")

    monkeypatch.setattr(cache, "set", broken)
    response = client.get("/health/ready")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "cache": "down", "down": ["cache"]}
