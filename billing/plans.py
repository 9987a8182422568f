"""What each caller may use: their tier's plan, or the free limits from settings.

Plans change rarely, so each worker keeps them all in memory for PLAN_CACHE_SECONDS and
reloads them with one query: no database read per request.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection

from gateway_project.errors import service_unavailable

logger = logging.getLogger(__name__)

PLAN_CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    tier: str  # "" for callers without a paid tier
    name: str
    requests_per_minute: int | None
    monthly_requests: int | None
    monthly_tokens: int | None

    @property
    def metered(self) -> bool:
        """Whether a monthly limit applies, so each request must be counted before it is forwarded."""
        return self.monthly_requests is not None or self.monthly_tokens is not None


def free_limits() -> Limits:
    return Limits("", "free", None, settings.FREE_MONTHLY_REQUESTS, settings.FREE_MONTHLY_TOKENS)


class _PlanCache:
    def __init__(self) -> None:
        self._plans: dict[str, Limits] = {}
        self._expires = 0.0
        self._loading: asyncio.Task | None = None

    async def get(self) -> dict[str, Limits]:
        if time.monotonic() < self._expires:
            return self._plans
        loop = asyncio.get_running_loop()
        # One reload at a time, however many requests notice the expiry together.
        if self._loading is None or self._loading.done() or self._loading.get_loop() is not loop:
            self._loading = loop.create_task(sync_to_async(load_plans, thread_sensitive=False)())
        try:
            self._plans = await asyncio.shield(self._loading)
        except DatabaseError as error:
            logger.error("plans: could not be loaded (%s)", type(error).__name__)
            raise service_unavailable(
                "The gateway cannot read its plans for a moment (its database is unreachable). Try again shortly."
            ) from None
        self._expires = time.monotonic() + PLAN_CACHE_SECONDS
        return self._plans

    def clear(self) -> None:
        self._expires = 0.0


def load_plans() -> dict[str, Limits]:
    try:
        return read_plans()
    finally:
        connection.close()


def read_plans() -> dict[str, Limits]:
    """Every plan's limits by tier, read now (operators' pages; the relay uses the cache)."""
    from billing.models import Plan

    return {
        plan.tier: Limits(
            plan.tier, plan.get_tier_display(), plan.requests_per_minute, plan.monthly_requests, plan.monthly_tokens
        )
        for plan in Plan.objects.all()
    }


def limits_in(plans: dict[str, Limits], tier: str) -> Limits:
    """A tier's limits among `plans`; no tier, or a tier without a plan, gets the free limits."""
    return (plans.get(tier) or free_limits()) if tier else free_limits()


_cache = _PlanCache()


async def limits_for(tier: str) -> Limits:
    if not tier:
        return free_limits()
    return limits_in(await _cache.get(), tier)
