"""Refusing /v1 request bodies over MAX_REQUEST_BYTES without receiving them.

Django's ASGI handler reads the whole body into a temporary file before any view runs,
so the view alone could only refuse a huge upload after taking all of it in. This guard
sits in front of the /v1 handler: a declared Content-Length over the limit is not read at
all, and a chunked body is read only up to the limit. The request then still reaches the
view, with an empty or cut body and a mark, so the 413 is answered and logged like any
other refusal (one access-log row, nothing forwarded, nothing charged).
"""

import asyncio

from django.http import HttpRequest

from gateway_project.lib import from_settings
from gateway_project.lib.asgi_types import ASGIApp, Message, Receive, Scope, Send

_MARK = "gateway.body_too_large"
_END_OF_BODY: Message = {"type": "http.request", "body": b"", "more_body": False}


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = from_settings.get("MAX_REQUEST_BYTES")
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            scope[_MARK] = True
            receive = _refused()
        else:
            receive = _counted(scope, receive, limit)
        await self.app(scope, receive, send)


def exceeded(request: HttpRequest) -> bool:
    """Whether the guard cut this request's body short."""
    scope = getattr(request, "scope", None) or {}
    return bool(scope.get(_MARK))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _refused() -> Receive:
    """An empty body at once; afterwards nothing, so no more of the upload is read.

    Django listens for a disconnect while the view runs; that listener is cancelled when
    the response is sent, and the 413 closes the connection.
    """
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return dict(_END_OF_BODY)
        await asyncio.get_running_loop().create_future()  # never set
        return {"type": "http.disconnect"}

    return receive


def _counted(scope: Scope, receive: Receive, limit: int) -> Receive:
    received = 0
    cut: Receive | None = None

    async def counting() -> Message:
        nonlocal received, cut
        if cut is not None:
            return await cut()
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                scope[_MARK] = True
                cut = _refused()
                return await cut()
        return message

    return counting
