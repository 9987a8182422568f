import hashlib
import re
import secrets
from datetime import datetime, timedelta

from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from accounts import caller_changes, pins
from accounts.fields import EncryptedTextField

KEY_PREFIX = "gk_"
KEY_DISPLAY_LENGTH = 10
# What a user id may hold: X-User-ID, Stripe's client_reference_id and the admin all check it.
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9._@:-]{1,128}")


class Tier(models.TextChoices):
    TIER1 = "tier1", "Tier 1"
    TIER2 = "tier2", "Tier 2"
    TIER3 = "tier3", "Tier 3"


class AccountQuerySet(models.QuerySet):
    def get_or_create_checked(self, user_id: str, email: str = "") -> tuple["Account", bool]:
        """The account of `user_id`, created after validation when it does not exist yet."""
        account = self.filter(user_id=user_id).first()
        if account is not None:
            return account, False
        account = self.model(user_id=user_id, email=email)
        account.full_clean()
        account.save()
        return account, True


class Account(models.Model):
    """A caller of the gateway: a trainee, later a paying customer."""

    user_id = models.CharField(
        max_length=128,
        unique=True,
        # RegexValidator searches: anchored, or "not valid!" would pass on its "not".
        validators=[
            RegexValidator(rf"\A{USER_ID_PATTERN.pattern}\Z", "1-128 characters from A-Z, a-z, 0-9 and . _ @ : -")
        ],
        help_text="The id trainees used as X-User-ID in phase 1; shown in the access log.",
    )
    email = models.EmailField(
        blank=True, help_text="Where sign-in links are sent. Unique, whatever the case; empty: no email sign-in."
    )
    name = models.CharField(max_length=200, blank=True)
    tier = models.CharField(max_length=16, choices=Tier.choices, blank=True, help_text="Empty: no paid tier.")
    stripe_customer_id = models.CharField(max_length=64, blank=True, db_index=True)
    pinned_upstream = pins.pinned_upstream_field()
    stripe_event_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When Stripe created the last event applied to this account."
    )
    signed_in_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Last sign-in to the account page; a sign-in link works once."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AccountQuerySet.as_manager()

    class Meta:
        ordering = ["user_id"]
        constraints = [
            models.UniqueConstraint(
                Lower("email"),
                condition=~models.Q(email=""),
                name="account_email_unique_ci",
                violation_error_message="Another account has this email.",
            )
        ]

    def __str__(self) -> str:
        return self.user_id

    def set_tier(self, tier: str, *, source: str, reference: str = "") -> bool:
        """Change the tier and record the change; False when it was already so."""
        with transaction.atomic():
            current = Account.objects.select_for_update().values_list("tier", flat=True).get(pk=self.pk)
            if current == tier:
                self.tier = tier
                return False
            Account.objects.filter(pk=self.pk).update(tier=tier, updated_at=timezone.now())
            caller_changes.changed()
            TierChange.objects.create(account=self, old_tier=current, new_tier=tier, source=source, reference=reference)
        self.tier = tier
        return True


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def active_key_filter(via: str = "") -> models.Q:
    """What makes an API key active, said once: ApiKey.objects.active(), which sign-in, the
    account page and the raw lookup of every /v1 call (accounts.identity) are built on, and
    filters from another model (`via` its path to the key, e.g. "api_keys__")."""
    return models.Q(**{f"{via}revoked_at__isnull": True})


def _new_key(account: Account, name: str) -> tuple["ApiKey", str]:
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(account=account, name=name, key_hash=hash_key(raw_key), prefix=raw_key[:KEY_DISPLAY_LENGTH])
    return key, raw_key


class ApiKeyQuerySet(models.QuerySet):
    def issue(self, account: Account, name: str = "") -> tuple["ApiKey", str]:
        """A new key for `account`: the plaintext is returned here and never again."""
        key, raw_key = _new_key(account, name)
        key.save(force_insert=True)
        return key, raw_key

    def issue_each(self, accounts: list[Account], name: str = "") -> list[str]:
        """A new key for each of `accounts` (an import), in one statement; their plaintexts."""
        issued = [_new_key(account, name) for account in accounts]
        self.bulk_create(key for key, _ in issued)
        caller_changes.changed()  # bulk_create sends no signal
        return [raw_key for _, raw_key in issued]

    def active(self) -> "ApiKeyQuerySet":
        return self.filter(active_key_filter())

    def active_with_hash(self, key_hash: str) -> "ApiKeyQuerySet":
        """The active key whose SHA-256 this is, if any: how a presented key is looked up."""
        return self.active().filter(key_hash=key_hash)

    def revoke(self) -> int:
        with transaction.atomic():
            revoked = self.active().update(revoked_at=timezone.now())
            if revoked:
                caller_changes.changed()
        return revoked


class ApiKey(models.Model):
    """A gateway-issued key (`gk_…`), stored only as its SHA-256."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=KEY_DISPLAY_LENGTH, editable=False, help_text="The key's first characters.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.account_id and self.account.user_id})"

    @property
    def is_active(self) -> bool:
        # active_key_filter() for one key in hand (tests/test_raw_sql.py holds them together).
        return self.revoked_at is None


class CodexCredential(models.Model):
    """An account's Codex OAuth session, tokens encrypted at rest (phase 2)."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="codex_credential")
    access_token = EncryptedTextField()
    refresh_token = EncryptedTextField(blank=True)
    expires_at = models.DateTimeField()
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    last_refresh_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Codex credential"

    def __str__(self) -> str:
        return f"Codex session of {self.account}"

    def expires_within(self, window: timedelta, now: datetime) -> bool:
        return self.expires_at <= now + window


class TierChange(models.Model):
    """History of every tier change, whoever made it."""

    class Source(models.TextChoices):
        ADMIN = "admin"
        STRIPE = "stripe"
        COMMAND = "command"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="tier_changes")
    old_tier = models.CharField(max_length=16, blank=True)
    new_tier = models.CharField(max_length=16, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    reference = models.CharField(max_length=255, blank=True, help_text="e.g. the Stripe event id, or the operator")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.account}: {self.old_tier or '—'} → {self.new_tier or '—'}"
