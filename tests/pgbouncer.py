"""Debian's PgBouncer in front of a PostgreSQL server, started by a test on a port of its own."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers import free_port

PROGRAM = "/usr/sbin/pgbouncer"
START_TIMEOUT = 10


class PrivatePgBouncer:
    """Transaction pooling with PgBouncer's stock settings otherwise: no
    ignore_startup_parameters, no prepared-statement tracking (1.18 has none). Few server
    connections, so that every client connection shares them with others, as under load.
    """

    def __init__(self, host: str, port: int, user: str, server_connections: int = 4) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="gateway-pgbouncer-"))
        (self.directory / "userlist.txt").write_text(f'"{user}" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {server_connections}\n"
            # Client connections: each gateway worker may open 30 (docs/operators/deploy.md, "Behind PgBouncer").
            "max_client_conn = 1000\n"
            f"logfile = {self.directory / 'log'}\n"
        )
        # PgBouncer refuses to run as root: it then runs as the postgres user.
        self._as = ["-u", "postgres"] if os.geteuid() == 0 else []
        if self._as:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self.process: subprocess.Popen | None = None

    @staticmethod
    def unavailable_because() -> str | None:
        if not os.access(PROGRAM, os.X_OK):
            return "needs Debian's pgbouncer (apt-get install pgbouncer; make test installs it)"
        return None

    def url(self, database: str, user: str, password: str = "") -> str:
        credentials = f"{user}:{password}" if password else user
        return f"postgres://{credentials}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [PROGRAM, *self._as, str(self.directory / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"PgBouncer did not start: {self.log()}") from None
                time.sleep(0.05)  # start-up polling

    def log(self) -> str:
        path = self.directory / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
