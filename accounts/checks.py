"""Configuration mistakes of identity and credentials, as system checks with stable ids."""

from django.conf import settings
from django.core.checks import Error, Warning, register


@register("gateway")
def codex_needs_keys(app_configs, **kwargs) -> list[Error]:
    if settings.AUTH_MODE == "codex" and settings.GATEWAY_IDENTITY == "header":
        return [
            Error(
                "AUTH_MODE=codex with GATEWAY_IDENTITY=header would let anyone spend anyone's Codex "
                "session by claiming their X-User-ID.",
                hint="Unset GATEWAY_IDENTITY (codex mode defaults to key) or set GATEWAY_IDENTITY=key.",
                id="gateway.E001",
            )
        ]
    return []


@register("gateway")
def encryption_keys_set(app_configs, **kwargs) -> list[Warning]:
    if settings.GATEWAY_ENCRYPTION_KEYS:
        return []
    return [
        Warning(
            "GATEWAY_ENCRYPTION_KEYS is not set: Codex tokens are encrypted with a key derived from "
            "SECRET_KEY, so changing SECRET_KEY makes them unreadable.",
            hint="Set GATEWAY_ENCRYPTION_KEYS to a Fernet key, then run manage.py rotate_encryption_keys.",
            id="gateway.W002",
        )
    ]
