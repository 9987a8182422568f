"""One call forgets what a worker remembers between requests, as tests need between two of them."""

import asyncio

from gateway_project.lib import process_state
from proxy import ratelimit


def test_after_a_reset_the_in_process_rate_limit_starts_afresh(settings):
    settings.REDIS_URL = None
    process_state.reset()

    async def admitted() -> bool:
        decision = await ratelimit.check("reset-user", 1, 1_800_000_000.0)
        return decision is not None and decision.allowed

    first, second = asyncio.run(admitted()), asyncio.run(admitted())
    process_state.reset()
    after = asyncio.run(admitted())

    assert (first, second, after) == (True, False, True)
