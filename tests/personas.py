"""Named people the tests are about, built inline rather than from fixture files."""

from datetime import timedelta

from django.utils import timezone

from accounts.models import Account, ApiKey, CodexCredential


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
