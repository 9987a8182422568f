"""Chat streams that break after their first event (proxy.rescue), finished by a later target
that allows continuation, against upstreams on loopback that stream, cut and stall as
scripted (tests/faulty_upstream.py). Stalls are caught by tiny idle timeouts, never slept."""

import json

import pytest

from proxy.routes import Target
from tests.faulty_upstream import CUT, END, MALFORMED, STALL, answer, at, chat_stream, reset, route

CHAT = {"model": "small", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def stream(gateway, **body):
    with gateway.client() as client:
        return client.post("/v1/chat/completions", json={**CHAT, **body}, headers={"X-User-ID": "ann"})


def data(response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def chunks(response) -> list[dict]:
    return [json.loads(line) for line in data(response) if line.startswith('{"id"')]


def text(response) -> str:
    return "".join(c["delta"].get("content") or "" for chunk in chunks(response) for c in chunk["choices"])


def the_error(response) -> dict:
    assert "[DONE]" not in response.text
    return json.loads(data(response)[-1])["error"]


def the_row(gateway):
    [row] = gateway.log_rows()
    return row


def test_a_cut_stream_is_finished_by_a_prefill_target_as_one_completion(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", "lo ", end=CUT))
    b = faulty[1].play(chat_stream("world", "!"))
    route(monkeypatch, Target(at(a)), Target(at(b)), Target(at(faulty[2]), continuation="prefill"))
    c = faulty[2].play(chat_stream("world", "!"))

    response = stream(gateway)

    assert (response.status_code, text(response)) == (200, "Hello world!")
    assert response.text.count("data: [DONE]") == 1 and response.text.endswith("data: [DONE]\n\n")
    assert '"error"' not in response.text and '"usage": {' not in response.text  # no usage was asked for
    # One completion for the caller's SDK: the first stream's id, created and model throughout.
    assert {(chunk["id"], chunk["created"], chunk["model"]) for chunk in chunks(response)} == {
        ("chatcmpl-a", 97, "small")
    }
    assert [chunk["choices"][0]["delta"].get("role") for chunk in chunks(response)].count("assistant") == 1
    assert b.seen == []  # no continuation allowed there: skipped
    [continuation] = c.seen
    sent = json.loads(continuation.body)
    assert sent["messages"] == [*CHAT["messages"], {"role": "assistant", "content": "Hello "}]
    assert sent["stream"] is True
    row = the_row(gateway)
    # The broken part's usage never came: the whole call's usage is unknown, never 0.
    assert (row.status, row.attempts, row.upstream, row.total_tokens, row.output_tokens) == (200, 2, "c", None, None)


def test_a_stalled_stream_is_finished_by_a_prefill_target(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", "lo ", end=STALL))
    b = faulty[1].play(chat_stream("world"))
    route(monkeypatch, Target(at(a, timeout=0.2)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert (response.status_code, text(response)) == (200, "Hello world")
    assert response.text.count("data: [DONE]") == 1
    row = the_row(gateway)
    assert (row.status, row.attempts, row.upstream) == (200, 2, "b")


@pytest.mark.parametrize(
    ("end", "status", "code"),
    [(CUT, 502, "upstream_unavailable"), (END, 502, "upstream_unavailable"), (STALL, 504, "upstream_timeout")],
    ids=["connection-closed", "body-ended-without-done", "stalled"],
)
def test_without_a_continuation_target_the_stream_ends_with_an_error_naming_the_break(
    gateway, faulty, clock, monkeypatch, end, status, code
):
    a, b = faulty[0].play(chat_stream("Hel", "lo ", end=end)), faulty[1]
    route(monkeypatch, Target(at(a, timeout=0.2)), Target(at(b)))

    response = stream(gateway)

    assert (response.status_code, text(response)) == (200, "Hello ")
    assert the_error(response)["code"] == code
    assert b.seen == []
    row = the_row(gateway)
    assert (row.status, row.attempts, row.upstream, row.total_tokens) == (status, 1, "a", None)


def test_a_prefill_refused_with_a_400_is_restarted_there_and_relayed_past_what_was_sent(
    gateway, faulty, clock, monkeypatch
):
    a = faulty[0].play(chat_stream("Hel", "lo ", end=CUT))
    b = faulty[1].play(
        answer(400, "invalid_request_error", message="no assistant prefill"), chat_stream("Hel", "lo wor", "ld")
    )
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert (response.status_code, text(response)) == (200, "Hello world")
    # The chunk across the boundary is cut: "lo wor" goes out as "wor".
    assert [chunk["choices"][0]["delta"].get("content") for chunk in chunks(response)] == [
        "",
        "Hel",
        "lo ",
        "wor",
        "ld",
        None,
    ]
    assert "no assistant prefill" not in response.text
    prefill, restart = b.seen
    assert json.loads(prefill.body)["messages"][-1]["role"] == "assistant"
    assert json.loads(restart.body)["messages"] == CHAT["messages"]
    row = the_row(gateway)
    # A restart answered the whole call: its usage is the answer the caller has.
    assert (row.status, row.attempts, row.upstream, row.total_tokens) == (200, 3, "b", 7)


def test_a_restart_that_does_not_begin_with_the_text_sent_relays_nothing(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", "lo ", end=CUT))
    b = faulty[1].play(chat_stream("Hel", "p me"))
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="restart"))

    response = stream(gateway)

    assert text(response) == "Hello "
    assert "p me" not in response.text
    assert the_error(response)["code"] == "upstream_unavailable"
    assert len(b.seen) == 1
    row = the_row(gateway)
    assert (row.status, row.attempts, row.upstream) == (502, 2, "a")


def test_a_restart_target_is_not_sent_a_prefill(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", "lo ", end=CUT))
    b = faulty[1].play(chat_stream("Hello", " world"))
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="restart"))

    response = stream(gateway)

    assert (text(response), response.text.count("[DONE]")) == ("Hello world", 1)
    assert [json.loads(seen.body)["messages"] for seen in b.seen] == [CHAT["messages"]]


@pytest.mark.parametrize("failing", [answer(500), answer(401), reset()], ids=["500", "401", "reset"])
def test_a_continuation_that_fails_too_leaves_the_original_error(gateway, faulty, clock, monkeypatch, failing):
    a = faulty[0].play(chat_stream("Hel", "lo ", end=STALL))
    b = faulty[1].play(failing, then=failing)
    route(monkeypatch, Target(at(a, timeout=0.2)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert text(response) == "Hello "
    assert the_error(response)["code"] == "upstream_timeout"  # the stall, not the continuation's failure
    assert "upstream says" not in response.text
    assert the_row(gateway).status == 504


def test_a_continuation_that_breaks_in_turn_ends_with_the_original_error(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", "lo ", end=STALL))
    b = faulty[1].play(chat_stream("wor", end=CUT))
    route(monkeypatch, Target(at(a, timeout=0.2)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert text(response) == "Hello wor"
    assert the_error(response)["code"] == "upstream_timeout"
    row = the_row(gateway)
    assert (row.status, row.attempts, row.total_tokens) == (504, 2, None)


def test_half_an_event_at_the_cut_never_reaches_the_caller(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", b'data: {"id": "chatcmpl-a", "choi', end=CUT))
    b = faulty[1].play(chat_stream("lo"))
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert (text(response), response.text.count("[DONE]")) == ("Hello", 1)
    assert '"choi\n' not in response.text and '"choidata' not in response.text
    assert all(line.startswith('{"id"') or line == "[DONE]" for line in data(response))
    assert json.loads(b.seen[0].body)["messages"][-1]["content"] == "Hel"


def test_a_malformed_event_is_relayed_and_the_stream_goes_on(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", MALFORMED, "lo"))
    b = faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert MALFORMED.decode() in response.text
    assert (text(response), response.text.count("[DONE]")) == ("Hello", 1)
    assert b.seen == []
    assert (the_row(gateway).status, the_row(gateway).attempts) == (200, 1)


def test_after_a_malformed_event_a_cut_is_not_rescued_what_was_sent_being_unknown(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", MALFORMED, "lo", end=CUT))
    b = faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert MALFORMED.decode() in response.text
    assert the_error(response)["code"] == "upstream_unavailable"
    assert b.seen == []
    assert the_row(gateway).status == 502


@pytest.mark.parametrize("extra", [{"n": 2}, {"logprobs": True}], ids=["two-choices", "logprobs"])
def test_only_plain_text_of_one_choice_is_rescued(gateway, faulty, clock, monkeypatch, extra):
    a = faulty[0].play(chat_stream("Hel", end=CUT))
    b = faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="prefill"))

    response = stream(gateway, **extra)

    assert the_error(response)["code"] == "upstream_unavailable"
    assert b.seen == []


def test_a_tool_call_delta_is_not_continued(gateway, faulty, clock, monkeypatch):
    call = {"id": "chatcmpl-a", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t"}]}}]}
    a = faulty[0].play(chat_stream(b"data: " + json.dumps(call).encode() + b"\n\n", end=CUT))
    b = faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="prefill"))

    assert the_error(stream(gateway))["code"] == "upstream_unavailable"
    assert b.seen == []


def test_a_rescued_stream_that_asked_for_usage_gets_the_continuations_usage_chunk(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", end=CUT))
    b = faulty[1].play(chat_stream("Hel", "lo"))
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="restart"))

    response = stream(gateway, stream_options={"include_usage": True})

    assert text(response) == "Hello"

    [usage] = [chunk for chunk in chunks(response) if chunk.get("usage")]
    assert (usage["id"], usage["choices"], usage["usage"]["total_tokens"]) == ("chatcmpl-a", [], 7)
    assert the_row(gateway).total_tokens == 7  # counted once


def test_a_connection_that_breaks_after_done_is_a_whole_answer(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(chat_stream("Hel", "lo", b"data: [DONE]\n\n", end=CUT))
    b = faulty[1]
    route(monkeypatch, Target(at(a)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert (text(response), response.text.count("[DONE]"), '"error"' in response.text) == ("Hello", 1, False)
    assert b.seen == []
    assert the_row(gateway).status == 200


def test_keep_alive_comments_do_not_hide_a_stall(gateway, faulty, clock, monkeypatch):
    """An upstream that keeps its connection busy with comments but sends no event for the
    stream idle timeout has stalled, whatever it would have sent after."""
    pings = [b": keep-alive\n\n", 0.05] * 12  # 0.6 s of pings, the stream idle timeout 0.2 s
    a = faulty[0].play(chat_stream("Hel", "lo ", *pings, "too late"))
    b = faulty[1].play(chat_stream("world"))
    route(monkeypatch, Target(at(a, timeout=0.2)), Target(at(b), continuation="prefill"))

    response = stream(gateway)

    assert (response.status_code, text(response)) == (200, "Hello world")
    assert len(b.seen) == 1
