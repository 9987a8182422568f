"""Configuration mistakes of identity and credentials, as system checks with stable ids."""

from urllib.parse import urlsplit

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


@register("gateway", deploy=True)
def customers_can_sign_in(app_configs, **kwargs) -> list[Warning]:
    """Sign-in links and Stripe's return URLs point at PUBLIC_URL, and links go by email."""
    warnings = []
    parts = urlsplit(settings.PUBLIC_URL)
    if parts.hostname in ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::") or (
        parts.scheme == "http" and settings.SESSION_COOKIE_SECURE
    ):
        warnings.append(
            Warning(
                f"PUBLIC_URL is {settings.PUBLIC_URL}: customers' sign-in links and Stripe's return URLs point "
                "there, and a session cookie that is https-only never comes back over http.",
                hint="Set PUBLIC_URL to the https address customers reach the gateway at.",
                id="gateway.W003",
            )
        )
    if settings.EMAIL_BACKEND == "django.core.mail.backends.console.EmailBackend":
        warnings.append(
            Warning(
                "EMAIL_BACKEND is the console: sign-in links are printed to the process log, not sent.",
                hint="Set EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and EMAIL_HOST.",
                id="gateway.W004",
            )
        )
    return warnings
