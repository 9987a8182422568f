"""Paths that would leave /v1/ are refused before anything reaches the upstream."""

import http.client
import json
from urllib.parse import urlsplit

import pytest


def raw_request(gateway, method: str, path: str) -> tuple[int, dict]:
    """Send `path` byte for byte: HTTP clients would normalise the dots away."""
    address = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=5)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../admin/",
        "/v1/chat/../../admin/",
        "/v1/%2e%2e/admin/",
        "/v1/%2E%2E/health",
        "/v1/.%2e/admin/",
        "/v1/chat%2f..%2f..%2fadmin",
        "/v1/chat%5c..%5cadmin",
        "/v1//admin",
        "/v1/./models",
        "/v1/models%00",
        "/v1/chat/completions/..",
    ],
)
def test_a_path_escaping_v1_is_refused_and_not_forwarded(gateway, upstream, path):
    status, body = raw_request(gateway, "GET", path)

    assert status == 400
    assert body["error"]["code"] == "invalid_path"
    assert upstream.seen == []
    [row] = gateway.log_rows()
    assert row.status == 400


@pytest.mark.parametrize(
    ("path", "forwarded"),
    [
        ("/v1/models", b"/v1/models"),
        ("/v1/files/file-abc%20def/content", b"/v1/files/file-abc%20def/content"),
        ("/v1/models/ft:gpt-4o:org:custom:id", b"/v1/models/ft:gpt-4o:org:custom:id"),
        ("/v1/files/a..b", b"/v1/files/a..b"),
    ],
)
def test_ordinary_paths_are_forwarded_as_encoded(gateway, upstream, path, forwarded):
    raw_request(gateway, "GET", path)

    assert upstream.last.raw_path == forwarded


def test_paths_outside_v1_are_not_relayed_and_say_where_the_api_is(gateway, upstream):
    status, body = raw_request(gateway, "POST", "/chat/completions")

    assert status == 404
    assert body["error"]["code"] == "unknown_path"
    assert "base_url" in body["error"]["message"]
    assert upstream.seen == []
