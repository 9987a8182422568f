"""`make run`'s server: gunicorn with uvicorn workers, the stub upstream when OPENCLAW_URL
is unset, and a graceful stop that keeps every log row."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from proxy.models import RequestLog
from tests.servers import database_url_for_other_processes, free_port

BASE_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60


def wait_until_serving(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during start-up"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)  # start-up polling, not a timing assumption
    raise AssertionError("the server did not start")


@pytest.fixture
def served_gateway(transactional_db):
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in ("OPENCLAW_URL", "DJANGO_SETTINGS_MODULE")}
    environment.update(
        PORT=str(port),
        WEB_CONCURRENCY="1",
        SECRET_KEY="s" * 50,
        DATABASE_URL=database_url_for_other_processes(),
        STUB_STREAM_INTERVAL_MS="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway_project.serve"],
        cwd=BASE_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_the_served_gateway_relays_to_the_bundled_stub_and_stops_cleanly(served_gateway):
    url, process = served_gateway
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-x", default_headers={"X-User-ID": "fresh"}, max_retries=0)

    completion = sdk.chat.completions.create(model="stub-mini", messages=[{"role": "user", "content": "ping"}])
    chunks = list(
        sdk.chat.completions.create(
            model="stub-mini",
            messages=[{"role": "user", "content": "ping"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)

    assert completion.choices[0].message.content.endswith("You said: ping")
    assert chunks[-1].usage.total_tokens == 10
    assert process.returncode == 0
    assert "OPENCLAW_URL is not set: relaying /v1 to the bundled stub upstream" in output
    rows = list(RequestLog.objects.order_by("id").values_list("user_id", "status", "tokens_est"))
    assert rows == [("fresh", 200, 10), ("fresh", 200, 10)]
