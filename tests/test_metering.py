"""Exact metering of every call against a real upstream on loopback: streams asked for
their usage, usage split into input / cached / output, unknown kept apart from 0, and
complete streams logged with the upstream's status."""

import json
from datetime import date

import httpx
import openai
import pytest

from billing.models import MonthlyUsage, Plan
from tests.personas import trainee
from tests.upstream import chunk_event

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count my words please"}]}


def month_of(user_id: str) -> MonthlyUsage:
    return MonthlyUsage.objects.get(user_id=user_id, month=date.today().replace(day=1))


def split_usage(row) -> tuple:
    """A log row's or a month's (input, cached input, output, total) tokens."""
    return (row.input_tokens, row.cached_input_tokens, row.output_tokens, row.total_tokens)


def events(body: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


@pytest.fixture
def sdk(gateway):
    def make(user_id: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{gateway.url}/v1",
            api_key="sk-trainee-own-key",
            default_headers={"X-User-ID": user_id},
            max_retries=0,
            timeout=5,
        )

    return make


def test_a_stream_without_include_usage_is_logged_and_charged_the_upstreams_exact_usage(gateway, upstream, settings):
    settings.GATEWAY_IDENTITY = "key"
    Plan.objects.update_or_create(tier="tier1", defaults={"monthly_requests": 100, "monthly_tokens": 10_000})
    _, key = trainee("lena", tier="tier1")
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers={"X-Gateway-Key": key})

    # The upstream was asked for usage and sent it; the client gets every other event of
    # the upstream's, byte for byte, and no usage chunk.
    assert json.loads(upstream.last.body)["stream_options"] == {"include_usage": True}
    sent = events(upstream.sent_body)
    usage_chunk = [event for event in sent if b'"choices": []' in event]
    assert len(usage_chunk) == 1
    assert response.content == b"".join(event for event in sent if event not in usage_chunk)
    assert response.content.endswith(b"data: [DONE]\n\n")
    [row] = gateway.log_rows()
    # 4 words in, 12 words out (the stub counts a word as a token).
    assert (row.status, split_usage(row)) == (200, (4, 0, 12, 16))
    month = month_of("lena")
    assert (month.requests, split_usage(month), month.unknown_usage_requests) == (1, (4, 0, 12, 16), 0)


def test_a_client_that_asked_for_usage_gets_the_upstreams_chunk_unchanged(gateway, upstream):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=body, headers={"X-User-ID": "mia"})

    assert response.content == upstream.sent_body
    assert b'"choices": [], "usage": {"prompt_tokens": 4' in response.content
    [row] = gateway.log_rows()
    assert row.total_tokens == 16


def test_the_sdks_streams_that_never_ask_for_usage_are_metered(sdk, gateway, upstream):
    # litellm, langchain-openai and openai-agents stream chat exactly like this.
    chunks = list(sdk("nils").chat.completions.create(**CHAT, stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks).endswith("You said: count my words please")
    assert all(chunk.choices for chunk in chunks)
    [row] = gateway.log_rows()
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (4, 12, 16)


def test_passthrough_forwards_the_body_byte_for_byte_and_records_unknown_usage(gateway, upstream, settings):
    settings.STREAM_USAGE = "passthrough"
    body = b'{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "application/json", "X-User-ID": "ola"}
        )

    assert upstream.last.body == body
    assert response.content == upstream.sent_body
    [row] = gateway.log_rows()
    assert (row.status, row.total_tokens, row.input_tokens) == (200, None, None)
    month = month_of("ola")
    assert (month.requests, month.total_tokens, month.unknown_usage_requests) == (1, 0, 1)


def test_a_sync_sdk_stream_that_closes_after_done_is_logged_200(sdk, gateway, upstream):
    # The upstream ends its body only after the client is gone: openai-python's sync
    # stream closes as soon as it has read [DONE].
    chunks = list(sdk("pia").chat.completions.create(**{**CHAT, "model": "late-end"}, stream=True))

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert upstream.holding_end.is_set()
    assert upstream.disconnected.wait(2), "the gateway kept the upstream open"
    [row] = gateway.log_rows()
    assert (row.status, row.total_tokens) == (200, 16)


def test_a_client_leaving_mid_content_is_still_499_and_closes_the_upstream(gateway, upstream):
    with (
        gateway.client() as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "gated", "stream": True}) as response,
    ):
        assert next(response.iter_raw()) == chunk_event("first")

    assert upstream.disconnected.wait(2), "the gateway kept the upstream stream open"
    [row] = gateway.log_rows()
    assert (row.status, row.total_tokens) == (499, None)


RESPONSES = {
    "model": "gpt-4o",
    "instructions": "You are a terse assistant",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "say hi"}]}],
    "prompt_cache_key": "thread-1",
    "stream": True,
}


def test_a_responses_stream_logs_and_charges_input_cached_output_and_total(gateway, upstream):
    with gateway.client() as client:
        response = client.post("/v1/responses", json=RESPONSES, headers={"X-User-ID": "quinn"})

    assert json.loads(upstream.last.body) == RESPONSES  # never rewritten
    assert response.content == upstream.sent_body
    assert b"event: response.completed" in response.content
    [row] = gateway.log_rows()
    # 5 instruction words (cached under the prompt_cache_key) + 2 input words; 10 out.
    assert (row.status, split_usage(row)) == (200, (7, 5, 10, 17))
    assert split_usage(month_of("quinn")) == (7, 5, 10, 17)


def test_a_responses_stream_the_client_leaves_after_completed_is_logged_200(gateway, upstream):
    # The Codex CLI closes the connection as soon as it has response.completed.
    with (
        gateway.client() as client,
        client.stream("POST", "/v1/responses", json={**RESPONSES, "model": "late-end"}) as response,
    ):
        received = b""
        for chunk in response.iter_raw():
            received += chunk
            if b"event: response.completed" in received and received.endswith(b"\n\n"):
                break

    assert upstream.disconnected.wait(2)
    [row] = gateway.log_rows()
    assert (row.status, row.cached_input_tokens, row.total_tokens) == (200, 5, 17)


def test_a_json_responses_call_and_embeddings_are_metered(sdk, gateway, upstream):
    client = sdk("rita")
    reply = client.responses.create(model="gpt-4o", input="two words")
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["one two three", "four"])
    encoded = client.embeddings.create(model="text-embedding-3-small", input="five six", encoding_format="base64")

    assert reply.output_text.endswith("You said: two words")
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 16
    assert isinstance(encoded.data[0].embedding, str)
    rows = gateway.log_rows()
    assert [(r.endpoint, r.input_tokens, r.output_tokens, r.total_tokens) for r in rows] == [
        ("/v1/responses", 2, 10, 12),
        ("/v1/embeddings", 4, 0, 4),
        ("/v1/embeddings", 2, 0, 2),
    ]


def test_reads_and_upstream_errors_use_no_tokens_but_a_model_call_without_usage_is_unknown(gateway, upstream):
    with gateway.client() as client:
        client.get("/v1/models", headers={"X-User-ID": "sam"})
        client.get("/v1/status/500", headers={"X-User-ID": "sam"})
        client.post("/v1/echo", json={"model": "m"}, headers={"X-User-ID": "sam"})

    rows = gateway.log_rows()
    assert [(r.endpoint, r.status, r.total_tokens) for r in rows] == [
        ("/v1/models", 200, 0),
        ("/v1/status/500", 500, 0),
        ("/v1/echo", 200, None),
    ]
    month = month_of("sam")
    assert (month.requests, month.total_tokens, month.unknown_usage_requests) == (3, 0, 1)


def test_a_refused_request_still_names_its_model(gateway, upstream):
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=CHAT, headers={"X-User-ID": "not valid!"})

    assert response.status_code == 400
    [row] = gateway.log_rows()
    assert (row.status, row.model, row.total_tokens) == (400, "gpt-4o-mini", 0)


def test_a_codex_shaped_turn_is_metered_with_its_cached_prompt(gateway, upstream):
    # The Codex CLI sends its system prompt as a developer message, no `instructions`.
    turn = {
        "model": "gpt-4o-mini",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be a careful agent"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say hi"}]},
        ],
        "prompt_cache_key": "0199a8d2-thread",
        "stream": True,
        "store": False,
    }
    with gateway.client() as client:
        response = client.post("/v1/responses", json=turn, headers={"X-User-ID": "codi", "session-id": "s-1"})

    assert response.status_code == 200
    [row] = gateway.log_rows()
    # 4 developer words cached + 2 user words in; 10 out.
    assert (row.status, split_usage(row)) == (200, (6, 4, 10, 16))


def test_a_model_call_the_client_gives_up_on_before_any_answer_has_unknown_usage(gateway, upstream):
    # The upstream got the call and may have served (and billed) it: unknown, not 0.
    with gateway.client() as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/hang", json={"model": "m"}, headers={"X-User-ID": "ugo"}, timeout=httpx.Timeout(5, read=0.3))

    assert upstream.disconnected.wait(2)
    [row] = gateway.log_rows()
    assert (row.status, row.total_tokens) == (499, None)
    assert MonthlyUsage.objects.get(user_id="ugo").unknown_usage_requests == 1


def test_an_unreachable_upstream_used_nothing(gateway, upstream, settings):
    settings.OPENCLAW_URL = "http://127.0.0.1:9"
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=CHAT, headers={"X-User-ID": "val"})

    assert response.status_code == 502
    [row] = gateway.log_rows()
    assert (row.status, row.total_tokens) == (502, 0)
