"""What each caller may use: their tier's plan, or the free limits from settings.

Plans change rarely, so each worker keeps them all in memory (billing.cached) and reloads
them with one query: no database read per request.
"""

from dataclasses import dataclass

from django.conf import settings

from billing import money
from billing.cached import Reloaded


@dataclass(frozen=True, slots=True)
class Limits:
    tier: str  # "" for callers without a paid tier
    name: str
    requests_per_minute: int | None
    monthly_requests: int | None
    monthly_tokens: int | None
    monthly_budget: int | None = None  # pico-USD
    # The upstream the plan's callers are pinned to (accounts.pins); "" for none.
    pin: str = ""

    @property
    def metered(self) -> bool:
        """Whether a monthly limit applies, so each request must be counted before it is forwarded."""
        return self.monthly_requests is not None or self.monthly_tokens is not None or self.budgeted

    @property
    def budgeted(self) -> bool:
        return self.monthly_budget is not None


def free_limits() -> Limits:
    budget = settings.FREE_MONTHLY_BUDGET
    return Limits(
        "",
        "free",
        None,
        settings.FREE_MONTHLY_REQUESTS,
        settings.FREE_MONTHLY_TOKENS,
        None if budget is None else money.to_pico(budget),
    )


def read_plans() -> dict[str, Limits]:
    """Every plan's limits by tier, read now (operators' pages; the relay uses the cache)."""
    from billing.models import Plan

    return {plan.tier: limits_of(plan) for plan in Plan.objects.all()}


def limits_of(plan) -> Limits:
    return Limits(
        plan.tier,
        plan.get_tier_display(),
        plan.requests_per_minute,
        plan.monthly_requests,
        plan.monthly_tokens,
        None if plan.monthly_budget_usd is None else money.to_pico(plan.monthly_budget_usd),
        plan.pinned_upstream,
    )


def limits_in(plans: dict[str, Limits], tier: str) -> Limits:
    """A tier's limits among `plans`; no tier, or a tier without a plan, gets the free limits."""
    return (plans.get(tier) or free_limits()) if tier else free_limits()


_cache = Reloaded(read_plans, "plans")


async def limits_for(tier: str) -> Limits:
    if not tier:
        return free_limits()
    return limits_in(await _cache.get(), tier)
