"""The gateway behind PgBouncer in transaction mode (stock settings, four server connections
shared by every gateway process): it migrates and starts, and under concurrent calls from two
gateways the identity lookups, quota and budget counts and the access log all work, with
nothing lost; a database failure is logged with its reason."""

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter

import httpx
import psycopg
import pytest
from django.db import connection

from tests.pgbouncer import PrivatePgBouncer
from tests.servers import BASE_DIR, GatewayProcess, gateway_environment

ROWS_TIMEOUT = 30
PASSWORD = "s3cret-pw"  # PgBouncer's trust auth never asks for it: it must only stay out of the log
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
# "hi": 1 token in, 9 out, at $10 and $20 per million (the test upstream's usage).
CALL_COST_PICO_USD = 1 * 10_000_000 + 9 * 20_000_000
FREE_CALLERS = [f"free-{n}" for n in range(40)]
# tier1: 30 requests a month; tier2: a $100 budget, far from its margin.
SEED = """
import json
from decimal import Decimal
from accounts.models import Account, ApiKey
from billing.models import ModelPrice, Plan
unlimited = {"monthly_requests": None, "monthly_tokens": None, "monthly_budget_usd": None, "requests_per_minute": None}
Plan.objects.filter(tier="tier1").update(**{**unlimited, "monthly_requests": 30})
Plan.objects.filter(tier="tier2").update(**{**unlimited, "monthly_budget_usd": Decimal(100)})
ModelPrice.objects.create(
    model="gpt-4o-mini", effective_from="2020-01-01",
    input_per_million=Decimal(10), cached_input_per_million=Decimal(5), output_per_million=Decimal(20),
)
callers = {"quinn": "tier1", "bea": "tier2", **{user: "" for user in %r}}
accounts = {user: Account.objects.create(user_id=user, tier=tier) for user, tier in callers.items()}
print(json.dumps({user: ApiKey.objects.issue(account)[1] for user, account in accounts.items()}))
"""


@pytest.fixture
def bounced(settings):
    """A database of the test's own on the suite's PostgreSQL, reached through a PgBouncer of
    its own; the URL gateways are given, with a password."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL: runs in the services half of the suite (DATABASE_URL set)")
    reason = PrivatePgBouncer.unavailable_because()
    if reason:
        pytest.fail(reason)
    server = connection.settings_dict
    host, port, user = server["HOST"] or "127.0.0.1", int(server["PORT"] or 5432), server["USER"] or "root"
    name = f"{server['NAME']}_bounced"
    direct = f"postgres://{user}@{host}:{port}"
    with psycopg.connect(f"{direct}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    bouncer = PrivatePgBouncer(host, port, user)
    bouncer.start()
    bouncer.direct_url = f"{direct}/{name}"
    bouncer.gateway_url = bouncer.url(name, user, PASSWORD)
    yield bouncer
    bouncer.destroy()
    with psycopg.connect(f"{direct}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(bouncer: PrivatePgBouncer, *args: str) -> str:
    environment = gateway_environment(DATABASE_URL=bouncer.gateway_url, DATABASE_POOLER="pgbouncer")
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr + bouncer.log()
    return done.stdout


def gateways(bouncer: PrivatePgBouncer, upstream_url: str, count: int) -> list[GatewayProcess]:
    from django.conf import settings

    started = []
    for _ in range(count):
        started.append(
            GatewayProcess(
                # Two workers share their rate limits through Redis; without it, one each.
                workers=2 if settings.REDIS_URL else 1,
                **({"REDIS_URL": settings.REDIS_URL} if settings.REDIS_URL else {}),
                DATABASE_URL=bouncer.gateway_url,
                DATABASE_POOLER="pgbouncer",
                OPENCLAW_URL=upstream_url,
                GATEWAY_IDENTITY="key",
                RATE_LIMIT_PER_MINUTE="100000",
            )
        )
    return started


async def calls(urls: list[str], keys: list[tuple[str, str]]) -> list[tuple[str, int, str]]:
    """Every (user, key) call at once, spread over the gateways; (user, status, error code)."""
    clients = [httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=100)) for url in urls]
    try:
        responses = await asyncio.gather(
            *(
                clients[n % len(clients)].post("/v1/chat/completions", json=CHAT, headers={"X-Gateway-Key": key})
                for n, (_, key) in enumerate(keys)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    return [
        (user, r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else "")
        for (user, _), r in zip(keys, responses, strict=True)
    ]


def count_rows(url: str, expected: int) -> int:
    deadline = time.monotonic() + ROWS_TIMEOUT
    while True:
        with psycopg.connect(url) as db:
            [(rows,)] = db.execute("SELECT count(*) FROM requests").fetchall()
        if rows >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)  # polling for the access-log writers, not a timing assumption


def test_two_gateways_behind_pgbouncer_identify_count_charge_and_log_every_call(upstream, bounced):
    manage(bounced, "migrate", "--noinput", "-v", "0")
    keys = json.loads(manage(bounced, "shell", "-c", SEED % FREE_CALLERS).strip().splitlines()[-1])
    sent = [(user, keys[user]) for user in FREE_CALLERS for _ in range(5)]
    sent += [("quinn", keys["quinn"])] * 50 + [("bea", keys["bea"])] * 50
    processes = gateways(bounced, upstream.url, 2)
    try:
        outcomes = asyncio.run(calls([p.url for p in processes], sent))
        rows = count_rows(bounced.direct_url, len(sent))
    finally:
        output = "".join(p.stop() for p in processes)

    by_caller = Counter(("free" if user.startswith("free-") else user, status, code) for user, status, code in outcomes)
    assert by_caller == {
        ("free", 200, ""): 200,
        ("quinn", 200, ""): 30,  # tier1's 30 requests, counted exactly across both gateways
        ("quinn", 402, "monthly_quota_exceeded"): 20,
        ("bea", 200, ""): 50,
    }, output[-3000:]
    assert rows == len(sent), "access-log rows were lost"
    with psycopg.connect(bounced.direct_url) as db:
        usage = {
            user: (requests, cost)
            for user, requests, cost in db.execute(
                "SELECT user_id, requests, cost_pico_usd FROM billing_monthlyusage WHERE user_id IN ('quinn', 'bea')"
            )
        }
    assert usage == {"quinn": (30, 30 * CALL_COST_PICO_USD), "bea": (50, 50 * CALL_COST_PICO_USD)}
    assert "prepared statement" not in output
    assert "Traceback" not in output
    assert PASSWORD not in output


def test_behind_pgbouncer_a_database_failure_is_logged_with_its_reason_and_loses_no_row(upstream, bounced):
    manage(bounced, "migrate", "--noinput", "-v", "0")
    keys = json.loads(manage(bounced, "shell", "-c", SEED % []).strip().splitlines()[-1])
    [process] = gateways(bounced, upstream.url, 1)
    try:
        bounced.stop()
        [(_, status, code)] = asyncio.run(calls([process.url], [("bea", keys["bea"])]))
        bounced.start()
        rows = count_rows(bounced.direct_url, 1)
    finally:
        output = process.stop()

    assert (status, code) == (503, "service_unavailable")
    [line] = [line for line in output.splitlines() if "identity: lookup failed" in line]
    # The driver's reason, not only "DatabaseError": here, PgBouncer refusing connections.
    assert "ConnectionRefusedError: [Errno 111] Connection refused" in line, line
    assert rows == 1, "the refused call's row was lost"
    assert PASSWORD not in output
