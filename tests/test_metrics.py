"""Prometheus metrics at /metrics: what an operator's scrape shows after known traffic, on
one process and summed over gunicorn workers, and who may scrape at all."""

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext

import httpx
import pytest
from django.db import DatabaseError
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import Account
from billing import plans
from billing.models import Plan
from proxy import accesslog, metrics, ratelimit
from proxy.models import RequestLog
from tests.personas import price
from tests.servers import BASE_DIR, GatewayProcess, closed_port_url, free_port
from tests.upstream import chunk_event

TOKEN = "scrape-me-7c1f0b9e"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}
SCRAPE_TIMEOUT = 30
CHAT_PATH = "/v1/chat/completions"

Samples = dict[tuple[str, frozenset], float]


def scrape(url: str, token: str = TOKEN) -> Samples:
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def requests_by_label(samples: Samples) -> dict[tuple[str, str, str], float]:
    return {
        (labels["status_class"], labels["endpoint"], labels["model"]): count
        for (name, label_set), count in samples.items()
        if name == "gateway_requests_total" and count
        for labels in [dict(label_set)]
    }


def requests_added(before: Samples, after: Samples) -> dict[tuple[str, str, str], float]:
    counted_before = requests_by_label(before)
    return {
        labels: count - counted_before.get(labels, 0)
        for labels, count in requests_by_label(after).items()
        if count != counted_before.get(labels, 0)
    }


def set_up_plans_and_price() -> None:
    """tier1 callers have one request a month (402 after it), tier2 callers one a minute (429)."""
    Plan.objects.update_or_create(tier="tier1", defaults={"monthly_requests": 1, "monthly_tokens": None})
    Plan.objects.update_or_create(tier="tier2", defaults={"requests_per_minute": 1, "monthly_requests": None})
    price("m", "2", "1", "8")


def known_mix(url: str, suffix: str) -> list[int]:
    """Two 200 chats (one streamed), a 402, a 429, two 200 model lists, and an upstream that
    breaks off mid-response (logged 502); users named after `suffix`, created with their tiers."""
    quinn, rita, ann = f"quinn-{suffix}", f"rita-{suffix}", f"ann-{suffix}"
    Account.objects.create(user_id=quinn, tier="tier1")
    Account.objects.create(user_id=rita, tier="tier2")
    with httpx.Client(base_url=url, timeout=30) as client:
        chat = client.post(CHAT_PATH, json=CHAT, headers={"X-User-ID": ann})
        stream = client.post(CHAT_PATH, json={**CHAT, "stream": True}, headers={"X-User-ID": ann})
        quota = [client.get("/v1/models", headers={"X-User-ID": quinn}) for _ in range(2)]
        rate = [client.get("/v1/models", headers={"X-User-ID": rita}) for _ in range(2)]
        broken = client.post("/v1/reset-mid-stream", json={"model": "m"}, headers={"X-User-ID": ann})
    assert b"data: [DONE]" in stream.content
    assert b"upstream_unavailable" in broken.content  # the error event after the first one
    return [r.status_code for r in (chat, stream, *quota, *rate)]


MIX_STATUSES = [200, 200, 200, 402, 200, 429]
# Each known_mix, as the access log counts it: (status class, endpoint, model).
MIX_REQUESTS = {
    ("2xx", CHAT_PATH, "m"): 2,
    ("2xx", "/v1/models", "none"): 2,
    ("4xx", "/v1/models", "none"): 2,
    ("5xx", "other", "m"): 1,
}


def expected_tokens_and_cost() -> tuple[dict[str, int], float, int]:
    """Tokens by kind, cost in USD and calls of unknown cost, from the access log itself."""
    rows = list(RequestLog.objects.filter(model="m"))
    tokens = {
        "input": sum(r.input_tokens or 0 for r in rows),
        "cached_input": sum(r.cached_input_tokens or 0 for r in rows),
        "output": sum(r.output_tokens or 0 for r in rows),
    }
    return tokens, sum(r.cost_pico_usd or 0 for r in rows) / 10**12, sum(r.cost_pico_usd is None for r in rows)


@pytest.fixture
def scraping(settings, monkeypatch):
    settings.METRICS_TOKEN = TOKEN


def test_a_known_mix_of_calls_shows_up_in_the_counts(gateway, upstream, settings, scraping):
    set_up_plans_and_price()
    before = scrape(gateway.url)

    statuses = known_mix(gateway.url, "one")
    settings.OPENCLAW_URL = closed_port_url()  # the upstream is down
    with gateway.client() as client:
        down = client.post(CHAT_PATH, json=CHAT, headers={"X-User-ID": "ann-one"})
    gateway.settle()
    after = scrape(gateway.url)

    assert statuses == MIX_STATUSES
    assert down.status_code == 502
    assert requests_added(before, after) == {**MIX_REQUESTS, ("5xx", CHAT_PATH, "m"): 1}
    assert delta(before, after, "gateway_refusals_total", status="402", code="monthly_quota_exceeded") == 1
    assert delta(before, after, "gateway_refusals_total", status="429", code="rate_limit_exceeded") == 1
    assert delta(before, after, "gateway_upstream_failures_total", kind="connect") == 1
    assert delta(before, after, "gateway_upstream_failures_total", kind="broken") == 1
    tokens, cost, unknown_cost = expected_tokens_and_cost()
    assert tokens["input"] > 0 and tokens["output"] > 0
    for kind, count in tokens.items():
        assert delta(before, after, "gateway_tokens_total", model="m", kind=kind) == count
    assert delta(before, after, "gateway_cost_usd_total", model="m") == pytest.approx(cost)
    assert cost > 0
    assert delta(before, after, "gateway_cost_unknown_total", model="m") == unknown_cost == 1  # the broken call
    duration = "gateway_request_duration_seconds_count"
    assert delta(before, after, duration, endpoint=CHAT_PATH, status_class="2xx") == 2
    assert delta(before, after, duration, endpoint=CHAT_PATH, status_class="5xx") == 1
    # Relayed bodies only: the refusals and the unreachable upstream sent no first byte.
    first_byte = "gateway_time_to_first_byte_seconds_count"
    assert delta(before, after, first_byte, endpoint=CHAT_PATH) == 2
    assert delta(before, after, first_byte, endpoint="/v1/models") == 2
    assert delta(before, after, first_byte, endpoint="other") == 1
    assert delta(before, after, "gateway_open_streams") == 0
    assert value(after, "gateway_access_log_queue_depth") == 0


def test_no_label_holds_a_user_id_or_an_unserved_model(gateway, upstream, scraping):
    with gateway.client() as client:
        client.post(CHAT_PATH, json=CHAT, headers={"X-User-ID": "secret-user-7"})
        client.post("/v1/status/404", json={**CHAT, "model": "typo-model"}, headers={"X-User-ID": "secret-user-7"})
    gateway.settle()
    text = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text

    assert "secret-user-7" not in text
    assert "typo-model" not in text  # the upstream never served it: "other"
    assert 'endpoint="other",model="other"' in text
    assert 'model="m"' in text


def test_an_open_stream_is_counted_until_it_ends_and_its_first_byte_is_timed_at_once(gateway, upstream, scraping):
    gated = {**CHAT, "model": "gated", "stream": True}
    before = scrape(gateway.url)
    with (
        gateway.client() as client,
        client.stream("POST", CHAT_PATH, json=gated, headers={"X-User-ID": "sol"}) as response,
    ):
        chunks = response.iter_raw()
        assert next(chunks) == chunk_event("first")
        during = scrape(gateway.url)
        upstream.gate.set()
        rest = b"".join(chunks)
    gateway.settle()
    after = scrape(gateway.url)

    assert rest.endswith(b"data: [DONE]\n\n")
    assert delta(before, during, "gateway_open_streams") == 1
    assert delta(before, during, "gateway_time_to_first_byte_seconds_count", endpoint=CHAT_PATH) == 1
    assert delta(before, during, "gateway_requests_total", status_class="2xx", endpoint=CHAT_PATH, model="gated") == 0
    assert delta(before, after, "gateway_open_streams") == 0
    assert delta(before, after, "gateway_requests_total", status_class="2xx", endpoint=CHAT_PATH, model="gated") == 1


def test_redis_failures_are_counted(gateway, upstream, settings, scraping, monkeypatch):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    monkeypatch.setattr(ratelimit, "RETRY_INTERVAL", 0.0)
    before = scrape(gateway.url)
    with gateway.client() as client:
        statuses = [client.get("/v1/models", headers={"X-User-ID": "rex"}).status_code for _ in range(3)]
    after = scrape(gateway.url)

    assert statuses == [200] * 3  # fail open
    assert delta(before, after, "gateway_redis_failures_total") == 3


def test_database_failures_on_the_request_path_and_in_the_access_log_are_counted(
    gateway, upstream, scraping, monkeypatch
):
    Account.objects.create(user_id="paula", tier="tier1")
    depths = []
    real_insert = accesslog._insert

    async def failing_once(rows):
        if not depths:
            depths.append(REGISTRY.get_sample_value("gateway_access_log_queue_depth"))
            raise DatabaseError("database is gone")
        return await real_insert(rows)

    def plans_unreadable():
        raise DatabaseError("database is gone")

    monkeypatch.setattr(accesslog, "_insert", failing_once)
    monkeypatch.setattr(accesslog, "RETRY_DELAYS", (0.0,))
    monkeypatch.setattr(plans._cache, "_read", plans_unreadable)
    before = scrape(gateway.url)
    with gateway.client() as client:
        refused = client.get("/v1/models", headers={"X-User-ID": "paula"})
    gateway.settle()
    after = scrape(gateway.url)

    assert refused.status_code == 503
    assert delta(before, after, "gateway_database_failures_total", during="request") == 1
    assert delta(before, after, "gateway_refusals_total", status="503", code="service_unavailable") == 1
    assert depths == [1], "the row waiting while the write failed"
    assert delta(before, after, "gateway_database_failures_total", during="access_log") == 1
    assert value(after, "gateway_access_log_queue_depth") == 0
    assert [row.status for row in gateway.log_rows()] == [503]


def test_rows_lost_to_a_full_queue_or_refused_by_the_database_are_counted(monkeypatch, caplog):
    """The writer alone, on an event loop of the test's own, its database faked."""
    batches = []

    async def refusing_one(batch):
        batches.append(len(batch))
        return [], ["GET /v1/models (DataError: value too long)"]

    monkeypatch.setattr(accesslog, "MAX_PENDING", 2)
    monkeypatch.setattr(accesslog, "_insert", refusing_one)
    overflow = ("gateway_access_log_dropped_rows_total", {"reason": "overflow"})
    rejected = ("gateway_access_log_dropped_rows_total", {"reason": "rejected"})
    before = [REGISTRY.get_sample_value(*sample) or 0 for sample in (overflow, rejected)]

    async def five_rows() -> None:
        writer = accesslog.AccessLogWriter()
        for _ in range(5):
            writer.record(object())  # queued whole; the fake database never looks inside
        await writer.flush()

    asyncio.run(five_rows())
    after = [REGISTRY.get_sample_value(*sample) for sample in (overflow, rejected)]

    assert batches == [2]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1]


def test_a_broken_metrics_store_never_breaks_a_call(gateway, upstream, scraping, monkeypatch, caplog):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.OPEN_STREAMS, "inc", full_disk)
    monkeypatch.setattr(metrics.OPEN_STREAMS, "dec", full_disk)
    monkeypatch.setattr(metrics.REQUESTS, "labels", full_disk)
    with gateway.client() as client:
        responses = [client.post(CHAT_PATH, json=CHAT, headers={"X-User-ID": "dina"}) for _ in range(2)]

    assert [r.status_code for r in responses] == [200, 200]
    assert [row.user_id for row in gateway.log_rows()] == ["dina", "dina"]
    failures = [r for r in caplog.records if r.name == "proxy.metrics"]
    assert [r.getMessage() for r in failures] == [
        "metrics: stream_opened failed; counts may be missing",
        "metrics: stream_closed failed; counts may be missing",
        "metrics: count_rows failed; counts may be missing",
    ]


def test_analytics_drops_are_counted(gateway, upstream, scraping):
    before = scrape(gateway.url)
    metrics.analytics_dropped(4)
    metrics.analytics_dropped(0)
    after = scrape(gateway.url)

    assert delta(before, after, "gateway_analytics_events_dropped_total") == 4


# Who may scrape.


def test_without_a_metrics_token_there_is_no_metrics_page(gateway, settings):
    settings.METRICS_TOKEN = None
    response = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
    ids=["missing", "wrong", "not-bearer", "longer", "empty"],
)
def test_a_scrape_without_the_right_token_is_refused(gateway, scraping, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{gateway.url}/metrics", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "gateway_requests" not in response.text


def test_a_scrape_is_get_only_and_never_an_access_log_row(gateway, scraping):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    posted = httpx.post(f"{gateway.url}/metrics", headers=headers)
    got = httpx.get(f"{gateway.url}/metrics", headers=headers)

    assert posted.status_code == 405
    assert got.status_code == 200
    assert got.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE gateway_requests_total counter" in got.text
    assert gateway.log_rows() == []


def test_the_endpoint_label_is_the_path_family():
    assert metrics.endpoint_family("/v1/chat/completions") == "/v1/chat/completions"
    assert metrics.endpoint_family("/v1/chat/completions/chatcmpl-1/messages") == "/v1/chat/completions"
    assert metrics.endpoint_family("/v1/models/gpt-4o") == "/v1/models"
    assert metrics.endpoint_family("/v1/responses/resp_1") == "/v1/responses"
    assert metrics.endpoint_family("/v1/modelsX") == "other"
    assert metrics.endpoint_family("/v1/anything/else") == "other"


def test_the_grafana_dashboard_has_a_panel_for_every_metric():
    dashboard = json.loads((BASE_DIR / "monitoring" / "grafana-dashboard.json").read_text())
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    expressions = " ".join(target["expr"] for panel in graphs for target in panel["targets"])
    families = [m.describe()[0].name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    families.append(metrics.BREAKER_STATES.describe()[0].name)  # read at scrape time

    assert len(families) == 22
    assert [family for family in families if family not in expressions] == []
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    assert {panel["datasource"]["uid"] for panel in graphs} == {"${datasource}"}


# Under gunicorn, as `make run` serves it.


def worker_pids(master: int, count: int) -> list[int]:
    """The gunicorn master's worker processes, once there are `count` of them."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while time.monotonic() < deadline:
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        # pid (comm) state ppid ...: comm may hold spaces, so split after it.
                        if int(stat.read().rsplit(")", 1)[1].split()[1]) == master:
                            children.append(int(entry))
                except (OSError, IndexError, ValueError):
                    continue  # gone meanwhile
        if len(children) == count:
            return sorted(children)
        time.sleep(0.05)  # polling for the workers to fork
    raise AssertionError(f"gunicorn did not run {count} workers")


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """Stops one worker, so every new connection goes to the other (they share one socket)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def scrape_until(url: str, done, pausing: int | None = None) -> Samples:
    """Scrapes until `done`; with `pausing`, each scrape pauses that worker, so the other one
    answers, from the snapshot the paused one last published (it publishes in between)."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while True:
        with paused(pausing) if pausing else nullcontext():
            samples = scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)  # polling for each worker's access-log writer and snapshot


@pytest.fixture
def two_worker_environment(request, gateway, upstream, settings) -> dict[str, str]:
    # Two workers need Redis for shared limits; the embedded half brings a Redis of its own.
    redis_url = settings.REDIS_URL or request.getfixturevalue("private_redis").url
    return {"REDIS_URL": redis_url, "OPENCLAW_URL": upstream.url, "METRICS_TOKEN": TOKEN}


def test_a_scrape_sums_the_counts_of_both_workers(gateway, upstream, two_worker_environment):
    set_up_plans_and_price()
    process = GatewayProcess(workers=2, **two_worker_environment)
    try:
        first, second = worker_pids(process.process.pid, 2)
        with paused(second):
            statuses = known_mix(process.url, "first")  # all served by the first worker
        with paused(first):
            statuses += known_mix(process.url, "second")  # all served by the second
        expected = {labels: 2 * count for labels, count in MIX_REQUESTS.items()}
        samples = scrape_until(process.url, lambda s: requests_by_label(s) == expected)
    finally:
        output = process.stop()

    assert statuses == MIX_STATUSES * 2
    assert requests_by_label(samples) == expected, output[-3000:]
    assert value(samples, "gateway_refusals_total", status="402", code="monthly_quota_exceeded") == 2
    assert value(samples, "gateway_refusals_total", status="429", code="rate_limit_exceeded") == 2
    assert value(samples, "gateway_upstream_failures_total", kind="broken") == 2
    tokens, cost, _ = expected_tokens_and_cost()
    for kind, count in tokens.items():
        assert value(samples, "gateway_tokens_total", model="m", kind=kind) == count
    assert value(samples, "gateway_cost_usd_total", model="m") == pytest.approx(cost)
    assert value(samples, "gateway_time_to_first_byte_seconds_count", endpoint=CHAT_PATH) == 4
    assert value(samples, "gateway_open_streams") == 0
    assert "Traceback" not in output


def test_a_worker_that_dies_keeps_its_counts_and_takes_its_open_streams_with_it(
    gateway, upstream, two_worker_environment
):
    process = GatewayProcess(workers=2, **two_worker_environment)
    gated = {**CHAT, "model": "gated", "stream": True}
    try:
        doomed, survivor = worker_pids(process.process.pid, 2)
        with ExitStack() as streaming:
            client = streaming.enter_context(httpx.Client(base_url=process.url, timeout=30))
            with paused(survivor):  # both calls go to the doomed worker
                served = client.post(CHAT_PATH, json=CHAT, headers={"X-User-ID": "vic"})
                response = streaming.enter_context(
                    client.stream("POST", CHAT_PATH, json=gated, headers={"X-User-ID": "vic"})
                )
                chunks = response.iter_raw()
                assert next(chunks) == chunk_event("first")
            # What the survivor has seen of the doomed worker: its snapshot.
            counted = scrape_until(
                process.url, lambda s: value(s, "gateway_open_streams") == 1 and requests_by_label(s), pausing=doomed
            )
            os.kill(doomed, signal.SIGKILL)
            with pytest.raises(httpx.HTTPError):
                b"".join(chunks)
        # gunicorn notices the death (child_exit), starts another worker, and answers on.
        after = scrape_until(process.url, lambda s: value(s, "gateway_open_streams") == 0)
    finally:
        process.stop()

    assert served.status_code == 200
    assert value(counted, "gateway_open_streams") == 1
    assert requests_by_label(counted) == {("2xx", CHAT_PATH, "m"): 1}
    assert value(after, "gateway_open_streams") == 0
    assert requests_by_label(after) == {("2xx", CHAT_PATH, "m"): 1}, "the dead worker's counts stay"


def test_a_restart_starts_the_counts_afresh(gateway, upstream, tmp_path):
    environment = {"OPENCLAW_URL": upstream.url, "METRICS_TOKEN": TOKEN, "METRICS_DIR": str(tmp_path)}
    first_run = GatewayProcess(**environment)
    try:
        httpx.get(f"{first_run.url}/v1/models", headers={"X-User-ID": "ivo"}, timeout=10)
        counted = scrape_until(first_run.url, requests_by_label)
    finally:
        first_run.stop()
    left_behind = sorted(path.name for path in tmp_path.iterdir())
    second_run = GatewayProcess(**environment)
    try:
        fresh = scrape(second_run.url)
    finally:
        second_run.stop()

    assert requests_by_label(counted) == {("2xx", "/v1/models", "none"): 1}
    assert [name.split("-")[0] for name in left_behind] == ["dead"]  # the worker's, stopped
    assert requests_by_label(fresh) == {}


def test_without_a_metrics_directory_gunicorn_makes_one_and_removes_it(gateway, upstream, tmp_path):
    process = GatewayProcess(OPENCLAW_URL=upstream.url, METRICS_TOKEN=TOKEN, TMPDIR=str(tmp_path))
    try:
        httpx.get(f"{process.url}/v1/models", headers={"X-User-ID": "ivo"}, timeout=10)
        counted = scrape_until(process.url, requests_by_label)
        made = [path for path in tmp_path.iterdir() if path.name.startswith("gateway-metrics-")]
        held = [path.name for path in made[0].iterdir()]
    finally:
        process.stop()

    assert requests_by_label(counted) == {("2xx", "/v1/models", "none"): 1}
    assert len(made) == 1
    assert any(name.startswith("worker-") for name in held)  # the worker's snapshot
    assert not any(name.endswith(".db") for name in held)  # no multiprocess files: counts are kept in memory
    assert not any(path.name.startswith("gateway-metrics-") for path in tmp_path.iterdir())
