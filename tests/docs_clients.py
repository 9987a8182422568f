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
import sys
from pathlib import Path

from bench.installs import Unavailable, installed, mark_installed, run

FOLDER = Path(__file__).resolve().parent / "clients"
VENV = FOLDER / ".venv"
PYTHON = VENV / "bin/python"
NODE_MODULES = FOLDER / "node_modules"
REQUIREMENTS = FOLDER / "requirements.txt"
LOCKFILE = FOLDER / "package-lock.json"


def install() -> None:
    install_python()
    install_node()


def install_python() -> Path:
    pins = REQUIREMENTS.read_text()
    if not installed(VENV, pins):
        print(f"Installing the Python clients ({REQUIREMENTS.relative_to(FOLDER.parent.parent)}) ...", flush=True)
        if not PYTHON.exists():
            run([sys.executable, "-m", "venv", str(VENV)], "python -m venv")
        run(
            [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
            "pip install",
        )
        mark_installed(VENV, pins)
    return PYTHON


def install_node() -> Path:
    npm = shutil.which("npm")
    if not (shutil.which("node") and npm):
        raise Unavailable("Node.js and npm are missing: apt-get install -y nodejs npm")
    lock = LOCKFILE.read_text()
    if not installed(NODE_MODULES, lock):
        print(f"Installing the Node.js clients ({LOCKFILE.relative_to(FOLDER.parent.parent)}) ...", flush=True)
        # npm ci: exactly the lockfile, or an error when package.json and it disagree.
        run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(FOLDER)], "npm ci")
        mark_installed(NODE_MODULES, lock)
    return NODE_MODULES


if __name__ == "__main__":
    try:
        install()
    except Unavailable as error:
        sys.exit(str(error))
