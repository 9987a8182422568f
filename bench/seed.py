"""Seed the bench database: USERS accounts, each with an API key and a Codex session, all
on one metered plan with a USD budget, and a price for the model the bench calls. Writes the
plaintext keys, one per line, to the file given."""

import os
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django

django.setup()

from django.utils import timezone  # noqa: E402

from accounts.models import KEY_DISPLAY_LENGTH, Account, ApiKey, CodexCredential, hash_key  # noqa: E402
from billing.models import ModelPrice, Plan  # noqa: E402

USERS = int(os.environ.get("BENCH_USERS", "20000"))
BATCH = 2000


def main(keys_file: str) -> None:
    # Quotas and a budget that bite no one during the run, but are checked and counted on every
    # request; under a budget every call must be priced, so each one is costed too.
    Plan.objects.update_or_create(
        tier="tier1",
        defaults={
            "requests_per_minute": 600,
            "monthly_requests": 10**9,
            "monthly_tokens": 10**12,
            "monthly_budget_usd": Decimal(10**6),
        },
    )
    ModelPrice.objects.update_or_create(
        model="gpt-4o-mini",
        effective_from=date(2024, 1, 1),
        defaults={
            "input_per_million": Decimal("0.15"),
            "cached_input_per_million": Decimal("0.075"),
            "output_per_million": Decimal("0.6"),
        },
    )
    expires = timezone.now() + timedelta(days=30)
    keys = [f"gk_bench{index:07d}{'x' * 30}" for index in range(USERS)]
    for start in range(0, USERS, BATCH):
        accounts = Account.objects.bulk_create(
            [Account(user_id=f"bench-{index}", tier="tier1") for index in range(start, min(start + BATCH, USERS))]
        )
        ApiKey.objects.bulk_create(
            ApiKey(account=account, key_hash=hash_key(key), prefix=key[:KEY_DISPLAY_LENGTH])
            for account, key in zip(accounts, keys[start : start + BATCH], strict=True)
        )
        CodexCredential.objects.bulk_create(
            CodexCredential(account=account, access_token=f"codex-token-{account.user_id}", expires_at=expires)
            for account in accounts
        )
    Path(keys_file).write_text("\n".join(keys) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
