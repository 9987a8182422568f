"""gunicorn configuration of gateway processes whose clock a test moves (tests/shared_clock.py)."""

from gateway_project.gunicorn_conf import *  # noqa: F403


def post_worker_init(worker) -> None:
    from tests.shared_clock import install

    install()
