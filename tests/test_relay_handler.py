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


# No test waits longer than this for what it awaits: a handler that never ends fails the test.
PATIENCE = 10


def _client(left: asyncio.Event, then: str = "http.disconnect"):
    """A client that sends its body, then stays until `left` is set: then the server hears
    `then` (what uvicorn says when the client has gone)."""
    body = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive():
        if body:
            return body.pop()
        await left.wait()
        return {"type": then}

    return receive


def _not_reading(sending: asyncio.Event):
    """A connection the answer cannot be written to: the response stays mid-way."""

    async def send(message):
        sending.set()
        await asyncio.Event().wait()

    return send


def test_a_client_leaving_mid_response_ends_it_and_leaves_the_task_able_to_go_on(db):
    async def serve() -> tuple[bool, int]:
        left, sending = asyncio.Event(), asyncio.Event()
        handling = asyncio.create_task(_Answering().handle(SCOPE, _client(left), _not_reading(sending)))
        await asyncio.wait_for(sending.wait(), PATIENCE)
        left.set()
        done, _ = await asyncio.wait({handling}, timeout=PATIENCE)  # without cancelling it
        return bool(done) and handling.exception() is None, handling.cancelling()

    assert asyncio.run(serve()) == (True, 0)


def test_a_cancel_from_outside_mid_response_still_ends_the_requests_task(db):
    async def serve() -> bool:
        sending = asyncio.Event()
        handling = asyncio.create_task(_Answering().handle(SCOPE, _client(asyncio.Event()), _not_reading(sending)))
        await asyncio.wait_for(sending.wait(), PATIENCE)
        handling.cancel()  # as uvicorn does once its graceful shutdown runs out
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(handling, PATIENCE)
        return handling.cancelled()

    assert asyncio.run(serve())


def test_a_server_message_the_handler_cannot_read_ends_the_response_with_its_error(db):
    async def serve() -> str:
        left, sending = asyncio.Event(), asyncio.Event()
        receive = _client(left, then="http.request")  # no ASGI server sends this after the body
        handling = asyncio.create_task(_Answering().handle(SCOPE, receive, _not_reading(sending)))
        await asyncio.wait_for(sending.wait(), PATIENCE)
        left.set()
        done, _ = await asyncio.wait({handling}, timeout=PATIENCE)  # without cancelling it
        return str(handling.exception()) if done else "still responding"

    assert "Invalid ASGI message after request body" in asyncio.run(serve())
