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
        return "no refresh token is stored: set a new session with manage.py set_codex_token"
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
    credential.expires_at = session_expiry(payload, payload["access_token"], now)
    credential.last_refreshed_at = now
    credential.last_refresh_error = ""
    credential.save()
    return ""


def read_tokens(text: str) -> dict:
    """The tokens in what a person hands over: the `auth.json` that `codex login` writes
    (tokens under "tokens"), an OAuth token response, or an access token with optionally a
    refresh token on the next line. ValueError says what is wrong, never quoting the text."""
    text = text.strip()
    if not text:
        raise ValueError("No token given.")
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise ValueError("This looks like JSON but does not parse.") from None
        if not isinstance(document, dict):
            raise ValueError("The JSON is not an object.")
        tokens = document.get("tokens") if isinstance(document.get("tokens"), dict) else document
        if not isinstance(tokens.get("access_token"), str) or not tokens["access_token"].strip():
            raise ValueError("The JSON has no access_token (nor tokens.access_token).")
        if "refresh_token" in tokens and not isinstance(tokens["refresh_token"], str | None):
            raise ValueError("The JSON's refresh_token is not a string.")
        return {**tokens, **{k: document[k] for k in ("expires_in", "expires_at") if k in document}}
    lines = text.splitlines()
    if any(not line.isprintable() or " " in line.strip() for line in lines[:2]):
        raise ValueError("A token is a single word on its line.")
    return {"access_token": lines[0].strip(), "refresh_token": lines[1].strip() if len(lines) > 1 else ""}


def store_session(account, tokens: dict, now: datetime, expires_at: datetime | None = None) -> CodexCredential:
    """Link `account` to the Codex session in `tokens` (as read_tokens returns them),
    replacing any earlier one; the tokens are encrypted at rest."""
    credential, _ = CodexCredential.objects.update_or_create(
        account=account,
        defaults={
            "access_token": tokens["access_token"].strip(),
            "refresh_token": (tokens.get("refresh_token") or "").strip(),
            "expires_at": expires_at or session_expiry(tokens, tokens["access_token"], now),
            "last_refresh_error": "",
        },
    )
    return credential


def session_expiry(payload: dict, access_token: str, now: datetime) -> datetime:
    """When a token expires: `expires_in` or `expires_at` of a token response, else the
    `exp` claim of a JWT access token, else one hour (the common OAuth default)."""
    if isinstance(payload.get("expires_in"), int | float):
        return now + timedelta(seconds=payload["expires_in"])
    if isinstance(payload.get("expires_at"), int | float):
        return datetime.fromtimestamp(payload["expires_at"], tz=UTC)
    exp = jwt_expiry(access_token)
    return exp if exp is not None else now + timedelta(hours=1)


def jwt_expiry(token: str) -> datetime | None:
    """The `exp` claim of a JWT, read without verifying it (it only schedules a refresh)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return datetime.fromtimestamp(exp, tz=UTC) if isinstance(exp, int | float) else None


def _json(response: httpx.Response) -> dict:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
