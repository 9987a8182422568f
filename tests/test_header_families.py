"""Headers both ways: the Codex CLI's session and turn headers reach the upstream and its
x-codex-* headers come back; operators may add names, never the gateway's own secrets."""

import pytest

from tests import rawhttp
from tests.personas import link_codex, trainee
from tests.test_configuration import start_django

# What the Codex CLI (0.171, `codex exec`, custom provider with wire_api = "responses") sends.
CODEX_HEADERS = {
    "user-agent": "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.171.0)",
    "originator": "codex_exec",
    "session-id": "0199a8d2-5f7e-7c31-9b4e-2f1d3c4b5a69",
    "thread-id": "0199a8d2-5f7e-7c31-9b4e-2f1d3c4b5a69",
    "x-client-request-id": "0199a8d2-5f7e-7c31-9b4e-2f1d3c4b5a69",
    "x-codex-turn-state": "turn-state-from-the-upstream",
    "x-codex-turn-metadata": '{"turn_id":"t-1","sandbox":"seccomp","model":"gpt-4o-mini"}',
    "x-codex-window-id": "0199a8d2-5f7e-7c31-9b4e-2f1d3c4b5a69:0",
    "x-codex-beta-features": "remote_compaction_v2",
    "accept": "text/event-stream",
}
RESPONSES = b'{"model": "gpt-4o-mini", "input": "hi", "stream": true}'


def test_codex_headers_arrive_upstream_and_turn_state_comes_back(gateway, upstream, settings):
    settings.AUTH_MODE = "codex"
    settings.GATEWAY_IDENTITY = "key"
    account, key = trainee("codi")
    link_codex(account, "codex-access-token")
    upstream.extra_response_headers[:] = [
        (b"x-codex-turn-state", b"turn-state-from-the-upstream"),
        (b"x-codex-primary-used-percent", b"12"),
        (b"x-upstream-internal", b"topology"),
    ]
    headers = {**CODEX_HEADERS, "authorization": f"Bearer {key}", "content-type": "application/json"}
    with gateway.client() as client:
        response = client.post("/v1/responses", content=RESPONSES, headers=headers)

    assert response.status_code == 200
    seen = upstream.last.headers
    for name, value in CODEX_HEADERS.items():
        assert seen[name] == value, name
    # The caller's gateway key stays at the gateway; the stored token goes instead.
    assert seen["x-codex-token"] == "codex-access-token"
    assert "authorization" not in seen
    assert response.headers["x-codex-turn-state"] == "turn-state-from-the-upstream"
    assert response.headers["x-codex-primary-used-percent"] == "12"
    assert "x-upstream-internal" not in response.headers


def test_session_id_with_an_underscore_reaches_the_upstream(gateway, upstream):
    # Django drops header names with underscores from request.headers; some Codex builds send it.
    response = rawhttp.request(
        gateway.url, "POST", "/v1/echo", [(b"session_id", b"s-42"), (b"X-User-ID", b"codi")], b"{}"
    )

    assert response.status == 200
    assert upstream.last.headers["session_id"] == "s-42"


def test_a_caller_cannot_smuggle_a_codex_token(gateway, upstream, settings):
    settings.AUTH_MODE = "codex"
    settings.GATEWAY_IDENTITY = "key"
    account, key = trainee("mallory")
    link_codex(account, "mallorys-own-token")
    with gateway.client() as client:
        client.post("/v1/echo", json={}, headers={"X-Gateway-Key": key, "X-Codex-Token": "someone-elses-token"})

    assert [value for name, value in upstream.last.header_list if name == "x-codex-token"] == ["mallorys-own-token"]


def test_without_a_user_agent_none_is_made_up(gateway, upstream):
    rawhttp.request(gateway.url, "POST", "/v1/echo", [(b"X-User-ID", b"curl-less")], b"{}")

    assert "user-agent" not in upstream.last.headers


def test_operators_add_header_names_both_ways(gateway, upstream, settings):
    settings.FORWARD_REQUEST_HEADERS = ("x-trace-id",)
    settings.FORWARD_RESPONSE_HEADERS = ("x-upstream-region",)
    upstream.extra_response_headers[:] = [(b"x-upstream-region", b"eu-west"), (b"x-upstream-internal", b"t")]
    with gateway.client() as client:
        response = client.post(
            "/v1/echo", json={}, headers={"X-User-ID": "ops", "X-Trace-Id": "trace-1", "X-Other": "no"}
        )

    assert upstream.last.headers["x-trace-id"] == "trace-1"
    assert "x-other" not in upstream.last.headers
    assert response.headers["x-upstream-region"] == "eu-west"
    assert "x-upstream-internal" not in response.headers


@pytest.mark.parametrize("name", ["X-Gateway-Key", "Authorization", "Cookie", "x-codex-token"])
def test_the_gateways_secrets_cannot_be_configured_through(name):
    for variable in ("FORWARD_REQUEST_HEADERS", "FORWARD_RESPONSE_HEADERS"):
        result = start_django(**{variable: f"x-trace-id, {name}"})

        assert result.returncode != 0
        last_line = result.stderr.strip().splitlines()[-1]
        assert variable in last_line and name.lower() in last_line


def test_a_malformed_header_name_stops_start_up():
    result = start_django(FORWARD_REQUEST_HEADERS="x-trace id")

    assert result.returncode != 0
    assert "FORWARD_REQUEST_HEADERS" in result.stderr.strip().splitlines()[-1]


def test_in_byok_mode_a_callers_codex_token_header_never_leaves(gateway, upstream):
    with gateway.client() as client:
        client.post("/v1/echo", json={}, headers={"X-User-ID": "bea", "X-Codex-Token": "not-for-upstream"})

    assert "x-codex-token" not in upstream.last.headers


def test_a_descriptive_header_outside_ascii_is_left_out_not_refused(gateway, upstream):
    headers = [
        (b"X-User-ID", b"cam"),
        (b"x-codex-turn-metadata", b'{"cwd":"/home/caf\xc3\xa9"}'),
        (b"User-Agent", b"ok"),
    ]
    response = rawhttp.request(gateway.url, "POST", "/v1/echo", headers, b"{}")

    assert response.status == 200
    assert "x-codex-turn-metadata" not in upstream.last.headers
    assert upstream.last.headers["user-agent"] == "ok"


def test_a_cookie_the_upstream_sets_never_rides_on_another_request(gateway, upstream, settings):
    # OpenAI's edge sets cookies (__cf_bm). A worker's upstream client serves every caller: a
    # cookie kept from one trainee's answer would go upstream with everyone's next request.
    settings.OPENCLAW_URL = upstream.url.replace("127.0.0.1", "localhost")  # a jar keeps no IP's cookies
    upstream.extra_response_headers[:] = [(b"set-cookie", b"__cf_bm=from-alices-call; Path=/; HttpOnly")]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client() as client:
        first = client.post("/v1/chat/completions", json=body, headers={"X-User-ID": "alice"})
        second = client.post("/v1/chat/completions", json=body, headers={"X-User-ID": "bob"})

    assert first.status_code == second.status_code == 200
    assert upstream.last.headers["x-forwarded-user"] == "bob"
    assert "cookie" not in upstream.last.headers
    assert "set-cookie" not in second.headers
