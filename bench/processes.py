"""What the bench scripts need of processes on this machine: ports, start-up, memory, CPU time;
and, for those that check the books, the services and the report."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # start-up polling
    raise SystemExit(f"{process.args} did not start")


def workers_of(master: int) -> list[int]:
    """The child processes (gunicorn's workers) of `master`."""
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far (gone ones count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def migrated_services(what: str, base: Path) -> None:
    """Stops unless DATABASE_URL (PostgreSQL) and REDIS_URL are set; then migrates that database."""
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        raise SystemExit(f"{what} runs against PostgreSQL and Redis: set DATABASE_URL=postgres://... and REDIS_URL")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=base, check=True)


def reported(report: dict, ok: bool, *, as_json: bool) -> int:
    """Prints the report (JSON, or one line a field and OK/FAILED); the exit status."""
    if as_json:
        print(json.dumps(report))
    else:
        width = max(map(len, report))
        for name, value in report.items():
            print(f"{name:>{width}}: {value}")
        print("OK" if ok else "FAILED")
    return 0 if ok else 1
