"""The single-call place of callers close to their budget, as this process knows it.

The database holds the place (`MonthlyUsage.single_call_until`, see billing.monthly_usage). A
finished call frees it in the same transaction that adds its cost to the month, which
the access-log writer commits a few milliseconds after the response ended: a caller that
sends its next call at once would find the place still taken by a call that is over. So a
call refused for the place waits, bounded by BUDGET_WAIT_SECONDS, unless a call of the
same caller is still running in this process: then the place is taken for real.
"""

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime

from gateway_project.lib import process_state

# The longest pause between two looks at a place taken by another process.
_LONGEST_POLL = 0.2


@dataclass(slots=True)
class _Place:
    until: datetime
    # The call's response has ended; its row (which frees the place) is being written.
    finished: bool = False
    freed: asyncio.Event = field(default_factory=asyncio.Event)


# (user id, month) → the place a call served by this process took.
_taken: dict[tuple[str, date], _Place] = {}
process_state.on_reset(_taken.clear)


def take(user_id: str, month: date, until: datetime, now: datetime) -> None:
    """A call of this process was admitted alone, holding the place until `until`."""
    for key in [key for key, place in _taken.items() if place.until <= now]:
        del _taken[key]  # never freed (its row was lost): the database lets it lapse too
    _taken[user_id, month] = _Place(until)


def finish(user_id: str, month: date, until: datetime) -> None:
    """The call holding the place has ended; its row is on its way to the database."""
    place = _taken.get((user_id, month))
    if place is not None and place.until == until:
        place.finished = True


def free(user_id: str, month: date, until: datetime) -> None:
    """The place is free in the database (the call's cost is in the month)."""
    place = _taken.get((user_id, month))
    if place is not None and place.until == until:
        del _taken[user_id, month]
        place.freed.set()


async def wait_until_free(user_id: str, month: date, attempt: int, deadline: float) -> bool:
    """Wait for a taken place to be freed: False at once when a call holding it still runs
    here, or when the deadline (loop time) has passed; True when worth asking again."""
    remaining = deadline - asyncio.get_running_loop().time()
    place = _taken.get((user_id, month))
    if remaining <= 0 or (place is not None and not place.finished):
        return False
    if place is not None:
        try:
            await asyncio.wait_for(place.freed.wait(), remaining)
        except TimeoutError:
            return False
        return True
    # Taken by another process: look again soon, more slowly each time.
    await asyncio.sleep(min(0.01 * 2**attempt, _LONGEST_POLL, remaining))
    return True
