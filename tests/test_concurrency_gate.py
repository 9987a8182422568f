"""The gateway's own checks run a few requests at a time per worker, and never stall one."""

import asyncio

from proxy import concurrency_gate


async def hold_slots(count: int, release: asyncio.Event) -> list[asyncio.Task]:
    entered = asyncio.Event()
    holders = []

    async def hold() -> None:
        async with concurrency_gate.slot():
            entered.set()
            await release.wait()

    for _ in range(count):
        holders.append(asyncio.create_task(hold()))
        await entered.wait()
        entered.clear()
    return holders


def test_a_burst_goes_through_a_few_at_a_time(monkeypatch):
    monkeypatch.setattr(concurrency_gate, "SLOTS", 2)
    monkeypatch.setattr(concurrency_gate, "MAX_WAIT", 30.0)

    async def scenario() -> list[str]:
        events: list[str] = []
        release = asyncio.Event()
        holders = await hold_slots(2, release)

        async def third() -> None:
            async with concurrency_gate.slot():
                events.append("third in")

        waiting = asyncio.create_task(third())
        for _ in range(10):  # let the third run as far as it can
            await asyncio.sleep(0)
        events.append("slots released")
        release.set()
        await asyncio.gather(waiting, *holders)
        return events

    assert asyncio.run(scenario()) == ["slots released", "third in"]


def test_a_request_goes_ahead_when_no_slot_frees_in_time(monkeypatch):
    # A slow database or Redis holding every slot delays the others by MAX_WAIT at most.
    monkeypatch.setattr(concurrency_gate, "SLOTS", 1)
    monkeypatch.setattr(concurrency_gate, "MAX_WAIT", 0.01)

    async def scenario() -> bool:
        release = asyncio.Event()
        holders = await hold_slots(1, release)
        async with asyncio.timeout(5):
            async with concurrency_gate.slot():
                went_ahead = not release.is_set()
        release.set()
        await asyncio.gather(*holders)
        return went_ahead

    assert asyncio.run(scenario())
