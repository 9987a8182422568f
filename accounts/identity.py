"""Who is calling, established before anything else is done (GATEWAY_IDENTITY).

header: the caller names themselves with X-User-ID (phase 1, a trusted workshop network).
key:    the caller proves who they are with a gateway API key (`gk_…`), as
        `Authorization: Bearer gk_…` in codex mode or `X-Gateway-Key` in any mode.
        X-User-ID is ignored. Lookups are cached in process until a key, account or Codex
        session changes (accounts.caller_changes).
"""

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest
from django.utils import timezone

from accounts import caller_changes, crypto
from accounts.models import USER_ID_PATTERN, Account, ApiKey, hash_key
from gateway_project.lib import async_sql, from_settings, process_state, request_ids, table_versions
from gateway_project.lib.bearer import bearer_token
from gateway_project.lib.errors import GatewayError, for_operators, service_unavailable
from gateway_project.lib.per_loop import LoopTask

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
KEY_PATTERN = re.compile(r"gk_[A-Za-z0-9_-]{32,120}")
# Callers whose lookups each worker keeps: about 1 KB each, 3 KB with a Codex session.
CACHE_ENTRIES = 25_000
# The longest a lookup is trusted even when no change was announced: a bump lost on its way
# (Redis, or the database, failing just after the change committed) delays it by at most this.
TRUSTED_SECONDS = 120.0
# last_used_at is written at most this often per key, and never on the request's path.
LAST_USED_RESOLUTION = timedelta(minutes=1)
LAST_USED_BATCH_SECONDS = 1.0
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
    # The upstream the account is pinned to (accounts.pins); "" for none.
    pin: str = ""


async def identify(request: HttpRequest) -> Caller:
    if from_settings.get("GATEWAY_IDENTITY") == "key":
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
    # A named caller may have bought a tier (phase 3 with header identity), or be pinned.
    (tier, pin), _ = await _tier_cache.get(user_id)
    return Caller(user_id, tier=tier, pin=pin)


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
    return await _caller_for_key(raw_key)


async def identify_by_key(request: HttpRequest) -> Caller:
    """The caller proven by a gateway key, whatever GATEWAY_IDENTITY is: for endpoints that spend
    an account's money or show its invoices, where a self-declared X-User-ID proves nothing.
    The key comes as X-Gateway-Key, or as `Authorization: Bearer gk_...` in any AUTH_MODE."""
    raw_key = request.headers.get("X-Gateway-Key", "").strip()
    if not raw_key:
        token = bearer_token(request)
        raw_key = token if KEY_PATTERN.fullmatch(token) else ""
    if not raw_key:
        raise GatewayError(
            401,
            "invalid_api_key",
            "This endpoint needs your gateway API key: send the gk_... key you were given as the "
            "X-Gateway-Key header (or as Authorization: Bearer). X-User-ID is not enough here.",
            type="authentication_error",
        )
    return await _caller_for_key(raw_key)


async def _caller_for_key(raw_key: str) -> Caller:
    record = None
    if KEY_PATTERN.fullmatch(raw_key):
        record, _ = await _key_cache.get(hash_key(raw_key))
        if record is not None:
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
    if from_settings.get("AUTH_MODE") == "codex":
        return bearer_token(request) or None
    return None


class _Changes:
    """The callers' table version (accounts.caller_changes) as this worker last read it: at
    most every CHANGE_CHECK_MS, one read for however many requests find it due together.

    `version` pairs the number read with a generation of this worker's own, moved on whenever
    the number could not be read or went back (Redis restarted): a change made meanwhile may
    have gone unannounced, so lookups read before never count as current again. None while
    the number cannot be read."""

    def __init__(self) -> None:
        self.version: tuple[int, int] | None = None
        self.check_at = 0.0
        self._generation = 0
        self._reading = LoopTask(self._read)
        process_state.on_reset(self.clear)

    async def refresh(self) -> None:
        await asyncio.shield(self._reading.start())

    async def _read(self, _woken: asyncio.Event) -> None:
        number = await table_versions.read(caller_changes.TABLE)
        if number is None or (self.version is not None and number < self.version[1]):
            self._generation += 1
        self.version = None if number is None else (self._generation, number)
        self.check_at = clock() + from_settings.get("CHANGE_CHECK_MS") / 1000

    def clear(self) -> None:
        self.version, self.check_at = None, 0.0


_changes = _Changes()


@dataclass(frozen=True, slots=True)
class _Entry:
    loaded_at: float
    # The callers' version read before the lookup; None when it could not be read.
    version: tuple[int, int] | None
    value: object


class _TimedCache:
    """key → entry, least recently used first, loaded from the database on a miss.

    An entry is trusted while no key, account or Codex session has changed since it was read
    (the callers' version it was read at is still the current one), for at most
    TRUSTED_SECONDS; while versions cannot be read, for KEY_CACHE_SECONDS. KEY_CACHE_SECONDS=0
    turns the cache off.
    """

    def __init__(self, load: Callable[[str], Awaitable[object]]) -> None:
        self._load = load
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        process_state.on_reset(self._entries.clear)

    async def get(self, key: str) -> tuple[object, bool]:
        """The value, and whether it was just loaded from the database."""
        now = clock()
        if now >= _changes.check_at:
            await _changes.refresh()
        version = _changes.version
        entry = self._entries.get(key)
        if entry is not None and self._trusted(entry, version, now):
            self._entries.move_to_end(key)
            return entry.value, False
        try:
            value = await self._load(key)
        except DatabaseError as error:
            # Callers in the cache go on being served; a new one cannot be told apart
            # from a paying or revoked one, so is refused rather than guessed at.
            logger.error("identity: lookup failed (%s); refusing callers not in the cache", for_operators(error))
            raise service_unavailable(
                "The gateway cannot look up callers for a moment (its database is unreachable). Try again shortly."
            ) from None
        self._entries[key] = _Entry(now, version, value)
        self._entries.move_to_end(key)
        while len(self._entries) > CACHE_ENTRIES:
            self._entries.popitem(last=False)
        return value, True

    @staticmethod
    def _trusted(entry: _Entry, version: tuple[int, int] | None, now: float) -> bool:
        seconds = from_settings.get("KEY_CACHE_SECONDS")
        if not seconds:
            return False
        if version is None:  # changes cannot be seen for now: the lookup's age decides
            return now < entry.loaded_at + seconds
        return entry.version == version and now < entry.loaded_at + TRUSTED_SECONDS

    def expire(self, keys: list[str]) -> None:
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = _Entry(float("-inf"), None, entry.value)


@dataclass(slots=True)
class _KeyRecord:
    caller: Caller
    key_id: int
    # When its use was last written, or noted to be (a lookup is kept for minutes).
    last_used_at: datetime | None


class _LastUsed:
    """When keys were last used, written in batches off the request path: keys used
    within LAST_USED_BATCH_SECONDS share one statement and one round trip."""

    def __init__(self) -> None:
        self._pending: dict[int, datetime] = {}
        self._writer = LoopTask(self._write)

    def note(self, key_id: int, used_at: datetime) -> None:
        self._pending[key_id] = used_at
        # Detached: the batch serves every request, not the one that started it.
        request_ids.detached(self._writer.start)

    async def settle(self) -> None:
        task = self._writer.running()
        if task is not None:
            self._writer.wake()
            await asyncio.shield(task)

    async def _write(self, woken: asyncio.Event) -> None:
        while self._pending:
            if not woken.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), LAST_USED_BATCH_SECONDS)
            batch, self._pending = self._pending, {}
            try:
                rows = [(used_at, key_id, used_at - LAST_USED_RESOLUTION) for key_id, used_at in batch.items()]
                await async_sql.executemany(_MARK_USED_SQL, rows)
            except DatabaseError as error:
                logger.warning("could not record when %d API keys were last used: %s", len(batch), for_operators(error))


_last_used = _LastUsed()


def _touch(record: _KeyRecord) -> None:
    used_at = timezone.now()
    if record.last_used_at is not None and used_at - record.last_used_at < LAST_USED_RESOLUTION:
        return
    record.last_used_at = used_at
    _last_used.note(record.key_id, used_at)


async def settle_background_work() -> None:
    """Write pending bookkeeping now (shutdown, tests)."""
    await _last_used.settle()


def forget_keys(key_hashes: list[str]) -> None:
    """Have this worker look these keys up again on their next use (a key revoked, a Codex
    session linked); other workers do within CHANGE_CHECK_MS. Safe from any thread: an
    entry is marked expired in place, never removed under the event loop's feet."""
    _key_cache.expire(key_hashes)


# The request path's queries, as raw SQL on the event loop (gateway_project.lib.async_sql).
# The key lookup is the ORM's own statement for ApiKey.objects.active_with_hash(), compiled
# once: "active" has one definition (accounts.models.active_key_filter).
_KEY_COLUMNS = (
    "id",
    "last_used_at",
    "account_id",
    "account__user_id",
    "account__tier",
    "account__pinned_upstream",
    "account__codex_credential__id",
    "account__codex_credential__access_token",
    "account__codex_credential__expires_at",
)
_KEY_SQL, _KEY_PARAMS = (
    ApiKey.objects.active_with_hash("%s").order_by().values_list(*_KEY_COLUMNS).query.sql_with_params()
)
assert _KEY_PARAMS == ("%s",), "the key lookup takes the key's hash and nothing else"
_TIER_SQL = f"SELECT tier, pinned_upstream FROM {Account._meta.db_table} WHERE user_id = %s"
# Each worker notes a key's use at most once a minute; the first write of the minute wins, so
# the others' change no row.
_MARK_USED_SQL = (
    f"UPDATE {ApiKey._meta.db_table} SET last_used_at = %s "
    "WHERE id = %s AND (last_used_at IS NULL OR last_used_at < %s)"
)


async def _load_key(digest: str) -> _KeyRecord | None:
    row = await async_sql.fetchone(_KEY_SQL, [digest])
    if row is None:
        return None
    key_id, last_used_at, account_id, user_id, tier, pin, credential_id, access_token, expires_at = row
    codex = None
    if credential_id is not None:
        codex = CodexSession(crypto.decrypt(access_token) if access_token else None, expires_at)
    return _KeyRecord(Caller(user_id, account_id, tier, codex, pin), key_id, last_used_at)


async def _load_tier(user_id: str) -> tuple[str, str]:
    """The account's tier and pin; ("", "") for a caller without an account."""
    row = await async_sql.fetchone(_TIER_SQL, [user_id])
    return (row[0], row[1]) if row else ("", "")


_key_cache = _TimedCache(_load_key)
_tier_cache = _TimedCache(_load_tier)
