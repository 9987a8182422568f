"""docs/operators/backups.md run as written against the machine's PostgreSQL (127.0.0.1:5432,
user root): its backup script dumps a gateway's database, and its restore drill opens the
Codex token stored before the dump with the kept keys, and fails with others."""

import os
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from tests.docs_snippets import replaced, titled_block
from tests.servers import BASE_DIR

PAGE = BASE_DIR / "docs" / "operators" / "backups.md"
POSTGRES = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "root"}


def _postgres_answers() -> bool:
    try:
        environment = {**os.environ, **POSTGRES}
        answered = subprocess.run(["psql", "-Atc", "select 1", "postgres"], env=environment, capture_output=True)
        return answered.returncode == 0
    except FileNotFoundError:
        return False


pytestmark = pytest.mark.skipif(not _postgres_answers(), reason="needs PostgreSQL on 127.0.0.1:5432 (user root)")


def block(title: str) -> str:
    return titled_block(PAGE, title)


def run(command: list[str], **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        env={"PATH": os.environ["PATH"], **POSTGRES, **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def gateway_database(tmp_path):
    """A migrated gateway database of its own holding one Codex token, its environment file,
    and the names the page's blocks are filled in with."""
    suffix = secrets.token_hex(4)
    source, drill = f"wt_ops_backup_{suffix}", f"wt_ops_drill_{suffix}"
    url = f"postgres://root@127.0.0.1:5432/{source}"
    keys = {"SECRET_KEY": secrets.token_urlsafe(50), "GATEWAY_ENCRYPTION_KEYS": Fernet.generate_key().decode()}
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {**keys, "DATABASE_URL": url}.items()))
    (tmp_path / "backups").mkdir()
    assert run(["createdb", source]).returncode == 0
    try:
        manage = [sys.executable, "manage.py"]
        environment = {**keys, "DATABASE_URL": url}
        migrated = subprocess.run(
            [*manage, "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env={**os.environ, **environment}
        )
        assert migrated.returncode == 0
        stored = subprocess.run(
            [*manage, "set_codex_token", "alice"],
            cwd=BASE_DIR,
            env={**os.environ, **environment},
            input="codex-access-token\n",
            text=True,
            capture_output=True,
        )
        assert stored.returncode == 0, stored.stderr
        yield {"env": env_file, "backups": tmp_path / "backups", "drill": drill, "tmp": tmp_path}
    finally:
        run(["dropdb", "--if-exists", "--force", drill])
        run(["dropdb", "--if-exists", "--force", source])


def backup(names) -> subprocess.CompletedProcess:
    script = replaced(block("/usr/local/bin/gateway-backup"), "/etc/organized-gateway/env", str(names["env"]))
    script = replaced(script, "/var/backups/gateway", str(names["backups"]))
    return run(["sh", "-c", script])


def drill(names) -> subprocess.CompletedProcess:
    """The page's drill, as root on this machine: `sudo -u` dropped, its names filled in."""
    script = replaced(block("restore drill"), "sudo -u postgres ", "")
    script = replaced(script, "sudo -u gateway ", "")
    script = replaced(script, "--owner gateway", "--owner root")
    script = replaced(script, "gateway_drill", names["drill"])
    script = replaced(script, "/etc/organized-gateway/env", str(names["env"]))
    script = replaced(script, "/var/backups/gateway", str(names["backups"]))
    script = replaced(script, "/srv/organized-gateway", str(BASE_DIR))
    script = replaced(script, ".venv/bin/python", sys.executable)
    return run(["bash", "-e", "-c", script])


def test_the_drill_opens_the_dumps_secrets_with_the_kept_keys(gateway_database):
    dumped = backup(gateway_database)
    restored = drill(gateway_database)

    assert dumped.returncode == 0, dumped.stderr
    assert len(list(gateway_database["backups"].glob("gateway-*.dump"))) == 1
    assert restored.returncode == 0, restored.stderr
    assert "1 Codex credential under the newest key" in restored.stdout


def test_the_drill_fails_without_the_keys(gateway_database):
    backup(gateway_database)
    env_file = gateway_database["env"]
    lines = env_file.read_text().splitlines()
    other = [
        f"GATEWAY_ENCRYPTION_KEYS={Fernet.generate_key().decode()}" if line.startswith("GATEWAY_") else line
        for line in lines
    ]
    env_file.write_text("\n".join(other) + "\n")

    restored = drill(gateway_database)

    assert restored.returncode != 0
    assert "InvalidToken" in restored.stderr
