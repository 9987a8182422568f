"""Monthly quota and budget: each request is counted and checked in one atomic step before it
is forwarded; over a limit it is refused with 402 and not counted.

A call's cost is known only when it ends, so calls in flight can take a month past its
budget. While a caller is within BUDGET_MARGIN_USD of their budget their calls are admitted
one at a time, which bounds that: see docs/operators/prices-budgets.md.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError

from billing import call_usage, money, monthly_usage, prices, single_call
from billing.plans import Limits
from gateway_project.lib import from_settings
from gateway_project.lib.errors import GatewayError, for_operators, service_unavailable

logger = logging.getLogger(__name__)

# Stands in for "no limit" in the conditional upsert.
_UNLIMITED = 2**62
_ONE_AT_A_TIME = "budget_nearly_spent"


@dataclass(frozen=True, slots=True)
class Charge:
    """An admitted request's account of usage, settled when its response finishes."""

    user_id: str
    month: date
    # True when the request was already counted at admission (a metered plan); otherwise
    # the access-log writer counts it with the response, off the request's path.
    counted: bool
    # Set when the call was admitted alone, close to the budget: released when it is written.
    single_call_until: datetime | None = None

    def delta(self, used: call_usage.Usage | None, cost: int | None) -> monthly_usage.UsageDelta | None:
        """What the finished call adds to the month; `used` and `cost` are None when unknown."""
        requests = 0 if self.counted else 1
        if not requests and used == call_usage.NO_USAGE and cost == 0 and self.single_call_until is None:
            return None
        return monthly_usage.UsageDelta(self.user_id, self.month, requests, used, cost, self.single_call_until)


async def check_priced(limits: Limits, method: str, model: str, now: datetime) -> None:
    """A caller under a budget may call only priced models: a call the budget cannot count
    is refused, not let through uncounted. Reads (GET…) cost nothing and pass."""
    if not limits.budgeted or method != "POST":
        return
    if not model:
        raise GatewayError(
            400,
            "model_not_priced",
            "Your plan has a monthly budget, so every call must name a priced model in a JSON body "
            "(Content-Type: application/json) for the budget to count it.",
        )
    if (await prices.book()).price_for(model, now) is None:
        raise GatewayError(
            400,
            "model_not_priced",
            f"The model {model} has no price on this gateway, and your plan has a monthly budget: "
            "calls the budget cannot count are refused. Use a priced model, or ask the operator to price this one.",
        )


async def charge(user_id: str, limits: Limits, now: datetime) -> Charge:
    month = monthly_usage.month_of(now)
    if not limits.metered:
        return Charge(user_id, month, counted=False)
    lease = now + timedelta(seconds=from_settings.get("BUDGET_LEASE_SECONDS")) if limits.budgeted else None
    try:
        alone = await _count_or_refuse(user_id, month, limits, now, lease)
    except DatabaseError as error:
        logger.error("quota: usage could not be counted (%s); refusing metered requests", for_operators(error))
        raise service_unavailable(
            "Usage accounting is unavailable for a moment, so metered requests are paused. Try again shortly."
        ) from None
    if alone:
        single_call.take(user_id, month, lease, now)
    return Charge(user_id, month, counted=True, single_call_until=lease if alone else None)


async def _count_or_refuse(user_id: str, month: date, limits: Limits, now: datetime, lease: datetime | None) -> bool:
    """Count the request, or raise its refusal; True when it holds the single-call place.

    Refused for the place, it waits for the call holding it to be written (bounded), so a
    caller whose previous call has just ended is not refused for it."""
    deadline = None  # reckoned from the first refusal: counted at once, a call never needs it
    attempt = 0
    while True:
        admitted, alone = await _count(user_id, month, limits, now, lease)
        if admitted:
            return alone
        refusal = await _refusal(user_id, month, limits, now)
        if refusal.code != _ONE_AT_A_TIME:
            raise refusal
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + settings.BUDGET_WAIT_SECONDS
        if not await single_call.wait_until_free(user_id, month, attempt, deadline):
            raise refusal
        attempt += 1


async def _count(user_id: str, month: date, limits: Limits, now: datetime, lease: datetime | None) -> tuple[bool, bool]:
    if 0 in (limits.monthly_requests, limits.monthly_tokens, limits.monthly_budget):
        return False, False
    budget = _or_unlimited(limits.monthly_budget)
    margin = _margin() if limits.budgeted else None
    return await monthly_usage.count_if_under(
        user_id,
        month,
        max_requests=_or_unlimited(limits.monthly_requests),
        max_tokens=_or_unlimited(limits.monthly_tokens),
        max_cost=budget,
        alone_from=_UNLIMITED if margin is None else max(budget - margin, 0),
        now=now,
        lease=lease,
    )


@from_settings.held
def _margin() -> int:
    return money.to_pico(from_settings.get("BUDGET_MARGIN_USD"))


def _or_unlimited(limit: int | None) -> int:
    return _UNLIMITED if limit is None else limit


async def refund(charge: Charge) -> None:
    """Take back a request counted at admission that was then refused (by the rate limit)."""
    if charge.counted:
        await monthly_usage.uncount(charge.user_id, charge.month, charge.single_call_until)
        if charge.single_call_until is not None:
            single_call.free(charge.user_id, charge.month, charge.single_call_until)


async def _refusal(user_id: str, month: date, limits: Limits, now: datetime) -> GatewayError:
    spent = await monthly_usage.standing(user_id, month)
    requests, tokens, cost = spent or (0, 0, 0)
    if limits.budgeted and cost >= limits.monthly_budget:
        return _over_budget(limits, month, cost)
    if _reached(requests, limits.monthly_requests) or _reached(tokens, limits.monthly_tokens):
        return _over_quota(limits, month)
    if limits.budgeted:
        return _one_at_a_time(limits, cost)
    return _over_quota(limits, month)


def _reached(used: int, limit: int | None) -> bool:
    return limit is not None and used >= limit


def _resets(month: date) -> str:
    return f"It resets on {monthly_usage.next_month(month):%Y-%m-%d} at 00:00 UTC."


def _upgrade() -> str:
    return f" Upgrade at {settings.BILLING_UPGRADE_URL}" if settings.BILLING_UPGRADE_URL else ""


def _over_quota(limits: Limits, month: date) -> GatewayError:
    parts = []
    if limits.monthly_requests is not None:
        parts.append(f"{limits.monthly_requests:,} requests")
    if limits.monthly_tokens is not None:
        parts.append(f"{limits.monthly_tokens:,} tokens")
    message = f"Monthly quota exceeded: the {limits.name} plan includes {' and '.join(parts)} a month. {_resets(month)}"
    return GatewayError(402, "monthly_quota_exceeded", message + _upgrade(), type="insufficient_quota")


def _over_budget(limits: Limits, month: date, cost: int) -> GatewayError:
    message = (
        f"Monthly budget exceeded: the {limits.name} plan's budget is {money.usd_text(limits.monthly_budget)} "
        f"a month and {money.usd_text(cost)} is spent. {_resets(month)}"
    )
    return GatewayError(402, "monthly_budget_exceeded", message + _upgrade(), type="insufficient_quota")


def _one_at_a_time(limits: Limits, cost: int) -> GatewayError:
    return GatewayError(
        429,
        _ONE_AT_A_TIME,
        f"{money.usd_text(cost)} of your {money.usd_text(limits.monthly_budget)} monthly budget is spent: close to "
        "the budget, calls are admitted one at a time. Retry when your call in progress has finished.",
        type="requests",
        headers={"Retry-After": "1"},
    )
