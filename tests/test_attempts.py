"""Retries and fail-over before the caller's first byte (issue 21), against upstreams on
loopback that fail as scripted (tests/faulty_upstream.py). Back-off is not slept through:
the attempts' clock is a fake that records each pause and moves time on."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest

from proxy import metrics
from proxy.routes import Target, Upstream
from tests.faulty_upstream import answer, at, reset, route, silent, stream_then_silent, together
from tests.servers import closed_port_url

CHAT = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}


def call(gateway, stream: bool = False, user: str = "ann", **body):
    with gateway.client() as client:
        return client.post("/v1/chat/completions", json={**CHAT, "stream": stream, **body}, headers={"X-User-ID": user})


def content(response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
        return "".join(c["delta"].get("content", "") for e in events for c in json.loads(e)["choices"])
    return response.json()["choices"][0]["message"]["content"]


def the_row(gateway):
    [row] = gateway.log_rows()
    return row


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_once_is_retried_after_a_jittered_back_off(gateway, faulty, clock, monkeypatch, stream, status):
    a = faulty[0].play(answer(status))
    route(monkeypatch, Target(at(a, retries=2)))

    response = call(gateway, stream)

    assert (response.status_code, content(response)) == (200, "fine")
    assert len(a.seen) == 2
    assert clock.pauses == [0.75]  # the first retry within a second
    row = the_row(gateway)
    assert (row.status, row.upstream, row.attempts, row.model, row.total_tokens) == (200, "a", 2, "small", 7)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_503_every_time_reaches_the_caller_as_it_came_after_the_retries(gateway, faulty, clock, monkeypatch, stream):
    a = faulty[0].play(then=answer(503, "overloaded", ("retry-after", "30"), message="busy"))
    route(monkeypatch, Target(at(a, retries=2)))

    response = call(gateway, stream)

    assert response.status_code == 503
    assert response.json()["error"] == {"message": "busy", "type": "test", "code": "overloaded", "param": None}
    assert response.headers["retry-after"] == "30"
    assert len(a.seen) == 3
    assert clock.pauses == [0.75, 1.5]  # exponential
    row = the_row(gateway)
    assert (row.status, row.upstream, row.attempts, row.total_tokens) == (503, "a", 3, 0)


@pytest.mark.parametrize(
    ("header", "waited"),
    [(("retry-after", "2"), 2.0), (("retry-after-ms", "300"), 0.3), (("retry-after", "60"), 0.75)],
    ids=["seconds", "milliseconds", "beyond-the-cap"],
)
def test_a_429_waits_its_retry_after_within_the_cap(gateway, faulty, clock, monkeypatch, header, waited):
    a = faulty[0].play(answer(429, "rate_limit_exceeded", header))
    route(monkeypatch, Target(at(a, retries=1)))

    response = call(gateway)

    assert response.status_code == 200
    assert len(a.seen) == 2
    assert clock.pauses == [waited]
    assert the_row(gateway).attempts == 2


def test_a_429_retry_after_as_an_http_date_is_honoured(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(answer(429, "", ("retry-after", formatdate(time.time() + 5, usegmt=True))))
    route(monkeypatch, Target(at(a, retries=1)))

    assert call(gateway).status_code == 200
    [pause] = clock.pauses
    assert 3.5 <= pause <= 5.0  # whole seconds in the date


def test_never_more_than_two_attempts_on_one_target_within_a_second_and_a_half(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(*[answer(429, "", ("retry-after-ms", "0"))] * 2)
    route(monkeypatch, Target(at(a, retries=3)))

    assert call(gateway).status_code == 200
    assert len(a.seen) == 3
    [pause] = clock.pauses  # none before the second attempt: Retry-After said 0
    assert 1.4 <= pause <= 1.5  # the third attempt 1.5 s after the first


def test_a_429_on_every_attempt_fails_over_then_is_the_callers_when_all_refuse(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(then=answer(429, "rate_limit_exceeded", ("retry-after", "1")))
    b = faulty[1].play(then=answer(429, "rate_limit_exceeded", ("retry-after", "7")))
    route(monkeypatch, Target(at(a, retries=1)), Target(at(b)))

    response = call(gateway)

    assert (response.status_code, response.headers["retry-after"]) == (429, "7")
    assert (len(a.seen), len(b.seen)) == (2, 1)
    row = the_row(gateway)
    assert (row.status, row.upstream, row.attempts) == (429, "b", 3)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_reset_before_the_status_line_is_retried_at_once_on_a_fresh_connection(
    gateway, faulty, clock, monkeypatch, stream
):
    a = faulty[0].play(reset())
    route(monkeypatch, Target(at(a)))  # no retries configured: the reset's retry is free

    response = call(gateway, stream)

    assert (response.status_code, content(response)) == (200, "fine")
    assert len(a.seen) == 2
    assert clock.pauses == []
    assert the_row(gateway).attempts == 2


def test_after_a_reset_the_retry_takes_a_new_connection_not_another_pooled_one(gateway, faulty, clock, monkeypatch):
    a = faulty[0].play(together(2), together(2))
    route(monkeypatch, Target(at(a)))
    with ThreadPoolExecutor(2) as callers:
        assert [r.status_code for r in callers.map(lambda _: call(gateway), range(2))] == [200, 200]
    # Both connections are idle in the gateway's pool, and the upstream has closed them all.
    a.play(reset_reused=True)

    response = call(gateway)

    assert (response.status_code, content(response)) == (200, "fine")
    assert len(a.seen) == 2  # the reset, then one attempt on a new connection
    assert gateway.log_rows()[-1].attempts == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_refused_connection_fails_over_to_the_fallback_which_names_the_row(
    gateway, faulty, clock, monkeypatch, stream
):
    b = faulty[1]
    dead = Upstream("dead", closed_port_url(), "none", None, (), 1.0, 3.0, 3.0, 3.0, 0)
    route(monkeypatch, Target(dead), Target(at(b), model="large"))

    response = call(gateway, stream)

    assert (response.status_code, content(response)) == (200, "fine")
    assert b.seen[0].model == "large"
    row = the_row(gateway)
    assert (row.status, row.upstream, row.model, row.attempts, row.total_tokens) == (200, "b", "large", 2, 7)


def test_a_silent_upstream_is_left_at_once_without_a_retry(gateway, faulty, clock, monkeypatch):
    a, b = faulty[0].play(silent()), faulty[1]
    route(monkeypatch, Target(at(a, retries=3, timeout=0.3)), Target(at(b)))

    started = time.monotonic()
    response = call(gateway)

    assert response.status_code == 200
    assert time.monotonic() - started < 2.5
    assert (len(a.seen), len(b.seen)) == (1, 1)
    assert clock.pauses == []
    assert (the_row(gateway).upstream, the_row(gateway).attempts) == ("b", 2)


def test_a_stream_without_a_first_event_fails_over(gateway, faulty, clock, monkeypatch):
    a, b = faulty[0].play(stream_then_silent()), faulty[1]
    route(monkeypatch, Target(at(a, retries=3, timeout=0.3)), Target(at(b)))

    response = call(gateway, stream=True)

    assert (response.status_code, content(response)) == (200, "fine")
    assert (len(a.seen), len(b.seen)) == (1, 1)
    row = the_row(gateway)
    assert (row.upstream, row.attempts, row.total_tokens) == ("b", 2, 7)


def test_context_length_goes_to_the_next_target_and_never_to_the_same_model(gateway, faulty, clock, monkeypatch):
    a, b, c = faulty[0].play(answer(400, "context_length_exceeded")), faulty[1], faulty[2]
    route(monkeypatch, Target(at(a, retries=2)), Target(at(b)), Target(at(c), model="long"))

    response = call(gateway)

    assert response.status_code == 200
    assert (len(a.seen), len(b.seen), len(c.seen)) == (1, 0, 1)  # b serves "small" too
    row = the_row(gateway)
    assert (row.upstream, row.model, row.attempts) == ("c", "long", 2)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "content_filter"), (400, "content_policy_violation"), (401, ""), (403, ""), (404, ""), (422, "")],
)
def test_refusals_reach_the_caller_as_they_came_without_retry_or_fail_over(
    gateway, faulty, clock, monkeypatch, stream, status, code
):
    a, b = faulty[0].play(answer(status, code)), faulty[1]
    route(monkeypatch, Target(at(a, retries=2)), Target(at(b)))

    response = call(gateway, stream)

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert (len(a.seen), len(b.seen)) == (1, 0)
    row = the_row(gateway)
    assert (row.status, row.upstream, row.attempts) == (status, "a", 1)


def test_when_no_upstream_answers_the_caller_gets_a_502_in_the_gateways_shape(gateway, faulty, clock, monkeypatch):
    dead = Upstream("dead", closed_port_url(), "none", None, (), 1.0, 3.0, 3.0, 3.0, 2)
    route(monkeypatch, Target(dead), Target(at(faulty[1].play(then=reset()))))

    response = call(gateway)

    assert (response.status_code, response.json()["error"]["code"]) == (502, "upstream_unavailable")
    assert clock.pauses == [0.75, 1.5]  # dead's two back-offs; b's reset is retried at once
    row = the_row(gateway)
    assert (row.status, row.upstream, row.attempts) == (502, "", 5)


def test_the_last_upstream_answer_beats_a_later_failure_to_connect(gateway, faulty, clock, monkeypatch):
    dead = Upstream("dead", closed_port_url(), "none", None, (), 1.0, 3.0, 3.0, 3.0, 0)
    route(monkeypatch, Target(at(faulty[0].play(then=answer(503, "busy")))), Target(dead))

    response = call(gateway)

    assert (response.status_code, response.json()["error"]["code"]) == (503, "busy")
    assert (the_row(gateway).upstream, the_row(gateway).attempts) == ("a", 2)


def test_the_whole_call_ends_within_its_deadline(gateway, faulty, clock, monkeypatch, settings):
    settings.UPSTREAM_DEADLINE = 0.5
    a, b = faulty[0].play(then=silent()), faulty[1].play(then=silent())
    route(monkeypatch, Target(at(a, timeout=5)), Target(at(b, timeout=5)))

    started = time.monotonic()
    response = call(gateway)

    assert (response.status_code, response.json()["error"]["code"]) == (504, "upstream_timeout")
    assert time.monotonic() - started < 2.0
    assert (len(a.seen), len(b.seen)) == (1, 0)


def test_a_call_no_route_serves_is_a_clear_503(gateway, monkeypatch):
    route(monkeypatch)

    response = call(gateway)

    assert (response.status_code, response.json()["error"]["code"]) == (503, "upstream_not_configured")
    assert "'small'" in response.json()["error"]["message"]
    assert (the_row(gateway).status, the_row(gateway).attempts) == (503, 0)


def test_a_renamed_target_gets_the_callers_bytes_with_only_the_model_changed(gateway, faulty, monkeypatch):
    b = faulty[1]
    route(monkeypatch, Target(at(b), model="vendor/large"))
    body = b'{"model" :  "small", "messages": [{"role": "user", "content": "caf\\u00e9 \xc3\xa9"}], "n": 1}'

    with gateway.client() as client:
        response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 200
    assert b.seen[0].body == body.replace(b'"small"', b'"vendor/large"')
    assert the_row(gateway).model == "vendor/large"


def test_attempts_retries_and_fail_overs_are_counted_by_upstream(gateway, faulty, clock, monkeypatch):
    def counted() -> tuple[float, ...]:
        return (
            metrics.ATTEMPTS.labels("a", "server_error")._value.get(),
            metrics.ATTEMPTS.labels("b", "ok")._value.get(),
            metrics.RETRIES.labels("a")._value.get(),
            metrics.FAILOVERS.labels("a")._value.get(),
        )

    a = faulty[0].play(then=answer(500))
    route(monkeypatch, Target(at(a, retries=1)), Target(at(faulty[1])))
    before = counted()

    assert call(gateway).status_code == 200

    assert [after - then for after, then in zip(counted(), before, strict=True)] == [2, 1, 1, 1]
