"""Settings come from the environment; a bad value stops start-up naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_project import env

BASE_DIR = Path(__file__).resolve().parent.parent


def start_django(*, code: str = "import django; django.setup()", **variables: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "OPENCLAW_URL")}
    environment.update({"SECRET_KEY": "x" * 50, "DJANGO_SETTINGS_MODULE": "gateway_project.settings", **variables})
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTH_MODE", "oauth"),
        ("UPSTREAM_TIMEOUT", "soon"),
        ("UPSTREAM_TIMEOUT", "0"),
        ("OPENCLAW_URL", "bridge.local:18789"),
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://db/gateway"),
        ("DATABASE_POOLER", "pgcat"),
        ("DATABASE_POOLER", "pgbouncer"),  # with the embedded SQLite: there is nothing to pool
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("MAX_REQUEST_BYTES", "-5"),
        ("GATEWAY_IDENTITY", "cookie"),
        ("GATEWAY_ENCRYPTION_KEYS", "not-a-fernet-key"),
        ("KEY_CACHE_SECONDS", "forever"),
        ("STREAM_USAGE", "always"),
        ("FREE_MONTHLY_BUDGET", "lots"),
        ("FREE_MONTHLY_BUDGET", "0.0000001"),
        ("BUDGET_MARGIN_USD", "-1"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(variable, value):
    result = start_django(**{variable: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.strip().splitlines()[-1]


def test_secret_key_is_required_when_debug_is_off(tmp_path):
    result = start_django(SECRET_KEY="", DEBUG="0", SECRET_KEY_FILE=str(tmp_path / "absent"))

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


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
    assert "WEB_CONCURRENCY=2 needs REDIS_URL" in result.stdout + result.stderr
