"""A small OpenAI-compatible upstream for local use, tests and benchmarks.

`python -m proxy.stub_upstream --port 8001` serves:
  GET  /v1/models
  POST /v1/chat/completions   (with and without "stream": true; usage included,
                               in the final chunk when stream_options.include_usage)
Replies are canned and echo the last user message; no model runs. Streams send one
event per word, STUB_STREAM_INTERVAL_MS apart (default 30). STUB_STREAM_EVENTS fixes
the number of content events (default: one per word of the reply).
"""

import argparse
import asyncio
import json
import os
import time
import uuid

MODELS = ("stub-mini", "gpt-4o-mini", "gpt-4o")


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
    elif method == "POST" and path == "/v1/chat/completions":
        await _chat_completions(receive, send)
    else:
        await _error(send, 404, "not_found", f"The stub upstream has no route {method} {path}.")


async def _chat_completions(receive, send) -> None:
    try:
        request = json.loads(await read_body(receive))
        messages = request["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        await _error(send, 400, "invalid_request", "Send a JSON body with a non-empty `messages` list.")
        return
    model = request.get("model") or MODELS[0]
    prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    last = next((str(m.get("content", "")) for m in reversed(messages) if isinstance(m, dict)), "")
    words = f"Hello from the organized-gateway stub upstream. You said: {last[:200]}".split()
    events = int(os.environ.get("STUB_STREAM_EVENTS", "0")) or len(words)
    words = (words * (events // len(words) + 1))[:events]
    usage = {
        "prompt_tokens": len(prompt.split()),
        "completion_tokens": len(words),
        "total_tokens": len(prompt.split()) + len(words),
    }
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model}
    if request.get("stream"):
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        await _stream(send, base, words, usage if include_usage else None)
        return
    message = {"role": "assistant", "content": " ".join(words)}
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
    await _json(send, 200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})


async def _stream(send, base: dict, words: list[str], usage: dict | None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
        }
    )
    chunk = {**base, "object": "chat.completion.chunk"}
    interval = _interval()
    for position, word in enumerate(words):
        delta = {"content": word if position == 0 else " " + word}
        if position == 0:
            delta["role"] = "assistant"
        await _event(send, {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        await asyncio.sleep(interval)
    await _event(send, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage is not None:
        await _event(send, {**chunk, "choices": [], "usage": usage})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


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
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
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
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
