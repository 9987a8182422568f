"""Every gunicorn worker's metrics in one scrape, with nothing but memory on the request path.

Each worker counts in its own in-process prometheus_client metrics and publishes a snapshot
of them, every PUBLISH_SECONDS and at shutdown, to a file of its own in `worker_directory()` (JSON,
written whole and renamed into place, so a reader never sees half of one). A scrape, answered
by any worker, merges its own live values with every other worker's latest snapshot:
counters and histograms are summed; gauges are summed over live workers only. When gunicorn
reaps a worker (child_exit, in the master), `retire` renames its file: its counts stay in the
sums, its gauges (open streams, queued rows) leave them. Other workers' counts thus show up
to PUBLISH_SECONDS late, and a worker killed outright loses what it counted since its last
snapshot.

prometheus_client's multiprocess mode did the same through memory-mapped files written on
every observation: ~19 µs of a relayed call's worker CPU went to its metrics, against ~10 in
memory; publishing costs ~1 ms a second. This module imports neither Django nor the
gateway's metrics: the master imports it too.
"""

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

# Set by gateway_project/gunicorn_conf.py for its workers only, never by hand: a process
# started otherwise (plain uvicorn, tests) serves its own registry and ignores stale files.
ENVIRONMENT = "GATEWAY_WORKER_METRICS_DIR"
PUBLISH_SECONDS = 1.0
LIVE, DEAD, SUFFIX = "worker-", "dead-", ".json"
# Every retired worker's counts, added up (`retire`).
FOLDED = f"{DEAD}workers{SUFFIX}"
# A listing goes stale when `retire` renames a file between it and the read: list again.
READ_ATTEMPTS = 3

Families = Callable[[], Iterable[Metric]]
# One family as a snapshot holds it: name, help, type, unit, [[sample name, labels, value]].
Snapshot = list[tuple[str, str, str, str, list[tuple[str, dict[str, str], float]]]]


def worker_directory() -> str:
    """Where the workers' snapshots are; empty outside gunicorn."""
    return os.environ.get(ENVIRONMENT, "")


def live_file(directory: str, pid: int) -> str:
    return os.path.join(directory, _live_name(pid))


def _live_name(pid: int) -> str:
    return f"{LIVE}{pid}{SUFFIX}"


def publish(directory: str, families: Iterable[Metric]) -> None:
    """Writes this process's snapshot whole, then renames it over the previous one."""
    snapshot = [_snapshot_of(family) for family in families]
    text = json.dumps(snapshot, separators=(",", ":"))  # whole: json.dump writes in chunks, several times slower
    path = live_file(directory, os.getpid())
    with open(path + ".tmp", "w") as file:
        file.write(text)
    os.replace(path + ".tmp", path)


def retire(directory: str, pid: int) -> None:
    """A worker has exited: its file becomes a dead worker's, under a name no pid reuses, and
    is folded into the one file of every dead worker's counts (FOLDED): however many workers
    come and go (reloads, recycling), a scrape reads one file per live worker and one more."""
    path = live_file(directory, pid)
    with contextlib.suppress(FileNotFoundError):  # it died before its first snapshot
        os.rename(path, os.path.join(directory, f"{DEAD}{pid}-{time.time_ns()}{SUFFIX}"))
    with contextlib.suppress(FileNotFoundError):  # it died while writing one
        os.remove(path + ".tmp")
    _fold(directory)


def _fold(directory: str) -> None:
    """Adds the dead workers' files into FOLDED, then removes them. FOLDED names the files it
    holds, so a scrape between its rename and their removal counts each once."""
    folded_path = os.path.join(directory, FOLDED)
    folded = _load_folded(folded_path)
    dead = sorted(name for name in os.listdir(directory) if _is_dead(name) and name not in folded["files"])
    if not dead:
        return
    snapshots = [(False, folded["families"]), *((False, _load(os.path.join(directory, name))) for name in dead)]
    families = [_snapshot_of(family) for family in merge([], snapshots)]
    held = [name for name in folded["files"] if os.path.exists(os.path.join(directory, name))]
    text = json.dumps({"files": held + dead, "families": families}, separators=(",", ":"))
    with open(folded_path + ".tmp", "w") as file:
        file.write(text)
    os.replace(folded_path + ".tmp", folded_path)
    for name in dead:
        os.remove(os.path.join(directory, name))


def _load_folded(path: str) -> dict:
    try:
        return _load(path)
    except FileNotFoundError:
        return {"files": [], "families": []}


def _snapshot_of(family: Metric) -> tuple:
    return (family.name, family.documentation, family.type, family.unit, [s[:3] for s in family.samples])


def _is_snapshot(name: str) -> bool:
    return name.endswith(SUFFIX) and name.startswith((LIVE, DEAD))


def _is_dead(name: str) -> bool:
    return name.startswith(DEAD) and name.endswith(SUFFIX) and name != FOLDED


class MergedCollector:
    """This process's live families merged with the other workers' snapshots in `directory`."""

    def __init__(self, directory: str, families: Families) -> None:
        self._directory = directory
        self._families = families

    def collect(self) -> list[Metric]:
        own = self._families()
        return merge(own, _others(self._directory, _live_name(os.getpid())))


def merge(own: Iterable[Metric], others: Iterable[tuple[bool, Snapshot]]) -> list[Metric]:
    """Sums samples by name and labels, in the order they first appear; `others` are
    (alive, snapshot) pairs, and the gauges of workers no longer alive are left out.
    Families without samples (labelled metrics never used) are left out, as
    prometheus_client's multiprocess mode did."""
    families: dict[str, Metric] = {}
    totals: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    snapshots: list[tuple[bool, Iterable]] = [
        (True, [(f.name, f.documentation, f.type, f.unit, f.samples) for f in own]),
        *others,
    ]
    for alive, snapshot in snapshots:
        for name, documentation, kind, unit, samples in snapshot:
            if kind == "gauge" and not alive:
                continue
            if name not in families:
                families[name] = Metric(name, documentation, kind, unit)
                totals[name] = {}
            values = totals[name]
            for sample_name, labels, value in (sample[:3] for sample in samples):
                key = (sample_name, tuple(labels.items()))
                values[key] = values.get(key, 0.0) + value
    for name, family in families.items():
        for (sample_name, labels), value in totals[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return [family for family in families.values() if family.samples]


def _others(directory: str, own: str) -> list[tuple[bool, Snapshot]]:
    attempts = READ_ATTEMPTS
    while True:
        # FOLDED first: the dead files it names (still there for a moment) are in it already.
        folded = _load_folded(os.path.join(directory, FOLDED))
        skipped = {own, FOLDED, *folded["files"]}
        names = sorted(name for name in os.listdir(directory) if _is_snapshot(name) and name not in skipped)
        try:
            read = [(name.startswith(LIVE), _load(os.path.join(directory, name))) for name in names]
            return [(False, folded["families"]), *read]
        except FileNotFoundError:
            attempts -= 1
            if not attempts:
                raise


def _load(path: str) -> Snapshot:
    with open(path) as file:
        return json.load(file)


# The worker's publishing task, started and stopped by the ASGI lifespan.


class _Publisher:
    def __init__(self, directory: str, families: Families) -> None:
        self.directory = directory
        self.families = families
        self.failing = False
        self.task = asyncio.get_running_loop().create_task(self._publishing())

    async def _publishing(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(PUBLISH_SECONDS)

    def publish(self) -> None:
        # A full disk must not stop the worker: the other workers' scrapes miss its latest counts.
        try:
            publish(self.directory, self.families())
        except Exception:
            if not self.failing:
                logger.exception("metrics: this worker's snapshot could not be written to %s", self.directory)
            self.failing = True
        else:
            self.failing = False


_publisher: _Publisher | None = None


def start(families: Families) -> None:
    """Under gunicorn: publish `families` every PUBLISH_SECONDS. Elsewhere: nothing to do."""
    global _publisher
    if worker_directory() and _publisher is None:
        _publisher = _Publisher(worker_directory(), families)


async def close() -> None:
    """At shutdown, after the last access-log rows are counted: the final snapshot."""
    global _publisher
    if _publisher is None:
        return
    publisher, _publisher = _publisher, None
    publisher.task.cancel()
    await asyncio.gather(publisher.task, return_exceptions=True)
    publisher.publish()
