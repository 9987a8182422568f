"""Server-side time of every operator page and API read on a database seeded by
bench/seed_at_size.py: p50 and p95 over repeated loads, queries per load, the slowest query,
and EXPLAIN (ANALYZE, BUFFERS) of the slowest query of each page over the target.

    .venv/bin/python bench/pages_at_size.py [--database-url postgres://root@127.0.0.1:5432/bench_size]
        [--loads 20] [--page-seconds 120] [--only TEXT] [--clock seed|wall]

In process: Django with the bench database, DEBUG off, GATEWAY_IDENTITY=key (the /api/usage
caller presents its gateway key in X-Gateway-Key), the rate limiter and cache of the
environment (in-process unless REDIS_URL is set). The admin pages are loaded by a superuser
(Client.force_login), the account page by a customer session (a heavy and a light user),
/api/usage by AsyncClient in one event loop, as an ASGI worker serves it. A load's time is
time.perf_counter() around the client's get: URL resolution, middleware, ORM queries and
template rendering, no network.

The clock: by default Django's timezone.now() runs on from the instant the seeder ended the
log (`--clock seed`), so the dashboard's last minutes and the month so far hold the same rows
whenever this runs; `--clock wall` uses the real time.
"""

import argparse
import asyncio
import contextlib
import html
import inspect
import logging
import math
import os
import platform
import re
import secrets
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from bench.seed_at_size import DEFAULT_DATABASE_URL, bench_key  # noqa: E402

TARGET_MS = 300.0


@dataclass
class Query:
    seconds: float
    sql: str
    params: object


class QueryLog:
    """Every ORM query of every thread, with its time: an execute wrapper on each database
    connection (the /api/usage view reads the month in a worker thread, which
    CaptureQueriesContext, bound to one thread's connection, would not see)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queries: list[Query] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            with self._lock:
                self.queries.append(Query(time.perf_counter() - started, sql, params))

    def attach(self, connection) -> None:
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)

    def since(self, mark: int) -> list[Query]:
        with self._lock:
            return self.queries[mark:]


@dataclass
class Page:
    label: str
    path: str
    client: str  # "admin", "heavy", "light" or "api"
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class Result:
    page: Page
    times: list[float] = field(default_factory=list)  # seconds
    queries: list[int] = field(default_factory=list)
    sql: list[float] = field(default_factory=list)  # seconds in queries, per load
    slowest: Query | None = None
    error: str = ""

    @property
    def p50(self) -> float:
        return _percentile(self.times, 0.50) * 1000

    @property
    def p95(self) -> float:
        return _percentile(self.times, 0.95) * 1000


def _percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def configure(url: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
            "DATABASE_URL": url,
            "DEBUG": "0",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "testserver",
            "GATEWAY_IDENTITY": "key",
        }
    )


def seed_end() -> datetime | None:
    """When the seeder ended the log: its note on the database, else the newest row."""
    import json

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
        )
        note = cursor.fetchone()[0]
        if note:
            return datetime.fromisoformat(json.loads(note)["end"])
        cursor.execute("SELECT max(created_at) FROM requests")
        return cursor.fetchone()[0]


def pin_clock(anchor: datetime):
    """timezone.now() from `anchor` on, advancing with the real clock."""
    from django.utils import timezone

    started = time.monotonic()
    return mock.patch.object(timezone, "now", lambda: anchor + timedelta(seconds=time.monotonic() - started))


def pick_users(now: datetime) -> tuple[str, str]:
    """The user with the most requests this month, and one with the fewest (at least one)."""
    from billing.models import MonthlyUsage

    month = now.date().replace(day=1)
    this_month = MonthlyUsage.objects.filter(month=month, requests__gt=0, user_id__startswith="user-")
    heavy = this_month.order_by("-requests", "user_id").values_list("user_id", flat=True).first()
    light = this_month.order_by("requests", "user_id").values_list("user_id", flat=True).first()
    if heavy is None or light is None:
        raise SystemExit(f"no monthly usage for {month:%Y-%m}: is this a database seeded by bench/seed_at_size.py?")
    return heavy, light


def clients(heavy: str, light: str) -> dict:
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client, RequestFactory

    from accounts import sessions
    from accounts.models import Account

    admin, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    operator = Client()
    operator.force_login(admin)
    built = {"admin": operator}
    engine = import_module(settings.SESSION_ENGINE)
    for name, user_id in (("heavy", heavy), ("light", light)):
        # Signed in as the sign-in views do it, by emailed link where a session records its proof.
        request = RequestFactory().get("/account/")
        request.session = engine.SessionStore()
        account = Account.objects.get(user_id=user_id)
        proof = [sessions.by_email(account)] if "proof" in inspect.signature(sessions.sign_in).parameters else []
        sessions.sign_in(request, account, *proof)
        request.session.save()
        customer = Client()
        customer.cookies[settings.SESSION_COOKIE_NAME] = request.session.session_key
        built[name] = customer
    return built


def _html(client, path: str) -> str:
    response = client.get(path)
    if response.status_code != 200:
        raise SystemExit(f"GET {path}: {response.status_code}")
    return response.content.decode()


def _link(page: str, text: str) -> str | None:
    match = re.search(rf'<a href="([^"]*)"[^>]*>\s*{re.escape(text)}\s*</a>', page)
    return html.unescape(match.group(1)) if match else None


def _sort_index(page: str, column: str) -> str | None:
    """The `o=` index of a sortable column of a changelist (Django numbers list_display)."""
    match = re.search(rf'column-{column}".*?href="\?o=([\d.-]+)', page, re.DOTALL)
    return match.group(1).split(".")[0].lstrip("-") if match else None


def pages(operator, heavy: str, light: str, now: datetime, summary_url: str) -> list[Page]:
    log = "/admin/proxy/requestlog/"
    listing = _html(operator, log)
    numbers = [int(number) for number in re.findall(r'href="\?p=(\d+)"', listing)]
    last = max(numbers) if numbers else 1
    week = _link(listing, "Past 7 days")
    day = (now - timedelta(days=45)).date()
    found = [
        Page("request log, unfiltered", log, "admin"),
        Page("request log, page 2", f"{log}?p=2", "admin"),
        Page("request log, last page", f"{log}?p={last}", "admin"),
        Page("request log, heavy user", f"{log}?q={heavy}", "admin", note="the summary's 'Requests of' link"),
        Page("request log, light user", f"{log}?q={light}", "admin"),
        Page("request log, status 429", f"{log}?status_class=429", "admin"),
        Page("request log, status 5xx", f"{log}?status_class=5xx", "admin"),
    ]
    if week:
        found.append(Page("request log, past 7 days", f"{log}{week}", "admin"))
    found.append(
        Page(
            f"request log, one day ({day:%Y-%m-%d})",
            f"{log}?created_at__day={day.day}&created_at__month={day.month}&created_at__year={day.year}",
            "admin",
            note="date hierarchy",
        )
    )
    summaries = _html(operator, summary_url)
    found.append(Page("user summaries (last seen)", summary_url, "admin"))
    requests_index = _sort_index(summaries, "requests")
    if requests_index:
        found.append(Page("user summaries by requests", f"{summary_url}?o=-{requests_index}", "admin"))
    cost_columns = re.findall(r'class="sortable column-(\w*cost\w*)', summaries)
    for column in ["cost"] if "cost" in cost_columns else cost_columns[:1]:
        found.append(
            Page(
                f"user summaries by {column.replace('_', ' ')}",
                f"{summary_url}?o=-{_sort_index(summaries, column)}",
                "admin",
            )
        )
    if not cost_columns:
        print("note: the user summary has no sortable cost column")
    by_requests = _html(operator, f"{summary_url}?o=-{requests_index}") if requests_index else summaries
    change = re.search(rf'href="({re.escape(summary_url)}[^/"]+/change/)[^"]*"', by_requests)
    if change:
        found.append(Page("user summary, one user", change.group(1), "admin", note="the first by requests"))
    found += [
        Page("dashboard (5 minutes)", "/admin/dashboard/", "admin"),
        Page("dashboard (60 minutes)", "/admin/dashboard/?minutes=60", "admin"),
        Page("/api/usage, heavy user", "/api/usage", "api", {"X-Gateway-Key": bench_key(_index(heavy))}),
        Page(
            "/api/usage/daily (90 days), heavy user",
            "/api/usage/daily?days=90",
            "api",
            {"X-Gateway-Key": bench_key(_index(heavy))},
        ),
        Page("account page, heavy user", "/account/", "heavy"),
        Page("account page, light user", "/account/", "light"),
    ]
    return found


def _index(user_id: str) -> int:
    return int(user_id.rsplit("-", 1)[1])


def measure(result: Result, load: Callable[[], object], log: QueryLog, loads: int, budget: float) -> None:
    """One warm-up load, then `loads` timed ones (fewer when they pass `budget` seconds, at least 3)."""
    _check(result.page, load())
    spent = 0.0
    while len(result.times) < loads and (spent < budget or len(result.times) < 3):
        mark = len(log.queries)
        started = time.perf_counter()
        response = load()
        elapsed = time.perf_counter() - started
        _check(result.page, response)
        spent += elapsed
        _record(result, elapsed, log.since(mark))


async def measure_async(result: Result, client, log: QueryLog, loads: int, budget: float) -> None:
    page = result.page
    _check(page, await client.get(page.path, headers=page.headers))
    spent = 0.0
    while len(result.times) < loads and (spent < budget or len(result.times) < 3):
        mark = len(log.queries)
        started = time.perf_counter()
        response = await client.get(page.path, headers=page.headers)
        elapsed = time.perf_counter() - started
        _check(page, response)
        spent += elapsed
        _record(result, elapsed, log.since(mark))


def _check(page: Page, response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"GET {page.path}: {response.status_code}")


def _record(result: Result, elapsed: float, queries: list[Query]) -> None:
    result.times.append(elapsed)
    result.queries.append(len(queries))
    result.sql.append(sum(query.seconds for query in queries))
    for query in queries:
        if result.slowest is None or query.seconds > result.slowest.seconds:
            result.slowest = query


def explain(query: Query) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query.sql, query.params)
        return [row[0] for row in cursor.fetchall()]


def _short(sql: str, width: int = 110) -> str:
    text = re.sub(r"\s+", " ", sql)
    text = re.sub(r'"[a-z_]+"\."([a-z_]+)"', r"\1", text)  # "requests"."user_id" -> user_id
    return text if len(text) <= width else text[: width - 1] + "…"


def table(results: list[Result]) -> str:
    lines = [
        "| page | loads | p50 ms | p95 ms | queries | in SQL, ms p50 | slowest query, ms | ≤ 300 ms p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if result.error:
            lines.append(f"| {result.page.label} | – | – | – | – | – | error: {result.error} | no |")
            continue
        queries = statistics.median(result.queries)
        slowest = f"{result.slowest.seconds * 1000:.1f}" if result.slowest else "–"
        met = "yes" if result.p95 <= TARGET_MS else "**no**"
        lines.append(
            f"| {result.page.label} | {len(result.times)} | {result.p50:.1f} | {result.p95:.1f} | "
            f"{queries:g} | {statistics.median(result.sql) * 1000:.1f} | {slowest} | {met} |"
        )
    return "\n".join(lines)


def plan_summary(plan: list[str], limit: int = 40) -> list[str]:
    """The plan without its per-worker and buffer lines (but the top one's), up to `limit` lines,
    then its timing lines."""
    kept = [
        line
        for index, line in enumerate(plan)
        if index < 2 or not line.lstrip().startswith(("Buffers:", "Worker ", "Planning:", "I/O Timings:"))
    ]
    head = kept[:limit]
    if len(kept) > limit:
        head.append(f"  … {len(kept) - limit} more lines")
        head += [line for line in kept[limit:] if line.startswith(("Planning", "Execution"))]
    return head


def describe(now: datetime, clock: str) -> str:
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_database(), pg_size_pretty(pg_database_size(current_database())), "
            "(SELECT reltuples::bigint FROM pg_class WHERE oid = 'requests'::regclass), "
            "current_setting('server_version'), current_setting('shared_buffers'), current_setting('work_mem')"
        )
        name, size, rows, version, shared_buffers, work_mem = cursor.fetchone()
    from django.conf import settings

    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    return (
        f"database {name} ({size}, about {rows:,} rows in requests); PostgreSQL {version} "
        f"(shared_buffers {shared_buffers}, work_mem {work_mem}); Python {platform.python_version()}, "
        f"Django {django.get_version()}; {os.cpu_count()} cores; cache {cache}; "
        f"clock {clock}: now = {now:%Y-%m-%d %H:%M} UTC; load average {_load()}"
    )


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--loads", type=int, default=20, help="timed loads per page, after one warm-up (default 20)")
    parser.add_argument(
        "--page-seconds", type=float, default=120, help="stop a page's loads past this time, after 3 (default 120)"
    )
    parser.add_argument("--only", action="append", default=[], help="pages whose label contains this (repeatable)")
    parser.add_argument("--clock", choices=("seed", "wall"), default="seed")
    parser.add_argument("--summary-url", default="/admin/proxy/usersummary/")
    parser.add_argument(
        "--explain-over", type=float, default=TARGET_MS, help="EXPLAIN pages whose p95 passes this (ms)"
    )
    args = parser.parse_args()
    configure(args.database_url)

    import django

    django.setup()
    logging.getLogger("axes").setLevel(logging.WARNING)  # force_login's sign-in lines
    from django.db.backends.signals import connection_created
    from django.test import AsyncClient

    log = QueryLog()
    connection_created.connect(lambda sender, connection, **kwargs: log.attach(connection), weak=False)
    anchor = seed_end() if args.clock == "seed" else datetime.now(UTC)
    with pin_clock(anchor) if args.clock == "seed" else contextlib.nullcontext():
        from django.utils import timezone

        now = timezone.now()
        heavy, light = pick_users(now)
        built = clients(heavy, light)
        found = pages(built["admin"], heavy, light, now, args.summary_url)
        if args.only:
            found = [page for page in found if any(text in page.label for text in args.only)]
        print(describe(now, args.clock))
        print(f"heavy user {heavy}, light user {light}; {args.loads} loads per page after one warm-up\n")
        results = []
        for page in found:
            result = Result(page)
            results.append(result)
            print(f"{page.label}: GET {page.path} ...", flush=True)
            try:
                if page.client == "api":
                    asyncio.run(measure_async(result, AsyncClient(), log, args.loads, args.page_seconds))
                else:
                    client = built[page.client]
                    measure(
                        result,
                        lambda c=client, p=page: c.get(p.path, headers=p.headers),
                        log,
                        args.loads,
                        args.page_seconds,
                    )
            except Exception as error:  # one broken page must not hide the others' numbers
                result.error = f"{type(error).__name__}: {error}"
                traceback.print_exc()
                continue
            slowest = result.slowest
            print(
                f"  p50 {result.p50:.1f} ms, p95 {result.p95:.1f} ms over {len(result.times)} loads, "
                f"{statistics.median(result.queries):g} queries, {statistics.median(result.sql) * 1000:.1f} ms in SQL"
                + (f"; slowest {slowest.seconds * 1000:.1f} ms: {_short(slowest.sql)}" if slowest else ""),
                flush=True,
            )

        print(f"\nload average at the end: {_load()}\n")
        print(table(results) + "\n")
        print("URLs:")
        for result in results:
            print(f"  {result.page.label}: {result.page.path}" + (f" ({result.page.note})" if result.page.note else ""))
        for result in results:
            if result.error or result.p95 <= args.explain_over or result.slowest is None:
                continue
            print(
                f"\n### {result.page.label}: p95 {result.p95:.0f} ms; slowest query "
                f"{result.slowest.seconds * 1000:.0f} ms\n"
            )
            print(re.sub(r"\s+", " ", result.slowest.sql))
            print(f"params: {result.slowest.params}\n")
            print("\n".join(plan_summary(explain(result.slowest))))


if __name__ == "__main__":
    main()
