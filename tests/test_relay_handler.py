"""The /v1 handler makes the response in the request's own task, and ends it when the client
leaves; a cancel from outside (the server shutting down) still ends the request's task."""

import asyncio

import pytest
from django.http import HttpResponse

from gateway_project.asgi import RelayHandler

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/v1/chat/completions",
    "raw_path": b"/v1/chat/completions",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"content-type", b"application/json")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


class _Answering(RelayHandler):
    """The relay's handler with an answer of its own instead of the view's."""

    async def run_get_response(self, request):
        return HttpResponse(b'{"ok": true}', content_type="application/json")


def _client(left: asyncio.Event):
    """A client that sends its body, then stays until `left` is set."""
    body = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive():
        if body:
            return body.pop()
        await left.wait()
        return {"type": "http.disconnect"}

    return receive


def _not_reading(sending: asyncio.Event):
    """A connection the answer cannot be written to: the response stays mid-way."""

    async def send(message):
        sending.set()
        await asyncio.Event().wait()

    return send


def test_a_client_leaving_mid_response_ends_it_and_leaves_the_task_able_to_go_on(db):
    async def serve() -> int:
        left, sending = asyncio.Event(), asyncio.Event()
        handling = asyncio.create_task(_Answering().handle(SCOPE, _client(left), _not_reading(sending)))
        await sending.wait()
        left.set()
        await handling
        return handling.cancelling()

    assert asyncio.run(serve()) == 0


def test_a_cancel_from_outside_mid_response_still_ends_the_requests_task(db):
    async def serve() -> bool:
        sending = asyncio.Event()
        handling = asyncio.create_task(_Answering().handle(SCOPE, _client(asyncio.Event()), _not_reading(sending)))
        await sending.wait()
        handling.cancel()  # as uvicorn does once its graceful shutdown runs out
        with pytest.raises(asyncio.CancelledError):
            await handling
        return handling.cancelled()

    assert asyncio.run(serve())
