"""Configuration mistakes of the relay, as system checks with stable ids."""

from django.conf import settings
from django.core.checks import Warning, register


@register("gateway", deploy=True)
def upstream_configured(app_configs, **kwargs) -> list[Warning]:
    if settings.OPENCLAW_URL:
        return []
    return [
        Warning(
            "OPENCLAW_URL is not set: a /v1 call no route sends elsewhere is answered 503 upstream_not_configured.",
            hint="Set OPENCLAW_URL to the upstream (Tailscale bridge or tunnel URL), or give every "
            "model a route (a '*' route). `make run` starts the bundled stub upstream when it is unset.",
            id="gateway.W001",
        )
    ]
