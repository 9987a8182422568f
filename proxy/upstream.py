"""All traffic to the upstreams goes through here: the pooled client, the header
allow-lists both ways, timeouts, and the mapping of transport failures to 502/504.
One call of `send` is one attempt; proxy.routing decides which attempts to make."""

import asyncio
import functools
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import aiohttp
import httpx
import yarl
from django.conf import settings
from django.http import HttpRequest
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

from gateway_project.lib import from_settings, request_ids
from gateway_project.lib.errors import GatewayError
from gateway_project.lib.from_settings import held
from gateway_project.lib.per_loop import PerLoop
from gateway_project.lib.wording import counted
from proxy import metrics
from proxy.routes import Upstream

# Caller headers the upstream may see, besides FORWARD_REQUEST_HEADERS: the OpenAI
# SDKs' own, and the Codex CLI's session and turn headers (`session_id` with an underscore
# included: some Codex builds send it so). Everything else (cookies, hop-by-hop headers,
# X-User-ID, X-Gateway-Key, Host, the SDKs' telemetry) stays at the gateway.
# A request whose API headers are not ASCII is refused; a client's descriptive header that
# is not (its User-Agent, session ids, x-codex-*) is left out rather than fail the call.
API_REQUEST_HEADERS = frozenset(("content-type", "accept", "openai-organization", "openai-project", "openai-beta"))
REQUEST_HEADERS = API_REQUEST_HEADERS | frozenset(
    (
        "user-agent",
        "session_id",
        "session-id",
        "thread-id",
        "originator",
        "x-client-request-id",
    )
)
# Upstream headers the caller may see, besides FORWARD_RESPONSE_HEADERS; Set-Cookie,
# Server, hop-by-hop and length headers never pass.
# The upstream's x-request-id reaches the caller as X-Upstream-Request-ID (response_headers).
RESPONSE_HEADERS = frozenset(("content-type", "content-encoding", "cache-control", "retry-after"))
# Header families passed whole: x-codex-* carries Codex's turn state (which keeps a
# conversation on one backend, for its prompt cache) and usage both ways.
REQUEST_HEADER_PREFIXES = ("x-codex-",)
RESPONSE_HEADER_PREFIXES = ("openai-", "x-ratelimit-", "x-codex-")

# An idle pooled connection is dropped after this long: shorter than the 5 s servers such as
# uvicorn and Node close theirs after (undici's default, for the same reason), so that a call
# rarely meets a connection the upstream is closing just as the request arrives.
KEEPALIVE_SECONDS = 4.0


def _new_transport(*, fresh: bool = False) -> AiohttpTransport:
    # limit=0: one connection per relayed call, never a queue; streams are long.
    reuse = {"force_close": True} if fresh else {"keepalive_timeout": KEEPALIVE_SECONDS}
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, **reuse),
        # Proxy variables in the environment must not reroute trainee traffic.
        trust_env=False,
        auto_decompress=False,
        # The caller's User-Agent passes as it came; none is made up for it.
        skip_auto_headers=("User-Agent",),
        # One session serves every caller: a cookie an upstream sets on one trainee's answer
        # (OpenAI's edge sets __cf_bm) must not go out with everyone's next request.
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    return AiohttpTransport(client=session)


_transports: PerLoop[AiohttpTransport] = PerLoop(_new_transport)
# Connections made for one request and closed after it: for the attempt after a reset, which
# must not take another pooled connection the upstream may have closed as well.
_fresh_transports: PerLoop[AiohttpTransport] = PerLoop(functools.partial(_new_transport, fresh=True))


def transport() -> AiohttpTransport:
    """The worker's pooled transport, bound to the running event loop.

    httpx's API over aiohttp's connection pool: httpcore's pool costs about a
    millisecond of CPU per request, a large share of a relay's whole budget. Requests go
    to the transport itself, not through an httpx.AsyncClient: the client's layers (auth,
    redirects, a cookie jar shared by every caller) are all things a relay must not do, and
    aiohttp's session keeps no cookies either.
    A new event loop (a new worker, or a test) gets a new transport.
    """
    return _transports.get()


async def close_client() -> None:
    pooled, fresh = _transports.pop(), _fresh_transports.pop()
    try:
        if pooled is not None:
            await pooled.aclose()
    finally:
        if fresh is not None:
            await fresh.aclose()


def request_headers(request: HttpRequest, user_id: str, request_id: str) -> dict[str, str]:
    """The caller's headers that may go upstream, and the gateway's own; each attempt adds
    its target's credential and extra headers (proxy.routing)."""
    forwarded, _, never = _header_rules()
    headers = {}
    # From the ASGI scope, not request.headers: Django drops every header whose name
    # holds an underscore (session_id).
    for raw_name, raw_value in request.scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        passes = (name in forwarded or name.startswith(REQUEST_HEADER_PREFIXES)) and name not in never
        if passes and (raw_value.isascii() or name in API_REQUEST_HEADERS):
            headers[name] = raw_value.decode("latin-1")
    refuse_non_ascii(headers)
    headers["X-Forwarded-User"] = user_id
    # The gateway's id for the call, never the caller's raw header (see gateway_project.lib.request_ids).
    headers["x-request-id"] = request_id
    # Relay bytes as they come: compression would hold back stream events.
    headers["Accept-Encoding"] = "identity"
    return headers


def refuse_non_ascii(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if not value.isascii():
            # HTTP header values are ASCII; a client's stray bytes would be re-encoded on
            # the way (or break the upstream's parser), so the request is refused instead.
            raise GatewayError(
                400,
                "invalid_header",
                f"The {name} header holds characters outside ASCII; header values must be plain ASCII.",
            )


def response_headers(response: httpx.Response) -> dict[str, str]:
    _, passed, never = _header_rules()
    headers = {
        name: value
        for name, value in response.headers.items()
        if (name in passed or name.startswith(RESPONSE_HEADER_PREFIXES)) and name not in never
    }
    # X-Request-ID is the gateway's (set on every /v1 response by RequestIds); the
    # upstream's own id for the call stays visible under another name.
    headers.pop("x-request-id", None)
    upstream_id = response.headers.get("x-request-id")
    if upstream_id and "x-request-id" not in never:
        headers[request_ids.UPSTREAM_HEADER] = upstream_id
    return headers


def retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds an upstream asks to wait (`retry-after-ms`, as OpenAI sends it, or
    `Retry-After` in seconds or as an HTTP date; `now`: the wall clock); None without one."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        seconds = _seconds(milliseconds)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError):
        return None


def _seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


@held
def _header_rules() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The headers that may go upstream, those that may come back, and those that never pass."""
    return (
        REQUEST_HEADERS | frozenset(settings.FORWARD_REQUEST_HEADERS),
        RESPONSE_HEADERS | frozenset(settings.FORWARD_RESPONSE_HEADERS),
        frozenset(settings.NEVER_FORWARDED_HEADERS),
    )


async def send(
    upstream: Upstream, method: str, path: str, headers: dict[str, str], body: bytes, *, fresh: bool = False
) -> httpx.Response:
    """Open the upstream's response (headers read, body not yet) or raise an UpstreamFailure.
    fresh: on a new connection, never a pooled one.

    Sent on the transport's aiohttp session itself, errors mapped by the transport's own map,
    the answer wrapped in an httpx.Response as the transport does: no httpx.Request built
    (headers normalised twice, the URL made a string again), ~60 of ~210 µs CPU per attempt."""
    timeout = _timeout(upstream.connect_timeout, read_timeout(upstream))
    try:
        with map_aiohttp_exceptions():
            client = (_fresh_transports if fresh else _transports).get().client
            response = await client.request(
                method,
                _url(upstream.base_url + path),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            )
    except httpx.HTTPError as error:
        raise failure(error, upstream.first_byte_timeout) from None
    return httpx.Response(response.status, headers=response.raw_headers, stream=_Body(response))


class _Body(httpx.AsyncByteStream):
    """An aiohttp response's body read through httpx (as httpx_aiohttp's own stream does)."""

    CHUNK_SIZE = 16 * 1024

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_aiohttp_exceptions():
            async for chunk in self.response.content.iter_chunked(self.CHUNK_SIZE):
                yield chunk

    async def aclose(self) -> None:
        with map_aiohttp_exceptions():
            self.response.release()
            await self.response.wait_for_close()


def arrived_whole(response: httpx.Response) -> bytes | None:
    """The whole body when it came with the headers (up to UPSTREAM_HOLD_BYTES), else None."""
    stream = response.stream
    if not isinstance(stream, _Body):
        return None
    content = stream.response.content
    if not content.is_eof() or content.exception() is not None:
        return None  # still coming, or broken: read (and its failure mapped) as any other body
    if content.total_bytes > from_settings.get("UPSTREAM_HOLD_BYTES"):
        return None
    body = content.read_nowait()
    stream.response.release()  # all read: the connection goes back to the pool
    return body


@functools.lru_cache(maxsize=64)
def _timeout(connect: float, read: float) -> aiohttp.ClientTimeout:  # as the transport sets them
    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)


def read_timeout(upstream: Upstream) -> float:
    """The transport's read timeout: the longest silence allowed between two reads (the
    response headers included). A phase with a shorter limit is timed by proxy.routing."""
    return max(upstream.first_byte_timeout, upstream.first_event_timeout, upstream.idle_timeout)


def rest_of(raw: AsyncIterator[bytes], target: Upstream, *, started: bool | None = None) -> AsyncIterator[bytes]:
    """The rest of the body, for the relay. A JSON or other body: each read within the idle
    timeout (the transport's own read timeout when that is as short: no timer per chunk). An
    event stream (`started`: its first event is in, or not yet): each read within the idle
    timeout until its first event, then an event within the stream idle timeout of the one
    before: keep-alive comments do not hide a stall."""
    if started is None:
        if target.idle_timeout >= read_timeout(target):
            return raw
        return _events_bounded(raw, target.idle_timeout, target.idle_timeout, started=False, events_only=False)
    return _events_bounded(raw, target.idle_timeout, target.stream_idle, started=started, events_only=True)


class Silence(httpx.ReadTimeout):
    """Nothing came within the `seconds` an idle timeout allows."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"nothing for {seconds} s")
        self.seconds = seconds


async def _events_bounded(
    raw: AsyncIterator[bytes], idle: float, events: float, *, started: bool, events_only: bool
) -> AsyncIterator[bytes]:
    """Reads within `idle` seconds of each other until the first event, then (`events_only`)
    events within `events` seconds of each other, whatever comes between them."""
    loop = asyncio.get_running_loop()
    allowed = events if started else idle
    deadline = loop.time() + allowed
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await raw.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise Silence(allowed) from None
        if not events_only or b"data:" in chunk:
            started = started or events_only
            allowed = events if started else idle
            deadline = loop.time() + allowed
        elif not started:
            deadline = loop.time() + idle
        yield chunk


@functools.lru_cache(maxsize=1024)
def _url(url: str) -> yarl.URL:
    # Parsed once per distinct URL (callers use a handful of endpoints): parsing is about
    # half the cost of building a request, ~0.1 ms when the code has gone cold between
    # calls, and it sits before every first token. Quoted by httpx, then by aiohttp, as the
    # httpx transport sent it; aiohttp does not parse a URL object again.
    return yarl.URL(str(httpx.URL(url)))


class UpstreamFailure(GatewayError):
    """The upstream failed the call. `reached`: the request may have got there, so the
    upstream may have served (and billed) it although no answer came back. `kind`:
    connect, reset (closed before the status line), timeout or broken."""

    def __init__(self, *args, reached: bool, kind: str = "broken", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reached = reached
        self.kind = kind
        # The upstream that failed (set by proxy.routing).
        self.upstream = ""


def failure(error: httpx.HTTPError | TimeoutError, timeout: float | None = None) -> UpstreamFailure:
    """502 when the upstream cannot be reached or breaks the exchange, 504 when it goes
    silent for `timeout` seconds (UPSTREAM_TIMEOUT when not given)."""
    kind = failure_kind(error)
    metrics.upstream_failed(kind)
    if kind == "timeout":
        seconds = error.seconds if isinstance(error, Silence) else timeout
        seconds = settings.UPSTREAM_TIMEOUT if seconds is None else seconds
        return UpstreamFailure(
            504,
            "upstream_timeout",
            f"The upstream sent nothing for {counted(seconds, 'second')}. Try again; "
            "if it keeps happening, tell the operator.",
            type="server_error",
            reached=True,
            kind=kind,
        )
    return UpstreamFailure(
        502,
        "upstream_unavailable",
        "The upstream could not be reached or broke off the response. Try again; "
        "if it keeps happening, tell the operator.",
        type="server_error",
        reached=kind == "broken",
        kind=kind,
    )


def failure_kind(error: BaseException) -> str:
    """connect: no connection was made; reset: the connection closed before the status line
    (the request reached no application: a pooled connection the upstream had just closed,
    or a server going down); timeout: silence; broken: anything else."""
    if isinstance(error, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout, TimeoutError)):
        return "timeout"
    cause = error.__cause__
    if isinstance(cause, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return "connect"
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
        # httpx_aiohttp maps every aiohttp.ClientConnectionError to these: a server that
        # disconnected or reset before answering is one.
        return "connect" if cause is None else "reset"
    return "broken"
