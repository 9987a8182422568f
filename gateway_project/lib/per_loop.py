"""One object per running event loop: a worker's pools, clients, gates and background tasks.

asyncio objects (connections, semaphores, tasks, Redis and aiohttp clients) belong to the
loop that made them, and fail when used from another ("Event loop is closed", "attached to
a different loop"). A worker runs one loop; tests run the gateway's server on a loop of its
own and their own code on others. `PerLoop` keeps one value per loop, made on the loop's
first use and forgotten once that loop has closed; `LoopTask` keeps at most one running
task per loop.

`PerLoop.get()` sits on the request path: when the loop is the one of the previous call
(always, in a worker) it costs one identity comparison, with no lock and no await.
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_MISSING: Any = object()


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._by_loop: dict[asyncio.AbstractEventLoop, T] = {}
        # The loop of the last call and its value, as one tuple: read whole, so a thread
        # serving another loop can never pair this loop with that loop's value.
        self._last: tuple[asyncio.AbstractEventLoop | None, Any] = (None, _MISSING)

    def get(self) -> T:
        """The running loop's value, made now if it has none."""
        loop = asyncio.get_running_loop()
        last_loop, value = self._last
        if last_loop is loop:
            return value
        value = self._by_loop.get(loop, _MISSING)
        if value is _MISSING:
            for finished in [other for other in list(self._by_loop) if other.is_closed()]:
                self._by_loop.pop(finished, None)
            value = self._make()
        return self.set(value)

    def set(self, value: T) -> T:
        """Make `value` the running loop's."""
        loop = asyncio.get_running_loop()
        self._by_loop[loop] = value
        self._last = (loop, value)
        return value

    def pop(self) -> T | None:
        """The running loop's value (None if it has none), forgotten: to be closed. The
        loop's next get() makes a new one."""
        loop = asyncio.get_running_loop()
        if self._last[0] is loop:
            self._last = (None, _MISSING)
        return self._by_loop.pop(loop, None)


class LoopTask(Generic[T]):
    """At most one running task per event loop doing `work`: started on demand, and again
    once the previous one has ended (a batch writer that stops when its queue is empty).

    `work` is given the task's own event: `wake()` sets it, to cut a wait short.
    """

    def __init__(self, work: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> None:
        self._work = work
        self._current: PerLoop[tuple[asyncio.Task[T], asyncio.Event] | None] = PerLoop(lambda: None)

    def start(self) -> asyncio.Task[T]:
        """The running loop's task: the one still running, else a new one."""
        current = self._current.get()
        if current is not None and not current[0].done():
            return current[0]
        woken = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._work(woken))
        self._current.set((task, woken))
        return task

    def running(self) -> asyncio.Task[T] | None:
        """The running loop's task while it runs, else None (none is started)."""
        current = self._current.get()
        return current[0] if current is not None and not current[0].done() else None

    def wake(self) -> None:
        """Set the event of the running loop's task, if one runs."""
        current = self._current.get()
        if current is not None and not current[0].done():
            current[1].set()
