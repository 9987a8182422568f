"""Configuration mistakes of the relay, as system checks with stable ids."""

from django.conf import settings
from django.core.checks import Warning, register


@register("gateway", deploy=True)
def upstream_configured(app_configs, **kwargs) -> list[Warning]:
    if settings.OPENCLAW_URL:
        return []
    return [
        Warning(
            "OPENCLAW_URL is not set: every /v1 call will be answered 503.",
            hint="Set OPENCLAW_URL to the upstream (Tailscale bridge or tunnel URL). "
            "`make run` starts the bundled stub upstream instead when it is unset.",
            id="gateway.W001",
        )
    ]
