"""Bad input is refused with a clear OpenAI-shaped error: nothing forwarded, nothing
charged, exactly one access-log row, and the gateway keeps serving."""

import json

import pytest

from billing.models import MonthlyUsage
from tests import rawhttp

TEN_MIB = 10 * 1024 * 1024
SMALL_LIMIT = 64 * 1024


def assert_refused_cleanly(gateway, upstream, status: int, code: str | None = None) -> None:
    assert upstream.seen == []
    assert [row.status for row in gateway.log_rows()] == [status]
    assert not MonthlyUsage.objects.exists()
    with gateway.client() as client:
        assert client.get("/health").status_code == 200, "the gateway stopped serving"


def error_of(response: rawhttp.RawResponse) -> dict:
    return json.loads(response.body)["error"]


def test_a_declared_body_over_the_limit_is_refused_before_any_of_it_is_sent(gateway, upstream):
    with rawhttp.connect(gateway.url) as sock:
        # Expect: 100-continue: a client waits for the go-ahead before sending the body.
        headers = [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(TEN_MIB + 1).encode()),
            (b"Expect", b"100-continue"),
            (b"X-User-ID", b"uploader"),
        ]
        sock.sendall(rawhttp.head("POST", "/v1/files", headers))
        response = rawhttp.read_response(sock)

    assert response.status == 413
    error = error_of(response)
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    assert str(TEN_MIB) in error["message"]
    assert response.closed, "the rest of the upload must not be read"
    [row] = gateway.log_rows()
    assert (row.user_id, row.endpoint) == ("uploader", "/v1/files")
    assert_refused_cleanly(gateway, upstream, 413)


def test_a_chunked_body_is_refused_at_the_limit_without_waiting_for_its_end(gateway, upstream, settings):
    settings.MAX_REQUEST_BYTES = SMALL_LIMIT
    chunk = b"x" * 16 * 1024
    with rawhttp.connect(gateway.url) as sock:
        headers = [(b"Content-Type", b"application/octet-stream"), (b"Transfer-Encoding", b"chunked")]
        sock.sendall(rawhttp.head("POST", "/v1/files", headers))
        for _ in range(5):  # 80 KiB, and the terminating chunk never comes
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        response = rawhttp.read_response(sock)

    assert response.status == 413
    assert error_of(response)["code"] == "request_too_large"
    assert_refused_cleanly(gateway, upstream, 413)


def test_a_real_client_sending_too_much_gets_the_413(gateway, upstream, settings):
    settings.MAX_REQUEST_BYTES = SMALL_LIMIT
    with gateway.client() as client:
        response = client.post("/v1/files", content=b"x" * (4 * SMALL_LIMIT), headers={"X-User-ID": "bulky"})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert_refused_cleanly(gateway, upstream, 413)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_at_the_limit_is_relayed_whole(gateway, upstream, settings, chunked):
    settings.MAX_REQUEST_BYTES = SMALL_LIMIT
    body = b"y" * SMALL_LIMIT
    content = iter([body[: SMALL_LIMIT // 2], body[SMALL_LIMIT // 2 :]]) if chunked else body
    with gateway.client() as client:
        response = client.post("/v1/echo", content=content, headers={"Content-Type": "application/octet-stream"})

    assert response.status_code == 200
    assert upstream.last.body == body


def test_a_json_body_that_does_not_parse_is_an_invalid_request_error(gateway, upstream):
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", content=b"\xff{", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json")
    assert_refused_cleanly(gateway, upstream, 400)


@pytest.mark.parametrize(
    "user_id",
    [b"u" * 5000, b"\xff\xfe\xfd", "caf\u00e9".encode("latin-1"), b"alice bob", b"%00", b"\xc3\xa9t\xc3\xa9"],
    ids=["5000-chars", "not-utf8", "latin1", "space", "percent", "utf8"],
)
def test_an_absurd_user_id_is_a_400(gateway, upstream, user_id):
    response = rawhttp.request(gateway.url, "GET", "/v1/models", [(b"X-User-ID", user_id)])

    assert response.status == 400
    assert error_of(response)["code"] == "invalid_user_id"
    [row] = gateway.log_rows()
    assert row.user_id == ""
    assert_refused_cleanly(gateway, upstream, 400)


@pytest.mark.parametrize("auth_mode", ["openai", "codex"])
@pytest.mark.parametrize(
    "key", [b"gk_" + b"k" * 5000, b"k" * 5000, b"gk_\xff\xfe" + b"a" * 40], ids=["5000-gk", "5000", "not-utf8"]
)
def test_an_absurd_gateway_key_is_a_401(gateway, upstream, settings, auth_mode, key):
    settings.AUTH_MODE, settings.GATEWAY_IDENTITY = auth_mode, "key"
    header = b"X-Gateway-Key" if auth_mode == "openai" else b"Authorization"
    value = key if auth_mode == "openai" else b"Bearer " + key
    response = rawhttp.request(gateway.url, "GET", "/v1/models", [(header, value)])

    assert response.status == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert_refused_cleanly(gateway, upstream, 401)


@pytest.mark.parametrize(
    "header",
    [
        (b"X-Junk", b"\x01\x02control"),
        (b"X-Junk", b"line\rbreak"),
        (b"Bad Header", b"space in the name"),
        (b"Content-Length", b"-5"),
        (b"Transfer-Encoding", b"gzip, chunked, identity"),
    ],
    ids=["control-chars", "bare-cr", "space-in-name", "bad-length", "bad-transfer-encoding"],
)
def test_malformed_headers_get_a_clean_4xx_and_the_gateway_keeps_serving(gateway, upstream, header):
    try:
        status = rawhttp.request(gateway.url, "POST", "/v1/chat/completions", [header], b'{"model": "m"}').status
    except ConnectionError:
        status = None  # the HTTP parser hung up on it: clean, as long as the gateway keeps serving

    assert status is None or 400 <= status < 500
    assert upstream.seen == []
    assert len(gateway.log_rows()) <= 1
    with gateway.client() as client:
        assert client.get("/v1/models", headers={"X-User-ID": "after"}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        (b"X-User-ID", b"a" * 200_000),
        (b"X-Junk", b"j" * 200_000),
        (b"Content-Type", b"application/json; charset=no-such-codec"),
        (b"Accept", b"*/*; q=" + b"9" * 5000),
    ],
    ids=["huge-user-id", "huge-junk", "unknown-charset", "absurd-accept"],
)
def test_odd_but_parseable_headers_never_cause_a_5xx(gateway, upstream, header):
    response = rawhttp.request(gateway.url, "POST", "/v1/echo", [header], b'{"model": "m"}')

    assert response.status < 500, response.body
    assert len(gateway.log_rows()) == 1
    assert all("x-junk" not in seen.headers for seen in upstream.seen)


@pytest.mark.parametrize("header", ["OpenAI-Organization", "OpenAI-Project", "Accept", "Authorization"])
def test_non_ascii_values_of_forwarded_headers_are_refused_not_forwarded(gateway, upstream, header):
    value = b"org-\xe9\xff"
    response = rawhttp.request(gateway.url, "GET", "/v1/models", [(header.encode(), value)])

    assert response.status == 400, response.body
    assert json.loads(response.body)["error"]["code"] == "invalid_header"
    assert upstream.seen == []
    assert [row.status for row in gateway.log_rows()] == [400]
    assert not MonthlyUsage.objects.exists()  # refused before anything was charged
