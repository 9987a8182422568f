"""Workers' metrics merged at scrape time (proxy.metric_snapshots): the merge must read as one
registry that saw every worker's calls, dead workers keep their counts but not their gauges,
and a worker publishes its counts while it runs and when it stops."""

import asyncio
import logging
import os
from types import SimpleNamespace

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from proxy import metric_snapshots, metrics
from proxy.breaker_states import NAME as BREAKER_STATE

OTHER_PID = 4242


class Worker:
    """A worker's metrics, in a registry of their own (as each gunicorn worker has)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("calls", "Calls.", ["model"], registry=self.registry)
        self.refusals = Counter("refusals", "Refusals.", registry=self.registry)
        self.latency = Histogram("latency_seconds", "Latency.", ["model"], buckets=(0.1, 1.0), registry=self.registry)
        self.streams = Gauge("open_streams", "Open streams.", registry=self.registry)

    def call(self, model: str, seconds: float) -> None:
        self.calls.labels(model).inc()
        self.latency.labels(model).observe(seconds)

    def families(self) -> list:
        return list(self.registry.collect())


def published_as(directory, pid: int, worker: Worker) -> None:
    """`worker`'s snapshot, as the worker with that pid would have published it."""
    metric_snapshots.publish(str(directory), worker.families())
    os.replace(metric_snapshots.live_file(str(directory), os.getpid()), metric_snapshots.live_file(str(directory), pid))


def merged_text(directory, own: Worker) -> str:
    registry = CollectorRegistry()
    registry.register(metric_snapshots.MergedCollector(str(directory), own.families))
    return generate_latest(registry).decode()


def merged_value(directory, own: Worker, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(merged_text(directory, own)):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_workers_merged_read_as_one_registry_that_saw_every_call(tmp_path):
    first, second, whole = Worker(), Worker(), Worker()
    for worker in (first, whole):
        worker.call("a", 0.05)
        worker.call("b", 0.5)
        worker.refusals.inc(2)
        worker.streams.inc(2)
    for worker in (second, whole):
        worker.call("b", 2.0)
        worker.call("c", 0.05)
        worker.refusals.inc()
        worker.streams.inc(3)
    published_as(tmp_path, OTHER_PID, second)

    assert merged_text(tmp_path, first) == generate_latest(whole.registry).decode()


def test_a_dead_workers_counts_stay_and_its_gauges_leave(tmp_path):
    own, doomed = Worker(), Worker()
    own.streams.inc()
    doomed.call("a", 0.05)
    doomed.streams.inc(4)
    published_as(tmp_path, OTHER_PID, doomed)
    alive = [merged_value(tmp_path, own, name) for name in ("open_streams", "refusals_total")]

    metric_snapshots.retire(str(tmp_path), OTHER_PID)

    assert alive == [5, 0]
    assert merged_value(tmp_path, own, "open_streams") == 1
    assert merged_value(tmp_path, own, "calls_total", model="a") == 1
    assert merged_value(tmp_path, own, "latency_seconds_count", model="a") == 1


def test_each_death_of_a_reused_pid_is_kept_apart(tmp_path):
    own, earlier, later = Worker(), Worker(), Worker()
    earlier.call("a", 0.05)
    later.call("a", 0.05)
    later.call("a", 0.05)
    published_as(tmp_path, OTHER_PID, earlier)
    metric_snapshots.retire(str(tmp_path), OTHER_PID)
    published_as(tmp_path, OTHER_PID, later)  # a new worker under the same pid
    metric_snapshots.retire(str(tmp_path), OTHER_PID)
    metric_snapshots.retire(str(tmp_path), OTHER_PID + 1)  # died before its first snapshot

    assert merged_value(tmp_path, own, "calls_total", model="a") == 3


def test_dead_workers_fold_into_one_file_however_many_come_and_go(tmp_path):
    own = Worker()
    for pid in range(OTHER_PID, OTHER_PID + 50):  # reloads, recycled workers
        worker = Worker()
        worker.call("a", 0.05)
        worker.streams.inc()
        published_as(tmp_path, pid, worker)
        metric_snapshots.retire(str(tmp_path), pid)

    assert sorted(os.listdir(tmp_path)) == ["dead-workers.json"]
    assert merged_value(tmp_path, own, "calls_total", model="a") == 50
    assert merged_value(tmp_path, own, "latency_seconds_count", model="a") == 50
    assert merged_value(tmp_path, own, "open_streams") == 0


def test_a_scrape_between_a_fold_and_its_cleanup_counts_each_worker_once(tmp_path, monkeypatch):
    own, dead = Worker(), Worker()
    dead.call("a", 0.05)
    published_as(tmp_path, OTHER_PID, dead)
    monkeypatch.setattr(os, "remove", lambda path: None)  # the fold's files not removed yet

    metric_snapshots.retire(str(tmp_path), OTHER_PID)

    assert len(os.listdir(tmp_path)) == 2  # the folded file, and the dead file it holds
    assert merged_value(tmp_path, own, "calls_total", model="a") == 1


def test_a_worker_retired_while_a_scrape_reads_is_counted_once(tmp_path, monkeypatch):
    own, other = Worker(), Worker()
    other.call("a", 0.05)
    published_as(tmp_path, OTHER_PID, other)
    real_load = metric_snapshots._load

    def retired_meanwhile(path):
        if os.path.basename(path) == f"worker-{OTHER_PID}.json":
            metric_snapshots.retire(str(tmp_path), OTHER_PID)  # gunicorn reaped it after the listing
        return real_load(path)

    monkeypatch.setattr(metric_snapshots, "_load", retired_meanwhile)

    assert merged_value(tmp_path, own, "calls_total", model="a") == 1


def test_a_workers_scrape_adds_the_other_workers_and_reads_the_breakers(
    gateway, upstream, settings, tmp_path, monkeypatch
):
    """The scrape view in a gunicorn worker: this process's live counts plus the others'."""
    settings.METRICS_TOKEN = "scrape-me"
    other = CollectorRegistry()
    Counter("gateway_redis_failures", metrics.REDIS_FAILURES._documentation, registry=other).inc(3)
    metric_snapshots.publish(str(tmp_path), other.collect())
    os.replace(metric_snapshots.live_file(str(tmp_path), os.getpid()), metric_snapshots.live_file(str(tmp_path), 1))

    def scraped() -> dict[str, float]:
        response = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer scrape-me"})
        return {s.name: s.value for f in text_string_to_metric_families(response.text) for s in f.samples}

    alone = scraped()
    monkeypatch.setenv(metric_snapshots.ENVIRONMENT, str(tmp_path))  # as gunicorn's workers have it
    merged = scraped()

    assert "process_cpu_seconds_total" in alone  # one process: its whole registry
    assert merged["gateway_redis_failures_total"] == alone["gateway_redis_failures_total"] + 3
    assert BREAKER_STATE in merged
    assert not [name for name in merged if not name.startswith("gateway_")]  # per-process figures mean nothing summed


def test_a_worker_publishes_at_start_and_its_last_counts_at_shutdown(tmp_path, monkeypatch):
    monkeypatch.setenv(metric_snapshots.ENVIRONMENT, str(tmp_path))
    worker = Worker()

    def published_calls() -> float | None:
        # Read as another worker would: here this process is the publishing worker.
        os.replace(metric_snapshots.live_file(str(tmp_path), os.getpid()), tmp_path / f"worker-{OTHER_PID}.json")
        return merged_value(tmp_path, Worker(), "calls_total", model="a")

    async def a_worker_life() -> list[float | None]:
        metric_snapshots.start(worker.families)
        await asyncio.sleep(0)  # the task's first round
        worker.call("a", 0.05)
        seen = [published_calls()]
        await metric_snapshots.close()
        return [*seen, published_calls()]

    assert asyncio.run(a_worker_life()) == [None, 1]


def test_outside_gunicorn_a_process_publishes_nothing(monkeypatch):
    monkeypatch.delenv(metric_snapshots.ENVIRONMENT, raising=False)

    async def a_process_life() -> bool:
        metric_snapshots.start(Worker().families)
        await asyncio.sleep(0)
        publishing = metric_snapshots._publisher is not None
        await metric_snapshots.close()
        return publishing

    assert asyncio.run(a_process_life()) is False


def test_a_snapshot_that_cannot_be_written_is_logged_once_and_the_worker_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(metric_snapshots.ENVIRONMENT, str(tmp_path / "gone"))
    monkeypatch.setattr(metric_snapshots, "PUBLISH_SECONDS", 0.0)

    async def a_worker_life() -> None:
        metric_snapshots.start(Worker().families)
        for _ in range(3):
            await asyncio.sleep(0)
        await metric_snapshots.close()

    with caplog.at_level(logging.ERROR, logger="proxy.metric_snapshots"):
        asyncio.run(a_worker_life())

    assert [r.getMessage() for r in caplog.records] == [
        f"metrics: this worker's snapshot could not be written to {tmp_path / 'gone'}"
    ]


def test_every_metric_of_the_gateway_is_published():
    defined = {m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}

    assert set(metrics.OWN) == defined
    assert {family.name for family in metrics.families()} == {m._name for m in defined}


def test_gunicorn_takes_the_former_variable_and_keeps_multiprocess_mode_off(tmp_path, monkeypatch):
    from gateway_project import gunicorn_conf

    for name in ("counter_1.db", f"worker-{OTHER_PID}.json", "dead-1-2.json", "notes.txt"):
        (tmp_path / name).write_text("[]")
    monkeypatch.delenv("METRICS_DIR", raising=False)
    monkeypatch.delenv(metric_snapshots.ENVIRONMENT, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # as set for the former version

    gunicorn_conf.on_starting(SimpleNamespace())

    assert os.environ[metric_snapshots.ENVIRONMENT] == str(tmp_path)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # workers would write files on every observation
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # the last run's counts are gone
