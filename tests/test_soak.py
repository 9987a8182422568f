"""A short soak (bench/soak.py for a few seconds) through 2 workers with PostgreSQL and
Redis: the books balance. The long run is `make soak` (figures in bench/RESULTS.md)."""

import json
import subprocess
import sys

import pytest

from tests.servers import BASE_DIR, gateway_environment


def test_a_short_soak_balances_the_books(transactional_db, settings):
    if not settings.REDIS_URL or settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the soak runs 2 workers on PostgreSQL and Redis: services half only (REDIS_URL and DATABASE_URL)")
    environment = gateway_environment(REDIS_URL=settings.REDIS_URL)
    run = subprocess.run(
        [sys.executable, "bench/soak.py", "--seconds", "6", "--users", "20", "--concurrency", "16", "--json"],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(run.stdout.splitlines()[-1])

    assert report["rows"] == report["requests"] > 0
    assert report["usage_mismatches"] == []
    assert report["unexpected"] == {}
    assert {"200", "402", "429"} <= set(report["statuses"]), "the mix must reach rate limits and quotas"
    assert len(report["memory"]) == 2
    for worker in report["memory"].values():
        assert worker["end_mib"] - worker["warm_mib"] < 50, f"memory grew during a short run: {worker}"
    assert run.returncode == 0, run.stdout
