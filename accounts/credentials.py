"""Which credential goes upstream for a caller (AUTH_MODE)."""

from django.conf import settings
from django.http import HttpRequest

from accounts.identity import Caller
from gateway_project.errors import GatewayError


def upstream_credential(request: HttpRequest, caller: Caller) -> dict[str, str]:
    """Headers carrying the caller's upstream credential.

    openai (BYOK): the caller's own Authorization passes through untouched.
    codex: the caller's stored Codex OAuth token; the caller's Authorization never
    leaves the gateway.
    """
    if settings.AUTH_MODE == "openai":
        authorization = request.headers.get("Authorization")
        return {"Authorization": authorization} if authorization else {}
    raise GatewayError(
        401,
        "no_codex_session",
        "No Codex session. Ask the operator to link your Codex account to the gateway.",
        type="authentication_error",
    )
