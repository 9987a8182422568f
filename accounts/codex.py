"""Codex OAuth sessions: reading tokens handed to the gateway, and refreshing them ahead
of expiry with the OAuth 2.0 refresh_token grant (run from cron, never on a request)."""

import base64
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from django.conf import settings
from django.db import transaction

from accounts.models import CodexCredential

logger = logging.getLogger(__name__)

REFRESH_TIMEOUT = 10.0
ERROR_MAX_LENGTH = 300
# OAuth access tokens, JWTs included, are a few KiB; anything longer is not one.
MAX_TOKEN_LENGTH = 16 * 1024
DEFAULT_LIFETIME = timedelta(hours=1)
# Expiries are kept within 1970 to 2999: every datetime, database and time zone holds those,
# while a crafted file's exp of 1e20 or -1e20 fits none (datetime overflows, a 500 on the page).
_LATEST_TIMESTAMP = datetime(3000, 1, 1, tzinfo=UTC).timestamp()
_LONGEST_LIFETIME_SECONDS = timedelta(days=100 * 365).total_seconds()


@dataclass
class RefreshReport:
    refreshed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    fresh: int = 0


def refresh_expiring(now: datetime, within: timedelta, client: httpx.Client) -> RefreshReport:
    """Refresh every credential expiring before `now + within`; one failure does not stop the rest."""
    report = RefreshReport()
    horizon = now + within
    report.fresh = CodexCredential.objects.filter(expires_at__gt=horizon).count()
    due = CodexCredential.objects.filter(expires_at__lte=horizon).values_list("pk", flat=True)
    for pk in list(due):
        # Locked while refreshing, so two overlapping runs never spend one refresh token twice.
        with transaction.atomic():
            credential = (
                CodexCredential.objects.select_for_update(skip_locked=True)
                .select_related("account")
                .filter(pk=pk, expires_at__lte=horizon)
                .first()
            )
            if credential is None:
                continue
            error = _refresh(credential, now, client)
            if error:
                credential.last_refresh_error = error
                credential.save(update_fields=["last_refresh_error", "updated_at"])
                report.failed.append((credential.account.user_id, error))
                logger.warning("Codex refresh failed for %s: %s", credential.account.user_id, error)
            else:
                report.refreshed.append(credential.account.user_id)
    return report


def _refresh(credential: CodexCredential, now: datetime, client: httpx.Client) -> str:
    """Refresh one credential in place; returns why it failed, or "" on success."""
    if not credential.refresh_token:
        return (
            "no refresh token is stored: upload a new auth.json on the account page, "
            "or an operator runs manage.py set_codex_token"
        )
    form = {
        "grant_type": "refresh_token",
        "refresh_token": credential.refresh_token,
        "client_id": settings.CODEX_CLIENT_ID,
    }
    if settings.CODEX_CLIENT_SECRET:
        form["client_secret"] = settings.CODEX_CLIENT_SECRET
    try:
        response = client.post(settings.CODEX_TOKEN_URL, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        return f"token endpoint unreachable ({type(error).__name__})"
    payload = _json(response)
    if response.status_code != 200 or not isinstance(payload.get("access_token"), str):
        # Only the OAuth error fields are kept: the body could echo a token.
        reason = " ".join(str(payload.get(k, "")) for k in ("error", "error_description")).strip()
        return f"HTTP {response.status_code} {reason}".strip()[:ERROR_MAX_LENGTH]
    credential.access_token = payload["access_token"]
    if isinstance(payload.get("refresh_token"), str):
        credential.refresh_token = payload["refresh_token"]
    try:
        credential.expires_at = session_expiry(payload, payload["access_token"], now)
    except ValueError:
        # Kept all the same: the refresh token may have been rotated, the old one is spent.
        credential.expires_at = now + DEFAULT_LIFETIME
    credential.last_refreshed_at = now
    credential.last_refresh_error = ""
    credential.save()
    return ""


def read_tokens(text: str) -> dict:
    """The tokens in what a person hands over: the `auth.json` that `codex login` writes
    (tokens under "tokens"), an OAuth token response, or an access token with optionally a
    refresh token on the next line. Returned as checked_tokens returns them; ValueError says
    what is wrong, never quoting the text."""
    text = text.strip()
    if not text:
        raise ValueError("No token given.")
    if not text.startswith("{"):
        lines = text.splitlines()
        return checked_tokens({"access_token": lines[0], "refresh_token": lines[1] if len(lines) > 1 else ""})
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: a file of nothing but "[[[[..."
        raise ValueError("This looks like JSON but does not parse.") from None
    if not isinstance(document, dict):
        raise ValueError("The JSON is not an object.")
    tokens = document.get("tokens") if isinstance(document.get("tokens"), dict) else document
    if not isinstance(tokens.get("access_token"), str) or not tokens["access_token"].strip():
        raise ValueError("The JSON has no access_token (nor tokens.access_token).")
    if "refresh_token" in tokens and not isinstance(tokens["refresh_token"], str | None):
        raise ValueError("The JSON's refresh_token is not a string.")
    return checked_tokens({**tokens, **{k: document[k] for k in ("expires_in", "expires_at") if k in document}})


def checked_tokens(tokens: dict) -> dict:
    """The access_token, refresh_token, expires_in and expires_at of `tokens`, once each is known
    to be usable: a token is one word of printable ASCII of at most 16 KiB (the relay sends it in
    an HTTP header), an expiry, the access token's JWT exp included, is a time session_expiry can
    compute. ValueError says which one is not, never quoting a token."""
    checked = {
        "access_token": _checked_token(tokens.get("access_token") or "", "access token"),
        "refresh_token": _checked_token(tokens.get("refresh_token") or "", "refresh token"),
    }
    if not checked["access_token"]:
        raise ValueError("No access token given.")
    checked |= {name: tokens[name] for name in ("expires_in", "expires_at") if tokens.get(name) is not None}
    if "expires_in" in checked:
        _lifetime(checked["expires_in"], "expires_in")
    if "expires_at" in checked:
        _timestamp(checked["expires_at"], "expires_at")
    jwt_expiry(checked["access_token"])
    return checked


def store_session(account, tokens: dict, now: datetime, expires_at: datetime | None = None) -> CodexCredential:
    """Link `account` to the Codex session in `tokens` (as read_tokens returns them),
    replacing any earlier one; the tokens are encrypted at rest. ValueError, before anything
    is stored, when the expiry is no time (session_expiry)."""
    credential, _ = CodexCredential.objects.update_or_create(
        account=account,
        defaults={
            "access_token": tokens["access_token"].strip(),
            "refresh_token": (tokens.get("refresh_token") or "").strip(),
            "expires_at": expires_at or session_expiry(tokens, tokens["access_token"], now),
            # The new session has not been refreshed yet: the old one's last refresh is not its.
            "last_refreshed_at": None,
            "last_refresh_error": "",
        },
    )
    return credential


def session_expiry(payload: dict, access_token: str, now: datetime) -> datetime:
    """When a token expires: `expires_in` or `expires_at` of a token response, else the
    `exp` claim of a JWT access token, else one hour (the common OAuth default).
    ValueError when the one it goes by is no time: a string, a bool, NaN, a negative number,
    a lifetime over 100 years, a time after 2999."""
    if payload.get("expires_in") is not None:
        return now + _lifetime(payload["expires_in"], "expires_in")
    if payload.get("expires_at") is not None:
        return _timestamp(payload["expires_at"], "expires_at")
    exp = jwt_expiry(access_token)
    return exp if exp is not None else now + DEFAULT_LIFETIME


def jwt_expiry(token: str) -> datetime | None:
    """The `exp` claim of a JWT, read without verifying it (it only schedules a refresh): None
    for a token that is no JWT or has no exp, ValueError for an exp that is no time."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return None if exp is None else _timestamp(exp, "access token's exp claim")


def _checked_token(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"The {name} is not a string.")
    value = value.strip()
    if len(value) > MAX_TOKEN_LENGTH:
        raise ValueError(f"The {name} is longer than {MAX_TOKEN_LENGTH // 1024} KiB: no OAuth token is that long.")
    if not all("!" <= char <= "~" for char in value):
        raise ValueError(
            f"The {name} is not a single word of printable ASCII characters "
            "(it has a space, a line break, a control or a non-ASCII character)."
        )
    return value


def _lifetime(value: object, name: str) -> timedelta:
    # bool is an int to Python, yet `true` is no number of seconds; NaN fails every comparison.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _LONGEST_LIFETIME_SECONDS:
        raise ValueError(f"The {name} is not a number of seconds from 0 to 100 years.")
    return timedelta(seconds=value)


def _timestamp(value: object, name: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < _LATEST_TIMESTAMP:
        raise ValueError(f"The {name} is not a time: seconds since 1970, before the year 3000.")
    return datetime.fromtimestamp(value, tz=UTC)


def _json(response: httpx.Response) -> dict:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
