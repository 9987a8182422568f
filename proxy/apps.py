from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Gateway traffic"

    def ready(self) -> None:
        from accounts import pins
        from proxy import (
            checks,  # noqa: F401  (registers the checks)
            routes,
        )
        from proxy.models import Upstream

        routes.follow_changes()
        # Pins (on accounts and plans) name an upstream; accounts cannot import proxy.
        pins.known_upstreams = lambda: set(Upstream.objects.values_list("name", flat=True))
