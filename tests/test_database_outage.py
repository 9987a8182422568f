"""PostgreSQL stopped and restarted under load (openai mode): relaying goes on where no
quota applies, metered and unknown callers get 503 rather than a 500 or an unmetered
pass, and every log row written while it was down reaches the database when it returns."""

import asyncio
import subprocess
import sys
import time
from collections import Counter

import httpx
import psycopg
import pytest

from tests.servers import BASE_DIR, GatewayProcess, gateway_environment

ROWS_TIMEOUT = 30
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def outage_database(request, settings):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip(
            "runs in the services half of the suite (DATABASE_URL set to PostgreSQL), to keep the embedded half fast"
        )
    private_postgres = request.getfixturevalue("private_postgres")  # only once it is known to run
    environment = gateway_environment(DATABASE_URL=private_postgres.url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=environment, check=True
    )
    with psycopg.connect(private_postgres.url, autocommit=True) as connection:
        # tier1's seeded plan is metered (3,000 requests a month).
        connection.execute(
            "INSERT INTO accounts_account (user_id, email, name, tier, stripe_customer_id, created_at, updated_at) "
            "VALUES ('paula', '', '', 'tier1', '', now(), now())"
        )
    return private_postgres


async def burst(url: str, users: list[str]) -> list[tuple[str, int, str]]:
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=len(users))) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=CHAT, headers={"X-User-ID": u}) for u in users)
        )
    return [
        (user, r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else "")
        for user, r in zip(users, responses, strict=True)
    ]


def rows_by_user_and_status(url: str) -> Counter:
    with psycopg.connect(url) as connection:
        return Counter(
            {
                (user, status): count
                for user, status, count in connection.execute(
                    "SELECT user_id, status, count(*) FROM requests GROUP BY user_id, status"
                )
            }
        )


def test_a_database_outage_relays_free_callers_refuses_metered_ones_and_loses_no_row(upstream, outage_database):
    database = outage_database
    process = GatewayProcess(
        DATABASE_URL=database.url, OPENCLAW_URL=upstream.url, KEY_CACHE_SECONDS="300", RATE_LIMIT_PER_MINUTE="100000"
    )
    try:
        before = asyncio.run(burst(process.url, ["fred"] * 5 + ["paula"] * 2))
        database.stop()
        during = asyncio.run(burst(process.url, ["fred"] * 40 + ["paula"] * 5 + ["nina"] * 5))
        readiness = httpx.get(f"{process.url}/health/ready", timeout=10)
        database.start()
        # A caller who could not be identified is logged without a user id.
        sent = Counter((user if status != 503 or user != "nina" else "", status) for user, status, _ in before + during)
        deadline = time.monotonic() + ROWS_TIMEOUT
        while rows_by_user_and_status(database.url) != sent and time.monotonic() < deadline:
            time.sleep(0.2)  # polling for the writer's retry, not a timing assumption
        written_while_serving = rows_by_user_and_status(database.url)
        after = asyncio.run(burst(process.url, ["paula", "nina"]))
    finally:
        output = process.stop()

    assert {(u, s) for u, s, _ in before} == {("fred", 200), ("paula", 200)}
    assert Counter((u, s, c) for u, s, c in during) == {
        ("fred", 200, ""): 40,  # no quota applies: relayed on
        ("paula", 503, "service_unavailable"): 5,  # metered: neither a 500 nor an unmetered pass
        ("nina", 503, "service_unavailable"): 5,  # unknown to the worker: cannot be looked up
    }
    assert readiness.status_code == 503
    assert written_while_serving == sent, "rows queued during the outage were not written when it ended"
    assert [s for _, s, _ in after] == [200, 200], output[-3000:]
    with psycopg.connect(database.url) as connection:
        usage = dict(connection.execute("SELECT user_id, requests FROM billing_monthlyusage").fetchall())
    assert usage == {"fred": 45, "paula": 3, "nina": 1}
    assert "Traceback" not in output
