"""`Authorization: Bearer <token>`, read the same way wherever the gateway accepts it."""

from django.http import HttpRequest


def bearer_token(request: HttpRequest) -> str:
    """The token of the request's `Authorization: Bearer …` header (the scheme in any case),
    or "" when it has none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
