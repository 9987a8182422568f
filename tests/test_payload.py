"""Reading usage and the end of relayed bodies, and the stream-usage rewrite (pure logic)."""

import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from billing.call_usage import Usage
from proxy.request_body import with_stream_usage
from proxy.usage_scanner import EVENT_MAX_BYTES, JSON_USAGE_MAX_BYTES, UsageScanner, usage_of


def feed_in_pieces(scanner: UsageScanner, body: bytes, size: int) -> bytes:
    relayed = b"".join(scanner.feed(body[start : start + size]) for start in range(0, len(body), size))
    return relayed + scanner.finish()


def sse(*payloads: dict | str, newline: bytes = b"\n") -> bytes:
    events = []
    for payload in payloads:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        events.append(b"data: " + data.encode() + newline + newline)
    return b"".join(events)


CHUNK = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": 'say "usage": 99'}}]}
USAGE_CHUNK = {
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {
        "prompt_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 20},
        "completion_tokens": 12,
        "total_tokens": 42,
    },
}


def test_it_reads_split_usage_of_a_json_body_split_anywhere():
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}})
    for size in (1, 7, len(body)):
        scanner = UsageScanner("application/json")
        assert feed_in_pieces(scanner, body.encode(), size) == body.encode()
        assert scanner.usage == Usage(3, 0, 8, 11)
        assert scanner.complete


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_it_reads_the_usage_chunk_of_an_event_stream_split_anywhere(newline):
    body = sse(CHUNK, USAGE_CHUNK, "[DONE]", newline=newline)
    for size in (1, 5, len(body)):
        scanner = UsageScanner("text/event-stream; charset=utf-8")
        assert feed_in_pieces(scanner, body, size) == body
        assert scanner.usage == Usage(30, 20, 12, 42)
        assert scanner.complete


@given(cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=30))
@hypothesis_settings(max_examples=200, deadline=None, database=None)
def test_dropping_the_usage_chunk_relays_every_other_event_byte_for_byte(cuts):
    body = sse(CHUNK, CHUNK, USAGE_CHUNK, "[DONE]")
    scanner = UsageScanner("text/event-stream", drop_usage_chunk=True)
    relayed, position = b"", 0
    for cut in cuts:
        relayed += scanner.feed(body[position : position + cut])
        position += cut
    relayed += scanner.feed(body[position:]) + scanner.finish()

    assert relayed == sse(CHUNK, CHUNK, "[DONE]")
    assert scanner.usage == Usage(30, 20, 12, 42)
    assert scanner.complete


def test_a_usage_chunk_the_client_asked_for_is_relayed():
    body = sse(CHUNK, USAGE_CHUNK, "[DONE]")
    scanner = UsageScanner("text/event-stream")
    assert feed_in_pieces(scanner, body, 3) == body


def test_a_chunk_with_choices_and_usage_is_never_dropped():
    # Some upstreams put usage on the last content chunk: that chunk carries content.
    with_content = {**CHUNK, "usage": USAGE_CHUNK["usage"]}
    body = sse(with_content, "[DONE]")
    scanner = UsageScanner("text/event-stream", drop_usage_chunk=True)
    assert feed_in_pieces(scanner, body, 4) == body
    assert scanner.usage == Usage(30, 20, 12, 42)


def test_it_reads_usage_of_a_responses_api_stream_and_its_end():
    completed = {
        "type": "response.completed",
        "response": {
            "status": "completed",
            "usage": {
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 64},
                "output_tokens": 9,
                "output_tokens_details": {"reasoning_tokens": 4},
                "total_tokens": 109,
            },
        },
    }
    created = {"type": "response.created", "response": {"status": "in_progress", "usage": None}}
    delta = {"type": "response.output_text.delta", "delta": "response.completed"}
    body = b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in (created, delta, completed)
    )
    scanner = UsageScanner("text/event-stream")
    for size in (1, 9, len(body)):
        scanner = UsageScanner("text/event-stream")
        feed_in_pieces(scanner, body[: -len(body) // 3], size)
        assert not scanner.complete  # a delta quoting the name is not the end
        scanner = UsageScanner("text/event-stream")
        feed_in_pieces(scanner, body, size)
        assert scanner.usage == Usage(100, 64, 9, 109)
        assert scanner.complete


def test_embeddings_usage_has_input_tokens_only():
    assert usage_of({"usage": {"prompt_tokens": 8, "total_tokens": 8}}) == Usage(8, 0, 0, 8)


@pytest.mark.parametrize(
    "body",
    [
        b'{"choices": []}',
        b'{"usage": {"total_tokens": "many"}}',
        b'{"usage": {"prompt_tokens": -1, "total_tokens": 5}}',
        b'{"usage": null}',
        b"not json",
    ],
)
def test_a_body_without_usable_usage_has_unknown_usage(body):
    for content_type in ("application/json", "text/event-stream"):
        scanner = UsageScanner(content_type)
        feed_in_pieces(scanner, body if content_type.endswith("json") else b"data: " + body + b"\n\n", 4)
        assert scanner.usage is None


def test_a_cut_json_body_is_not_complete():
    scanner = UsageScanner("application/json")
    feed_in_pieces(scanner, b'{"choices": [{"message": ', 5)
    assert not scanner.complete


def test_a_body_of_its_declared_length_is_complete():
    scanner = UsageScanner("audio/mpeg", content_length="6")
    scanner.feed(b"abc")
    assert not scanner.complete
    scanner.feed(b"def")
    assert scanner.complete


def test_it_reads_usage_at_the_end_of_a_json_body_too_large_to_hold():
    padding = "x" * JSON_USAGE_MAX_BYTES
    body = json.dumps({"data": padding, "usage": {"prompt_tokens": 5, "total_tokens": 5}}).encode()
    scanner = UsageScanner("application/json", content_length=str(len(body)))
    feed_in_pieces(scanner, body, 65536)
    assert scanner.usage == Usage(5, 0, 0, 5)
    assert scanner.complete  # by its declared length: too large to parse whole


# --- the stream-usage rewrite ----------------------------------------------------------


def rewritten(body: bytes, path: str = "/v1/chat/completions") -> tuple[bytes, bool]:
    return with_stream_usage(path, body, json.loads(body))


def test_a_stream_without_include_usage_is_asked_for_usage_and_the_rest_kept_byte_for_byte(settings):
    settings.STREAM_USAGE = "include"
    body = b'{"model": "gpt-4o",  "stream": true, "messages": [{"role": "user", "content": "caf\\u00e9"}]}\n'

    forwarded, drop = rewritten(body)

    assert drop
    assert forwarded == body[:-2] + b',"stream_options":{"include_usage":true}}\n'
    assert json.loads(forwarded)["stream_options"] == {"include_usage": True}


def test_stream_options_without_include_usage_get_it(settings):
    settings.STREAM_USAGE = "include"
    body = b'{"model": "m", "stream": true, "stream_options": {"include_obfuscation": false}}'

    forwarded, drop = rewritten(body)

    assert drop
    assert json.loads(forwarded)["stream_options"] == {"include_obfuscation": False, "include_usage": True}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}}', "/v1/chat/completions"),
        (b'{"model": "m", "stream": false}', "/v1/chat/completions"),
        (b'{"model": "m", "messages": []}', "/v1/chat/completions"),
        (b'{"model": "m", "stream": true}', "/v1/responses"),
        (b'{"model": "m", "stream": "yes"}', "/v1/completions"),
    ],
)
def test_other_bodies_are_forwarded_as_sent(settings, body, path):
    settings.STREAM_USAGE = "include"
    assert rewritten(body, path) == (body, False)


def test_passthrough_forwards_every_stream_as_sent(settings):
    settings.STREAM_USAGE = "passthrough"
    body = b'{"model": "m", "stream": true}'
    assert rewritten(body, "/v1/completions") == (body, False)


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_a_stream_whose_last_event_has_no_blank_line_is_relayed_once(drop, newline):
    body = sse(CHUNK, USAGE_CHUNK if not drop else CHUNK, newline=newline) + b"data: [DONE]" + newline
    scanner = UsageScanner("text/event-stream", drop_usage_chunk=drop)

    assert feed_in_pieces(scanner, body, 7) == body
    assert scanner.complete


def test_a_huge_event_is_relayed_unread_rather_than_held():
    body = b"data: " + b"x" * (2 * EVENT_MAX_BYTES)
    scanner = UsageScanner("text/event-stream", drop_usage_chunk=True)

    relayed = b"".join(scanner.feed(body[start : start + 65536]) for start in range(0, len(body), 65536))

    assert len(relayed) > EVENT_MAX_BYTES  # passed on before the event ended
    assert relayed + scanner.finish() == body


def test_a_large_json_body_cut_short_is_not_complete():
    padding = "x" * JSON_USAGE_MAX_BYTES
    body = json.dumps({"data": [{"a": padding}], "usage": {"prompt_tokens": 5, "total_tokens": 5}}).encode()
    scanner = UsageScanner("application/json")  # chunked: no declared length
    feed_in_pieces(scanner, body[: JSON_USAGE_MAX_BYTES + 100], 65536)

    assert not scanner.complete


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 5, "total_tokens": 9}, Usage(5, 0, 4, 9)),  # output derived from the total
        ({"prompt_tokens": 5}, None),  # output unknown: never guessed as 0
        ({"prompt_tokens": 5, "completion_tokens": None, "total_tokens": None}, None),
        ({"input_tokens": 5, "output_tokens": 2, "input_tokens_details": None}, Usage(5, 0, 2, 7)),
    ],
)
def test_a_missing_count_is_derived_from_the_total_or_unknown(usage, expected):
    assert usage_of({"usage": usage}) == expected
