"""Which credential goes upstream for a caller (AUTH_MODE)."""

from datetime import datetime

from django.conf import settings
from django.http import HttpRequest

from accounts.identity import Caller
from gateway_project.lib.errors import GatewayError


def upstream_credential(request: HttpRequest, caller: Caller, now: datetime) -> dict[str, str]:
    """Headers carrying the caller's upstream credential.

    openai (BYOK): the caller's own Authorization passes through untouched.
    codex: the caller's stored Codex OAuth token as X-Codex-Token; the caller's
    Authorization (their gateway key) never leaves the gateway. Only callers who
    proved who they are with a key carry a stored session.
    """
    if settings.AUTH_MODE == "openai":
        authorization = request.headers.get("Authorization")
        return {"Authorization": authorization} if authorization else {}
    session = caller.codex
    if session is None:
        raise GatewayError(
            401,
            "no_codex_session",
            "No Codex session. Ask the operator to link your Codex account to the gateway.",
            type="authentication_error",
        )
    if session.expires_at <= now:
        raise GatewayError(
            401,
            "codex_session_expired",
            "Your Codex session has expired. The gateway renews sessions every few minutes: "
            "try again shortly, or ask the operator to link your Codex account again.",
            type="authentication_error",
        )
    return {"X-Codex-Token": session.access_token}
