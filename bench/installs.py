"""Tools installed on demand into a git-ignored folder, never into the project's venv: the
bench's peers (bench/references.py) and the clients the docs' snippets run with
(tests/docs_clients.py). An install is marked with what it installed, kept, and done again
only when that changes."""

import subprocess
from pathlib import Path


class Unavailable(Exception):
    """A tool cannot be installed or run here; the message says why and what to do."""


def run(command: list[str], what: str, timeout: float = 900) -> None:
    """Run an install step, or raise Unavailable with the end of its output."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{what} failed: {error}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise Unavailable(f"{what} failed (exit {result.returncode}):\n{tail}")


def installed(folder: Path, spec: str) -> bool:
    """Whether `folder` holds what `spec` names (pins, a lockfile), installed by mark_installed."""
    marker = folder / ".installed"
    return marker.exists() and marker.read_text() == spec


def mark_installed(folder: Path, spec: str) -> None:
    (folder / ".installed").write_text(spec)
