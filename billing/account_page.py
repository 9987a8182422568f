"""Billing's sections of the customer's account page (accounts.views.home lists them in
settings.ACCOUNT_PAGE_SECTIONS): this month's use against the plan, use per day, and the
buttons to buy or manage a plan. Rendered here, so accounts needs nothing of billing."""

from django.conf import settings
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString

from accounts.models import Account
from billing import checkout, money, monthly_usage, plans, rollups
from billing.models import Plan
from gateway_project.lib import charts
from gateway_project.lib.wording import counted


def _meter(label: str, used: int, limit: int | None, text=str) -> dict:
    percent = None if limit is None else (100 if limit == 0 else min(100, used * 100 // limit))
    return {"label": label, "used": text(used), "limit": None if limit is None else text(limit), "percent": percent}


def usage_section(request: HttpRequest, account: Account) -> SafeString:
    now = timezone.now()
    limits = plans.limits_in(plans.read_plans(), account.tier)
    month = monthly_usage.month_of(now)
    used = monthly_usage.month_totals(account.user_id, month)
    context = {
        "plan": limits,
        "month": month,
        "resets_on": monthly_usage.next_month(month),
        "used": used,
        "meters": [
            _meter("Requests", used["requests"], limits.monthly_requests, lambda n: f"{n:,}"),
            _meter("Tokens", used["total_tokens"], limits.monthly_tokens, lambda n: f"{n:,}"),
            _meter("Spend", used["cost_pico_usd"], limits.monthly_budget, money.usd_text),
        ],
        "chart": charts.requests_per_day(
            [
                (day.day, day.requests, f"{counted(day.total_tokens, 'token')}, {money.usd_text(day.cost_pico_usd)}")
                for day in rollups.daily(account.user_id, month, now)
            ]
        ),
    }
    return render_to_string("billing/account_usage.html", context, request=request)


def billing_section(request: HttpRequest, account: Account) -> SafeString:
    if not checkout.enabled():
        return SafeString("")
    on_offer = [plan for plan in checkout.purchasable_plans(account) if plan.tier != account.tier]
    context = {
        "account": account,
        "plans_on_offer": [],
        "checkout_nonce": checkout.new_nonce(),
        "returned": request.GET.get("checkout"),
    }
    if on_offer:  # compared with the customer's own plan; Stripe is asked only for a comparison
        current = list(Plan.objects.filter(tier=account.tier)) if account.tier else []
        prices = checkout.price_texts([*on_offer, *current], timezone.now())
        # A tier without a plan has the free limits, as at admission.
        context["current_plan"] = _offer(
            plans.limits_of(current[0]) if current else plans.free_limits(),
            prices.get(account.tier) if account.tier else "free",
        )
        context["plans_on_offer"] = [_offer(plans.limits_of(plan), prices[plan.tier]) for plan in on_offer]
    return render_to_string("billing/account_billing.html", context, request=request)


def _offer(limits: plans.Limits, price: str | None) -> dict:
    """What a plan gives and costs, as the plan table shows it."""

    def count(limit: int | None) -> str:
        return "unlimited" if limit is None else f"{limit:,}"

    return {
        "tier": limits.tier,
        "name": limits.name,
        "price": price,
        "requests": count(limits.monthly_requests),
        "tokens": count(limits.monthly_tokens),
        "budget": "unlimited" if limits.monthly_budget is None else money.usd_text(limits.monthly_budget),
        "per_minute": f"{limits.requests_per_minute or settings.RATE_LIMIT_PER_MINUTE:,}",
    }
