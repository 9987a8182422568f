"""Load soak: mixed streaming and non-streaming calls from many users through a gateway
with 2 workers, PostgreSQL and Redis, then the books are checked.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/soak.py --seconds 300

Users: free ones (unlimited), tier2 ones whose plan allows few requests a minute (some
get 429) and tier1 ones whose plan allows few requests a month (they end on 402). Plans
of the database it runs against are changed for the run: use a database of its own.
Afterwards: access-log rows = requests sent, each user's monthly usage = their admitted
requests, no status or failure the run did not expect, and worker memory after warm-up.
Prints a report (or JSON with --json); exits 1 when a check fails.
"""

import argparse
import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.processes import free_port, migrated_services, reported, rss_mib, wait_for_port, workers_of  # noqa: E402

EXPECTED = {200, 402, 429}
TIER2_PER_MINUTE = 10
TIER1_PER_MONTH = 25
CHAT = {"model": "stub-mini", "messages": [{"role": "user", "content": "soak test"}]}


def set_up(prefix: str, users: int) -> dict[str, list[str]]:
    """Plans and accounts for the run, through the ORM of the database under test."""
    import django

    django.setup()
    from accounts.models import Account
    from billing.models import Plan

    Plan.objects.update_or_create(
        tier="tier1",
        defaults={"requests_per_minute": None, "monthly_requests": TIER1_PER_MONTH, "monthly_tokens": None},
    )
    Plan.objects.update_or_create(
        tier="tier2",
        defaults={"requests_per_minute": TIER2_PER_MINUTE, "monthly_requests": None, "monthly_tokens": None},
    )
    groups = {
        "free": [f"{prefix}-free-{n}" for n in range(users - users // 5)],
        "rate_limited": [f"{prefix}-rpm-{n}" for n in range(users // 10)],
        "over_quota": [f"{prefix}-quota-{n}" for n in range(users // 10)],
    }
    Account.objects.bulk_create(
        [Account(user_id=u, tier="tier2") for u in groups["rate_limited"]]
        + [Account(user_id=u, tier="tier1") for u in groups["over_quota"]]
    )
    return groups


def books(prefix: str, admitted: Counter) -> tuple[int, list[str]]:
    from django.db.models import Sum

    from billing.models import MonthlyUsage
    from proxy.models import RequestLog

    rows = RequestLog.objects.filter(user_id__startswith=prefix).count()
    usage = dict(
        MonthlyUsage.objects.filter(user_id__startswith=prefix)
        .values("user_id")
        .annotate(total=Sum("requests"))
        .values_list("user_id", "total")
    )
    wrong = [
        f"{user}: usage {usage.get(user, 0)}, admitted {admitted[user]}"
        for user in set(usage) | set(admitted)
        if usage.get(user, 0) != admitted[user]
    ]
    return rows, wrong


async def one_call(client: httpx.AsyncClient, user: str, kind: str) -> tuple[int, str]:
    """(status, failure) of one call; failure is "" when it went as expected."""
    headers = {"X-User-ID": user}
    if kind == "models":
        response = await client.get("/v1/models", headers=headers)
        return response.status_code, ""
    if kind == "chat":
        response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        if response.status_code == 200 and response.json()["usage"]["total_tokens"] <= 0:
            return 200, "chat without usage"
        return response.status_code, ""
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        content = b"".join([chunk async for chunk in response.aiter_raw()])
    if response.status_code == 200 and not content.endswith(b"data: [DONE]\n\n"):
        return 200, "stream cut short"
    return response.status_code, ""


async def drive(url: str, groups: dict[str, list[str]], seconds: float, concurrency: int, master: int) -> dict:
    statuses: Counter = Counter()
    admitted: Counter = Counter()
    failures: Counter = Counter()
    memory: dict[int, list[tuple[float, float]]] = defaultdict(list)
    weights = {"free": 6, "rate_limited": 2, "over_quota": 2}
    population = [(group, weight) for group, weight in weights.items() if groups[group]]
    started = time.monotonic()
    deadline = started + seconds

    async def caller() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                group = random.choices([g for g, _ in population], [w for _, w in population])[0]
                user = random.choice(groups[group])
                kind = random.choices(["chat", "stream", "models"], [5, 3, 2])[0]
                try:
                    status, failure = await one_call(client, user, kind)
                except httpx.HTTPError as error:
                    status, failure = 0, f"client error {type(error).__name__}"
                statuses[status] += 1
                if status == 200:
                    admitted[user] += 1
                if failure or status not in EXPECTED:
                    failures[failure or f"status {status}"] += 1

    async def sampler() -> None:
        while time.monotonic() < deadline:
            for pid in workers_of(master):
                memory[pid].append((time.monotonic() - started, rss_mib(pid)))
            await asyncio.sleep(1)

    await asyncio.gather(sampler(), *(caller() for _ in range(concurrency)))
    return {
        "statuses": statuses,
        "admitted": admitted,
        "failures": failures,
        "memory": memory,
        "elapsed": time.monotonic() - started,
    }


def memory_report(memory: dict[int, list[tuple[float, float]]], seconds: float) -> dict[str, dict[str, float]]:
    """Per worker: RSS once warmed up (a fifth into the run) and at the end."""
    report = {}
    for pid, samples in memory.items():
        warm = [rss for at, rss in samples if at >= seconds / 5] or [samples[-1][1]]
        report[str(pid)] = {
            "warm_mib": round(warm[0], 1),
            "end_mib": round(warm[-1], 1),
            "peak_mib": round(max(warm), 1),
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    migrated_services("the soak", BASE_DIR)

    prefix = f"soak{secrets.token_hex(3)}"
    groups = set_up(prefix, options.users)
    stub_port, port = free_port(), free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "gateway_project.stub_upstream", "--port", str(stub_port)],
        cwd=BASE_DIR,
        env={**os.environ, "STUB_STREAM_INTERVAL_MS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    environment = {
        **os.environ,
        "OPENCLAW_URL": f"http://127.0.0.1:{stub_port}",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(options.workers),
        "RATE_LIMIT_PER_MINUTE": "100000",
        "LOG_LEVEL": "warning",
    }
    log = open(BASE_DIR / "bench" / ".soak-gateway.log", "w")  # noqa: SIM115 (closed below)
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gateway_project/gunicorn_conf.py",
            "gateway_project.asgi:application",
        ],
        cwd=BASE_DIR,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(stub_port, stub)
        wait_for_port(port, gateway)
        run = asyncio.run(drive(url, groups, options.seconds, options.concurrency, gateway.pid))
    finally:
        gateway.send_signal(signal.SIGTERM)  # graceful: the last rows are flushed
        gateway.wait(60)
        log.close()
        stub.terminate()
        stub.wait(10)

    sent = sum(run["statuses"].values())
    rows, usage_mismatches = books(prefix, run["admitted"])
    report = {
        "seconds": round(run["elapsed"], 1),
        "workers": options.workers,
        "users": sum(len(users) for users in groups.values()),
        "concurrency": options.concurrency,
        "requests": sent,
        "requests_per_second": round(sent / run["elapsed"], 1),
        "statuses": {str(status): count for status, count in sorted(run["statuses"].items())},
        "rows": rows,
        "admitted": sum(run["admitted"].values()),
        "usage_mismatches": usage_mismatches,
        "unexpected": dict(run["failures"]),
        "memory": memory_report(run["memory"], run["elapsed"]),
    }
    ok = rows == sent and not usage_mismatches and not run["failures"]
    return reported(report, ok, as_json=options.json)


if __name__ == "__main__":
    sys.exit(main())
