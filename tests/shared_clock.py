"""A clock several gateway processes share, moved on by the test that started them: time
as the attempts and breakers read it is the real clock plus an offset kept in a file.

Gateway processes started with `tests/gunicorn_clocked.py` as their gunicorn configuration
put it in place in each worker (TEST_CLOCK_FILE names the file)."""

import asyncio
import os
import time
from pathlib import Path

from proxy import timing


class FileClock(timing.Clock):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _offset(self) -> float:
        try:
            return float(self.path.read_text() or 0)
        except (OSError, ValueError):
            return 0.0

    def now(self) -> float:
        return time.monotonic() + self._offset()

    def wall(self) -> float:
        return time.time() + self._offset()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # back-off passes at once: tests give the targets no retries

    def move_to(self, seconds: float) -> None:
        self.path.write_text(repr(seconds))


def install() -> None:
    timing.clock = FileClock(os.environ["TEST_CLOCK_FILE"])
