"""gunicorn settings: `gunicorn -c gateway_project/gunicorn_conf.py gateway_project.asgi:application`.

Read from the environment like the Django settings: HOST, PORT, WEB_CONCURRENCY,
GRACEFUL_TIMEOUT, KEEPALIVE; METRICS_DIR (a directory for the workers' metrics snapshots,
emptied at start; unset: a fresh temporary one, removed at exit).
"""

import glob
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway_project.lib.env import (
    env_int,
    env_str,
    note_problems,
    raise_noted_problems,
    refuse,
    stop_on_bad_configuration,
)

# Every bad value is named at once, at the end of this file.
note_problems()


def _workers() -> int:
    shared_limits = bool(env_str("REDIS_URL"))
    workers = env_int("WEB_CONCURRENCY", (os.cpu_count() or 1) if shared_limits else 1, minimum=1)
    if workers > 1 and not shared_limits:
        # The in-process rate limiter is exact only within one process.
        refuse(
            f"WEB_CONCURRENCY={workers} needs REDIS_URL: without Redis each worker would keep "
            "its own rate-limit counts. Set REDIS_URL, or run one worker."
        )
    return workers


bind = f"{env_str('HOST', '127.0.0.1')}:{env_int('PORT', 8000, minimum=1, maximum=65535)}"
workers = _workers()
worker_class = "gateway_project.workers.GatewayWorker"
# Seconds a worker gets after SIGTERM; open streams are ended 5 s before it runs out.
graceful_timeout = env_int("GRACEFUL_TIMEOUT", 30, minimum=6)
# Above the idle timeout of load balancers in front (60 s on most), so they never
# reuse a connection the gateway has just closed.
keepalive = env_int("KEEPALIVE", 75, minimum=1)
# The gateway's own access log is the `requests` table; gunicorn's would repeat it and
# print query strings.
accesslog = None
errorlog = "-"
# gunicorn's control socket sits at one fixed path per user: several gateways on one
# machine would fight over it, and nothing here uses it.
control_socket_disable = True

# gunicorn prints a traceback above any exception from this file; a bad value is said plainly.
with stop_on_bad_configuration():
    raise_noted_problems()


# Metrics (proxy/metrics.py) from every worker in one scrape: each worker counts in memory
# and publishes snapshots to one directory, where a scrape merges them (proxy.metric_snapshots).
# Workers inherit the modules this process (the master) has imported: it must not import
# prometheus_client before PROMETHEUS_MULTIPROC_DIR is gone, nor the app (no preload_app).
def on_starting(server) -> None:
    # PROMETHEUS_MULTIPROC_DIR: this setting's former name. Left set, it would put
    # prometheus_client into its multiprocess mode, a file write per observation.
    legacy = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", "").strip()
    directory = os.environ.get("METRICS_DIR", "").strip() or legacy
    if directory:
        # Counts left by an earlier run would be added to this run's (*.db: the former files).
        os.makedirs(directory, exist_ok=True)
        for pattern in ("worker-*", "dead-*", "*.db"):
            for stale in glob.glob(os.path.join(directory, pattern)):
                os.remove(stale)
    else:
        directory = tempfile.mkdtemp(prefix="gateway-metrics-")
        # On the arbiter, which outlives a configuration reload (SIGHUP); this module does not.
        server.gateway_metrics_dir = directory
    from proxy import metric_snapshots

    os.environ[metric_snapshots.ENVIRONMENT] = directory


def child_exit(server, worker) -> None:
    from proxy import metric_snapshots

    # A dead worker's counts stay in the sums; its gauges (open streams, queued rows) leave them.
    metric_snapshots.retire(metric_snapshots.worker_directory(), worker.pid)


def on_exit(server) -> None:
    created = getattr(server, "gateway_metrics_dir", None)
    if created:
        shutil.rmtree(created, ignore_errors=True)
