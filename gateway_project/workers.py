from typing import Any

from uvicorn_worker import UvicornWorker


class GatewayWorker(UvicornWorker):
    """uvicorn under gunicorn, with our lifespan on and a bounded graceful shutdown.

    Without timeout_graceful_shutdown an endless stream holds SIGTERM until gunicorn
    kills the worker, and rows still queued for the access log are lost with it. Here
    uvicorn cancels open streams a few seconds before gunicorn's graceful_timeout, so
    they end cleanly and the lifespan shutdown flushes their log rows.
    """

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "lifespan": "on"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = max(1, self.cfg.graceful_timeout - 5)
