"""Named people the tests are about, built inline rather than from fixture files."""

from datetime import datetime, timedelta

from django.utils import timezone

from accounts.models import Account, ApiKey, CodexCredential
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
    tokens: int = 0,
    endpoint: str = "/v1/chat/completions",
    model: str = "gpt-4o",
) -> RequestLog:
    """An access-log row as the gateway writes it (unsaved: bulk_create a list of them)."""
    return RequestLog(
        user_id=user_id,
        method="POST",
        endpoint=endpoint,
        status=status,
        latency_ms=latency_ms,
        tokens_est=tokens,
        model=model,
        ip_hash="0611c8f6",
        created_at=at,
    )
