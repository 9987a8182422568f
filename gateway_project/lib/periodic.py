"""A worker's background job: `work` run again and again by one task per event loop, from the
ASGI lifespan's startup until its shutdown (gateway_project.asgi).

The job never raises and never stops on a failure: the first one is logged with its
traceback, the next ones are not until a round succeeds again (a database down for an hour
writes one line, not one per round).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway_project.lib.per_loop import PerLoop

logger = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, work: Callable[[], Awaitable[object]], every: Callable[[], float]) -> None:
        """`every()`: seconds between the end of a round and the start of the next, read at
        each round; 0 or less: the job is off (start() starts nothing)."""
        self.name = name
        self._work = work
        self._every = every
        self._running: PerLoop[tuple[asyncio.Task, asyncio.Event] | None] = PerLoop(lambda: None)

    def start(self) -> asyncio.Task | None:
        """Start the running loop's task (its first round at once), unless it runs or is off."""
        if self._every() <= 0:
            return None
        current = self._running.get()
        if current is not None and not current[0].done():
            return current[0]
        stopping = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._run(stopping), name=self.name)
        self._running.set((task, stopping))
        return task

    async def stop(self, grace: float = 1.0) -> None:
        """End the running loop's task: the round under way gets `grace` seconds to finish,
        then is cancelled."""
        current = self._running.pop()
        if current is None:
            return
        task, stopping = current
        stopping.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, stopping: asyncio.Event) -> None:
        failing = False
        while not stopping.is_set():
            try:
                await self._work()
            except Exception:
                if not failing:
                    logger.exception("%s failed; it runs again every %s s", self.name, f"{self._every():g}")
                failing = True
            else:
                if failing:
                    logger.warning("%s works again", self.name)
                failing = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(self._every(), 0.001)):
                    await stopping.wait()
