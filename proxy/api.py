"""The gateway's JSON API (django-ninja): what a caller may still use. Docs at /api/docs."""

from datetime import timedelta

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from ninja import NinjaAPI, Query, Schema

from accounts.identity import identify
from billing import money, monthly_usage, plans, rollups
from gateway_project.lib.api_errors import ErrorOut
from gateway_project.lib.errors import GatewayError
from proxy import ratelimit

# The longest history /api/usage/daily gives: what retention usually keeps of the log, though
# the rollups it reads outlive the log.
HISTORY_DAYS = 90

api = NinjaAPI(
    title="organized-gateway",
    version="1",
    description="Identify as on /v1: X-User-ID, or a gateway key (X-Gateway-Key, or Bearer in codex mode).",
    urls_namespace="proxy-api",
)


class RateLimitOut(Schema):
    limit: int
    remaining: int | None
    reset: int | None


class MeterOut(Schema):
    used: int
    limit: int | None


class TokensOut(Schema):
    input: int
    cached_input: int
    output: int


class SpendOut(Schema):
    used_usd: str  # exact decimal, as a string: money is never a float
    budget_usd: str | None
    unknown_cost_requests: int


class UsageOut(Schema):
    user_id: str
    tier: str | None
    plan: str
    rate_limit: RateLimitOut
    month: str
    requests: MeterOut
    tokens: MeterOut
    token_split: TokensOut
    unknown_usage_requests: int
    spend: SpendOut
    resets_at: str


class DayOut(Schema):
    day: str
    requests: int
    tokens: int
    cost_usd: str  # exact decimal, of the calls whose cost is known
    unknown_usage_requests: int
    unknown_cost_requests: int


class DailyOut(Schema):
    user_id: str
    days: list[DayOut]


@api.exception_handler(GatewayError)
def gateway_error(request: HttpRequest, error: GatewayError) -> JsonResponse:
    return error.response()


@api.get("/usage", response={200: UsageOut, 400: ErrorOut, 401: ErrorOut}, summary="The caller's limits and use")
async def get_usage(request: HttpRequest):
    caller = await identify(request)
    limits = await plans.limits_for(caller.tier)
    now = timezone.now()
    month = monthly_usage.month_of(now)
    standing = await ratelimit.peek(caller.user_id, limits, now.timestamp())
    used = await sync_to_async(_used, thread_sensitive=False)(caller.user_id, month)
    return {
        "user_id": caller.user_id,
        "tier": caller.tier or None,
        "plan": limits.name,
        "rate_limit": {
            "limit": ratelimit.per_minute_limit(limits),
            "remaining": standing.remaining if standing else None,
            "reset": int(standing.headers()["X-RateLimit-Reset"]) if standing else None,
        },
        "month": f"{month:%Y-%m}",
        "requests": {"used": used["requests"], "limit": limits.monthly_requests},
        "tokens": {"used": used["total_tokens"], "limit": limits.monthly_tokens},
        "token_split": {
            "input": used["input_tokens"],
            "cached_input": used["cached_input_tokens"],
            "output": used["output_tokens"],
        },
        "unknown_usage_requests": used["unknown_usage_requests"],
        "spend": {
            "used_usd": f"{money.to_usd(used['cost_pico_usd']):f}",
            "budget_usd": None if limits.monthly_budget is None else f"{money.to_usd(limits.monthly_budget):f}",
            "unknown_cost_requests": used["unknown_cost_requests"],
        },
        "resets_at": f"{monthly_usage.next_month(month):%Y-%m-%d}T00:00:00Z",
    }


@api.get(
    "/usage/daily",
    response={200: DailyOut, 400: ErrorOut, 401: ErrorOut},
    summary="The caller's use per day (UTC), oldest first",
)
async def get_daily_usage(request: HttpRequest, days: int = Query(30, ge=1, le=HISTORY_DAYS)):
    caller = await identify(request)
    now = timezone.now()
    history = await sync_to_async(_daily, thread_sensitive=False)(caller.user_id, now.date() - timedelta(days - 1), now)
    return {
        "user_id": caller.user_id,
        "days": [
            {
                "day": f"{day.day:%Y-%m-%d}",
                "requests": day.requests,
                "tokens": day.total_tokens,
                "cost_usd": f"{money.to_usd(day.cost_pico_usd):f}",
                "unknown_usage_requests": day.unknown_usage_requests,
                "unknown_cost_requests": day.unknown_cost_requests,
            }
            for day in history
        ],
    }


def _daily(user_id: str, first_day, now) -> list[rollups.Day]:
    try:
        return rollups.daily(user_id, first_day, now)
    finally:
        connection.close()


def _used(user_id: str, month) -> dict[str, int]:
    try:
        return monthly_usage.month_totals(user_id, month)
    finally:
        connection.close()


api.add_router("/billing", "billing.api.router")
