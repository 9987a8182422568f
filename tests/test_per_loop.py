"""One object per event loop: what the worker's pools, clients and batch writers are kept in."""

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable

from gateway_project.lib.per_loop import LoopTask, PerLoop


class Resource:
    pass


def on_two_threads(serve: Callable[[str], None]) -> None:
    """Runs serve("a") and serve("b") at once, each on a thread of its own."""
    threads = [threading.Thread(target=serve, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_loop_gets_the_same_value_every_time_and_another_loop_its_own():
    resources = PerLoop(Resource)

    async def twice() -> tuple[Resource, Resource]:
        return resources.get(), resources.get()

    first, again = asyncio.run(twice())
    other, _ = asyncio.run(twice())

    assert first is again
    assert other is not first


def test_loops_on_two_threads_at_once_never_get_each_others_value():
    resources = PerLoop(Resource)
    both_running = threading.Barrier(2)
    seen: dict[str, set[int]] = {}

    def serve(name: str) -> None:
        async def main() -> None:
            mine = {id(resources.get())}
            both_running.wait()
            for _ in range(2000):
                mine.add(id(resources.get()))
                await asyncio.sleep(0)
            seen[name] = mine

        asyncio.run(main())

    on_two_threads(serve)

    assert len(seen["a"]) == len(seen["b"]) == 1
    assert seen["a"] != seen["b"]


def test_the_value_of_a_closed_loop_is_let_go_when_another_loop_arrives():
    resources = PerLoop(Resource)

    async def take() -> weakref.ref:
        return weakref.ref(resources.get())

    old = asyncio.run(take())
    asyncio.run(take())
    gc.collect()

    assert old() is None


def test_a_popped_value_is_replaced_on_the_next_use():
    resources = PerLoop(Resource)

    async def main() -> tuple[Resource, Resource | None, Resource | None, Resource]:
        first = resources.get()
        popped = resources.pop()
        nothing = resources.pop()
        return first, popped, nothing, resources.get()

    first, popped, nothing, fresh = asyncio.run(main())

    assert popped is first
    assert nothing is None
    assert fresh is not first


def test_a_loop_task_runs_once_at_a_time_and_again_after_it_ended():
    runs: list[int] = []

    async def work(woken: asyncio.Event) -> int:
        runs.append(len(runs))
        await woken.wait()
        return len(runs)

    batches = LoopTask(work)

    async def main():
        first = batches.start()
        same = batches.start()
        await asyncio.sleep(0)
        batches.wake()
        result = await first
        ended = batches.running()
        second = batches.start()
        batches.wake()
        return first, same, result, ended, second, await second

    first, same, result, ended, second, second_result = asyncio.run(main())

    assert same is first
    assert result == 1
    assert ended is None
    assert second is not first and second_result == 2


def test_waking_a_loop_task_that_does_not_run_starts_nothing():
    started: list[asyncio.Event] = []

    async def work(woken: asyncio.Event) -> None:
        started.append(woken)

    idle = LoopTask(work)

    async def main():
        idle.wake()
        return idle.running()

    assert asyncio.run(main()) is None
    assert started == []


def test_each_loop_has_its_own_loop_task():
    release = threading.Event()

    async def work(woken: asyncio.Event) -> None:
        while not release.is_set():
            await asyncio.sleep(0.001)

    writers = LoopTask(work)
    tasks: dict[str, asyncio.Task] = {}
    running: dict[str, asyncio.Task | None] = {}
    both_started = threading.Barrier(2)

    def serve(name: str) -> None:
        async def main() -> None:
            tasks[name] = writers.start()
            both_started.wait()
            running[name] = writers.running()
            release.set()
            await tasks[name]

        asyncio.run(main())

    on_two_threads(serve)

    assert running == tasks
    assert tasks["a"] is not tasks["b"]
    assert tasks["a"].get_loop() is not tasks["b"].get_loop()
