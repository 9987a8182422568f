"""Concurrent calls of one statement sent together: the calls made while a batch is out go
in the next one, so a busy worker pays one round trip and one commit for many calls.

A lone call goes at once (in the event loop's next turn, with the calls of the same turn);
under load, calls gather while the previous batch is in flight, with no timer and no added
wait beyond that batch. One batch is out at a time per event loop.

A caller that stops waiting (its client left) before its batch is taken is left out of it;
one that stops once its batch is taken is handed, with what its call did, to `abandoned`,
which may undo it.
"""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from gateway_project.lib import request_ids

Call = TypeVar("Call")
Result = TypeVar("Result")

# Calls in one batch at most; more wait for the next.
MAX_BATCH = 100


class Batches(Generic[Call, Result]):
    """`send` runs a batch of calls and returns each one's result, in the calls' order.
    Belongs to one event loop (see gateway_project.lib.per_loop)."""

    def __init__(
        self,
        send: Callable[[Sequence[Call]], Awaitable[Sequence[Result]]],
        # Undoes a call whose caller left once it was sent; logs its own failures.
        abandoned: Callable[[Call, Result], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self._send = send
        self._abandoned = abandoned
        self._waiting: list[tuple[Call, asyncio.Future[Result]]] = []
        self._out = False
        # Tasks running (a batch, an undo), referenced so none is collected early.
        self._tasks: set[asyncio.Task] = set()

    async def call(self, call: Call) -> Result:
        """`call`'s result, from the batch it went in; its failure is the batch's."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((call, future))
        if not self._out:
            # The batch is taken when the task starts: the calls of this turn go in it too.
            self._out = True
            self._start(self._send_while_waiting())
        try:
            return await future
        except asyncio.CancelledError:
            # Left after the result came but before it was read: undone as if still out.
            if future.done() and not future.cancelled() and future.exception() is None:
                self._undo(call, future.result())
            raise

    async def settle(self) -> None:
        """Wait for the batches out and the undoing they started (shutdown, tests)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))  # cancelled itself, it cancels none of them

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        # Detached: the task serves every caller of its batch, so its log lines carry none's id.
        task = request_ids.detached(asyncio.get_running_loop().create_task, work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _undo(self, call: Call, result: Result) -> None:
        if self._abandoned is not None:
            self._start(self._abandoned(call, result))

    async def _send_while_waiting(self) -> None:
        try:
            while batch := self._next_batch():
                await self._send_batch(batch)
        except asyncio.CancelledError:  # the loop is shutting down
            for _, future in self._waiting:
                future.cancel()
            raise
        finally:
            self._out = False

    def _next_batch(self) -> list[tuple[Call, asyncio.Future[Result]]]:
        waiting = [(call, future) for call, future in self._waiting if not future.done()]  # callers left: dropped
        batch, self._waiting = waiting[:MAX_BATCH], waiting[MAX_BATCH:]
        return batch

    async def _send_batch(self, batch: list[tuple[Call, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._send([call for call, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} calls gave {len(results)} results")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (call, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
            else:
                self._undo(call, result)
