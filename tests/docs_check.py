"""`make docs-check`: every code block of the trainees' pages (docs/trainees/*.md) is run
against the gateway, served as `make run` serves it (the bundled stub upstream behind it), with
the pinned clients of tests/clients. Not collected by `make test` (its name): it installs the
clients on first use, and CI runs it once, not once per database.

Snippets name the gateway as a trainee would, http://127.0.0.1:8000, and a gateway key as
`gk_...`; the check puts in the port of the gateway it started and a key it issued.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from proxy.models import RequestLog
from tests import docs_clients, docs_snippets
from tests.personas import link_codex, trainee
from tests.servers import BASE_DIR, end_group, free_port, gateway_environment, wait_until_serving

PAGES = sorted((BASE_DIR / "docs/trainees").glob("*.md"))
SNIPPETS = [snippet for page in PAGES for snippet in docs_snippets.read(page)[0]]
RUNNABLE = [snippet for snippet in SNIPPETS if snippet.runs]
AS_SHOWN = "127.0.0.1:8000"
KEY_PLACEHOLDER = "gk_..."
SNIPPET_TIMEOUT = 120
# The identity each gateway mode is run with (GATEWAY_IDENTITY follows AUTH_MODE by default).
MODES = {
    "header": {"AUTH_MODE": "openai"},
    "key": {"AUTH_MODE": "openai", "GATEWAY_IDENTITY": "key"},
    "codex": {"AUTH_MODE": "codex"},
}
SUFFIXES = {"python": ".py", "node": ".mjs", "sh": ".sh"}


class ServedGateway:
    """`python -m gateway_project.serve` (what `make run` runs) on a port of its own."""

    def __init__(self, **environment: str) -> None:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        # Appended to (O_APPEND): reading it here must not move where the gateway writes.
        self.log_path = Path(tempfile.gettempdir()) / f"docs-check-gateway-{port}.log"
        self.log_path.write_text("")
        self.log = open(self.log_path, "a+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway_project.serve"],
            cwd=BASE_DIR,
            env=gateway_environment(PORT=str(port), WEB_CONCURRENCY="1", STUB_STREAM_INTERVAL_MS="1", **environment),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its gunicorn and stub upstream are ended with it
        )
        try:
            wait_until_serving(f"http://{self.address}", self.process)
        except AssertionError:
            end_group(self.process, grace=0)
            output = self.output()
            self.log.close()
            self.log_path.unlink()
            raise AssertionError(output) from None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        end_group(self.process)
        self.log.close()
        self.log_path.unlink()


@pytest.fixture(scope="session")
def clients():
    docs_clients.install()


@pytest.fixture
def trainee_key(transactional_db) -> str:
    """alice's gateway key; her account also holds a Codex session, for codex mode. Committed,
    for the gateway's process to read, and flushed after the snippet with its access-log rows."""
    account, key = trainee("alice")
    link_codex(account, "codex-access-token-of-alice")
    return key


@pytest.fixture(scope="session")
def gateways(django_db_setup, settings_secret_key):
    """One served gateway per identity mode, started when a snippet first needs it."""
    started: dict[str, ServedGateway] = {}

    def get(mode: str) -> ServedGateway:
        if mode not in started:
            # The test settings' SECRET_KEY: the stored Codex token must decrypt in the gateway.
            started[mode] = ServedGateway(SECRET_KEY=settings_secret_key, **MODES[mode])
        return started[mode]

    yield get
    for gateway in started.values():
        gateway.stop()


@pytest.fixture(scope="session")
def settings_secret_key() -> str:
    from django.conf import settings

    return settings.SECRET_KEY


def test_every_code_block_of_the_trainees_pages_is_checked():
    unmarked = [f"{page.name}:{line}" for page in PAGES for line in docs_snippets.read(page)[1]]
    assert unmarked == [], "code blocks without a <!-- docs-check: ... --> line above them"
    assert RUNNABLE, "no snippets found"


@pytest.mark.parametrize("snippet", RUNNABLE, ids=[snippet.id for snippet in RUNNABLE])
def test_the_snippet_runs_against_the_gateway(snippet, clients, gateways, trainee_key, tmp_path):
    gateway = gateways(snippet.gateway)

    def as_run(text: str) -> str:
        return text.replace(AS_SHOWN, gateway.address).replace(KEY_PLACEHOLDER, trainee_key)

    for name, text in snippet.files:
        (tmp_path / name).write_text(as_run(text))
    script = tmp_path / f"snippet{SUFFIXES[snippet.runner]}"
    script.write_text(as_run(snippet.code))
    # Node.js finds the npm clients from the script's folder upwards.
    (tmp_path / "node_modules").symlink_to(docs_clients.NODE_MODULES)
    command = {"python": [str(docs_clients.PYTHON)], "node": ["node"], "sh": ["bash", "-eo", "pipefail"]}

    result = subprocess.run(
        [*command[snippet.runner], str(script)],
        cwd=tmp_path,
        env=_snippet_environment(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT,
    )

    printed = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n--- the gateway\n{gateway.output()[-3000:]}"
    assert result.returncode == 0, printed
    assert snippet.expect in result.stdout, printed
    # The calls reached the gateway, which knew alice from what the snippet sent (an /api
    # or a wrong path leaves no access-log row; a model call does).
    calls_a_model = snippet.expect == docs_snippets.STUB_GREETING
    callers = _callers_logged(at_least=1 if calls_a_model else 0)
    assert set(callers) == {"alice"} if calls_a_model else set(callers) <= {"alice"}, f"{callers}\n{printed}"


def _callers_logged(at_least: int) -> list[str]:
    """The user of each access-log row, once there are `at_least` (the gateway writes them
    behind the response, within a batch delay)."""
    deadline = time.monotonic() + 10
    while True:
        callers = list(RequestLog.objects.values_list("user_id", flat=True))
        if len(callers) >= at_least or time.monotonic() > deadline:
            return callers
        time.sleep(0.05)  # polling for the gateway's write, not a timing assumption


def _snippet_environment(folder: Path) -> dict[str, str]:
    """A trainee's shell, with the pinned clients first on PATH; no OPENAI_* variable a
    snippet could lean on unseen, no call leaving the machine."""
    keep = {name: value for name, value in os.environ.items() if name in ("HOME", "LANG", "LC_ALL", "TMPDIR", "PATH")}
    path = os.pathsep.join([str(docs_clients.NODE_MODULES / ".bin"), str(docs_clients.VENV / "bin"), keep["PATH"]])
    return {
        **keep,
        "PATH": path,
        # ~/.codex of the Codex CLI: the page's config.toml is written here.
        "CODEX_HOME": str(folder),
        # litellm fetches its model price list from GitHub at import; the check has no internet.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
