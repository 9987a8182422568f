"""Properties of the relay over generated paths, headers and bodies (hypothesis): never a
5xx, refused requests never forwarded, forwarded ones forwarded as sent, one log row each."""

import json
import string
from urllib.parse import unquote

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from proxy.upstream import REQUEST_HEADER_PREFIXES, REQUEST_HEADERS
from tests import rawhttp

EXAMPLES = hypothesis_settings(
    max_examples=100,
    deadline=None,
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# What the upstream may see: the allow-list, the gateway's own headers, and those httpx sets.
UPSTREAM_MAY_SEE = set(REQUEST_HEADERS) | {
    "x-forwarded-user",
    "x-request-id",  # the gateway's own for the call (gateway_project.lib.request_ids)
    "authorization",
    "host",
    "accept-encoding",
    "content-length",
    "user-agent",
    "connection",
}
# Characters a request target may carry on the wire (no space, no query or fragment).
PATH_CHARACTERS = "".join(sorted(set(string.printable) - set(string.whitespace) - set("?#")))
TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=30)
# Header values as bytes: visible ASCII, spaces and tabs inside, and obs-text (0x80-0xFF).
HEADER_VALUE = st.binary(max_size=200).map(
    lambda raw: bytes(b for b in raw if b in (0x09, 0x20) or 0x21 <= b <= 0x7E or b >= 0x80).strip(b" \t")
)

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@pytest.fixture
def relay(gateway, upstream, settings):
    settings.RATE_LIMIT_PER_MINUTE = 1_000_000
    return gateway


def one_more_row(gateway, before: int) -> int:
    rows = len(gateway.log_rows())
    assert rows == before + 1, "not exactly one access-log row for the request"
    return rows


@EXAMPLES
@given(rest=st.text(alphabet=PATH_CHARACTERS, max_size=40))
def test_any_path_is_relayed_as_sent_under_v1_or_refused_with_400(relay, upstream, rest):
    path = "/v1/" + rest
    upstream.reset()
    before = len(relay.log_rows())

    response = rawhttp.request(relay.url, "GET", path, [])

    assert response.status < 500, response.body
    if upstream.seen:
        # Characters URIs may not carry raw (`{`, `|`…) are percent-encoded on the way: the same path.
        assert unquote(upstream.last.raw_path.decode()) == unquote(path)
        assert upstream.last.path.startswith("/v1/")
        assert ".." not in upstream.last.path.split("/")
    else:
        assert response.status == 400
        assert json.loads(response.body)["error"]["code"] == "invalid_path"
    one_more_row(relay, before)


@EXAMPLES
@given(headers=st.lists(st.tuples(TOKEN, HEADER_VALUE), max_size=8))
def test_headers_outside_the_allow_list_never_reach_the_upstream(relay, upstream, headers):
    upstream.reset()
    before = len(relay.log_rows())
    sent = [(name.encode(), value) for name, value in headers if name.lower() not in ("content-length", "host")]

    response = rawhttp.request(relay.url, "POST", "/v1/echo", sent, b"{}")

    assert response.status < 500, response.body
    for seen in upstream.seen:
        # The x-codex-* family passes whole, but never a header the gateway keeps (X-Codex-Token).
        family = {name for name in seen.headers if name.startswith(REQUEST_HEADER_PREFIXES)}
        assert set(seen.headers) - family <= UPSTREAM_MAY_SEE
        assert not family & settings.NEVER_FORWARDED_HEADERS
    one_more_row(relay, before)


def parses_as_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


@EXAMPLES
@given(
    body=st.one_of(st.binary(max_size=300), JSON_VALUE.map(lambda value: json.dumps(value).encode())),
    content_type=st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"text/plain", None]),
)
def test_any_body_is_relayed_verbatim_unless_declared_json_and_not_json(relay, upstream, body, content_type):
    upstream.reset()
    before = len(relay.log_rows())
    headers = [(b"Content-Type", content_type)] if content_type else []

    response = rawhttp.request(relay.url, "POST", "/v1/echo", headers, body)

    refused = bool(body) and content_type is not None and b"json" in content_type and not parses_as_json(body)
    if refused:
        assert response.status == 400
        assert json.loads(response.body)["error"]["code"] == "invalid_json"
        assert upstream.seen == []
    else:
        assert response.status == 200, response.body
        assert upstream.last.body == body
    one_more_row(relay, before)
