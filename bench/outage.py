"""A primary upstream down in the middle of a load: no call fails that the fallback could
serve, every call has one row, and nothing is billed twice.

    DATABASE_URL=postgres://.../gateway_outage REDIS_URL=redis://... python bench/outage.py

Two gateway processes (one worker each, breakers shared through Redis, background probes as
by default) route every model to a primary stub upstream, then a fallback stub. For
--seconds the load runs with --concurrency callers, JSON and streamed chat by turns; the
primary stub is stopped --down-at seconds in and started again --down-for seconds later (on
the same port: its connections are refused meanwhile). Afterwards the books are checked:
rows = calls, each user's monthly requests = their calls, tokens in the rows and the month =
tokens the callers were told of. Routes and accounts of the database it runs against are
changed: use a database of its own. Exits 1 when a check fails.
"""

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.processes import free_port, migrated_services, reported, wait_for_port  # noqa: E402

CHAT = {"model": "stub-mini", "messages": [{"role": "user", "content": "outage bench"}]}
ROUTES = """
[upstreams.primary]
base_url = "http://127.0.0.1:{primary}"
auth = "none"
retries = 0

[upstreams.fallback]
base_url = "http://127.0.0.1:{fallback}"
auth = "none"
retries = 0

[routes]
"*" = [{{ upstream = "primary" }}, {{ upstream = "fallback", priority = 2 }}]
"""


def stub(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway_project.stub_upstream", "--port", str(port)],
        cwd=BASE_DIR,
        env={**os.environ, "STUB_STREAM_INTERVAL_MS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def gateway(port: int, log) -> subprocess.Popen:
    environment = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "LOG_LEVEL": "warning",
    }
    environment.pop("OPENCLAW_URL", None)
    command = [sys.executable, "-m", "gunicorn", "-c", "gateway_project/gunicorn_conf.py"]
    return subprocess.Popen(
        [*command, "gateway_project.asgi:application"], cwd=BASE_DIR, env=environment, stdout=log, stderr=log
    )


async def one_call(client: httpx.AsyncClient, user: str, stream: bool) -> tuple[int, int]:
    """(status, tokens the caller was told of) of one call."""
    headers = {"X-User-ID": user}
    if not stream:
        response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        return response.status_code, response.json().get("usage", {}).get("total_tokens", 0)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    tokens, complete = 0, False
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                tokens = (json.loads(line[6:]).get("usage") or {}).get("total_tokens", tokens)
            complete = complete or line == "data: [DONE]"
    return (response.status_code if complete else 0), tokens  # 0: a stream cut short


async def drive(urls: list[str], prefix: str, options, outage) -> dict:
    statuses, calls, tokens = Counter(), Counter(), Counter()
    started = time.monotonic()
    deadline = started + options.seconds

    async def caller(number: int) -> None:
        url = urls[number % len(urls)]
        user = f"{prefix}-{number}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            turn = 0
            while time.monotonic() < deadline:
                turn += 1
                try:
                    status, told = await one_call(client, user, stream=turn % 2 == 0)
                except httpx.HTTPError:
                    status, told = -1, 0
                statuses[status] += 1
                calls[user] += 1
                tokens[user] += told

    await asyncio.gather(outage(started), *(caller(n) for n in range(options.concurrency)))
    return {"statuses": statuses, "calls": calls, "tokens": tokens, "elapsed": time.monotonic() - started}


def books(prefix: str, run: dict) -> list[str]:
    from django.db.models import Count, Sum

    from billing.models import MonthlyUsage
    from proxy.models import RequestLog

    rows = RequestLog.objects.filter(user_id__startswith=prefix)
    by_user = {r["user_id"]: r for r in rows.values("user_id").annotate(n=Count("id"), t=Sum("total_tokens"))}
    months = MonthlyUsage.objects.filter(user_id__startswith=prefix).values("user_id")
    month = {r["user_id"]: r for r in months.annotate(n=Sum("requests"), t=Sum("total_tokens"))}
    wrong = []
    for user, sent in run["calls"].items():
        told = run["tokens"][user]
        row, used = by_user.get(user, {"n": 0, "t": 0}), month.get(user, {"n": 0, "t": 0})
        if (row["n"], row["t"], used["n"], used["t"]) != (sent, told, sent, told):
            wrong.append(f"{user}: {sent} calls, {told} tokens told; rows {row['n']}/{row['t']}, month {used}")
    return wrong


def served(prefix: str, up_at: float | None) -> dict:
    """Rows by upstream and attempts, and how long after it came back the primary served."""
    from datetime import UTC, datetime

    from proxy.models import RequestLog

    rows = RequestLog.objects.filter(user_id__startswith=prefix)
    report = {
        "by_upstream": dict(Counter(rows.values_list("upstream", flat=True))),
        "by_attempts": dict(Counter(rows.values_list("attempts", flat=True))),
    }
    if up_at is not None:
        back = rows.filter(upstream="primary", created_at__gte=datetime.fromtimestamp(up_at, UTC))
        first = back.order_by("created_at").values_list("created_at", flat=True).first()
        report["primary_back_after"] = f"{first.timestamp() - up_at:.1f} s" if first else "not within the run"
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--down-at", type=float, default=15)
    parser.add_argument("--down-for", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    migrated_services("the outage bench", BASE_DIR)
    ports = {"primary": free_port(), "fallback": free_port()}
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as routes:
        routes.write(ROUTES.format(**ports))
        routes.flush()
        load = [sys.executable, "manage.py", "load_routes", routes.name]
        subprocess.run(load, cwd=BASE_DIR, check=True, stdout=subprocess.DEVNULL)

    import django

    django.setup()
    prefix = f"outage{secrets.token_hex(3)}"
    stubs = {name: stub(port) for name, port in ports.items()}
    gateway_ports = [free_port(), free_port()]
    log = open(BASE_DIR / "bench" / ".outage-gateway.log", "w")  # noqa: SIM115 (closed below)
    gateways = [gateway(port, log) for port in gateway_ports]
    events = {}

    async def outage(started: float) -> None:
        await asyncio.sleep(options.down_at)
        stubs["primary"].terminate()
        stubs["primary"].wait(10)
        events["down"] = round(time.monotonic() - started, 1)
        await asyncio.sleep(options.down_for)
        stubs["primary"] = stub(ports["primary"])
        events["up"] = round(time.monotonic() - started, 1)
        events["up_at"] = time.time()

    try:
        for name, process in stubs.items():
            wait_for_port(ports[name], process)
        for port, process in zip(gateway_ports, gateways, strict=True):
            wait_for_port(port, process)
        run = asyncio.run(drive([f"http://127.0.0.1:{port}" for port in gateway_ports], prefix, options, outage))
    finally:
        for process in gateways:
            process.send_signal(signal.SIGTERM)  # graceful: the last rows are written
        for process in [*gateways, *stubs.values()]:
            if process.poll() is None and process not in gateways:
                process.terminate()
            process.wait(60)
        log.close()

    sent = sum(run["statuses"].values())
    wrong = books(prefix, run)
    report = {
        "seconds": round(run["elapsed"], 1),
        "primary down": f"{events.get('down')} s to {events.get('up')} s",
        "calls": sent,
        "calls_per_second": round(sent / run["elapsed"], 1),
        "statuses": {str(status): count for status, count in sorted(run["statuses"].items())},
        **served(prefix, events.get("up_at")),
        "books_wrong": wrong[:10],
    }
    ok = set(run["statuses"]) == {200} and not wrong
    return reported(report, ok, as_json=options.json)


if __name__ == "__main__":
    sys.exit(main())
