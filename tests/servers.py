"""Real HTTP servers on loopback for tests: uvicorn in a thread, on a port of its own."""

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path

import httpx
import redis
import uvicorn


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self.loop = asyncio.get_running_loop()
        self.ready.set()


class ServerThread:
    def __init__(self, app) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        ready = threading.Event()
        config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=1)
        self._server = _Server(config, ready)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test server did not start")

    def call(self, coroutine: Coroutine, timeout: float = 10):
        """Run a coroutine on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._server.loop).result(timeout)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def database_url_for_other_processes() -> str:
    """The test database as a DATABASE_URL, for gateway processes a test starts."""
    from django.db import connection

    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    host, port = config["HOST"] or "127.0.0.1", config["PORT"] or 5432
    return f"postgres://{config['USER'] or 'root'}@{host}:{port}/{config['NAME']}"


START_TIMEOUT = 60
BASE_DIR = Path(__file__).resolve().parent.parent
GUNICORN_CONF = "gateway_project/gunicorn_conf.py"


def wait_until_serving(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited during start-up with status {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)  # start-up polling, not a timing assumption
    raise AssertionError("the server did not start")


def end_group(process: subprocess.Popen, grace: float = 30) -> None:
    """Stop a process started with start_new_session=True, and whatever it started: SIGTERM
    and `grace` seconds to finish, then SIGKILL to the whole group, so a failed test never
    leaves a gunicorn or a stub upstream behind (holding the test database)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def gateway_environment(**overrides: str) -> dict[str, str]:
    """The environment of a gateway process started by a test: the test database, no
    inherited upstream, Redis or PostHog key unless given, no background probes."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENCLAW_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "POSTHOG_API_KEY")
    }
    environment.update(
        SECRET_KEY="s" * 50,
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        DATABASE_URL=database_url_for_other_processes(),
        UPSTREAM_PROBE_SECONDS="0",
    )
    environment.update(overrides)
    return environment


class GatewayProcess:
    """The gateway under gunicorn with uvicorn workers, as `make run` serves it."""

    def __init__(self, workers: int = 1, config: str = GUNICORN_CONF, **environment: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", config, "gateway_project.asgi:application"],
            cwd=BASE_DIR,
            env=gateway_environment(PORT=str(port), WEB_CONCURRENCY=str(workers), **environment),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Drained all along: a chatty gateway must not block on a full pipe.
        self._output: list[str] = []
        self._reader = threading.Thread(target=self._output.extend, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        try:
            wait_until_serving(self.url, self.process)
        except AssertionError:
            self.process.kill()
            raise AssertionError(self.output()) from None

    def output(self) -> str:
        """What the process printed so far (all of it once it has exited)."""
        if self.process.poll() is not None:
            self._reader.join(10)
            if not self._reader.is_alive():
                self.process.stdout.close()
        return "".join(self._output)

    def stop(self) -> str:
        """Graceful stop (SIGTERM), as a deploy does; returns what the process printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.output()


class PrivateRedis:
    """A Redis of the test's own, so the test may stop and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # start-up polling
        finally:
            client.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary directory, on a free
    port), so the test may stop and restart it. The machine's shared server is never touched.
    """

    def __init__(self, binaries: Path) -> None:
        self._bin = binaries
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        # initdb refuses to run as root: the cluster then belongs to the postgres user.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.directory / "data"), "-U", "postgres", "--auth=trust", "--no-sync")

    @classmethod
    def unavailable_because(cls) -> str | None:
        if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
            return "needs PostgreSQL's initdb (/usr/lib/postgresql/*/bin)"
        if os.geteuid() == 0 and not (shutil.which("runuser") and _user_exists("postgres")):
            return "initdb refuses root, and there is no postgres user to run it as"
        return None

    @classmethod
    def create(cls) -> "PrivatePostgres":
        return cls(Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self._bin / program), *args], check=True, capture_output=True, cwd=self.directory
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.directory / "data"),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
