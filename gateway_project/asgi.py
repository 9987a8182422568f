"""ASGI entry point: Django, a lean handler for /v1, and the lifespan Django lacks."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import django
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402  (after setup)

from accounts.identity import settle_background_work  # noqa: E402
from proxy import upstream  # noqa: E402
from proxy.accesslog import access_log  # noqa: E402
from proxy.bodylimit import BodyLimit  # noqa: E402

RELAY_PREFIX = "/v1/"
# Threads for database calls per worker; matches the PostgreSQL pool's max_size.
DATABASE_THREADS = 20
# Rows still queued at shutdown get this long to reach the database.
SHUTDOWN_FLUSH_TIMEOUT = 10.0


class RelayHandler(ASGIHandler):
    """Serves /v1 through RELAY_MIDDLEWARE instead of MIDDLEWARE, and without a
    thread-sensitive context per request.

    The relay uses no sessions, CSRF or messages; each of Django's sync middleware
    would cost a thread hop per relayed call. Django also gives every request its own
    executor thread for thread-sensitive sync code; the relay has none (its database
    calls run with thread_sensitive=False and return their connections), so that
    thread would be started per request for nothing.
    """

    async def __call__(self, scope, receive, send) -> None:
        await self.handle(scope, receive, send)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for middleware_path in reversed(settings.RELAY_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(middleware_path)(handler))
        self._middleware_chain = handler


_site = ASGIHandler()
_relay = BodyLimit(RelayHandler())


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"].startswith(RELAY_PREFIX):
        await _relay(scope, receive, send)
    else:
        await _site(scope, receive, send)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # The ORM runs in the loop's default executor (sync_to_async with
            # thread_sensitive=False), and those calls mostly wait on the database: a
            # burst of new streams would queue behind the ~6 threads Python gives 2 cores.
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(max_workers=DATABASE_THREADS, thread_name_prefix="db")
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await settle_background_work()
            await access_log.close(timeout=SHUTDOWN_FLUSH_TIMEOUT)
            await upstream.close_client()
            await send({"type": "lifespan.shutdown.complete"})
            return
