"""Broken streams as callers and operators meet them: the OpenAI SDK (chat and Responses), the
stream idle timeout of the default upstream, the operator's log line, the metrics and the bill."""

import json
import logging
import time

import openai
import pytest

from billing.models import MonthlyUsage
from proxy import metrics
from proxy.routes import Target
from tests.faulty_upstream import CUT, END, STALL, answer, at, chat_stream, events, route

ASK = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress", "model": "small"}


def sse(kind: str, payload: dict) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


def responses_stream(end: str):
    """A Responses API stream as OpenAI starts one: the response, its message, a first delta."""
    message = {"id": "m", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    at = {"item_id": "m", "output_index": 0, "content_index": 0}
    return events(
        sse("response.created", {"sequence_number": 0, "response": {**RESPONSE, "output": []}}),
        sse("response.output_item.added", {"sequence_number": 1, "output_index": 0, "item": message}),
        sse("response.content_part.added", {"sequence_number": 2, **at, "part": part}),
        sse("response.output_text.delta", {"sequence_number": 3, **at, "delta": "Hel", "logprobs": []}),
        end=end,
    )


def test_the_sdk_streams_one_completion_across_a_rescue(sdk, gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", "lo ", end=CUT))
    b = faulty[1].play(chat_stream("world"))
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="prefill"))

    chunks = list(sdk.chat.completions.create(**ASK, stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert {(c.id, c.model) for c in chunks} == {("chatcmpl-a", "small")}
    # The SDK closes as soon as it has [DONE]: still a whole call.
    [row] = gateway.log_rows()
    assert (row.status, row.attempts) == (200, 2)


def test_the_sdk_raises_on_a_stream_no_target_could_rescue(sdk, gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", end=END))
    route(monkeypatch, Target(at(a)), Target(at(faulty[1])))

    received = []
    with pytest.raises(openai.APIError, match="broke off the response"):
        for chunk in sdk.chat.completions.create(**ASK, stream=True):
            received.append(chunk)

    assert "".join(c.choices[0].delta.content or "" for c in received) == "Hel"
    [row] = gateway.log_rows()
    assert (row.status, row.attempts) == (502, 1)


@pytest.mark.parametrize(
    ("end", "code", "status"), [(CUT, "upstream_unavailable", 502), (STALL, "upstream_timeout", 504)]
)
def test_a_broken_responses_stream_ends_with_response_failed(gateway, faulty, clock, monkeypatch, end, code, status):
    a, b = faulty[0].play(responses_stream(end)), faulty[1]
    route(monkeypatch, Target(at(a, timeout=0.2)), Target(at(b), continuation="prefill"))

    with gateway.client() as client:
        response = client.post("/v1/responses", json={"model": "small", "input": "hi", "stream": True})

    kind, last = response.text.strip().splitlines()[-2:]
    failed = json.loads(last.removeprefix("data: "))
    assert kind == "event: response.failed"
    assert (failed["type"], failed["sequence_number"]) == ("response.failed", 4)
    assert (failed["response"]["id"], failed["response"]["status"]) == ("resp_1", "failed")
    assert failed["response"]["error"]["code"] == code
    assert "error" not in failed  # not a chat-style error event
    assert b.seen == []  # no rescue for /v1/responses
    [row] = gateway.log_rows()
    assert (row.status, row.total_tokens) == (status, None)


def test_the_sdks_responses_stream_helper_sees_the_failure_of_the_response_that_started(
    sdk, gateway, faulty, clock, monkeypatch
):
    route(monkeypatch, Target(at(faulty[0].play(responses_stream(END)))))

    with sdk.responses.stream(model="small", input="hi") as stream:
        kinds = [event.type for event in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()

    assert kinds[-1] == "response.failed"
    # The raw stream (no helper) yields the event; the caller reads the error from it.
    route(monkeypatch, Target(at(faulty[0].play(responses_stream(CUT)))))
    last = list(sdk.responses.create(model="small", input="hi", stream=True))[-1]
    assert (last.type, last.response.error.code) == ("response.failed", "upstream_unavailable")


def test_the_default_upstream_applies_the_stream_idle_timeout_after_the_first_event(
    gateway, faulty, settings, monkeypatch
):
    settings.OPENCLAW_URL = faulty[0].play(chat_stream("Hel", end=STALL)).url
    settings.STREAM_IDLE_TIMEOUT = 0.2  # UPSTREAM_TIMEOUT stays 60

    started = time.monotonic()
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={**ASK, "stream": True})

    assert time.monotonic() - started < 3
    error = json.loads(response.text.splitlines()[-2].removeprefix("data: "))["error"]
    assert (error["code"], "0.2 seconds" in error["message"]) == ("upstream_timeout", True)
    [row] = gateway.log_rows()
    assert (row.status, row.upstream) == (504, "default")


def test_the_wait_for_a_single_upstreams_first_event_is_not_the_stream_idle_timeout(gateway, faulty, settings):
    first = b'data: {"id": "c", "choices": []}\n\n'
    settings.OPENCLAW_URL = faulty[0].play(events(0.3, first, b"data: [DONE]\n\n")).url
    settings.STREAM_IDLE_TIMEOUT = 0.1

    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json={**ASK, "stream": True})

    assert response.text == first.decode() + "data: [DONE]\n\n"
    assert gateway.log_rows()[0].status == 200


def test_the_operator_reads_one_line_naming_both_upstreams_and_the_outcome(
    gateway, faulty, clock, monkeypatch, process_log
):
    a = faulty[0].play(chat_stream("Hel", end=CUT))
    b = faulty[1].play(chat_stream("lo"))
    route(monkeypatch, Target(at(a, api_key="sk-operator", auth="api_key")), Target(at(b), continuation="prefill"))

    with gateway.client() as client:
        client.post("/v1/chat/completions", json={**ASK, "stream": True}, headers={"Authorization": "Bearer sk-own"})

    [line] = [r.getMessage() for r in process_log.records if r.name == "proxy.rescue"]
    assert line == (
        "upstream a broke off a stream of /v1/chat/completions after it started (upstream_unavailable); "
        "rescued by upstream b (prefill)"
    )
    assert [r.levelno for r in process_log.records if r.name == "proxy.rescue"] == [logging.WARNING]
    assert "sk-" not in process_log.text


def test_rescues_are_counted_by_outcome(gateway, faulty, clock, monkeypatch):
    def counted() -> tuple[float, float]:
        return tuple(metrics.RESCUES.labels(outcome)._value.get() for outcome in ("rescued", "failed"))

    before = counted()
    route(
        monkeypatch,
        Target(at(faulty[0].play(chat_stream("a", end=CUT)))),
        Target(at(faulty[1]), continuation="prefill"),
    )
    with gateway.client() as client:
        client.post("/v1/chat/completions", json={**ASK, "stream": True})
    faulty[0].play(chat_stream("a", end=CUT))
    faulty[1].play(answer(500))
    with gateway.client() as client:
        client.post("/v1/chat/completions", json={**ASK, "stream": True})

    assert [after - then for after, then in zip(counted(), before, strict=True)] == [1, 1]


def test_a_prefill_rescue_is_billed_as_a_call_of_unknown_usage(gateway, faulty, clock, monkeypatch):
    route(
        monkeypatch,
        Target(at(faulty[0].play(chat_stream("Hel", end=CUT)))),
        Target(at(faulty[1]), continuation="prefill"),
    )

    with gateway.client() as client:
        client.post("/v1/chat/completions", json={**ASK, "stream": True}, headers={"X-User-ID": "bo"})

    [row] = gateway.log_rows()
    assert (row.status, row.input_tokens, row.total_tokens, row.cost_pico_usd) == (200, None, None, None)
    month = MonthlyUsage.objects.get(user_id="bo")
    assert (month.total_tokens, month.unknown_usage_requests) == (0, 1)
