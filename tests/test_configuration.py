"""Settings come from the environment; a bad value stops start-up with one line naming the
variable, the value and what is allowed, whichever command starts the gateway."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_project.lib import env
from tests.servers import free_port

BASE_DIR = Path(__file__).resolve().parent.parent


def _environment(**variables: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "OPENCLAW_URL")}
    environment.update({"SECRET_KEY": "x" * 50, "DJANGO_SETTINGS_MODULE": "gateway_project.settings", **variables})
    return environment


def run(*command: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(command), cwd=BASE_DIR, env=_environment(**variables), capture_output=True, text=True, timeout=60
    )


def start_django(*, code: str = "import django; django.setup()", **variables: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-c", code, **variables)


def manage(*arguments: str, **variables: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "manage.py", *arguments, **variables)


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        ({"AUTH_MODE": "oauth"}, "AUTH_MODE='oauth' is not valid: expected one of openai, codex."),
        ({"UPSTREAM_TIMEOUT": "soon"}, "UPSTREAM_TIMEOUT='soon' is not valid: expected a number of seconds."),
        ({"UPSTREAM_TIMEOUT": "0"}, "UPSTREAM_TIMEOUT='0' is not valid: expected a number greater than 0."),
        (
            {"OPENCLAW_URL": "bridge.local:18789"},
            "OPENCLAW_URL='bridge.local:18789' is not valid: expected an absolute http/https URL without query "
            "or fragment.",
        ),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not valid: expected one of 1/0, true/false, yes/no, on/off."),
        (
            {"DATABASE_URL": "mysql://db/gateway"},
            "DATABASE_URL uses mysql: only postgres:// and sqlite:// are supported.",
        ),
        (
            {"DATABASE_POOLER": "pgcat"},
            "DATABASE_POOLER='pgcat' is not valid: expected one of none, pgbouncer.",
        ),
        # With the embedded SQLite: there is nothing to pool.
        ({"DATABASE_POOLER": "pgbouncer"}, "DATABASE_POOLER=pgbouncer needs a postgres:// DATABASE_URL."),
        (
            # The password of a URL never reaches the terminal or a log.
            {"REDIS_URL": "http://:hunter2@127.0.0.1:6379"},
            "REDIS_URL='http://:***@127.0.0.1:6379' is not valid: expected an absolute redis/rediss/unix URL "
            "without query or fragment.",
        ),
        ({"MAX_REQUEST_BYTES": "-5"}, "MAX_REQUEST_BYTES='-5' is not valid: expected a whole number of at least 1024."),
        ({"PORT": "70000"}, "PORT='70000' is not valid: expected a whole number from 1 to 65535."),
        ({"GATEWAY_IDENTITY": "cookie"}, "GATEWAY_IDENTITY='cookie' is not valid: expected one of header, key."),
        (
            {"GATEWAY_ENCRYPTION_KEYS": "not-a-fernet-key"},
            "GATEWAY_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes); make one "
            "with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'",
        ),
        ({"KEY_CACHE_SECONDS": "forever"}, "KEY_CACHE_SECONDS='forever' is not valid: expected a whole number."),
        ({"STREAM_USAGE": "always"}, "STREAM_USAGE='always' is not valid: expected one of include, passthrough."),
        (
            {"FREE_MONTHLY_BUDGET": "lots"},
            "FREE_MONTHLY_BUDGET='lots' is not valid: expected an amount of US dollars, e.g. 25 or 0.50.",
        ),
        (
            {"FREE_MONTHLY_BUDGET": "0.0000001"},
            "FREE_MONTHLY_BUDGET='0.0000001' is not valid: expected a non-negative amount of US dollars with at "
            "most 6 decimals.",
        ),
        (
            {"BUDGET_MARGIN_USD": "-1"},
            "BUDGET_MARGIN_USD='-1' is not valid: expected a non-negative amount of US dollars with at most 6 "
            "decimals.",
        ),
        (
            {"FORWARD_REQUEST_HEADERS": "x-trace-id, cookie"},
            "FORWARD_REQUEST_HEADERS names cookie, which the gateway never forwards (its own credentials, the "
            "caller's Authorization and cookies, and per-hop headers stay at the gateway).",
        ),
        (
            {"EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend"},
            "EMAIL_BACKEND is the file backend: set EMAIL_FILE_PATH to the folder to write to.",
        ),
    ],
)
def test_a_bad_value_stops_a_command_with_one_line_and_no_traceback(variables, line):
    result = manage("migrate", "--noinput", **variables)

    assert result.returncode != 0
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""


SEVERAL_BAD_VALUES = {"AUTH_MODE": "not-a-mode", "UPSTREAM_TIMEOUT": "soon", "KEY_CACHE_SECONDS": "301"}
THEIR_LINES = [
    "AUTH_MODE='not-a-mode' is not valid: expected one of openai, codex.",
    "KEY_CACHE_SECONDS='301' is not valid: expected a whole number from 0 to 300.",
    "UPSTREAM_TIMEOUT='soon' is not valid: expected a number of seconds.",
]


@pytest.mark.parametrize("command", [("check",), ("collectstatic", "--noinput"), ("help",)])
def test_every_command_names_every_bad_value_at_once(command):
    result = manage(*command, **SEVERAL_BAD_VALUES)

    assert result.returncode != 0
    assert result.stderr.splitlines() == THEIR_LINES


def test_the_server_stops_before_starting_anything_naming_every_bad_value():
    result = run(sys.executable, "-m", "gateway_project.serve", PORT=str(free_port()), **SEVERAL_BAD_VALUES)

    assert result.returncode != 0
    # Neither the stub upstream nor gunicorn started: no banner, no gunicorn line.
    assert result.stderr.splitlines() == THEIR_LINES


def test_the_servers_own_bad_values_are_named_at_once_too():
    result = run(
        sys.executable, "-m", "gateway_project.serve", KEEPALIVE="long", GRACEFUL_TIMEOUT="2", WEB_CONCURRENCY="2"
    )

    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "WEB_CONCURRENCY=2 needs REDIS_URL: without Redis each worker would keep its own rate-limit counts. "
        "Set REDIS_URL, or run one worker.",
        "GRACEFUL_TIMEOUT='2' is not valid: expected a whole number of at least 6.",
        "KEEPALIVE='long' is not valid: expected a whole number.",
    ]


def test_make_run_stops_at_its_first_step_with_the_line():
    # -o: the venv and the secret key count as made (no pip install, no key written here).
    result = run("make", "-o", ".venv/.runtime", "-o", ".secret_key", "run", AUTH_MODE="not-a-mode")

    assert result.returncode != 0
    *ours, makes_own = result.stderr.splitlines()
    assert ours == ["AUTH_MODE='not-a-mode' is not valid: expected one of openai, codex."]
    # "make[1]: ..." when the tests themselves run under make (`make test`, as CI does).
    assert re.match(r"make(\[\d+\])?: \*\*\* \[Makefile:", makes_own), makes_own


def test_a_worker_started_with_a_bad_value_says_it_in_one_line_and_gunicorn_stops():
    # gunicorn run by hand, not through `make run`: the worker is where the settings are read.
    result = run(
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gateway_project/gunicorn_conf.py",
        "gateway_project.asgi:application",
        PORT=str(free_port()),
        AUTH_MODE="not-a-mode",
    )

    # 4: gunicorn's "App failed to load", so the master stops instead of starting workers again.
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    worker_lines = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert worker_lines == ["AUTH_MODE='not-a-mode' is not valid: expected one of openai, codex."]
    assert "Reason: App failed to load." in result.stderr


def test_secret_key_is_required_when_debug_is_off(tmp_path):
    result = manage("check", SECRET_KEY="", DEBUG="0", SECRET_KEY_FILE=str(tmp_path / "absent"))

    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "SECRET_KEY is not set. Set it to a long random value (`make run` creates one in .secret_key), "
        "or set DEBUG=1 for local development."
    ]


def test_the_secret_key_file_stands_in_for_an_unset_secret_key(tmp_path):
    key_file = tmp_path / "secret"
    key_file.write_text("k" * 50 + "\n")
    result = start_django(SECRET_KEY="", SECRET_KEY_FILE=str(key_file))

    assert result.returncode == 0, result.stderr


def test_good_values_start():
    result = start_django(
        AUTH_MODE="codex",
        UPSTREAM_TIMEOUT="90",
        OPENCLAW_URL="http://100.64.0.7:18789/",
        FREE_MONTHLY_BUDGET="$25.50",
        FORWARD_REQUEST_HEADERS="x-trace-id, X-Openai-Internal-Codex-Responses-Lite",
    )

    assert result.returncode == 0, result.stderr


def test_the_upstream_url_loses_its_trailing_slash(monkeypatch):
    monkeypatch.setenv("OPENCLAW_URL", "https://bridge.example.ts.net/openclaw/")

    assert env.env_url("OPENCLAW_URL") == "https://bridge.example.ts.net/openclaw"


def test_unset_and_empty_variables_take_the_default(monkeypatch):
    monkeypatch.setenv("UPSTREAM_TIMEOUT", " ")
    monkeypatch.delenv("AUTH_MODE", raising=False)

    assert env.env_float("UPSTREAM_TIMEOUT", 60.0) == 60.0
    assert env.env_choice("AUTH_MODE", ("openai", "codex"), "openai") == "openai"


def test_a_whole_number_out_of_range_is_refused(monkeypatch):
    monkeypatch.setenv("PORT", "70000")

    with pytest.raises(ImproperlyConfigured, match="PORT"):
        env.env_int("PORT", 8000, minimum=1, maximum=65535)


def test_gunicorn_refuses_several_workers_without_redis():
    environment = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environment["WEB_CONCURRENCY"] = "2"
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gateway_project/gunicorn_conf.py", "--check-config", "x:y"],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "WEB_CONCURRENCY=2 needs REDIS_URL: without Redis each worker would keep its own rate-limit counts. "
        "Set REDIS_URL, or run one worker."
    ]
