"""Admission: the per-minute rate limit, then the monthly quota.

A request is counted against the quota only if the rate limit admits it. With Redis
both checks are a round trip away, so for a metered caller they run at the same time:
the quota is counted while the rate limit is asked, and given back if the rate limit
refuses. A caller just refused is checked one after the other again until their
window frees a slot, so a caller hammering past the limit costs no database writes.
"""

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime

from django.db import DatabaseError

from billing import quota
from billing.plans import Limits
from billing.quota import Charge
from gateway_project.lib import process_state
from gateway_project.lib.errors import GatewayError, for_operators
from proxy import ratelimit
from proxy.ratelimit import Decision

logger = logging.getLogger(__name__)

# Callers refused with 429 lately (user id → when their window frees a slot), newest last.
_refused_until: OrderedDict[str, float] = OrderedDict()
process_state.on_reset(_refused_until.clear)
REMEMBERED_REFUSALS = 10_000
# Give-backs of cancelled admissions still running (a reference, so none is collected early).
_giving_back: set[asyncio.Task] = set()


async def admit(
    user_id: str, limits: Limits, now: datetime, method: str = "GET", model: str = ""
) -> tuple[Decision | None, Charge]:
    """The rate-limit decision (None when Redis is unreachable) and the quota charge,
    or the refusal: 400 for an unpriced model under a budget, 429 over the rate limit (not
    counted), 402 over the quota or budget."""
    await quota.check_priced(limits, method, model, now)
    timestamp = now.timestamp()
    if not limits.metered or not _worth_overlapping(user_id, timestamp):
        decision = await _rate_limit(user_id, limits, timestamp)
        return decision, await quota.charge(user_id, limits, now)
    rate_limit = asyncio.ensure_future(_rate_limit(user_id, limits, timestamp))
    try:
        charge = await quota.charge(user_id, limits, now)
    except GatewayError:
        # Over the quota, or the database failed: a refusal by the rate limit still
        # comes first, as if it had been asked first.
        await _refusal_first(rate_limit)
        raise
    except BaseException:
        rate_limit.cancel()
        raise
    try:
        decision = await rate_limit
    except ratelimit.RateLimited:
        await _give_back(charge)
        raise
    except BaseException:
        # Cancelled (the client left) before the charge reached the caller: give it back,
        # its single-call place too, without waiting in a task being cancelled.
        task = asyncio.get_running_loop().create_task(_give_back(charge))
        _giving_back.add(task)
        task.add_done_callback(_giving_back.discard)
        raise
    return decision, charge


def _worth_overlapping(user_id: str, now: float) -> bool:
    if not ratelimit.backend().remote:
        return False  # a local check costs microseconds: nothing to overlap
    until = _refused_until.get(user_id)
    if until is None:
        return True
    if until > now:
        return False
    del _refused_until[user_id]
    return True


async def _rate_limit(user_id: str, limits: Limits, now: float) -> Decision | None:
    try:
        return await ratelimit.admit(user_id, limits, now)
    except ratelimit.RateLimited as refusal:
        _refused_until[user_id] = refusal.decision.reset
        _refused_until.move_to_end(user_id)
        while len(_refused_until) > REMEMBERED_REFUSALS:
            _refused_until.popitem(last=False)
        raise


async def _refusal_first(rate_limit: asyncio.Future) -> None:
    """Raise the rate limit's 429 if it refused; otherwise return."""
    try:
        await rate_limit
    except ratelimit.RateLimited:
        raise
    except Exception:
        return


async def _give_back(charge: Charge) -> None:
    try:
        await quota.refund(charge)
    except DatabaseError as error:
        logger.error(
            "quota: a request refused by the rate limit stays counted for %s (%s)", charge.user_id, for_operators(error)
        )
