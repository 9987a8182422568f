"""Concurrent calls go together: a lone call at once, the calls made while a batch is out in
the next one; each caller gets its own result or its batch's failure; a caller who leaves is
left out, or its call undone once sent."""

import asyncio

import pytest

from gateway_project.lib import batches
from gateway_project.lib.batches import Batches


class Database:
    """A `send` that doubles each call, holding every batch until the test lets it go; and
    an `abandoned` that records what it undoes."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.sent: list[list[int]] = []
        self.undone: list[tuple[int, int]] = []
        self.fail_with = fail_with
        self.out = asyncio.Event()
        self.answer = asyncio.Event()

    async def send(self, calls: list[int]) -> list[int]:
        self.sent.append(list(calls))
        self.out.set()
        await self.answer.wait()
        self.answer.clear()
        self.out.clear()
        if self.fail_with is not None:
            raise self.fail_with
        return [call * 2 for call in calls]

    async def undo(self, call: int, result: int) -> None:
        self.undone.append((call, result))

    async def next_batch_out(self) -> None:
        await self.out.wait()


async def started(batched: Batches, *calls: int) -> list[asyncio.Task]:
    tasks = [asyncio.create_task(batched.call(call)) for call in calls]
    await asyncio.sleep(0)  # each task runs up to its wait
    return tasks


def test_a_lone_call_goes_at_once_and_the_calls_made_meanwhile_go_together_next():
    async def scenario():
        database = Database()
        batched = Batches(database.send)
        [first] = await started(batched, 1)
        await database.next_batch_out()
        later = await started(batched, 2, 3, 4)
        assert database.sent == [[1]]  # the others wait for the batch out

        database.answer.set()
        assert await first == 2
        await database.next_batch_out()
        assert database.sent == [[1], [2, 3, 4]]
        database.answer.set()
        assert await asyncio.gather(*later) == [4, 6, 8]

    asyncio.run(scenario())


def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_still_goes():
    async def scenario():
        database = Database(fail_with=ConnectionError("the database went away"))
        batched = Batches(database.send)
        failing = await started(batched, 1, 2)
        await database.next_batch_out()
        after = await started(batched, 3)

        database.answer.set()
        for task in failing:
            with pytest.raises(ConnectionError, match="went away"):
                await task
        database.fail_with = None
        await database.next_batch_out()
        database.answer.set()
        assert await after[0] == 6
        assert database.sent == [[1, 2], [3]]

    asyncio.run(scenario())


def test_a_caller_who_leaves_before_its_batch_goes_is_left_out_and_one_who_leaves_after_is_undone():
    async def scenario():
        database = Database()
        batched = Batches(database.send, abandoned=database.undo)
        leaves_once_sent, stays = await started(batched, 1, 2)
        await database.next_batch_out()
        leaves_before, stays_too = await started(batched, 3, 4)
        leaves_once_sent.cancel()
        leaves_before.cancel()

        database.answer.set()
        assert await stays == 4
        await database.next_batch_out()
        database.answer.set()
        assert await stays_too == 8
        await batched.settle()
        assert database.sent == [[1, 2], [4]]
        assert database.undone == [(1, 2)]
        assert leaves_once_sent.cancelled() and leaves_before.cancelled()

    asyncio.run(scenario())


def test_a_caller_who_leaves_as_its_result_comes_in_is_undone_too():
    async def scenario():
        database = Database()
        batched = Batches(database.send, abandoned=database.undo)
        [caller] = await started(batched, 5)
        await database.next_batch_out()
        database.answer.set()
        await asyncio.sleep(0)  # the batch runs on: the caller's result is set, not yet read
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await batched.settle()
        assert database.undone == [(5, 10)]

    asyncio.run(scenario())


def test_calls_past_a_full_batch_wait_for_the_next(monkeypatch):
    monkeypatch.setattr(batches, "MAX_BATCH", 3)

    async def scenario():
        database = Database()
        batched = Batches(database.send)
        first = await started(batched, 0)
        await database.next_batch_out()
        rest = await started(batched, 1, 2, 3, 4, 5)
        for expected in ([0], [1, 2, 3], [4, 5]):
            await database.next_batch_out()
            assert database.sent[-1] == expected
            database.answer.set()
            await asyncio.sleep(0)
        assert await asyncio.gather(*first, *rest) == [0, 2, 4, 6, 8, 10]

    asyncio.run(scenario())
