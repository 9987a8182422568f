"""What a trainee sees: the OpenAI Python SDK pointed at the gateway."""

import openai
import pytest


def test_the_sdk_gets_a_chat_completion(sdk, gateway, upstream):
    completion = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])

    assert completion.choices[0].message.content.endswith("You said: hello")
    assert completion.usage.total_tokens == 10
    assert upstream.last.headers["authorization"] == "Bearer sk-trainee-own-key"
    [row] = gateway.log_rows()
    assert (row.user_id, row.endpoint, row.status, row.total_tokens, row.model) == (
        "trainee-1",
        "/v1/chat/completions",
        200,
        10,
        "gpt-4o-mini",
    )


def test_the_sdk_receives_stream_chunks_as_the_upstream_sends_them(sdk, gateway, upstream):
    # Model "gated" makes the test upstream hold the stream after its first chunk.
    stream = sdk.chat.completions.create(model="gated", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = iter(stream)

    assert next(chunks).choices[0].delta.content == "first"
    assert not upstream.stream_finished.is_set()
    upstream.gate.set()
    rest = list(chunks)

    assert rest[0].choices[0].delta.content == " second"
    # It did not ask for usage, so it meets no usage chunk; the gateway asked, and logs it.
    assert all(chunk.choices and chunk.usage is None for chunk in rest)
    [row] = gateway.log_rows()
    assert (row.status, row.input_tokens, row.output_tokens, row.total_tokens, row.model) == (200, 5, 2, 7, "gated")


def test_the_sdk_gets_the_usage_chunk_it_asks_for(sdk, gateway, upstream):
    upstream.gate.set()
    stream = sdk.chat.completions.create(
        model="gated",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 7
    [row] = gateway.log_rows()
    assert row.total_tokens == 7


def test_the_sdk_surfaces_gateway_errors_with_their_message(sdk, gateway, upstream):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.with_options(default_headers={"X-User-ID": "no spaces allowed"}).models.list()

    assert raised.value.code == "invalid_user_id"
    assert "X-User-ID must be 1 to 128 characters" in raised.value.message


def test_the_sdk_raises_when_the_upstream_breaks_mid_stream(sdk, gateway, upstream, settings):
    settings.UPSTREAM_TIMEOUT = 0.2
    stream = sdk.post(
        "/endless-stream",
        cast_to=openai.types.chat.ChatCompletionChunk,
        body={"stream": True},
        stream=True,
        stream_cls=openai.Stream[openai.types.chat.ChatCompletionChunk],
    )

    with pytest.raises(openai.APIError, match=r"sent nothing for 0\.2 seconds"):
        list(stream)
