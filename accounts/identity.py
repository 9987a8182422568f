"""Who is calling, established before anything else is done (GATEWAY_IDENTITY).

header: the caller names themselves with X-User-ID (phase 1, a trusted workshop network).
key:    the caller proves who they are with a gateway API key (`gk_…`), as
        `Authorization: Bearer gk_…` in codex mode or `X-Gateway-Key` in any mode.
        X-User-ID is ignored. Lookups are cached in process for KEY_CACHE_SECONDS.
"""

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest
from django.utils import timezone

from gateway_project.errors import GatewayError, service_unavailable

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9._@:-]{1,128}")
KEY_PATTERN = re.compile(r"gk_[A-Za-z0-9_-]{32,120}")
CACHE_ENTRIES = 10_000
# last_used_at is written at most this often per key, and never on the request's path.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Injected clock for the cache, so tests can move past its expiry.
clock = time.monotonic


@dataclass(frozen=True, slots=True)
class CodexSession:
    access_token: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    account_id: int | None = None
    tier: str = ""
    codex: CodexSession | None = field(default=None, repr=False)


async def identify(request: HttpRequest) -> Caller:
    if settings.GATEWAY_IDENTITY == "key":
        return await _from_key(request)
    return await _from_header(request)


async def _from_header(request: HttpRequest) -> Caller:
    user_id = request.headers.get("X-User-ID")
    if user_id is None:
        user_id = ANONYMOUS
    elif not USER_ID_PATTERN.fullmatch(user_id):
        raise GatewayError(
            400,
            "invalid_user_id",
            "X-User-ID must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ @ : -",
        )
    # A named caller may have bought a tier (phase 3 with header identity).
    tier, _ = await _tier_cache.get(user_id)
    return Caller(user_id, tier=tier)


async def _from_key(request: HttpRequest) -> Caller:
    raw_key = _presented_key(request)
    if raw_key is None:
        where = (
            "Set your SDK's api_key to the gk_... key you were given (or send it as X-Gateway-Key)."
            if settings.AUTH_MODE == "codex"
            else "Send the gk_... key you were given as the X-Gateway-Key header; "
            "your own OpenAI key stays in Authorization."
        )
        raise GatewayError(401, "invalid_api_key", f"No gateway API key. {where}", type="authentication_error")
    from accounts.models import hash_key

    record = None
    if KEY_PATTERN.fullmatch(raw_key):
        record, loaded = await _key_cache.get(hash_key(raw_key))
        if record is not None and loaded:
            _touch(record)
    if record is None:
        raise GatewayError(
            401,
            "invalid_api_key",
            "This gateway API key is not valid: unknown or revoked. Ask the operator for a new one.",
            type="authentication_error",
        )
    return record.caller


def _presented_key(request: HttpRequest) -> str | None:
    key = request.headers.get("X-Gateway-Key")
    if key:
        return key.strip()
    if settings.AUTH_MODE == "codex":
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class _TimedCache:
    """key → (expiry, value), least recently used first, loaded in a worker thread on a miss."""

    def __init__(self, load: Callable[[str], object]) -> None:
        self._load = load
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()

    async def get(self, key: str) -> tuple[object, bool]:
        """The value, and whether it was just loaded from the database."""
        now = clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            self._entries.move_to_end(key)
            return entry[1], False
        try:
            value = await sync_to_async(self._load, thread_sensitive=False)(key)
        except DatabaseError as error:
            # Callers in the cache go on being served; a new one cannot be told apart
            # from a paying or revoked one, so is refused rather than guessed at.
            logger.error("identity: lookup failed (%s); refusing callers not in the cache", type(error).__name__)
            raise service_unavailable(
                "The gateway cannot look up callers for a moment (its database is unreachable). Try again shortly."
            ) from None
        self._entries[key] = (now + settings.KEY_CACHE_SECONDS, value)
        self._entries.move_to_end(key)
        while len(self._entries) > CACHE_ENTRIES:
            self._entries.popitem(last=False)
        return value, True

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True, slots=True)
class _KeyRecord:
    caller: Caller
    key_id: int
    last_used_at: datetime | None


_background: set[asyncio.Task] = set()


def _touch(record: _KeyRecord) -> None:
    used_at = timezone.now()
    if record.last_used_at is not None and used_at - record.last_used_at < LAST_USED_RESOLUTION:
        return
    task = asyncio.get_running_loop().create_task(
        sync_to_async(_mark_used, thread_sensitive=False)(record.key_id, used_at)
    )
    _background.add(task)
    task.add_done_callback(_background.discard)


async def settle_background_work() -> None:
    """Wait for pending bookkeeping writes (shutdown, tests)."""
    if _background:
        await asyncio.gather(*_background, return_exceptions=True)


def clear_caches() -> None:
    _key_cache.clear()
    _tier_cache.clear()


def _load_key(digest: str) -> _KeyRecord | None:
    from accounts.models import ApiKey

    try:
        key = (
            ApiKey.objects.active()
            .select_related("account", "account__codex_credential")
            .filter(key_hash=digest)
            .first()
        )
    finally:
        connection.close()
    if key is None:
        return None
    account = key.account
    credential = getattr(account, "codex_credential", None)
    codex = CodexSession(credential.access_token, credential.expires_at) if credential else None
    return _KeyRecord(Caller(account.user_id, account.pk, account.tier, codex), key.pk, key.last_used_at)


def _load_tier(user_id: str) -> str:
    from accounts.models import Account

    try:
        return Account.objects.filter(user_id=user_id).values_list("tier", flat=True).first() or ""
    finally:
        connection.close()


def _mark_used(key_id: int, used_at: datetime) -> None:
    from accounts.models import ApiKey

    try:
        ApiKey.objects.filter(pk=key_id).update(last_used_at=used_at)
    except Exception as error:
        logger.warning("could not record when API key %s was last used: %s", key_id, type(error).__name__)
    finally:
        connection.close()


_key_cache = _TimedCache(_load_key)
_tier_cache = _TimedCache(_load_tier)
