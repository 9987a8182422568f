"""The PostHog export, against a fake PostHog capture endpoint on loopback: one event per
model call with its row's numbers, nothing about the caller beyond their id, and a PostHog
that is slow, failing or gone never costs the relay a response or the access log a row."""

import json
import subprocess
import sys
from datetime import date
from decimal import Decimal

import httpx
import pytest
from prometheus_client import REGISTRY

from billing.models import ModelPrice
from proxy import analytics
from proxy.accesslog import access_log
from tests.servers import BASE_DIR, GatewayProcess, ServerThread, closed_port_url

PRICES = {  # USD per million input, cached input and output tokens
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.075"), Decimal("0.60")),
    "gpt-4o": (Decimal("2.50"), Decimal("1.25"), Decimal("10.00")),
    "text-embedding-3-small": (Decimal("0.02"), Decimal("0.02"), Decimal("0")),
}
PROMPT = "purple elephants negotiate quietly"
CALLER_KEY = "sk-caller-secret-0123456789"
PROJECT_KEY = "phc_test_project_key"


@pytest.fixture
def fake_posthog(gateway, settings, monkeypatch):
    """The export switched on and pointed at a fake PostHog of the test's own (a post still
    in flight when the test ends reaches no later test); the SDK's retries follow at once."""
    import posthog.consumer

    from tests.fake_posthog import FakePostHog

    app = FakePostHog()
    server = ServerThread(app)
    app.url = server.url
    settings.POSTHOG_API_KEY = PROJECT_KEY
    settings.POSTHOG_HOST = app.url
    monkeypatch.setattr(posthog.consumer, "_backoff", lambda attempt, retry_after: None)
    yield app
    app.release()
    gateway.server.call(access_log.flush())
    gateway.server.call(analytics.close(timeout=5))
    server.stop()


def set_prices() -> None:
    for model, (input_price, cached, output) in PRICES.items():
        ModelPrice.objects.create(
            model=model,
            effective_from=date(2020, 1, 1),
            input_per_million=input_price,
            cached_input_per_million=cached,
            output_per_million=output,
        )


def dropped() -> float:
    return REGISTRY.get_sample_value("gateway_analytics_events_dropped_total") or 0.0


def chat(client, user: str, model: str = "gpt-4o-mini", **extra):
    return client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra},
        headers={"X-User-ID": user, "Authorization": f"Bearer {CALLER_KEY}"},
    )


def usd(amount: Decimal) -> float:
    return float(amount / 10**6)


def test_each_model_call_becomes_one_event_with_its_rows_numbers(gateway, upstream, fake_posthog, settings):
    set_prices()
    settings.RATE_LIMIT_PER_MINUTE = 1
    auth = {"Authorization": f"Bearer {CALLER_KEY}"}
    with gateway.client() as client:
        assert chat(client, "ada").status_code == 200
        streamed = chat(client, "bo", stream=True)
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        responses = client.post(
            "/v1/responses",
            json={"model": "gpt-4o", "instructions": PROMPT, "input": "hi", "prompt_cache_key": "k"},
            headers={"X-User-ID": "cy", **auth},
        )
        assert responses.status_code == 200
        embeddings = client.post(
            "/v1/embeddings",
            json={"model": "text-embedding-3-small", "input": PROMPT},
            headers={"X-User-ID": "di", **auth},
        )
        assert embeddings.status_code == 200
        assert chat(client, "ed", model="unpriced-model").status_code == 200
        assert client.get("/v1/models", headers={"X-User-ID": "fay", **auth}).status_code == 200
        assert chat(client, "ada").status_code == 429  # refused by the gateway: never sent on
        settings.OPENCLAW_URL = closed_port_url()
        assert chat(client, "gus").status_code == 502  # the upstream could not be reached

    rows = {row.request_id: row for row in gateway.log_rows()}
    assert len(rows) == 8
    assert analytics.flush(10)

    events = fake_posthog.events
    exported = [row for row in rows.values() if row.status == 200 and row.method == "POST"]
    assert len(exported) == 5
    assert sorted(event["properties"]["request_id"] for event in events) == sorted(r.request_id for r in exported)
    by_request = {event["properties"]["request_id"]: event for event in events}
    for row in exported:
        event = by_request[row.request_id]
        found = event["properties"]
        assert event["event"] == ("$ai_embedding" if row.endpoint == "/v1/embeddings" else "$ai_generation")
        assert event["distinct_id"] == row.user_id
        assert found["$ai_model"] == row.model
        assert found["$ai_provider"] == "openai"
        assert found["$ai_http_status"] == 200
        assert found["$ai_latency"] == row.latency_ms / 1000
        assert found["$ai_trace_id"] == row.request_id
        assert found["endpoint"] == row.endpoint
        assert found["$ai_input_tokens"] == row.input_tokens
        assert found["$ai_output_tokens"] == row.output_tokens
        assert found["$ai_cache_read_input_tokens"] == row.cached_input_tokens
        assert found["$ai_total_tokens"] == row.total_tokens
        assert found["$process_person_profile"] is False
        assert "$ai_is_error" not in found
        if row.model not in PRICES:
            # Unknown cost is left out, never sent as 0.
            assert row.cost_pico_usd is None
            assert not any("cost" in name for name in found)
            continue
        # The row's exact cost, and its parts worked out again from the prices.
        assert found["$ai_total_cost_usd"] == float(Decimal(row.cost_pico_usd) / 10**12)
        input_price, cached_price, output_price = PRICES[row.model]
        uncached = row.input_tokens - row.cached_input_tokens
        assert found["$ai_input_cost_usd"] == usd(uncached * input_price + row.cached_input_tokens * cached_price)
        assert found["$ai_output_cost_usd"] == usd(row.output_tokens * output_price)

    cached = rows[responses.headers["x-request-id"]]
    assert cached.cached_input_tokens > 0 and by_request[cached.request_id]["properties"]["$ai_input_cost_usd"] > 0
    # Nothing about what was said, by whom, from where, or with which key.
    sent = b"".join(post.body for post in fake_posthog.posts).decode()
    for secret in [PROMPT, "purple", CALLER_KEY, "Authorization", "127.0.0.1", *(r.ip_hash for r in rows.values())]:
        assert secret not in sent
    assert {post.headers.get("content-encoding") for post in fake_posthog.posts} == {"gzip"}
    assert all(json.loads(post.body)["api_key"] == PROJECT_KEY for post in fake_posthog.posts)


def test_every_call_an_upstream_answered_is_exported_and_no_refusal_is(gateway, upstream, fake_posthog, settings):
    settings.RATE_LIMIT_PER_MINUTE = 6
    with gateway.client() as client:
        statuses = [chat(client, "hal").status_code for _ in range(5)]
        statuses.append(chat(client, "hal", model="status-500").status_code)  # the upstream's own error
        statuses.append(chat(client, "hal").status_code)  # over the rate limit: the gateway's refusal
        malformed = chat(client, "not an id!")  # refused by the gateway before forwarding
        settings.OPENCLAW_URL = closed_port_url()
        statuses.append(chat(client, "ivo").status_code)  # no upstream answered

    assert (statuses, malformed.status_code) == ([200] * 5 + [500, 429, 502], 400)
    rows = gateway.log_rows()
    assert [row.upstream for row in rows] == ["default"] * 6 + ["", "", ""]
    assert analytics.flush(10)
    assert sorted(event["properties"]["$ai_http_status"] for event in fake_posthog.events) == [200] * 5 + [500]
    [failed] = [event for event in fake_posthog.events if event["properties"]["$ai_http_status"] == 500]
    assert (failed["properties"]["$ai_model"], failed["properties"]["$ai_is_error"]) == ("status-500", True)


def test_a_call_the_client_left_is_exported_as_an_error_with_unknown_usage(gateway, upstream, fake_posthog):
    body = {"model": "gated", "stream": True, "messages": []}
    with (
        gateway.client() as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers={"X-User-ID": "ada"}) as response,
    ):
        assert b'"first"' in next(response.iter_raw())
    assert upstream.disconnected.wait(5)
    [row] = gateway.log_rows()
    assert (row.status, row.total_tokens, row.cost_pico_usd) == (499, None, None)

    assert analytics.flush(10)
    [event] = fake_posthog.events
    found = event["properties"]
    assert (found["$ai_http_status"], found["$ai_is_error"], found["request_id"]) == (499, True, row.request_id)
    assert not any("tokens" in name or "cost" in name for name in found)


def test_a_stalled_posthog_delays_no_response_and_costs_no_row(gateway, upstream, fake_posthog, monkeypatch):
    # One event per batch, and a post may wait far longer than this test takes.
    monkeypatch.setattr(analytics, "FLUSH_AT", 1)
    monkeypatch.setattr(analytics, "TIMEOUT", 60)
    fake_posthog.status = 500
    fake_posthog.hold()
    before = dropped()
    with gateway.client() as client:
        assert chat(client, "ada").status_code == 200
        gateway.log_rows()
        assert fake_posthog.held.wait(10)  # the SDK's first post is now waiting on PostHog

        # Meanwhile the relay answers and the log is written as ever.
        assert [chat(client, user).status_code for user in ("bo", "cy", "di")] == [200, 200, 200]
        rows = gateway.log_rows()
    assert [row.status for row in rows] == [200, 200, 200, 200]
    assert not fake_posthog.posts  # still holding the first post: nothing answered yet
    assert dropped() == before

    fake_posthog.release()
    assert analytics.flush(10)
    # Each event was posted 1 + MAX_RETRIES times, answered 500, then dropped and counted.
    assert dropped() == before + 4
    attempts = [event["properties"]["request_id"] for post in fake_posthog.posts for event in post.events]
    assert sorted(attempts) == sorted([row.request_id for row in rows] * (1 + analytics.MAX_RETRIES))
    assert not fake_posthog.events


def test_a_posthog_that_refuses_connections_costs_nothing_but_its_events(gateway, upstream, fake_posthog, settings):
    settings.POSTHOG_HOST = closed_port_url()
    before = dropped()
    with gateway.client() as client:
        assert [chat(client, user).status_code for user in ("ada", "bo", "cy")] == [200, 200, 200]
    assert [row.status for row in gateway.log_rows()] == [200, 200, 200]

    assert analytics.flush(10)
    assert dropped() == before + 3


def test_events_beyond_the_queue_are_dropped_and_counted_at_once(gateway, upstream, fake_posthog, monkeypatch):
    monkeypatch.setattr(analytics, "FLUSH_AT", 1)
    monkeypatch.setattr(analytics, "TIMEOUT", 60)
    monkeypatch.setattr(analytics, "MAX_QUEUE", 2)
    fake_posthog.hold()
    before = dropped()
    with gateway.client() as client:
        assert chat(client, "ada").status_code == 200
        gateway.log_rows()
        assert fake_posthog.held.wait(10)
        # The consumer holds the first event; two fit the queue, the last two do not.
        assert [chat(client, user).status_code for user in ("bo", "cy", "di", "ed")] == [200] * 4
    rows = gateway.log_rows()
    assert len(rows) == 5
    assert analytics.settle(10)
    assert dropped() == before + 2

    fake_posthog.release()
    assert analytics.flush(10)
    assert [event["distinct_id"] for event in fake_posthog.events] == ["ada", "bo", "cy"]
    assert dropped() == before + 2


def test_shutdown_sends_the_events_still_queued(gateway, upstream, fake_posthog, monkeypatch):
    monkeypatch.setattr(analytics, "FLUSH_INTERVAL", 3600)  # nothing leaves but for the shutdown
    with gateway.client() as client:
        assert chat(client, "ada").status_code == 200
        assert chat(client, "bo").status_code == 200
    gateway.log_rows()
    assert analytics.settle(10)
    assert not fake_posthog.posts

    gateway.server.call(analytics.close(timeout=5))
    assert sorted(event["distinct_id"] for event in fake_posthog.events) == ["ada", "bo"]


def test_shutdown_gives_a_stalled_posthog_a_bounded_time(gateway, upstream, fake_posthog, monkeypatch):
    monkeypatch.setattr(analytics, "FLUSH_AT", 1)
    monkeypatch.setattr(analytics, "TIMEOUT", 60)
    fake_posthog.status = 500
    fake_posthog.hold()
    before = dropped()
    with gateway.client() as client:
        assert chat(client, "ada").status_code == 200
        gateway.log_rows()
        assert fake_posthog.held.wait(10)
        assert chat(client, "bo").status_code == 200
    gateway.log_rows()
    assert analytics.settle(10)

    # Returns though PostHog still holds the first post; both events are counted as lost.
    gateway.server.call(analytics.close(timeout=0.2))
    assert fake_posthog.held.is_set() and not fake_posthog.posts
    assert dropped() == before + 2


def test_a_gateway_process_sends_its_last_events_as_it_stops(gateway, upstream):
    from tests.fake_posthog import FakePostHog

    fake = FakePostHog()
    server = ServerThread(fake)
    process = GatewayProcess(OPENCLAW_URL=upstream.url, POSTHOG_API_KEY=PROJECT_KEY, POSTHOG_HOST=server.url)
    try:
        with httpx.Client(base_url=process.url, timeout=10) as client:
            assert chat(client, "ada").status_code == 200
            # Sent in the ordinary way, FLUSH_INTERVAL after it was written.
            assert fake.accepted.wait(30)
            assert chat(client, "bo").status_code == 200
    finally:
        output = process.stop()  # SIGTERM at once: "bo" is still waiting for its batch
        server.stop()

    assert process.process.returncode == 0, output
    assert [event["distinct_id"] for event in fake.events] == ["ada", "bo"]


def test_without_a_key_nothing_is_exported_and_the_sdk_never_loaded(gateway, upstream, settings):
    settings.POSTHOG_API_KEY = None
    with gateway.client() as client:
        assert chat(client, "ada").status_code == 200
    assert len(gateway.log_rows()) == 1
    assert analytics._exporter is None

    # A fresh process serving the whole application: the SDK stays out of the worker.
    check = (
        "import os, sys\n"
        "os.environ.pop('POSTHOG_API_KEY', None)\n"
        "import gateway_project.asgi\n"
        "from proxy import analytics\n"
        "analytics.start()\n"
        "assert 'posthog' not in sys.modules, 'posthog was imported'\n"
    )
    environment = {"SECRET_KEY": "s" * 50, "DJANGO_SETTINGS_MODULE": "gateway_project.settings", "PATH": "/usr/bin"}
    done = subprocess.run([sys.executable, "-c", check], cwd=BASE_DIR, env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
