"""Edges of the attempt loop found by reading it against real upstreams' habits: a budget
that a renamed fallback could dodge, the model list without a default upstream, a stream
that ends before its first event, keep-alive comments and slow bodies on the last chance,
and the caller's own OpenAI account headers kept from the operator's upstreams."""

import asyncio

from billing.models import MonthlyUsage, Plan
from proxy.models import Route, RouteTarget
from proxy.models import Upstream as UpstreamRow
from proxy.routes import Target
from tests.faulty_upstream import answer, at, route
from tests.personas import price, trainee
from tests.servers import ServerThread


class _Scripted:
    """An ASGI upstream that sends `chunks` (bytes, or a pause in seconds) after its headers."""

    def __init__(self, content_type: bytes, *chunks: bytes | float) -> None:
        self.content_type, self.chunks = content_type, chunks

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", self.content_type)]})
        for chunk in self.chunks:
            if isinstance(chunk, float):
                await asyncio.sleep(chunk)  # the upstream taking its time: what is tested
            else:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def chat(gateway, stream: bool = False, **headers: str):
    with gateway.client() as client:
        return client.post(
            "/v1/chat/completions", json={"model": "small", "stream": stream}, headers={"X-User-ID": "ann", **headers}
        )


def test_a_budgeted_call_never_falls_back_to_a_model_without_a_price(gateway, faulty, clock, monkeypatch, settings):
    settings.GATEWAY_IDENTITY = "key"
    price("small", "10", "5", "20")
    Plan.objects.update_or_create(
        tier="tier1", defaults={"monthly_budget_usd": 10, "monthly_requests": 100, "requests_per_minute": None}
    )
    _, key = trainee("pia", tier="tier1")
    bridge, fallback = faulty[0].play(then=answer(500)), faulty[1]
    route(monkeypatch, Target(at(bridge)), Target(at(fallback), model="openai/small"))

    response = chat(gateway, **{"X-Gateway-Key": key})

    # The fallback's model has no price: the budget could not count it, so it is not tried.
    assert response.status_code == 500
    assert len(fallback.seen) == 0
    [row] = gateway.log_rows()
    assert row.cost_pico_usd == 0
    assert MonthlyUsage.objects.get(user_id="pia").unknown_cost_requests == 0


def test_the_model_list_needs_no_default_upstream(gateway, settings):
    settings.OPENCLAW_URL = ""
    bridge = UpstreamRow.objects.create(name="bridge", base_url="http://bridge.test")
    RouteTarget.objects.create(route=Route.objects.create(model="gpt-5"), upstream=bridge)

    with gateway.client() as client:
        response = client.get("/v1/models", headers={"X-User-ID": "ana"})

    assert response.status_code == 200
    assert [model["id"] for model in response.json()["data"]] == ["gpt-5"]


def test_a_stream_that_ends_before_its_first_event_fails_over(gateway, faulty, clock, monkeypatch):
    server = ServerThread(_Scripted(b"text/event-stream"))
    try:
        empty = type("Empty", (), {"name": "empty", "url": server.url})
        route(monkeypatch, Target(at(empty)), Target(at(faulty[1])))
        response = chat(gateway, stream=True)
    finally:
        server.stop()

    assert response.status_code == 200 and "[DONE]" in response.text
    assert len(faulty[1].seen) == 1
    [row] = gateway.log_rows()
    assert (row.upstream, row.attempts) == (faulty[1].name, 2)


def test_keepalive_comments_longer_than_the_timeout_reach_the_caller_of_a_single_upstream(gateway, upstream, settings):
    # As OpenRouter sends ": OPENROUTER PROCESSING" while a model thinks: each comment is
    # activity, and with nothing to fail over to the stream goes out as it comes.
    comments = [b": PROCESSING\n\n", 0.1] * 5
    server = ServerThread(_Scripted(b"text/event-stream", *comments, b'data: {"choices":[]}\n\ndata: [DONE]\n\n'))
    settings.UPSTREAM_TIMEOUT = 0.3
    settings.OPENCLAW_URL = server.url
    try:
        response = chat(gateway, stream=True)
    finally:
        server.stop()

    assert response.status_code == 200
    assert response.text.startswith(": PROCESSING") and "[DONE]" in response.text


def test_a_single_upstreams_slow_json_body_is_not_cut_at_the_deadline(gateway, upstream, settings):
    server = ServerThread(_Scripted(b"application/json", *([b" ", 0.1] * 6), b'{"model":"small","choices":[]}'))
    settings.UPSTREAM_TIMEOUT = 0.3
    settings.UPSTREAM_DEADLINE = 0.4
    settings.OPENCLAW_URL = server.url
    try:
        response = chat(gateway)
    finally:
        server.stop()

    assert response.status_code == 200
    assert response.json()["model"] == "small"


def test_an_operator_keyed_upstream_gets_none_of_the_callers_own_account_headers(gateway, faulty, clock, monkeypatch):
    route(monkeypatch, Target(at(faulty[0], auth="api_key", api_key="sk-operator")))

    chat(gateway, **{"OpenAI-Organization": "org-caller", "OpenAI-Project": "proj-caller"})

    [seen] = faulty[0].seen
    assert {"openai-organization", "openai-project", "x-forwarded-user"}.isdisjoint(seen.headers)
    assert seen.headers["authorization"] == "Bearer sk-operator"
