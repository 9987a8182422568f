"""`make run`'s server: gunicorn with uvicorn workers, the stub upstream when OPENCLAW_URL
is unset, and a graceful stop that keeps every log row."""

import signal

import httpx
import openai

from gateway_project import serve
from proxy.models import RequestLog


def test_the_served_gateway_relays_to_the_bundled_stub_and_stops_cleanly(served_gateway):
    url, process = served_gateway
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-x", default_headers={"X-User-ID": "fresh"}, max_retries=0)

    completion = sdk.chat.completions.create(model="stub-mini", messages=[{"role": "user", "content": "ping"}])
    chunks = list(
        sdk.chat.completions.create(
            model="stub-mini",
            messages=[{"role": "user", "content": "ping"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)

    assert completion.choices[0].message.content.endswith("You said: ping")
    assert chunks[-1].usage.total_tokens == 10
    assert process.returncode == 0
    assert "OPENCLAW_URL is not set: relaying /v1 to the bundled stub upstream" in output
    rows = list(RequestLog.objects.order_by("id").values_list("user_id", "status", "total_tokens"))
    assert rows == [("fresh", 200, 10), ("fresh", 200, 10)]


def test_the_bundled_stub_starts_whatever_the_gateways_worker_count(monkeypatch):
    # uvicorn reads WEB_CONCURRENCY as its own worker count; `make run` passes it on.
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    stub, url = serve._start_stub()
    try:
        models = httpx.get(f"{url}/v1/models", timeout=5).json()
    finally:
        stub.terminate()
        stub.wait(10)

    assert "gpt-4o-mini" in [model["id"] for model in models["data"]]


def test_a_fresh_gateway_serves_the_responses_api_and_embeddings(served_gateway):
    url, process = served_gateway
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-x", default_headers={"X-User-ID": "fresh"}, max_retries=0)

    with sdk.responses.stream(model="gpt-4o-mini", input="ping") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    vectors = sdk.embeddings.create(model="text-embedding-3-small", input="ping pong")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)

    assert "".join(deltas).endswith("You said: ping")
    assert final.usage.input_tokens == 1
    assert len(vectors.data[0].embedding) == 16
    rows = list(RequestLog.objects.order_by("id").values_list("endpoint", "status", "total_tokens"))
    assert rows == [("/v1/responses", 200, 10), ("/v1/embeddings", 200, 2)]
