"""Request ids: one per /v1 request, so a trainee's complaint can be traced end to end.

The id is the caller's `X-Request-ID` when it is well-formed, else one the gateway makes.
It is returned to the caller on every /v1 response (refusals and streams included), sent
upstream as `X-Request-ID`, stored on the access-log row, and shown on every process log
line written while the request is served (RequestIdFilter in settings.LOGGING).

Stdlib only: settings.LOGGING imports this module while Django sets itself up.
"""

import contextvars
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from gateway_project.lib.asgi_types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
# The upstream's own id for the call, when it sends one in its X-Request-ID.
UPSTREAM_HEADER = "X-Upstream-Request-ID"
MAX_LENGTH = 64

# What proxies and SDKs send (UUIDs, `req_…`, `01HV…` ULIDs, dotted trace ids): no spaces,
# commas, quotes or control characters, so an id is safe in a header, a log line and a URL.
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_LENGTH)
# A key pasted into the wrong header must not end up in the log and the database.
_CREDENTIAL_PREFIXES = (b"sk-", b"gk_")
_HEADER_NAME = HEADER.lower().encode()
_SCOPE_KEY = "gateway.request_id"

_current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def well_formed(value: str) -> bool:
    """Whether `value` would be kept as a caller's request id."""
    raw = value.encode("latin-1", "replace")
    return _WELL_FORMED.fullmatch(raw) is not None and not raw.startswith(_CREDENTIAL_PREFIXES)


def generate() -> str:
    return uuid.uuid4().hex


def of(scope: Scope) -> str:
    """The request's id, chosen on first use and kept in the ASGI scope."""
    chosen = scope.get(_SCOPE_KEY)
    if chosen is None:
        chosen = scope[_SCOPE_KEY] = _choose(scope.get("headers", ()))
    return chosen


def _choose(headers) -> str:
    supplied = [value for name, value in headers if name.lower() == _HEADER_NAME]
    # Two ids for one request name none of them: a fresh one is made.
    if len(supplied) == 1:
        value = supplied[0]
        if _WELL_FORMED.fullmatch(value) and not value.startswith(_CREDENTIAL_PREFIXES):
            return value.decode("ascii")
    return generate()


def current() -> str:
    """The id of the request being served by this task; '' outside one."""
    return _current.get()


def detached(function: Callable[..., Any], *args: Any) -> Any:
    """Call `function` outside the current request: tasks it starts (a batch writer shared
    by every request) do not carry this request's id onto their own log lines."""
    context = contextvars.copy_context()
    context.run(_current.set, "")
    return context.run(function, *args)


class RequestIds:
    """ASGI middleware in front of /v1: chooses the id, binds it to the request's task,
    and puts it on the response, whatever part of the gateway answered (the relay, Django's
    500 page, a CORS preflight)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = of(scope)
        header = (_HEADER_NAME, request_id.encode("ascii"))

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", ()) if n.lower() != _HEADER_NAME]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = _current.set(request_id)
        try:
            await self.app(scope, receive, sending)
        finally:
            _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record ('-' outside a request), for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _current.get() or "-"
        return True
