"""`make bench` works: a 2-second run of the whole harness (timings are not asserted)."""

import os
import shutil
import subprocess
import sys

import pytest
from django.conf import settings

from tests.servers import BASE_DIR


def test_a_short_bench_run_produces_every_row(tmp_path):
    if not (settings.REDIS_URL and "postgres" in settings.DATABASES["default"]["ENGINE"]):
        pytest.skip("the bench runs the gateway on PostgreSQL and Redis: services half of the suite")
    if not (shutil.which("nginx") and shutil.which("wrk")):
        pytest.fail("nginx and wrk are missing: `make bench-tools` installs them (.ci/run does)")
    output = tmp_path / "RESULTS.md"
    database = settings.DATABASES["default"]
    host, port = database["HOST"] or "127.0.0.1", database["PORT"] or 5432
    command = [
        sys.executable,
        "bench/run.py",
        "--duration=2",
        "--rounds=1",
        "--warm-up=1",
        "--users=300",
        "--single-streams=3",
        "--open-streams=50",
        f"--output={output}",
        f"--database-url=postgres://{database['USER'] or 'root'}@{host}:{port}/organized_gateway_bench_smoke",
        f"--redis-url={settings.REDIS_URL.rsplit('/', 1)[0]}/13",
        # Portkey and LiteLLM are installed from npm and PyPI on first use: not in the test run.
        "--references=none",
    ]

    result = subprocess.run(command, cwd=BASE_DIR, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = output.read_text()
    for row in (
        "throughput, 32 connections",
        "added p50 latency, 1 connection",
        "access log rows = requests sent",
        "idle RSS per gateway worker",
        "time to first event, added, 1 stream(s)",
        "inter-event gap p99, added, 256 stream(s)",
        "50 open streams on one worker",
    ):
        assert row in report
    assert "errors 0" in report


def test_a_short_outage_bench_answers_every_call_and_keeps_the_books():
    """bench/outage.py works: a primary down for two seconds of eight (timings not asserted)."""
    if not (settings.REDIS_URL and "postgres" in settings.DATABASES["default"]["ENGINE"]):
        pytest.skip("the outage bench runs two gateways on PostgreSQL and Redis: services half of the suite")
    database = settings.DATABASES["default"]
    host, port = database["HOST"] or "127.0.0.1", database["PORT"] or 5432
    name = "organized_gateway_outage_smoke"
    subprocess.run(["createdb", "-h", host, "-p", str(port), "-U", database["USER"] or "root", name], check=False)
    environment = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER'] or 'root'}@{host}:{port}/{name}",
        "REDIS_URL": f"{settings.REDIS_URL.rsplit('/', 1)[0]}/14",
    }
    command = [sys.executable, "bench/outage.py", "--seconds=8", "--down-at=2", "--down-for=2", "--concurrency=4"]

    result = subprocess.run(command, cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "books_wrong: []" in result.stdout
    assert "fallback" in result.stdout
