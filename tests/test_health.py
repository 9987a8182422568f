"""Liveness and readiness probes."""

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection

from proxy import ratelimit, views
from tests.servers import closed_port_url


@pytest.fixture
def no_services(monkeypatch):
    """Any touch of the database or the cache fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the probe touched a service")

    monkeypatch.setattr(connection, "cursor", refuse)
    monkeypatch.setattr(connection, "ensure_connection", refuse)
    for method in ("get", "set", "add", "incr"):
        monkeypatch.setattr(cache, method, refuse)
    monkeypatch.setattr(ratelimit, "backend", refuse)


def test_health_answers_from_the_process_alone(client, no_services, settings):
    settings.OPENCLAW_URL = "http://127.0.0.1:9"  # an upstream it must not contact
    response = client.get("/health")

    assert response.status_code == 200
    assert response.content == b'{"status": "ok", "gateway": "organized-gateway"}'


def test_ready_reports_database_and_cache_up(gateway):
    with gateway.client() as client:
        response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}


def test_ready_names_the_cache_when_redis_is_unreachable(gateway, settings):
    settings.REDIS_URL = closed_port_url().replace("http", "redis")
    with gateway.client() as client:
        response = client.get("/health/ready")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "cache": "down", "down": ["cache"]}


def test_ready_names_the_database_when_it_is_unreachable(gateway, monkeypatch):
    def refused():
        raise OperationalError("connection refused")

    monkeypatch.setattr(views, "_check_database", refused)
    with gateway.client() as client:
        response = client.get("/health/ready")

    assert response.status_code == 503
    assert response.json()["down"] == ["database"]
