"""A small OpenAI-compatible upstream for local use, tests and benchmarks.

`python -m gateway_project.stub_upstream --port 8001` serves:
  GET  /v1/models
  POST /v1/chat/completions   JSON, or "stream": true (usage in a last chunk only when
                              stream_options.include_usage, as OpenAI does)
  POST /v1/responses          JSON, or "stream": true with the Responses API's event
                              sequence, ending in response.completed with usage
  POST /v1/embeddings         float or base64 vectors (encoding_format)
Replies are canned and echo the last user message; no model runs. A token is a word. A
Responses request with a prompt_cache_key reports its instructions (and system or developer
input messages, where the Codex CLI puts its prompt) as cached input, the way a provider
reports a cached prompt prefix. Streams send one event per word,
STUB_STREAM_INTERVAL_MS apart (default 30). STUB_STREAM_EVENTS fixes the number of
content events (default: one per word of the reply).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import time
import uuid

MODELS = ("stub-mini", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
EMBEDDING_DIMENSIONS = 16


def _interval() -> float:
    return int(os.environ.get("STUB_STREAM_INTERVAL_MS", "30")) / 1000


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    method, path = scope["method"], scope["path"]
    if method == "GET" and path == "/v1/models":
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "organized-gateway"} for m in MODELS]
        await _json(send, 200, {"object": "list", "data": data})
    elif method == "POST" and path in _ROUTES:
        try:
            request = json.loads(await read_body(receive))
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            await _error(send, 400, "invalid_json", "Send a JSON object as the request body.")
            return
        await _ROUTES[path](request, send)
    else:
        await _error(send, 404, "not_found", f"The stub upstream has no route {method} {path}.")


def _reply_words(said: str) -> list[str]:
    words = f"Hello from the organized-gateway stub upstream. You said: {said[:200]}".split()
    events = int(os.environ.get("STUB_STREAM_EVENTS", "0")) or len(words)
    return (words * (events // len(words) + 1))[:events]


# --- chat completions ------------------------------------------------------------


async def _chat_completions(request: dict, send) -> None:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        await _error(send, 400, "invalid_request", "Send a JSON body with a non-empty `messages` list.")
        return
    model = request.get("model") or MODELS[0]
    prompt = " ".join(_text(m.get("content", "")) for m in messages if isinstance(m, dict))
    last = next((_text(m.get("content", "")) for m in reversed(messages) if isinstance(m, dict)), "")
    words = _reply_words(last)
    usage = {
        "prompt_tokens": len(prompt.split()),
        "completion_tokens": len(words),
        "total_tokens": len(prompt.split()) + len(words),
    }
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model}
    if request.get("stream"):
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        await _chat_stream(send, base, words, usage if include_usage else None)
        return
    message = {"role": "assistant", "content": " ".join(words)}
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
    await _json(send, 200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})


async def _chat_stream(send, base: dict, words: list[str], usage: dict | None) -> None:
    await _event_stream_start(send)
    chunk = {**base, "object": "chat.completion.chunk"}
    # With include_usage OpenAI puts "usage": null on every chunk but the last.
    nothing = {"usage": None} if usage is not None else {}
    interval = _interval()
    for position, word in enumerate(words):
        delta = {"content": word if position == 0 else " " + word}
        if position == 0:
            delta["role"] = "assistant"
        await _event(send, {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **nothing})
        await asyncio.sleep(interval)
    await _event(send, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **nothing})
    if usage is not None:
        await _event(send, {**chunk, "choices": [], "usage": usage})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


# --- Responses API ---------------------------------------------------------------


async def _responses(request: dict, send) -> None:
    said = _last_input_text(request.get("input"))
    if not said and request.get("input") is None:
        await _error(send, 400, "invalid_request", "Send a JSON body with an `input`.")
        return
    words = _reply_words(said)
    instructions = request.get("instructions") if isinstance(request.get("instructions"), str) else ""
    input_tokens = len(instructions.split()) + len(_all_input_text(request.get("input")).split())
    prefix = " ".join([instructions, _all_input_text(request.get("input"), roles=("system", "developer"))])
    cached = len(prefix.split()) if request.get("prompt_cache_key") else 0
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": len(words),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + len(words),
    }
    response_id, item_id = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
    text = " ".join(words)
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    response = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": request.get("model") or MODELS[0],
        "output": [item],
        "usage": usage,
        "error": None,
        "incomplete_details": None,
    }
    if not request.get("stream"):
        await _json(send, 200, response)
        return
    await _event_stream_start(send)
    sequence = iter(range(1_000_000))

    async def event(kind: str, **fields) -> None:
        payload = {"type": kind, "sequence_number": next(sequence), **fields}
        body = f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()
        await send({"type": "http.response.body", "body": body, "more_body": True})

    started = {**response, "status": "in_progress", "output": [], "usage": None}
    await event("response.created", response=started)
    await event("response.in_progress", response=started)
    await event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []})
    await event(
        "response.content_part.added", item_id=item_id, output_index=0, content_index=0, part={**part, "text": ""}
    )
    interval = _interval()
    for position, word in enumerate(words):
        delta = word if position == 0 else " " + word
        await event("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=delta)
        await asyncio.sleep(interval)
    await event("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text)
    await event("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=part)
    await event("response.output_item.done", output_index=0, item=item)
    await event("response.completed", response=response)
    await send({"type": "http.response.body", "body": b""})


def _last_input_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in reversed(value):
            if isinstance(item, dict) and item.get("role", "user") == "user":
                return _text(item.get("content", ""))
    return ""


def _all_input_text(value, roles: tuple[str, ...] | None = None) -> str:
    """The text of every input message (of these roles only, if given)."""
    if isinstance(value, list):
        return " ".join(
            _text(item.get("content", ""))
            for item in value
            if isinstance(item, dict) and (roles is None or item.get("role") in roles)
        )
    return "" if roles else _text(value)


def _text(content) -> str:
    """Text of a message's content: a string, or a list of text parts."""
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content) if content is not None else ""


# --- embeddings ------------------------------------------------------------------


async def _embeddings(request: dict, send) -> None:
    inputs = request.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        await _error(send, 400, "invalid_request", "Send a JSON body with an `input` string or list.")
        return
    encoding = request.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        await _error(send, 400, "invalid_request", "encoding_format must be float or base64.")
        return
    data = []
    tokens = 0
    for index, text in enumerate(inputs):
        text = " ".join(map(str, text)) if isinstance(text, list) else str(text)
        tokens += len(text.split())
        vector = _vector(text)
        if encoding == "base64":
            packed = struct.pack(f"<{len(vector)}f", *vector)
            embedding = base64.b64encode(packed).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    model = request.get("model") or "text-embedding-3-small"
    await _json(send, 200, {"object": "list", "data": data, "model": model, "usage": usage})


def _vector(text: str) -> list[float]:
    """A deterministic unit-length vector of the text (same text, same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(byte - 127.5) / 127.5 for byte in digest[:EMBEDDING_DIMENSIONS]]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in raw]


_ROUTES = {
    "/v1/chat/completions": _chat_completions,
    "/v1/responses": _responses,
    "/v1/embeddings": _embeddings,
}


# --- plumbing --------------------------------------------------------------------


async def _event_stream_start(send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                _own_request_id(),
            ],
        }
    )


def _own_request_id() -> tuple[bytes, bytes]:
    # As OpenAI: the upstream's own id for the call, whatever X-Request-ID it was sent
    # (the gateway relays it to the caller as X-Upstream-Request-ID).
    return (b"x-request-id", f"req_{uuid.uuid4().hex}".encode())


async def _event(send, payload: dict) -> None:
    body = b"data: " + json.dumps(payload).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def read_body(receive) -> bytes:
    """The whole request body of an ASGI http scope."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), _own_request_id()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send, status: int, code: str, message: str) -> None:
    await _json(
        send, status, {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": None}}
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the OpenAI-compatible stub upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    # workers=1: uvicorn otherwise takes WEB_CONCURRENCY (the gateway's worker count, which
    # `make run` passes on) as its own, and refuses to run an app object with more than one.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on", workers=1)


if __name__ == "__main__":
    main()
