"""The clients the trainees' pages show, installed on demand for `make docs-check` into
tests/clients (pins tracked, installs git-ignored), never into the project's venv:

  Python   tests/clients/requirements.txt into tests/clients/.venv: openai, langchain-openai,
           litellm, openai-agents
  Node.js  tests/clients/package.json with its package-lock.json (`npm ci`): openai, ai,
           @ai-sdk/openai, @openai/codex

Each install is done once and kept; a changed pin installs again. `python -m tests.docs_clients`
installs both.
"""

import shutil
import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "clients"
VENV = FOLDER / ".venv"
PYTHON = VENV / "bin/python"
NODE_MODULES = FOLDER / "node_modules"
REQUIREMENTS = FOLDER / "requirements.txt"
LOCKFILE = FOLDER / "package-lock.json"


class Unavailable(Exception):
    """The clients cannot be installed here; the message says why."""


def install() -> None:
    install_python()
    install_node()


def install_python() -> Path:
    pins = REQUIREMENTS.read_text()
    if not _installed(VENV, pins):
        print(f"Installing the Python clients ({REQUIREMENTS.relative_to(FOLDER.parent.parent)}) ...", flush=True)
        if not PYTHON.exists():
            _run([sys.executable, "-m", "venv", str(VENV)], "python -m venv")
        _run([str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)])
        (VENV / ".installed").write_text(pins)
    return PYTHON


def install_node() -> Path:
    npm = shutil.which("npm")
    if not (shutil.which("node") and npm):
        raise Unavailable("Node.js and npm are missing: apt-get install -y nodejs npm")
    lock = LOCKFILE.read_text()
    if not _installed(NODE_MODULES, lock):
        print(f"Installing the Node.js clients ({LOCKFILE.relative_to(FOLDER.parent.parent)}) ...", flush=True)
        # npm ci: exactly the lockfile, or an error when package.json and it disagree.
        _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(FOLDER)])
        (NODE_MODULES / ".installed").write_text(lock)
    return NODE_MODULES


def _installed(folder: Path, pins: str) -> bool:
    marker = folder / ".installed"
    return marker.exists() and marker.read_text() == pins


def _run(command: list[str], what: str = "") -> None:
    what = what or " ".join(Path(command[0]).name.split() + command[1:3])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{what} failed: {error}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise Unavailable(f"{what} failed (exit {result.returncode}):\n{tail}")


if __name__ == "__main__":
    try:
        install()
    except Unavailable as error:
        sys.exit(str(error))
