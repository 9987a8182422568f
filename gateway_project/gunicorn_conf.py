"""gunicorn settings: `gunicorn -c gateway_project/gunicorn_conf.py gateway_project.asgi:application`.

Read from the environment like the Django settings: HOST, PORT, WEB_CONCURRENCY,
GRACEFUL_TIMEOUT, KEEPALIVE.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway_project.env import env_int, env_str


def _workers() -> int:
    shared_limits = bool(env_str("REDIS_URL"))
    workers = env_int("WEB_CONCURRENCY", (os.cpu_count() or 1) if shared_limits else 1, minimum=1)
    if workers > 1 and not shared_limits:
        # The in-process rate limiter is exact only within one process.
        raise SystemExit(
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
