"""X-Request-ID: a trainee's complaint traced end to end, from the caller's response to the
upstream, the access-log row, admin and the process log."""

import logging
import re

import openai
import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from proxy import accesslog
from tests import rawhttp
from tests.logs import console_line
from tests.servers import closed_port_url

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
GENERATED = re.compile(r"[0-9a-f]{32}")
LIST = "/admin/proxy/requestlog/"


def chat(gateway, request_id: str | bytes | None = None, user: str = "alice", headers: dict | None = None):
    headers = {"X-User-ID": user, **(headers or {})}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    with gateway.client() as client:
        return client.post("/v1/chat/completions", json=CHAT, headers=headers)


@pytest.mark.parametrize(
    "request_id",
    [
        "0199a8d2-5f7e-7c31-9b4e-2f1d3c4b5a69",  # a UUID, as proxies and SDKs send
        "req_8f14e45fceea167a5a36dedd4bea2543",  # OpenAI's shape
        "trace.span:7-A_b",
        "x" * 64,
    ],
)
def test_a_well_formed_caller_id_is_kept_on_the_response_upstream_and_row(gateway, upstream, request_id):
    response = chat(gateway, request_id)

    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    assert upstream.last.headers["x-request-id"] == request_id
    [row] = gateway.log_rows()
    assert row.request_id == request_id


def test_a_missing_id_is_generated_once_per_request_and_the_same_everywhere(gateway, upstream):
    first, second = chat(gateway), chat(gateway)

    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED.fullmatch(request_id) for request_id in ids)
    assert ids[0] != ids[1]
    assert [seen.headers["x-request-id"] for seen in upstream.seen] == ids
    assert [row.request_id for row in gateway.log_rows()] == ids


@pytest.mark.parametrize(
    "supplied",
    [
        "x" * 65,  # too long for the column and the log
        "has space",
        "a,b",  # what two headers joined look like
        '"quoted"',
        "abc%0D%0ASet-Cookie:%20evil=1",  # an encoded header injection
        "<script>alert(1)</script>",
        b"caf\xc3\xa9",  # not ASCII
        "sk-" + "A" * 48,  # a key pasted into the wrong header stays out of logs and rows
        "gk_" + "A" * 43,
        "",
    ],
)
def test_a_malformed_caller_id_is_replaced_by_a_generated_one(gateway, upstream, supplied):
    response = chat(gateway, supplied)

    request_id = response.headers["x-request-id"]
    assert response.status_code == 200
    assert GENERATED.fullmatch(request_id)
    assert upstream.last.headers["x-request-id"] == request_id
    assert [name for name, _ in upstream.last.header_list].count("x-request-id") == 1
    [row] = gateway.log_rows()
    assert row.request_id == request_id
    assert "set-cookie" not in response.headers


def test_two_ids_in_one_request_name_none_of_them(gateway, upstream):
    response = rawhttp.request(
        gateway.url,
        "GET",
        "/v1/models",
        [(b"X-User-ID", b"alice"), (b"X-Request-ID", b"first"), (b"X-Request-ID", b"second")],
    )

    assert response.status == 200
    assert GENERATED.fullmatch(response.headers["x-request-id"])
    assert upstream.last.headers["x-request-id"] == response.headers["x-request-id"]


def test_the_upstreams_own_id_does_not_replace_the_gateways(gateway, upstream):
    with gateway.client() as client:
        refused = client.get("/v1/status/400", headers={"X-User-ID": "alice", "X-Request-ID": "mine-1"})
    answered = chat(gateway, "mine-2")

    # The test upstream answers /v1/status/* with its own x-request-id: req-123.
    assert (refused.headers["x-request-id"], refused.headers["x-upstream-request-id"]) == ("mine-1", "req-123")
    # The stub (as OpenAI) makes up an id of its own for every call.
    assert answered.headers["x-request-id"] == "mine-2"
    assert answered.headers["x-upstream-request-id"].startswith("req_")
    assert [row.request_id for row in gateway.log_rows()] == ["mine-1", "mine-2"]


def test_a_stream_carries_the_id_from_its_first_byte(gateway, upstream):
    with (
        gateway.client() as client,
        client.stream(
            "POST",
            "/v1/gated-stream",
            json={"stream": True},
            headers={"X-User-ID": "alice", "X-Request-ID": "stream-7"},
        ) as response,
    ):
        # Headers first, while the upstream still holds the rest of the stream.
        assert response.headers["x-request-id"] == "stream-7"
        assert upstream.last.headers["x-request-id"] == "stream-7"
        upstream.gate.set()
        response.read()

    [row] = gateway.log_rows()
    assert (row.status, row.request_id) == (200, "stream-7")


@pytest.fixture
def key_mode(settings):
    settings.GATEWAY_IDENTITY = "key"


def test_an_unknown_key_is_refused_with_the_id(gateway, upstream, key_mode):
    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-Gateway-Key": "gk_" + "A" * 43, "X-Request-ID": "who-am-i"})

    assert response.status_code == 401
    assert response.headers["x-request-id"] == "who-am-i"
    assert upstream.seen == []
    [row] = gateway.log_rows()
    assert (row.status, row.request_id) == (401, "who-am-i")


def test_a_rate_limited_call_is_refused_with_the_id(gateway, upstream, settings):
    settings.RATE_LIMIT_PER_MINUTE = 1
    chat(gateway, "allowed")
    response = chat(gateway, "over-the-limit")

    assert response.status_code == 429
    assert response.headers["x-request-id"] == "over-the-limit"
    assert [(row.status, row.request_id) for row in gateway.log_rows()] == [(200, "allowed"), (429, "over-the-limit")]


def test_a_body_over_the_limit_is_refused_with_the_id(gateway, upstream, settings):
    settings.MAX_REQUEST_BYTES = 1024
    with rawhttp.connect(gateway.url) as sock:
        headers = [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", b"1000000"),
            (b"X-User-ID", b"uploader"),
            (b"X-Request-ID", b"too-big"),
        ]
        sock.sendall(rawhttp.head("POST", "/v1/files", headers))
        response = rawhttp.read_response(sock)

    assert response.status == 413
    assert response.headers["x-request-id"] == "too-big"
    [row] = gateway.log_rows()
    assert (row.status, row.request_id) == (413, "too-big")


def test_an_unreachable_upstream_is_a_502_with_the_id_and_an_error_line_naming_it(gateway, upstream, settings, caplog):
    caplog.set_level(logging.WARNING)
    settings.OPENCLAW_URL = closed_port_url()
    response = chat(gateway, "upstream-down-1")

    assert response.status_code == 502
    assert response.headers["x-request-id"] == "upstream-down-1"
    [row] = gateway.log_rows()
    assert (row.status, row.request_id) == (502, "upstream-down-1")
    [line] = [record for record in caplog.records if record.getMessage().startswith("upstream failed")]
    # As the process log prints it (settings.LOGGING's console handler).
    assert "[upstream-down-1]: upstream failed POST /v1/chat/completions" in console_line(line)


def test_a_failure_nothing_maps_is_a_500_with_the_id(gateway, upstream, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a pipeline step")

    monkeypatch.setattr("proxy.views.model_of", broken)
    response = chat(gateway, "bug-report-9")

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-report-9"
    [row] = gateway.log_rows()
    assert (row.status, row.request_id) == (500, "bug-report-9")
    # Django's own error line for the request names it too.
    [error] = [record for record in caplog.records if record.name == "django.request"]
    assert "[bug-report-9]" in console_line(error)


def test_lines_off_any_request_show_a_dash_even_when_a_request_started_them(gateway, upstream, monkeypatch, caplog):
    # The access log's writer task is started by the first request to finish; its own lines
    # (a failed write here) belong to no request.
    real_insert = accesslog._insert
    failures = iter([OperationalError("the database is away")])

    async def flaky_insert(entries):
        error = next(failures, None)
        if error is not None:
            raise error
        return await real_insert(entries)

    monkeypatch.setattr("proxy.accesslog._insert", flaky_insert)
    monkeypatch.setattr("proxy.accesslog.RETRY_DELAYS", (0.0,))
    chat(gateway, "first-in")

    [row] = gateway.log_rows()
    assert row.request_id == "first-in"
    [line] = [record for record in caplog.records if record.getMessage().startswith("access log: could not write")]
    assert "[-]: access log" in console_line(line)


def test_admin_finds_a_row_by_its_id_through_the_index(gateway, upstream, client, django_user_model):
    chat(gateway, "complaint-42", user="alice")
    chat(gateway, "other-1", user="alice")
    generated = chat(gateway, user="bob").headers["x-request-id"]
    gateway.settle()
    operator = django_user_model.objects.create_superuser("operator", "operator@example.com", None)
    client.force_login(operator)

    with CaptureQueriesContext(connection) as captured:
        response = client.get(LIST, {"q": "complaint-42"})
    # Read now: the next request clears the connection's query log.
    queries = [query["sql"] for query in captured.captured_queries]
    by_generated = client.get(LIST, {"q": generated})
    by_user = client.get(LIST, {"q": "alice"})
    by_part = client.get(LIST, {"q": "complaint"})

    assert response.status_code == 200
    assert [row.request_id for row in response.context["cl"].result_list] == ["complaint-42"]
    assert '<td class="field-request_id">complaint-42</td>' in response.content.decode()
    assert [row.user_id for row in by_generated.context["cl"].result_list] == ["bob"]
    assert [row.request_id for row in by_user.context["cl"].result_list] == ["other-1", "complaint-42"]
    assert list(by_part.context["cl"].result_list) == []  # exact ids only
    assert [sql for sql in queries if "\"request_id\" = 'complaint-42'" in sql], queries
    assert [sql for sql in queries if " LIKE " in sql.upper()] == []


def test_the_openai_sdk_shows_the_trainee_the_id_to_report(gateway, upstream, settings):
    sdk = openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key="sk-trainee-own-key",
        default_headers={"X-User-ID": "trainee-1"},
        max_retries=0,
        timeout=5,
    )
    completion = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    settings.OPENCLAW_URL = closed_port_url()
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    ids = [completion._request_id, raised.value.request_id]
    assert all(GENERATED.fullmatch(request_id) for request_id in ids)
    assert [row.request_id for row in gateway.log_rows()] == ids


def test_a_browser_may_send_the_id_and_read_both_ids(gateway, upstream, settings):
    origin = "https://notebook.workshop.example"
    settings.CORS_ALLOWED_ORIGINS = [origin]
    asking = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-request-id",
    }
    with gateway.client() as client:
        preflight = client.options("/v1/chat/completions", headers=asking)
    response = chat(gateway, "from-a-notebook", headers={"Origin": origin})

    assert "x-request-id" in preflight.headers["access-control-allow-headers"]
    # Even the preflight, answered before the relay, has an id of its own.
    assert GENERATED.fullmatch(preflight.headers["x-request-id"])
    exposed = response.headers["access-control-expose-headers"]
    assert "x-request-id" in exposed and "x-upstream-request-id" in exposed
    assert response.headers["x-request-id"] == "from-a-notebook"
