"""The /v1 relay against a real upstream on loopback."""

import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.servers import closed_port_url


def test_it_relays_a_success_verbatim(gateway, upstream):
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}'
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "application/json", "X-User-ID": "alice"}
        )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["usage"]["total_tokens"] == 12
    assert upstream.last.body == body
    assert upstream.last.path == "/v1/chat/completions"
    [row] = gateway.log_rows()
    assert (row.user_id, row.method, row.status, row.total_tokens, row.model) == (
        "alice",
        "POST",
        200,
        12,
        "gpt-4o-mini",
    )


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_it_relays_upstream_errors_with_their_status_and_body(gateway, upstream, status):
    with gateway.client() as client:
        response = client.get(f"/v1/status/{status}")

    assert response.status_code == status
    assert response.json()["error"]["message"] == f"upstream says {status}"
    [row] = gateway.log_rows()
    assert row.status == status


def test_it_keeps_the_query_string(gateway, upstream):
    with gateway.client() as client:
        response = client.get("/v1/echo?limit=5&order=desc")

    assert response.json()["query"] == "limit=5&order=desc"


def test_it_sends_only_allowed_headers_upstream(gateway, upstream):
    headers = {
        "Authorization": "Bearer sk-trainee-own-key",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "OpenAI-Organization": "org-1",
        "OpenAI-Project": "proj-1",
        "OpenAI-Beta": "assistants=v2",
        "X-User-ID": "alice",
        "X-Gateway-Key": "gk_should_never_leave",
        "Cookie": "sessionid=abc",
        "Connection": "keep-alive, X-Custom-Hop",
        "X-Custom-Hop": "hop",
        "X-Stainless-Lang": "python",
        "Proxy-Authorization": "Basic c2VjcmV0",
    }
    with gateway.client() as client:
        client.post("/v1/echo", content=b"{}", headers=headers)

    seen = upstream.last.headers
    assert seen["authorization"] == "Bearer sk-trainee-own-key"
    assert seen["content-type"] == "application/json"
    assert seen["accept"] == "application/json"
    assert seen["openai-organization"] == "org-1"
    assert seen["openai-project"] == "proj-1"
    assert seen["openai-beta"] == "assistants=v2"
    assert seen["x-forwarded-user"] == "alice"
    for never in ("x-user-id", "x-gateway-key", "cookie", "x-custom-hop", "x-stainless-lang", "proxy-authorization"):
        assert never not in seen
    assert seen["host"] == upstream.url.removeprefix("http://")


def test_it_returns_only_allowed_headers_from_upstream(gateway, upstream):
    with gateway.client() as client:
        response = client.get("/v1/status/400")

    # The upstream's own id under its own name: X-Request-ID is the gateway's (test_request_ids.py).
    assert response.headers["x-upstream-request-id"] == "req-123"
    assert response.headers["x-request-id"] != "req-123"
    assert response.headers["openai-processing-ms"] == "42"
    assert "set-cookie" not in response.headers
    assert "x-upstream-internal" not in response.headers


def test_a_stream_reaches_the_client_before_the_upstream_has_finished(gateway, upstream):
    with gateway.client() as client, client.stream("POST", "/v1/gated-stream", json={"stream": True}) as response:
        assert response.headers["content-type"] == "text/event-stream"
        chunks = response.iter_raw()
        first = next(chunks)
        # The upstream is still holding the rest of the stream behind its gate.
        assert b'"first"' in first
        assert not upstream.stream_finished.is_set()
        upstream.gate.set()
        rest = b"".join(chunks)

    assert b'" second"' in rest
    assert rest.endswith(b"data: [DONE]\n\n")


def test_a_streamed_response_logs_the_tokens_of_its_final_usage_chunk(gateway, upstream):
    upstream.gate.set()
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}}
    with gateway.client() as client:
        response = client.post("/v1/gated-stream", json=body, headers={"X-User-ID": "bob"})

    assert '"total_tokens": 7' in response.text

    [row] = gateway.log_rows()
    assert (row.user_id, row.status, row.total_tokens, row.model) == ("bob", 200, 7, "gpt-4o")


def test_an_unreachable_upstream_is_a_fast_502(gateway, upstream, settings):
    settings.OPENCLAW_URL = closed_port_url()
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "m", "messages": []})

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    [row] = gateway.log_rows()
    assert row.status == 502
    assert row.latency_ms < 1000


def test_a_silent_upstream_is_a_504_at_the_timeout(gateway, upstream, settings):
    settings.UPSTREAM_TIMEOUT = 0.2
    with gateway.client() as client:
        response = client.get("/v1/hang")

    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert "0.2 seconds" in error["message"]
    [row] = gateway.log_rows()
    assert row.status == 504
    assert 200 <= row.latency_ms < 2000


def test_an_upstream_that_goes_silent_mid_stream_ends_the_stream_with_an_error_event(gateway, upstream, settings):
    settings.UPSTREAM_TIMEOUT = 0.2
    with gateway.client() as client:
        response = client.post("/v1/endless-stream", json={"stream": True})

    assert response.status_code == 200
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "upstream_timeout"
    [row] = gateway.log_rows()
    assert row.status == 504


def test_an_upstream_reset_mid_stream_ends_the_clients_stream_and_is_logged(gateway, upstream):
    with gateway.client() as client:
        response = client.post("/v1/reset-mid-stream", json={"stream": True})

    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"first"' in events[0]
    assert json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "upstream_unavailable"
    [row] = gateway.log_rows()
    assert row.status == 502


def test_a_client_leaving_mid_stream_closes_the_upstream_and_logs_499(gateway, upstream):
    with gateway.client() as client, client.stream("POST", "/v1/endless-stream", json={"stream": True}) as response:
        assert b'"first"' in next(response.iter_raw())
        # Leaving the block closes the connection with the stream unfinished.

    assert upstream.disconnected.wait(10), "the gateway kept the upstream stream open"
    [row] = gateway.log_rows()
    assert row.status == 499
    assert row.endpoint == "/v1/endless-stream"


def wait_until_stalled(upstream) -> None:
    """Until the firehose stops advancing: every buffer between it and the client is full,
    so the gateway is blocked sending to the client."""
    seen, unchanged = -1, 0
    deadline = time.monotonic() + 10
    while unchanged < 3:
        assert time.monotonic() < deadline, "the firehose never stalled"
        time.sleep(0.05)  # polling for a condition
        unchanged = unchanged + 1 if upstream.sent_bytes == seen else 0
        seen = upstream.sent_bytes


def test_a_client_that_stops_reading_and_leaves_closes_the_upstream_and_logs_499(gateway, upstream):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    address = urlsplit(gateway.url)
    sock.connect((address.hostname, address.port))
    sock.sendall(b"GET /v1/firehose HTTP/1.1\r\nHost: gateway\r\nX-User-ID: sleepy\r\n\r\n")
    assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    wait_until_stalled(upstream)  # the gateway is now blocked writing to this client

    sock.close()

    # A generous bound on a loaded machine; the one-second promise is held by the
    # endless-stream test above, where the gateway is not blocked sending.
    assert upstream.disconnected.wait(3), "the gateway kept the upstream stream open"
    [row] = gateway.log_rows()
    assert (row.user_id, row.status) == ("sleepy", 499)


def test_a_json_answer_comes_whole_with_its_length(gateway, upstream):
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user"}]})

    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(response.content))
    assert "transfer-encoding" not in response.headers
    assert response.content == upstream.sent_body
    [row] = gateway.log_rows()
    assert (row.status, row.total_tokens) == (200, response.json()["usage"]["total_tokens"])


def test_every_request_leaves_exactly_one_log_row(gateway, upstream):
    with gateway.client() as client:
        client.get("/v1/models", headers={"X-User-ID": "carol"})
        client.get("/v1/status/500", headers={"X-User-ID": "carol"})
        client.get("/v1/models", headers={"X-User-ID": "not valid!"})

    rows = gateway.log_rows()
    assert [(r.user_id, r.method, r.endpoint, r.status) for r in rows] == [
        ("carol", "GET", "/v1/models", 200),
        ("carol", "GET", "/v1/status/500", 500),
        ("", "GET", "/v1/models", 400),
    ]


def test_a_json_body_that_does_not_parse_is_refused_and_not_forwarded(gateway, upstream):
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", content=b'{"model": ', headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert upstream.seen == []
    assert [row.status for row in gateway.log_rows()] == [400]


def test_it_answers_503_when_no_upstream_is_configured(gateway, upstream, settings):
    settings.OPENCLAW_URL = None
    with gateway.client() as client:
        response = client.get("/v1/models")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_not_configured"


def test_the_relay_does_not_set_cookies_or_csrf(gateway, upstream):
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user"}]})

    assert response.status_code == 200
    assert "set-cookie" not in response.headers


def test_httpx_sees_a_complete_response_for_non_streams(gateway, upstream):
    with gateway.client() as client:
        response = client.get("/v1/models")

    assert response.status_code == 200
    assert isinstance(response, httpx.Response)
    assert [m["id"] for m in response.json()["data"]][:1] == ["stub-mini"]


def test_a_client_leaving_before_the_response_starts_is_logged_499(gateway, upstream, settings):
    settings.UPSTREAM_TIMEOUT = 30
    with gateway.client() as client, pytest.raises(httpx.ReadTimeout):
        # The upstream never answers; the client gives up first.
        client.get("/v1/hang", timeout=httpx.Timeout(5, read=0.3))

    assert upstream.disconnected.wait(2), "the gateway kept waiting on the upstream"
    [row] = gateway.log_rows()
    assert (row.status, row.endpoint) == (499, "/v1/hang")


def test_an_unexpected_failure_still_leaves_its_log_row(gateway, upstream, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a pipeline step")

    monkeypatch.setattr("proxy.views.model_of", broken)
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "m"})

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "a bug" not in response.text
    assert [row.status for row in gateway.log_rows()] == [500]
