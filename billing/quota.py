"""Monthly quota: each request is counted and checked in one atomic step before it is
forwarded; over the limit it is refused with 402 and not counted."""

import logging
from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.db import DatabaseError

from billing import usage
from billing.plans import Limits
from gateway_project.errors import GatewayError, service_unavailable

logger = logging.getLogger(__name__)

# Stands in for "no limit" in the conditional upsert.
_UNLIMITED = 2**62


@dataclass(frozen=True, slots=True)
class Charge:
    """An admitted request's account of usage, settled when its response finishes."""

    user_id: str
    month: date
    # True when the request was already counted at admission (a metered plan); otherwise
    # the access-log writer counts it with the response, off the request's path.
    counted: bool

    def delta(self, used: usage.Usage | None) -> usage.UsageDelta | None:
        """What the finished call adds to the month; `used` is None when its usage is unknown."""
        requests = 0 if self.counted else 1
        if not requests and used == usage.NO_USAGE:
            return None
        return usage.UsageDelta(self.user_id, self.month, requests, used)


async def charge(user_id: str, limits: Limits, now: datetime) -> Charge:
    month = usage.month_of(now)
    if not limits.metered:
        return Charge(user_id, month, counted=False)
    try:
        admitted = await _count(user_id, month, limits)
    except DatabaseError as error:
        logger.error("quota: usage could not be counted (%s); refusing metered requests", type(error).__name__)
        raise service_unavailable(
            "Usage accounting is unavailable for a moment, so metered requests are paused. Try again shortly."
        ) from None
    if not admitted:
        raise _over_quota(limits, month)
    return Charge(user_id, month, counted=True)


async def _count(user_id: str, month: date, limits: Limits) -> bool:
    if limits.monthly_requests == 0 or limits.monthly_tokens == 0:
        return False
    return await usage.count_if_under(
        user_id,
        month,
        limits.monthly_requests if limits.monthly_requests is not None else _UNLIMITED,
        limits.monthly_tokens if limits.monthly_tokens is not None else _UNLIMITED,
    )


async def refund(charge: Charge) -> None:
    """Take back a request counted at admission that was then refused (by the rate limit)."""
    if charge.counted:
        await usage.uncount(charge.user_id, charge.month)


def _over_quota(limits: Limits, month: date) -> GatewayError:
    resets = usage.next_month(month)
    parts = []
    if limits.monthly_requests is not None:
        parts.append(f"{limits.monthly_requests:,} requests")
    if limits.monthly_tokens is not None:
        parts.append(f"{limits.monthly_tokens:,} tokens")
    message = (
        f"Monthly quota exceeded: the {limits.name} plan includes {' and '.join(parts)} a month. "
        f"It resets on {resets:%Y-%m-%d} at 00:00 UTC."
    )
    if settings.BILLING_UPGRADE_URL:
        message += f" Upgrade at {settings.BILLING_UPGRADE_URL}"
    return GatewayError(402, "monthly_quota_exceeded", message, type="insufficient_quota")
