"""ASGI entry point: Django, a lean handler for /v1, and the lifespan Django lacks."""

import asyncio
import contextlib
import gc
import os
from concurrent.futures import ThreadPoolExecutor

import django
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string

from gateway_project.lib.env import stop_on_bad_configuration

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
# 4 is gunicorn's "App failed to load": its master then stops, rather than starting worker
# after worker that would each fail the same way.
with stop_on_bad_configuration(status=4):
    django.setup(set_prefix=False)

# After django.setup(): these import models and read settings.
from django.conf import settings

from accounts.identity import settle_background_work
from billing import monthly_usage
from gateway_project.lib import async_sql, shared_redis
from gateway_project.lib.request_ids import RequestIds
from proxy import analytics, health, metric_snapshots, metrics, probes, ratelimit, upstream
from proxy.accesslog import access_log
from proxy.bodylimit import BodyLimit
from proxy.relay import WholeResponse

RELAY_PREFIX = "/v1/"
# Threads for database calls per worker; matches the PostgreSQL pool's max_size.
DATABASE_THREADS = 20
# Rows still queued at shutdown get this long to reach the database.
SHUTDOWN_FLUSH_TIMEOUT = 10.0
# A young collection runs once this many more objects are alive than at the last one (Python's
# default: 700). Each relayed call holds hundreds for a moment (tasks, frames, headers), freed
# by reference counting: at 700 the collector keeps walking objects that are about to go.
GC_YOUNG_THRESHOLD = 10_000


class RelayHandler(ASGIHandler):
    """Serves /v1 through RELAY_MIDDLEWARE instead of MIDDLEWARE, without a
    thread-sensitive context per request and without the request signals.

    The relay uses no sessions, CSRF or messages; each of Django's sync middleware
    would cost a thread hop per relayed call. Django also gives every request its own
    executor thread for thread-sensitive sync code, and sends request_started and
    request_finished through thread hops so their receivers can close the request
    thread's database connections. The relay holds none: its queries run on the event
    loop (gateway_project.lib.async_sql) or in threads that return their connections.
    """

    async def __call__(self, scope, receive, send) -> None:
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        # Django's ASGIHandler.handle, less the signals: the view is cancelled when the
        # client disconnects before the response is complete.
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            return
        # The response is made in this task, and a second one cancels it if the client
        # leaves: one task per request fewer than Django's two, and no wait on both.
        responding = asyncio.current_task()
        listening = asyncio.create_task(self._cancel_on_disconnect(receive, responding))
        try:
            await self._respond(request, send)
        except asyncio.CancelledError:
            # The client left: the response ends there. Cancelled from outside too (the
            # server shutting down), the cancel goes on up.
            if not _cancelled_it(listening) or responding.cancelling() > 1:
                raise
        finally:
            listening.cancel()
            body_file.close()
            if _cancelled_it(listening):
                # The cancel was this handler's own: spent, it must not end the task later.
                responding.uncancel()
        if listening.done() and not listening.cancelled() and listening.exception() is not None:
            raise listening.exception()

    async def _cancel_on_disconnect(self, receive, responding: asyncio.Task) -> bool:
        """Cancels the response once the client has left (True) or listening fails (raises)."""
        try:
            await self.listen_for_disconnect(receive)
        except RequestAborted:
            responding.cancel()
            return True
        except Exception:
            responding.cancel()
            raise
        return False

    async def _respond(self, request, send) -> None:
        response = await self.run_get_response(request)
        # An answer sent whole has its row written once it is sent, or the client left.
        relaying = response.relaying() if isinstance(response, WholeResponse) else contextlib.nullcontext()
        with relaying:
            await self.send_response(response, send)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for middleware_path in reversed(settings.RELAY_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(middleware_path)(handler))
        self._middleware_chain = handler


def _cancelled_it(listening: asyncio.Task) -> bool:
    """Whether the listener cancelled the response: the client left, or listening failed."""
    return listening.done() and not listening.cancelled() and (listening.exception() is not None or listening.result())


_site = ASGIHandler()
# Outermost: every /v1 response carries the request's id, whichever layer answers it.
_relay = RequestIds(BodyLimit(RelayHandler()))


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"].startswith(RELAY_PREFIX):
        await _relay(scope, receive, send)
    else:
        await _site(scope, receive, send)


def _collect_garbage_for_serving() -> None:
    """What is loaded by now (Django, the URL conf, the models, the settings) lives as long as
    the worker: frozen, it is no longer walked by every full collection (~108,000 objects, one
    full collection of them measured ~20 ms). The young generation is collected less often
    (GC_YOUNG_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    _young, *older = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *older)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Calls through Django's database layer (the request path's queries on
            # SQLite, plan reloads, readiness) run in the loop's default executor and
            # mostly wait on the database: a burst of new streams would queue behind
            # the ~6 threads Python gives 2 cores.
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(max_workers=DATABASE_THREADS, thread_name_prefix="db")
            )
            analytics.start()  # when configured: its thread imports PostHog's SDK now
            health.start()  # attempt counts reach the database every few seconds
            probes.start()  # when UPSTREAM_PROBE_SECONDS is not 0
            metric_snapshots.start(metrics.families)  # under gunicorn: for the other workers' scrapes
            _collect_garbage_for_serving()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await settle_background_work()
            await probes.stop()
            await access_log.close(timeout=SHUTDOWN_FLUSH_TIMEOUT)
            await monthly_usage.settle_counts()  # after the requests it cancels: their give-backs too
            await health.close()
            await analytics.close()  # after the last rows: their events go too, within a bound
            await metric_snapshots.close()  # after everything counted
            await upstream.close_client()
            await async_sql.close()
            await shared_redis.close()
            await ratelimit.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
