import logging
import shutil
import subprocess
import sys

import httpx
import pytest
import redis
from django.conf import settings

from accounts import identity
from gateway_project.lib import async_sql, process_state, shared_redis
from proxy import health, ratelimit
from proxy import upstream as upstream_module
from proxy.accesslog import access_log
from proxy.models import RequestLog
from tests.faulty_upstream import FakeClock, FaultyUpstream
from tests.servers import (
    BASE_DIR,
    PrivatePostgres,
    PrivateRedis,
    ServerThread,
    end_group,
    free_port,
    gateway_environment,
    wait_until_serving,
)
from tests.upstream import TestUpstream


class Gateway:
    """The gateway's ASGI application served on loopback, as trainees reach it."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.url = server.url

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=5, **kwargs)

    def settle(self) -> None:
        """Wait for the gateway's background work (access log, key bookkeeping)."""
        self.server.call(identity.settle_background_work())
        self.server.call(access_log.flush())

    def log_rows(self) -> list[RequestLog]:
        """Every access-log row, once the rows queued so far are written."""
        self.server.call(access_log.flush())
        return list(RequestLog.objects.order_by("id"))


@pytest.fixture(scope="session")
def _upstream_server():
    app = TestUpstream()
    server = ServerThread(app)
    yield app, server
    server.stop()


@pytest.fixture
def upstream(_upstream_server, settings):
    app, server = _upstream_server
    app.reset()
    app.url = server.url
    settings.OPENCLAW_URL = server.url
    yield app
    app.gate.set()  # never leave a gated stream waiting
    app.disconnected.set()  # nor a firehose streaming into the next test


@pytest.fixture(scope="session")
def _gateway_server(django_db_setup, django_db_blocker):
    from gateway_project.asgi import application

    server = ServerThread(application)
    yield server
    # Before the test database is dropped: its pool holds connections to it.
    server.call(async_sql.close())
    server.call(shared_redis.close())
    server.call(upstream_module.close_client())
    server.call(ratelimit.close())
    server.stop()


def forget_shared_state() -> None:
    """Forget the admissions and circuit breakers kept in Redis: tests reuse user ids within
    the same minute, and upstream names."""
    if not settings.REDIS_URL:
        return
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = [*client.scan_iter("gateway:rate:*"), *client.scan_iter("gateway:breaker:*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def gateway(_gateway_server, upstream, transactional_db):
    forget_shared_state()
    process_state.reset()
    yield Gateway(_gateway_server)
    # Rows of this test must be written before the next test's flush of the tables.
    _gateway_server.call(access_log.flush())
    _gateway_server.call(health.settle())  # breaker changes being mirrored


@pytest.fixture
def process_log(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def private_redis():
    if not shutil.which("redis-server"):
        pytest.skip("needs the redis-server program")
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres():
    reason = PrivatePostgres.unavailable_because()
    if reason:
        pytest.skip(reason)
    server = PrivatePostgres.create()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def _fake_stripe_server():
    from tests.fake_stripe import FakeStripe

    app = FakeStripe()
    server = ServerThread(app)
    yield app, server
    server.stop()


@pytest.fixture
def fake_stripe(_fake_stripe_server, settings, monkeypatch):
    """Stripe's API on loopback (tests/fake_stripe.py), with the gateway's SDK pointed at it."""
    import stripe

    app, server = _fake_stripe_server
    app.reset()
    process_state.reset()  # each worker keeps the prices it looked up
    app.url = server.url
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_API_BASE = server.url
    # The SDK backs off between retries with real sleeps; here, retries follow at once.
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0)
    return app


@pytest.fixture(scope="session")
def _faulty_upstreams():
    servers = [FaultyUpstream(name).start() for name in ("a", "b", "c")]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def faulty(_faulty_upstreams) -> list[FaultyUpstream]:
    """Three upstreams on loopback (tests/faulty_upstream.py), answering well until scripted."""
    for server in _faulty_upstreams:
        server.play()
    return _faulty_upstreams


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The attempts' and breakers' clock (proxy.timing), recording back-off pauses instead of sleeping."""
    fake = FakeClock()
    monkeypatch.setattr("proxy.timing.clock", fake)
    return fake


@pytest.fixture
def sdk(gateway):
    """The OpenAI Python SDK as a trainee points it at the gateway, its own retries off."""
    import openai

    return openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key="sk-trainee-own-key",
        default_headers={"X-User-ID": "trainee-1"},
        max_retries=0,
        timeout=10,
    )


@pytest.fixture
def served_gateway(transactional_db):
    """The gateway as `make run` serves it (gunicorn, one uvicorn worker, the bundled stub
    upstream): (its URL, its process)."""
    port = free_port()
    environment = gateway_environment(PORT=str(port), WEB_CONCURRENCY="1", STUB_STREAM_INTERVAL_MS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway_project.serve"],
        cwd=BASE_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its gunicorn and stub upstream are ended with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url, process
    finally:
        end_group(process)
        if not process.stdout.closed:
            process.stdout.close()
