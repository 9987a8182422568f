"""The README's first screen, run as written: its smoke test and its SDK snippet against the
gateway `make run` serves (the port aside), and its promise of one screen with both commands."""

import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from django.db import connection

from proxy.models import RequestLog

README = Path(__file__).resolve().parent.parent / "README.md"


def fenced(language: str, after: str) -> str:
    """The first ```language block after the line `after`."""
    text = README.read_text()
    return re.search(rf"```{language}\n(.*?)```", text[text.index(after) :], re.S)[1]


def at(url: str, snippet: str) -> str:
    return snippet.replace("http://127.0.0.1:8000", url)


def stopped(process: subprocess.Popen) -> None:
    """The gateway stopped as an operator stops it: its last access-log rows written."""
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)


def test_the_readme_is_one_screen_with_both_commands_at_its_top():
    lines = README.read_text().splitlines()
    top = "\n".join(lines[:25])

    assert len(lines) <= 200
    assert "make run" in top and "make test" in top


def test_the_smoke_test_answers_as_the_readme_says(served_gateway):
    url, process = served_gateway
    commands = [c for c in re.split(r"\n\n", fenced("sh", "## Smoke test")) if "curl" in c]
    health, chat = (c.split("\n# →")[0] for c in commands[:2])
    expected_health = re.search(r"# → (.*)", commands[0])[1]

    said_health = subprocess.run(at(url, health), shell=True, capture_output=True, text=True, check=True)
    said_chat = subprocess.run(at(url, chat), shell=True, capture_output=True, text=True, check=True)

    assert json.loads(said_health.stdout) == json.loads(expected_health)
    assert '"object":"chat.completion"' in said_chat.stdout.replace(" ", "")
    stopped(process)
    query = re.search(r'sqlite3 db.sqlite3 "(.*?)"', fenced("sh", "## Smoke test"), re.S)[1]
    expected_row = re.search(r"# → (smoke-test\|.*)", fenced("sh", "## Smoke test"))[1]
    if connection.vendor == "sqlite":  # the README's own query, on the gateway's database file
        with contextlib.closing(sqlite3.connect(connection.settings_dict["NAME"])) as database:
            row = database.execute(query).fetchone()
    else:
        row = RequestLog.objects.values_list(
            "user_id", "endpoint", "status", "input_tokens", "output_tokens", "total_tokens", "model"
        ).last()
    assert "|".join(str(v) for v in row) == expected_row


def test_the_sdk_snippet_runs_as_written(served_gateway):
    url, process = served_gateway
    snippet = at(url, fenced("python", "## From an OpenAI SDK"))

    ran = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)

    assert ran.returncode == 0, ran.stderr
    stopped(process)
    [row] = RequestLog.objects.filter(user_id="alice")
    assert (row.status, row.endpoint, row.model) == (200, "/v1/chat/completions", "gpt-4o")
