"""Time as the attempts and the circuit breakers see it: tests put in a clock that does not
really sleep, or one shared by several gateway processes."""

import asyncio
import random
import time


class Clock:
    def now(self) -> float:
        """Seconds on this process's monotonic clock: for spans within one process."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch: for times other processes read (Redis), and HTTP dates."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def jitter(self) -> float:
        return random.random()


clock = Clock()
