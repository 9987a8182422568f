"""`make run`: serve the gateway with gunicorn + uvicorn workers.

When OPENCLAW_URL is unset, the bundled stub upstream is started beside the gateway
(on a free loopback port) and announced on start-up, so a fresh machine has a working
pipe end to end. Stops both on Ctrl-C or SIGTERM. Bad configuration values stop it
before either starts, each named on a line of its own. GATEWAY_ROUTES_FILE, when set, is
loaded (manage.py load_routes) before the server starts; a bad one stops the start.
"""

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway_project.lib.env import stop_on_bad_configuration

BASE_DIR = Path(__file__).resolve().parent.parent
STUB_START_TIMEOUT = 15.0


def main() -> int:
    _check_configuration()
    env = dict(os.environ)
    _load_routes(env)
    stub = None
    if not env.get("OPENCLAW_URL", "").strip():
        stub, env["OPENCLAW_URL"] = _start_stub()
        _banner(
            "OPENCLAW_URL is not set: relaying /v1 to the bundled stub upstream at "
            f"{env['OPENCLAW_URL']} (canned replies, no real model).",
            "Set OPENCLAW_URL to your upstream to relay real calls.",
        )
    port = env.get("PORT", "8000")
    _banner(f"Gateway on http://{env.get('HOST', '127.0.0.1')}:{port}/v1  (health: /health, admin: /admin/)")
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(BASE_DIR / "gateway_project" / "gunicorn_conf.py"),
        "gateway_project.asgi:application",
    ]
    server = subprocess.Popen(command, cwd=BASE_DIR, env=env)
    # Forward SIGTERM so the workers get their graceful shutdown; Ctrl-C already
    # reaches the whole process group.
    signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGTERM))
    try:
        while True:
            try:
                return server.wait()
            except KeyboardInterrupt:
                continue
    finally:
        if stub is not None:
            stub.terminate()
            stub.wait(10)


def _check_configuration() -> None:
    """Read the settings and gunicorn's configuration here, where a bad value stops everything
    with its lines; in the workers it would come after gunicorn's start-up lines."""
    with stop_on_bad_configuration():
        importlib.import_module(os.environ.get("DJANGO_SETTINGS_MODULE", "gateway_project.settings"))
    importlib.import_module("gateway_project.gunicorn_conf")  # exits itself, its bad values named


def _load_routes(env: dict[str, str]) -> None:
    """Load GATEWAY_ROUTES_FILE before serving (as migrate runs before): a bad file stops the
    start with its message, and the database keeps the routes it had."""
    file = env.get("GATEWAY_ROUTES_FILE", "").strip()
    if not file:
        return
    loaded = subprocess.run([sys.executable, "manage.py", "load_routes", file], cwd=BASE_DIR, env=env)
    if loaded.returncode:
        raise SystemExit(f"GATEWAY_ROUTES_FILE={file} could not be loaded (above); nothing was served.")


def _start_stub() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stub = subprocess.Popen(
        [sys.executable, "-m", "gateway_project.stub_upstream", "--port", str(port)],
        cwd=BASE_DIR,
        # The stub must not die with the first Ctrl-C before gunicorn has drained.
        start_new_session=True,
    )
    deadline = time.monotonic() + STUB_START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return stub, f"http://127.0.0.1:{port}"
        except OSError:
            if stub.poll() is not None:
                break
            time.sleep(0.05)
    stub.kill()
    raise SystemExit("the bundled stub upstream did not start")


def _banner(*lines: str) -> None:
    print("\n".join(f"==> {line}" for line in lines), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
