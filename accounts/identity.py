"""Who is calling: the caller's identity, established before anything else is done."""

import re
from dataclasses import dataclass

from django.http import HttpRequest

from gateway_project.errors import GatewayError

ANONYMOUS = "anonymous"
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9._@:-]{1,128}")


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str


def identify(request: HttpRequest) -> Caller:
    """Phase 1: the caller names themselves with X-User-ID (a trusted workshop network)."""
    user_id = request.headers.get("X-User-ID")
    if user_id is None:
        return Caller(ANONYMOUS)
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise GatewayError(
            400,
            "invalid_user_id",
            "X-User-ID must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ @ : -",
        )
    return Caller(user_id)
