"""Named people the tests are about, built inline rather than from fixture files."""

from datetime import date, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from accounts.models import Account, ApiKey, CodexCredential
from billing import rollups
from billing.models import ModelPrice
from proxy.models import RequestLog


def trainee(user_id: str, tier: str = "") -> tuple[Account, str]:
    """An account with one active API key; returns the account and the plaintext key."""
    account = Account.objects.create(user_id=user_id, tier=tier)
    _, raw_key = ApiKey.objects.issue(account, name="laptop")
    return account, raw_key


def link_codex(
    account: Account, access_token: str, *, expires_in: timedelta = timedelta(hours=1), refresh_token: str = ""
):
    return CodexCredential.objects.create(
        account=account, access_token=access_token, refresh_token=refresh_token, expires_at=timezone.now() + expires_in
    )


def logged_request(
    user_id: str,
    status: int = 200,
    *,
    at: datetime,
    latency_ms: int = 100,
    tokens: int | None = 0,
    endpoint: str = "/v1/chat/completions",
    model: str = "gpt-4o",
    cost: int | None = None,
    upstream: str | None = None,
) -> RequestLog:
    """An access-log row as the gateway writes it (unsaved: bulk_create a list of them). The
    upstream, unless given: none for the statuses the gateway answers itself, else the default."""
    return RequestLog(
        user_id=user_id,
        method="POST",
        endpoint=endpoint,
        status=status,
        latency_ms=latency_ms,
        input_tokens=None if tokens is None else tokens,
        cached_input_tokens=None if tokens is None else 0,
        output_tokens=None if tokens is None else 0,
        total_tokens=tokens,
        cost_pico_usd=cost,
        model=model,
        ip_hash="0611c8f6",
        created_at=at,
        upstream=("" if status in GATEWAY_STATUSES else "default") if upstream is None else upstream,
    )


# Statuses the gateway answers itself: refusals, and an upstream that never answered (502, 504).
GATEWAY_STATUSES = (400, 401, 402, 429, 499, 502, 503, 504)


def price(model: str, input_usd: str, cached_usd: str, output_usd: str, since: date = date(2020, 1, 1)) -> ModelPrice:
    """A model's price in USD per million input, cached input and output tokens, from `since`."""
    return ModelPrice.objects.create(
        model=model,
        effective_from=since,
        input_per_million=Decimal(input_usd),
        cached_input_per_million=Decimal(cached_usd),
        output_per_million=Decimal(output_usd),
    )


def write_log(rows: list[RequestLog]) -> None:
    """Rows as the access-log writer leaves them: in the log, and in the rollups."""
    RequestLog.objects.bulk_create(rows)
    rollups.rebuild()


def busy_hour(now: datetime) -> None:
    """An hour of workshop traffic up to `now`, and this month's usage.

    Last 5 minutes: alice 3 requests (one 429), avg latency 150 ms; bob one 502 in 50 ms.
    Since the start of the hour: bob two more 429s, carol one 429; carol's 200 is older.
    """
    ago = lambda **delta: now - timedelta(**delta)  # noqa: E731
    write_log(
        [
            logged_request("alice", 200, at=ago(minutes=1), latency_ms=100),
            logged_request("alice", 200, at=ago(minutes=2), latency_ms=200),
            logged_request("alice", 429, at=ago(minutes=3), latency_ms=150),
            logged_request("bob", 502, at=ago(minutes=2), latency_ms=50),
            logged_request("bob", 429, at=ago(minutes=30), latency_ms=1),
            logged_request("bob", 429, at=ago(minutes=30), latency_ms=1),
            logged_request("carol", 429, at=ago(minutes=40), latency_ms=1),
            logged_request("carol", 200, at=ago(hours=2), latency_ms=1),
        ]
    )
