"""Reading usage from relayed bodies without holding them."""

import json

from proxy.payload import JSON_USAGE_MAX_BYTES, UsageScanner


def feed_in_pieces(scanner: UsageScanner, body: bytes, size: int) -> int:
    for start in range(0, len(body), size):
        scanner.feed(body[start : start + size])
    return scanner.finish()


def test_it_reads_total_tokens_of_a_json_body_split_anywhere():
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "total_tokens": 11}}).encode()
    for size in (1, 7, len(body)):
        assert feed_in_pieces(UsageScanner("application/json"), body, size) == 11


def test_it_reads_the_final_usage_chunk_of_an_event_stream_split_anywhere():
    events = [
        {"choices": [{"delta": {"content": 'say "usage": 99'}}]},
        {"choices": [], "usage": {"total_tokens": 42}},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events) + b"data: [DONE]\n\n"
    for size in (1, 5, len(body)):
        assert feed_in_pieces(UsageScanner("text/event-stream; charset=utf-8"), body, size) == 42


def test_it_reads_usage_of_a_responses_api_completed_event():
    event = {"type": "response.completed", "response": {"usage": {"input_tokens": 2, "total_tokens": 9}}}
    body = b"event: response.completed\ndata: " + json.dumps(event).encode() + b"\n\n"

    assert feed_in_pieces(UsageScanner("text/event-stream"), body, 10) == 9


def test_it_counts_zero_when_there_is_no_usable_usage():
    cases = [
        ("application/json", b'{"usage": {"total_tokens": "many"}}'),
        ("application/json", b'{"usage": {"total_tokens": true}}'),
        ("application/json", b"not json"),
        ("text/plain", b'{"usage": {"total_tokens": 5}}'),
        ("text/event-stream", b"data: {broken\n\n"),
    ]
    for content_type, body in cases:
        assert feed_in_pieces(UsageScanner(content_type), body, 4) == 0


def test_it_gives_up_on_json_bodies_too_large_to_hold():
    padding = "x" * JSON_USAGE_MAX_BYTES
    body = json.dumps({"data": padding, "usage": {"total_tokens": 5}}).encode()

    assert feed_in_pieces(UsageScanner("application/json"), body, 65536) == 0
