"""Streams that break after their first event: a cut (the upstream's body ends without its
last event, or breaks) or a stall (no event within the stream idle timeout) once the caller
has part of the answer.

A chat completions stream whose route has a later target that allows continuation is finished
there, in the same stream: the caller gets one well-formed answer and one [DONE].
- "prefill": the same request with the text delivered so far appended as an assistant
  message; only the continuation is relayed. A 400 (no prefill taken): "restart" there.
- "restart": the same request again, relayed only past the text the caller already has, and
  only when it begins with exactly that text; the delivered part is never sent twice.
Its chunks carry the broken stream's id, created and model, so SDKs see one completion.

Otherwise the stream ends with an error event naming the break, never [DONE]; a Responses API
stream with its own `response.failed` event.
"""

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from billing.call_usage import Usage
from proxy import breakers, metrics
from proxy.accesslog import Exchange
from proxy.legs import Leg
from proxy.stream_events import (
    Events,
    ResponsesTrail,
    Transcript,
    chunk_of,
    event,
    is_done,
    is_finished,
    is_plain,
    text_of,
)
from proxy.upstream import UpstreamFailure
from proxy.usage_scanner import UsageScanner, event_data, json_or_none

if TYPE_CHECKING:
    from proxy.relay import Answer

logger = logging.getLogger(__name__)

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
# Streams whose last event says the answer is whole: a body that ends without it was cut.
_ENDED_BY_LAST_EVENT = frozenset((CHAT, RESPONSES))


@dataclass(frozen=True, slots=True)
class Rescue:
    """What a broken chat stream needs to be finished on a later target of its route. Made by
    proxy.routing, which keeps the attempts its own: credentials, timeouts, deadline, count."""

    # The later legs that allow continuation, in routing order.
    legs: tuple[Leg, ...]
    # The call's body as it was sent.
    body: bytes
    # One attempt of a body on a leg: its answer (a stream: first event in hand), or None.
    attempt: Callable[[Leg, bytes], Awaitable["Answer | None"]]


@dataclass(slots=True)
class Ending:
    """How a broken stream ended, for its row and the operator's line."""

    # The status of the row; None: the caller left before the stream's end.
    status: int | None = None
    # A continuation gave the caller the rest of the answer and its [DONE].
    rescued: bool = False
    usage: Usage | None = None
    note: str = ""


def may_continue(endpoint: str, response: httpx.Response, body: bytes) -> bool:
    """Whether a call's answer could be finished elsewhere: a chat completions event stream
    of one choice, without logprobs."""
    if endpoint != CHAT or not response.is_success or not is_event_stream(response):
        return False
    payload = json_or_none(body)
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("messages"), list)
        and payload.get("n") in (None, 1)
        and not payload.get("logprobs")
    )


def is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


class Watch:
    """An event stream as the relay passes it on: whether it ended whole, and what its ending
    needs if it breaks (the text delivered, for a rescue; a Responses stream's trail)."""

    def __init__(self, endpoint: str, rescue: Rescue | None, drop_usage_chunk: bool) -> None:
        self.endpoint = endpoint
        self.rescue = rescue
        self.drop_usage_chunk = drop_usage_chunk
        self.transcript = Transcript() if rescue is not None else None
        self.trail = ResponsesTrail() if endpoint == RESPONSES else None

    def feed(self, chunk: bytes) -> bytes:
        """What of `chunk` to relay now (with a rescue in reserve: whole events only)."""
        if self.trail is not None:
            self.trail.feed(chunk)
        return chunk if self.transcript is None else self.transcript.feed(chunk)

    def release(self) -> bytes:
        return b"" if self.transcript is None else self.transcript.release()

    def cut(self, complete: bool) -> bool:
        """Whether a body that ended (`complete`: its last event seen) was cut off."""
        return not complete and self.endpoint in _ENDED_BY_LAST_EVENT

    def error_event(self, failure: UpstreamFailure) -> bytes:
        # An error event makes OpenAI SDKs raise instead of taking a cut-off stream for a
        # complete one; Responses clients read response.failed.
        if self.trail is not None:
            return self.trail.failed(failure)
        return event(failure.body())


def watch(answer: "Answer", endpoint: str, drop_usage_chunk: bool) -> Watch | None:
    """A watch over a successful event stream; None for any other answer."""
    if not answer.response.is_success or not is_event_stream(answer.response):
        return None
    return Watch(endpoint, answer.rescue, drop_usage_chunk)


async def finish(watch: Watch, failure: UpstreamFailure, exchange: Exchange, ending: Ending) -> AsyncIterator[bytes]:
    """What follows a stream broken after its start: a later target's continuation, else the
    event that names the break (never a continuation's own refusal or failure)."""
    broken = exchange.upstream
    try:
        ending.note = _no_rescue_because(watch)
        if not ending.note:
            async for relayed in _continued(watch, exchange, ending):
                yield relayed
            metrics.rescued("rescued" if ending.rescued else "failed")
        if not ending.rescued:
            ending.status = failure.status
            yield watch.error_event(failure)
    finally:
        # One line for the operator, however it ended (the caller may have left).
        logger.warning(
            "upstream %s broke off a stream of %s after it started (%s); %s",
            broken,
            watch.endpoint,
            failure.code,
            ending.note or "the caller left",
        )


def _no_rescue_because(watch: Watch) -> str:
    if watch.endpoint != CHAT:
        return f"not rescued: only {CHAT} streams are continued"
    if watch.rescue is None or watch.transcript is None:
        return "not rescued: no later target allows continuation"
    if not watch.transcript.continuable:
        return "not rescued: what was sent is not plain text of one choice, or is finished"
    return ""


async def _continued(watch: Watch, exchange: Exchange, ending: Ending) -> AsyncIterator[bytes]:
    """The continuation of the first later target that gives one; `ending` says how it went."""
    rescue, transcript = watch.rescue, watch.transcript
    for leg in rescue.legs:
        name = leg.target.upstream.name
        started = await _started(rescue, leg, transcript.text)
        if started is None:
            ending.note = f"not rescued: upstream {name} refused or failed"
            continue
        answer, mode = started
        splice = _Splice(transcript, mode, watch.drop_usage_chunk, ending)
        try:
            async for relayed in splice.relayed(answer):
                if ending.rescued:  # before [DONE] goes out: a client may close on it
                    ending.note = f"rescued by upstream {name} ({mode})"
                    exchange.upstream, exchange.model = name, splice.model or leg.target.model or exchange.model
                yield relayed
        finally:
            await answer.response.aclose()
        if ending.rescued:
            await breakers.succeeded(name)  # its stream came whole
            return
        ending.note = f"not rescued: upstream {name} {splice.problem}"
        if splice.broke:
            await breakers.failed(name, f"continuation {splice.problem}")
        if splice.opened:
            return  # the caller has part of this continuation: nothing else fits after it


async def _started(rescue: Rescue, leg: Leg, text: str) -> "tuple[Answer, str] | None":
    """A continuation from `leg`, its first event in hand, and how it continues; None when the
    target refused or failed."""
    mode = leg.target.continuation if text else "restart"  # nothing to prefill: the call again
    if mode == "prefill":
        answer = await rescue.attempt(leg, prefilled(rescue.body, text))
        if _is_started(answer):
            return answer, mode
        refused = answer is not None and answer.response.status_code == 400
        await _close(answer)
        if not refused:
            return None
        mode = "restart"  # the target takes no assistant prefill
    answer = await rescue.attempt(leg, rescue.body)
    if _is_started(answer):
        return answer, mode
    await _close(answer)
    return None


def prefilled(body: bytes, text: str) -> bytes:
    """The call's body with the text delivered so far appended as the assistant's message."""
    payload = json_or_none(body)
    messages = [*payload.get("messages", []), {"role": "assistant", "content": text}]
    return json.dumps({**payload, "messages": messages}, ensure_ascii=False).encode()


def _is_started(answer: "Answer | None") -> bool:
    return answer is not None and answer.response.is_success and is_event_stream(answer.response)


async def _close(answer: "Answer | None") -> None:
    if answer is not None:
        await answer.response.aclose()


class _Mismatch(Exception):
    """A restart that does not begin with the text the caller has."""


class _Splice:
    """A continuation's events made part of the stream the caller has: a restart's text held
    back up to what was delivered, a leading role or empty chunk dropped, the broken stream's
    id, created and model on every chunk."""

    def __init__(self, transcript: Transcript, mode: str, drop_usage_chunk: bool, ending: Ending) -> None:
        self._identity = transcript.identity
        self._held_back = transcript.text if mode == "restart" else ""
        self._read = ""
        self._scanner = UsageScanner("text/event-stream", None, drop_usage_chunk)
        self._ending = ending
        self._prefill = mode == "prefill"
        self.matched = not self._held_back
        self.opened = False
        self.model = ""
        self.problem = "broke off too"
        # The continuation's own stream broke (cut, stalled or ended without [DONE]).
        self.broke = False

    async def relayed(self, answer: "Answer") -> AsyncIterator[bytes]:
        events = Events()
        try:
            async for chunk in answer_body(answer):
                for whole in events.feed(chunk):
                    out = self._event(whole)
                    if out:
                        self.opened = True
                        yield out
                    if self._ending.rescued:
                        return  # [DONE] is out: whatever follows is not the caller's
        except httpx.HTTPError:
            self.broke = True
            return
        except _Mismatch:
            self.problem = "answered the call again with other text"
            return
        self.problem, self.broke = "ended without [DONE]", True

    def _event(self, whole: bytes) -> bytes:
        if not self._scanner.feed(whole):
            return b""  # the usage chunk the gateway asked for, not the caller
        if is_done(whole):
            if not self.matched:
                raise _Mismatch
            # A prefill's usage leaves out the broken part's output: unknown. A restart's is
            # the whole answer the caller now has.
            self._ending.rescued, self._ending.usage = True, None if self._prefill else self._scanner.usage
            return whole
        chunk = chunk_of(whole)
        if chunk is None:  # a comment, or an event that is not JSON
            if not self.matched and event_data(whole):
                raise _Mismatch
            return whole if self.opened else b""
        self.model = self.model or (chunk.get("model") if isinstance(chunk.get("model"), str) else "")
        if not self.matched:
            chunk = self._past_held_back(chunk)
            if chunk is None:
                return b""
        if not self.opened and chunk.get("choices") and not text_of(chunk) and not is_finished(chunk):
            return b""  # a role delta or an empty chunk: the caller has had its own
        return event({**chunk, **self._identity})

    def _past_held_back(self, chunk: dict) -> dict | None:
        """A restart's chunk cut to what lies past the text the caller has; None while
        within it. Raises _Mismatch when the text differs."""
        if not is_plain(chunk):
            raise _Mismatch
        self._read += text_of(chunk)
        if not (self._held_back.startswith(self._read) or self._read.startswith(self._held_back)):
            raise _Mismatch
        if len(self._read) < len(self._held_back):
            return None
        self.matched = True
        past = self._read[len(self._held_back) :]
        choices = [{**c, "delta": {**(c.get("delta") or {}), "content": past}} for c in chunk.get("choices") or ()]
        return {**chunk, "choices": choices}


async def answer_body(answer: "Answer") -> AsyncIterator[bytes]:
    """An answer's body: the part read before the commit, then the rest."""
    if answer.head:
        yield answer.head
    if answer.rest is not None:
        async for chunk in answer.rest:
            yield chunk
