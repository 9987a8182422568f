"""Seed a PostgreSQL database at size for bench/pages_at_size.py: the access log of USERS
users over DAYS days ending now, written by PostgreSQL itself (INSERT ... SELECT FROM
generate_series, one day per statement), so 10 million rows take minutes.

    .venv/bin/python bench/seed_at_size.py --rows 10000000 --users 20000 --days 90 \\
        [--database-url postgres://root@127.0.0.1:5432/bench_size]

Every run drops and recreates the database, migrates it, then writes:
  - `requests`: a few heavy users and many light ones (user = USERS * random()^SKEW), a daily
    and weekly rhythm, mostly 200 with 429, 402, 401, 499, 502, 504 and 400, chat, responses,
    embeddings and model-list calls, models with dated snapshots and one without a price,
    usage unknown for some calls, cost from the prices below as the access-log writer computes
    it (billing.prices.PriceBook), ids in time order as the writer leaves them. Columns the
    script does not know are read from information_schema: `request_id` gets an id, other
    NOT NULL ones their type's zero, nullable ones stay NULL (each is named in the output);
  - accounts with an email and one key each (`bench_key(index)`, bench-only), plans with
    budgets, model prices, and the monthly usage and model months of those rows;
  - the rollups, with `manage.py rebuild_rollups` when the project has it.
The secondary indexes of `requests` are dropped for the load and built after it; each day's
draws start from setseed(--seed, day), so two runs write alike rows. The instant the log ends is
noted on the database (COMMENT ON DATABASE), where pages_at_size.py reads its clock from.

`--upgrade` keeps the rows of a database seeded earlier: it migrates it to this tree, rebuilds
the rollups and analyzes (rows written before a new column existed keep its default).
"""

import argparse
import json
import math
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

import psycopg  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://root@127.0.0.1:5432/bench_size"
REFUSED_NAMES = {"postgres", "template0", "template1", "test"}

# Requests per hour of the day (UTC), relative; Saturdays and Sundays carry WEEKEND of a weekday.
HOURLY = [0.2, 0.15, 0.1, 0.1, 0.1, 0.15, 0.3, 0.6, 1.0, 1.3, 1.5, 1.5]
HOURLY += [1.3, 1.4, 1.5, 1.5, 1.4, 1.2, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3]
WEEKEND = 0.35
# Users below this share of the ids are the heavy ones: more of their calls are refused with 429.
HEAVY_SHARE = 0.001

# Models of chat and responses calls, with their share; dated snapshots are priced by their base
# name, gpt-5-codex has no price (its cost is unknown).
CHAT_MODELS = [
    ("gpt-4o-mini", 0.30),
    ("gpt-4o-mini-2024-07-18", 0.15),
    ("gpt-4o", 0.15),
    ("gpt-4o-2024-08-06", 0.05),
    ("gpt-4.1", 0.12),
    ("gpt-4.1-mini", 0.03),
    ("o4-mini", 0.13),
    ("gpt-5-codex", 0.07),
]
EMBEDDING_MODEL = "text-embedding-3-small"
ENDPOINTS = ["/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/models"]
# (model, days before today the price starts, USD per 1M input, cached input, output tokens);
# gpt-4o's price drops mid-period, so rows before and after carry different costs.
PRICES = [
    ("gpt-4o-mini", 400, "0.15", "0.075", "0.60"),
    ("gpt-4o", 400, "2.50", "1.25", "10.00"),
    ("gpt-4o", 45, "2.00", "1.00", "8.00"),
    ("gpt-4.1", 400, "2.00", "0.50", "8.00"),
    ("gpt-4.1-mini", 400, "0.40", "0.10", "1.60"),
    ("o4-mini", 400, "1.10", "0.275", "4.40"),
    (EMBEDDING_MODEL, 400, "0.02", "0.02", "0"),
]
BUDGETS_USD = {"tier2": Decimal("50"), "tier3": Decimal("500")}

# Statuses by the draw r_s: 200 below the user's share, then the refusals and failures.
STATUS_SQL = """
CASE WHEN d.r_s < CASE WHEN d.u < %(heavy)s THEN 0.78 ELSE 0.87 END THEN 200
     WHEN d.r_s < 0.93 THEN 429 WHEN d.r_s < 0.955 THEN 402 WHEN d.r_s < 0.97 THEN 401
     WHEN d.r_s < 0.98 THEN 499 WHEN d.r_s < 0.99 THEN 502 WHEN d.r_s < 0.995 THEN 504
     ELSE 400 END"""

# One day's rows. `draws` is materialized so each random() is drawn once per row; the rest
# derives from it. Kinds of usage: zero (refusals and the model list), unknown (NULL: the
# upstream never said; 3 % of the 200s, 60 % of the 499/502/504), known.
DAY_SQL = """
WITH draws AS MATERIALIZED (
    SELECT q.r, width_bucket(q.r, %(starts)s::float8[]) AS h,
           floor(%(users)s * power(random(), %(skew)s))::int AS u,
           random() AS r_s, random() AS r_e, random() AS r_m, random() AS r_u, random() AS r_in,
           random() AS r_c, random() AS r_o, random() AS r_l, random() AS r_ip,
           random() AS r_q1, random() AS r_q2, random() AS r_q3, random() AS r_q4
    FROM (SELECT %(lo)s + random() * %(span)s AS r FROM generate_series(1, %(n)s)) q
), shaped AS (
    SELECT d.*,
        %(day)s::timestamptz + make_interval(secs => 3600 * ((d.h - 1)
            + (d.r - (%(starts)s::float8[])[d.h]) / (%(widths)s::float8[])[d.h])) AS created_at,
        {status} AS status,
        CASE WHEN d.r_e < 0.55 THEN 1 WHEN d.r_e < 0.88 THEN 2 WHEN d.r_e < 0.93 THEN 3 ELSE 4 END AS ep
    FROM draws d
), called AS (
    SELECT s.*,
        CASE WHEN s.ep = 4 OR s.status = 401 THEN NULL WHEN s.ep = 3 THEN %(embedding)s
             ELSE width_bucket(s.r_m, %(model_starts)s::float8[]) END AS mi,
        CASE WHEN s.ep = 4 OR s.status IN (400, 401, 402, 429) THEN 'zero'
             WHEN s.status = 200 AND (s.ep = 3 OR s.r_u >= 0.03) THEN 'known'
             WHEN s.status <> 200 AND s.r_u >= 0.6 THEN 'known'
             ELSE 'unknown' END AS kind,
        CASE WHEN s.ep = 3 THEN floor(5 * power(400, s.r_in)) ELSE floor(200 * power(50, s.r_in)) END::bigint AS in_raw,
        CASE WHEN s.ep = 3 THEN 0 ELSE floor(10 * power(200, s.r_o)) END::bigint AS out_raw
    FROM shaped s
), used AS (
    SELECT c.*, m.name, m.p_in, m.p_cached, m.p_out,
        CASE c.kind WHEN 'zero' THEN 0 WHEN 'known' THEN c.in_raw END AS input_tokens,
        CASE c.kind WHEN 'zero' THEN 0 WHEN 'known' THEN
            CASE WHEN c.ep = 3 OR c.r_c < 0.5 THEN 0 ELSE floor(c.in_raw * (c.r_c - 0.5) * 1.6)::bigint END
        END AS cached_input_tokens,
        CASE c.kind WHEN 'zero' THEN 0 WHEN 'known' THEN c.out_raw END AS output_tokens
    FROM called c
    LEFT JOIN unnest(%(m_idx)s::int[], %(m_name)s::text[], %(m_in)s::bigint[], %(m_cached)s::bigint[],
                     %(m_out)s::bigint[]) AS m(idx, name, p_in, p_cached, p_out) ON m.idx = c.mi
)
SELECT
    CASE WHEN status = 401 THEN '' ELSE %(user_prefix)s || lpad(u::text, %(user_width)s, '0') END AS user_id,
    CASE WHEN ep = 4 THEN 'GET' ELSE 'POST' END AS method,
    (%(endpoints)s::text[])[ep] AS endpoint,
    status,
    (CASE WHEN status IN (400, 401, 402, 429) THEN 1 + 5 * r_l
          WHEN status = 499 THEN 500 * power(60, r_l)
          WHEN status = 502 THEN 100 * power(100, r_l)
          WHEN status = 504 THEN 60000 + 1000 * r_l
          WHEN ep = 4 THEN 2 + 20 * r_l
          WHEN ep = 3 THEN 50 * power(10, r_l)
          ELSE 250 * power(40, r_l) END)::int AS latency_ms,
    input_tokens::int AS input_tokens,
    cached_input_tokens::int AS cached_input_tokens,
    output_tokens::int AS output_tokens,
    (input_tokens + output_tokens)::int AS total_tokens,
    CASE kind WHEN 'zero' THEN 0 WHEN 'unknown' THEN NULL
        ELSE (input_tokens - cached_input_tokens) * p_in + cached_input_tokens * p_cached + output_tokens * p_out
    END AS cost_pico_usd,
    coalesce(name, '') AS model,
    lpad(to_hex(mod(u::bigint * 2654435761 + CASE WHEN r_ip < 0.2 THEN 40503 ELSE 0 END, 4294967296)), 8, '0')
        AS ip_hash,
    created_at,
    lpad(to_hex(floor(r_q1 * 4294967296)::bigint), 8, '0') || lpad(to_hex(floor(r_q2 * 4294967296)::bigint), 8, '0')
        || lpad(to_hex(floor(r_q3 * 4294967296)::bigint), 8, '0')
        || lpad(to_hex(floor(r_q4 * 4294967296)::bigint), 8, '0') AS request_id
FROM used
ORDER BY created_at
""".replace("{status}", STATUS_SQL)

# What the generator fills; any other column of `requests` is filled by _fallback().
GENERATED = {
    "user_id",
    "method",
    "endpoint",
    "status",
    "latency_ms",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_pico_usd",
    "model",
    "ip_hash",
    "created_at",
    "request_id",
}

# Calls that were admitted (not refused before the upstream): what monthly usage counts.
ADMITTED = "status NOT IN (400, 401, 402, 429)"
# Model calls: what the model months count (refusals and the model list use nothing).
MODEL_CALL = "status IN (200, 499, 502, 504) AND endpoint <> '/v1/models'"


def bench_key(index: int) -> str:
    """The API key of user `index` in a seeded bench database (bench-only, never a real key)."""
    return f"gk_atsize{index:07d}{'x' * 30}"


def user_id_of(index: int, users: int) -> str:
    return f"user-{index:0{_user_width(users)}d}"


def _user_width(users: int) -> int:
    return max(5, len(str(users - 1)))


@contextmanager
def step(name: str, timings: list[tuple[str, float]]) -> Iterator[None]:
    print(f"{name} ...", flush=True)
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    timings.append((name, elapsed))
    print(f"{name}: {elapsed:.1f} s", flush=True)


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name or name in REFUSED_NAMES or name.startswith("test_"):
        raise SystemExit(f"refusing to drop the database {name!r}: give a bench database of its own")
    return name


def django_env(url: str) -> dict[str, str]:
    """The environment of this process and its manage.py runs: the bench database, no DEBUG."""
    return {
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": url,
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
    }


# --- time: how many rows each day gets, and where in the day --------------------------


def _hour_shape() -> tuple[list[float], list[float]]:
    total = sum(HOURLY)
    widths = [weight / total for weight in HOURLY]
    starts = [float(sum(widths[:hour])) for hour in range(24)]
    return starts, widths


def _share_of_day(moment: datetime) -> float:
    """The share of a day's requests that arrive before `moment`'s time of day."""
    starts, widths = _hour_shape()
    hours = (moment - moment.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 3600
    hour = min(int(hours), 23)
    return starts[hour] + widths[hour] * (hours - hour)


def day_slices(start: datetime, end: datetime) -> list[tuple[datetime, float, float, float]]:
    """(midnight, share of the day at the slice's start, at its end, weight) of each day from
    `start` to `end`; the weight is the slice's share of the day, less on weekends."""
    slices = []
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while midnight < end:
        following = midnight + timedelta(days=1)
        lo = _share_of_day(start) if start > midnight else 0.0
        hi = _share_of_day(end) if end < following else 1.0
        if hi > lo:
            factor = WEEKEND if midnight.weekday() >= 5 else 1.0
            slices.append((midnight, lo, hi, (hi - lo) * factor))
        midnight = following
    return slices


def allocate(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights`, summing exactly (largest remainders)."""
    whole = sum(weights)
    exact = [total * weight / whole for weight in weights]
    counts = [math.floor(share) for share in exact]
    by_remainder = sorted(range(len(exact)), key=lambda index: exact[index] - counts[index], reverse=True)
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts


# --- the database ------------------------------------------------------------------------


def recreate_database(url: str, name: str) -> None:
    admin = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def requests_columns(connection: psycopg.Connection) -> list[tuple[str, bool, str, str | None]]:
    """(name, nullable, data type, default) of each column of `requests`."""
    return connection.execute(
        "SELECT column_name, is_nullable = 'YES', data_type, column_default FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'requests' ORDER BY ordinal_position"
    ).fetchall()


def _fallback(data_type: str) -> str:
    if data_type in ("smallint", "integer", "bigint", "numeric", "real", "double precision"):
        return "0"
    if data_type == "boolean":
        return "false"
    if data_type.startswith("timestamp"):
        return "created_at"
    if data_type == "jsonb" or data_type == "json":
        return "'{}'"
    return "''"


def insert_statement(columns: list[tuple[str, bool, str, str | None]]) -> tuple[str, list[str]]:
    """INSERT INTO requests of the columns present, and a note for each one not generated."""
    names, values, notes = [], [], []
    for name, nullable, data_type, default in columns:
        if name == "id":
            continue
        if name in GENERATED:
            names.append(name)
            values.append(name)
        elif default is not None:
            notes.append(f"{name}: left to its default ({default})")
        elif nullable:
            notes.append(f"{name}: nullable, left NULL")
        else:
            names.append(name)
            values.append(f"{_fallback(data_type)} AS {name}")
            notes.append(f"{name}: NOT NULL, filled with {_fallback(data_type)}")
    column_list = ", ".join(f'"{name}"' for name in names)
    return f"INSERT INTO requests ({column_list}) SELECT {', '.join(values)} FROM ({DAY_SQL}) generated", notes


def price_book():
    from billing import money
    from billing.prices import Price, PriceBook

    today = datetime.now(UTC).date()
    return PriceBook(
        [
            Price(
                model,
                today - timedelta(days=days_ago),
                money.per_token(input_usd),
                money.per_token(cached_usd),
                money.per_token(output_usd),
            )
            for model, days_ago, input_usd, cached_usd, output_usd in PRICES
        ]
    )


def _model_arrays(book, day: datetime) -> dict:
    """The models of one day as parallel arrays: index, name, pico-USD per token (None: no price)."""
    names = [name for name, _ in CHAT_MODELS] + [EMBEDDING_MODEL]
    arrays = {"m_idx": [], "m_name": [], "m_in": [], "m_cached": [], "m_out": []}
    for index, name in enumerate(names, start=1):
        price = book.price_for(name, day + timedelta(hours=12))
        arrays["m_idx"].append(index)
        arrays["m_name"].append(name)
        arrays["m_in"].append(price and price.input)
        arrays["m_cached"].append(price and price.cached_input)
        arrays["m_out"].append(price and price.output)
    return arrays


def load_requests(connection: psycopg.Connection, args: argparse.Namespace, *, start: datetime, end: datetime) -> None:
    rows, users = args.rows, args.users
    statement, notes = insert_statement(requests_columns(connection))
    for note in notes:
        print(f"  requests.{note}")
    slices = day_slices(start, end)
    counts = allocate(rows, [weight for *_, weight in slices])
    starts, widths = _hour_shape()
    total_share = sum(share for _, share in CHAT_MODELS)
    model_starts = [
        float(sum(share for _, share in CHAT_MODELS[:index])) / total_share for index in range(len(CHAT_MODELS))
    ]
    book = price_book()
    written, started = 0, time.perf_counter()
    for (midnight, lo, hi, _), count in zip(slices, counts, strict=True):
        if not count:
            continue
        # The same draws for the same day and seed: runs compare like with like.
        connection.execute("SELECT setseed(%s)", [random.Random(f"{args.seed} {midnight:%Y-%m-%d}").uniform(-1, 1)])
        connection.execute(
            statement,
            {
                "starts": starts,
                "widths": widths,
                "users": users,
                "skew": args.skew,
                "lo": lo,
                "span": hi - lo,
                "n": count,
                "day": midnight,
                "heavy": max(1, int(users * HEAVY_SHARE)),
                "embedding": len(CHAT_MODELS) + 1,
                "model_starts": model_starts,
                "user_prefix": "user-",
                "user_width": _user_width(users),
                "endpoints": ENDPOINTS,
                **_model_arrays(book, midnight),
            },
        )
        connection.commit()
        written += count
        elapsed = time.perf_counter() - started
        print(f"  {midnight:%Y-%m-%d}: {written:,} rows, {written / elapsed:,.0f} rows/s", flush=True)


def secondary_indexes(connection: psycopg.Connection) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the indexes of `requests` that back no constraint."""
    return connection.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
        "AND i.tablename = 'requests' AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.conrelid = 'requests'::regclass)"
    ).fetchall()


def monthly_usage(connection: psycopg.Connection) -> None:
    """Monthly usage and model months of every month in the log, as the writer counts them."""
    from billing.models import ModelMonth, MonthlyUsage

    usage_table, model_table = MonthlyUsage._meta.db_table, ModelMonth._meta.db_table
    connection.execute(f"DELETE FROM {usage_table}")
    connection.execute(f"DELETE FROM {model_table}")
    month = "(date_trunc('month', created_at AT TIME ZONE 'UTC'))::date"
    connection.execute(
        f"INSERT INTO {usage_table} (user_id, month, requests, total_tokens, input_tokens, cached_input_tokens, "
        "output_tokens, unknown_usage_requests, cost_pico_usd, unknown_cost_requests) "
        f"SELECT user_id, {month}, count(*), coalesce(sum(total_tokens), 0), coalesce(sum(input_tokens), 0), "
        "coalesce(sum(cached_input_tokens), 0), coalesce(sum(output_tokens), 0), "
        "count(*) FILTER (WHERE total_tokens IS NULL), coalesce(sum(cost_pico_usd), 0), "
        "count(*) FILTER (WHERE cost_pico_usd IS NULL) "
        f"FROM requests WHERE user_id <> '' AND {ADMITTED} GROUP BY 1, 2"
    )
    connection.execute(
        f"INSERT INTO {model_table} (month, model, requests, total_tokens, cost_pico_usd, unpriced_requests) "
        f"SELECT {month}, model, count(*), coalesce(sum(total_tokens), 0), coalesce(sum(cost_pico_usd), 0), "
        "count(*) FILTER (WHERE total_tokens IS NOT NULL AND cost_pico_usd IS NULL) "
        f"FROM requests WHERE {MODEL_CALL} GROUP BY 1, 2"
    )
    connection.commit()


def accounts_and_prices(users: int) -> None:
    """Accounts (email, a tier for some, one key each), plans with budgets, model prices."""
    from accounts.models import KEY_DISPLAY_LENGTH, Account, ApiKey, hash_key
    from billing.models import ModelPrice, Plan

    batch = 2000
    for first in range(0, users, batch):
        indexes = range(first, min(first + batch, users))
        accounts = Account.objects.bulk_create(
            Account(
                user_id=user_id_of(index, users),
                email=f"{user_id_of(index, users)}@bench.example",
                tier=_tier(index),
            )
            for index in indexes
        )
        ApiKey.objects.bulk_create(
            ApiKey(account=account, key_hash=hash_key(bench_key(index)), prefix=bench_key(index)[:KEY_DISPLAY_LENGTH])
            for account, index in zip(accounts, indexes, strict=True)
        )
    for tier, budget in BUDGETS_USD.items():
        Plan.objects.filter(tier=tier).update(monthly_budget_usd=budget)
    today = datetime.now(UTC).date()
    ModelPrice.objects.bulk_create(
        ModelPrice(
            model=model,
            effective_from=today - timedelta(days=days_ago),
            input_per_million=Decimal(input_usd),
            cached_input_per_million=Decimal(cached_usd),
            output_per_million=Decimal(output_usd),
        )
        for model, days_ago, input_usd, cached_usd, output_usd in PRICES
    )


def _tier(index: int) -> str:
    if index % 20 == 0:
        return "tier3"
    if index % 10 == 0:
        return "tier2"
    if index % 4 == 0:
        return "tier1"
    return ""


def rebuild_rollups() -> bool:
    import django
    from django.core.management import get_commands

    django.setup()
    if "rebuild_rollups" not in get_commands():
        print("  manage.py rebuild_rollups does not exist in this tree: no rollups written")
        return False
    _manage("rebuild_rollups")
    return True


def sizes(connection: psycopg.Connection, name: str) -> str:
    row = connection.execute(
        "SELECT pg_size_pretty(pg_database_size(current_database())), "
        "pg_size_pretty(pg_table_size('requests')), pg_size_pretty(pg_indexes_size('requests'))"
    ).fetchone()
    return f"database {name}: {row[0]} (requests: {row[1]} of table, {row[2]} of indexes)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--skew", type=float, default=3.0, help="user = USERS * random()^SKEW (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="PostgreSQL's setseed() for each day's draws (default 1)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="keep the rows of an existing bench database: migrate it to this tree, rebuild the rollups, analyze",
    )
    args = parser.parse_args()
    name = database_name(args.database_url)
    os.environ.update(django_env(args.database_url))
    timings: list[tuple[str, float]] = []
    if args.upgrade:
        print(f"upgrading {name}: migrate, rollups, VACUUM ANALYZE; its rows stay")
        with step("migrate", timings):
            _manage("migrate", "-v", "0")
    else:
        seed(args, name, timings)
    with step("rollups (manage.py rebuild_rollups)", timings):
        rebuild_rollups()
    with psycopg.connect(args.database_url, autocommit=True) as connection:
        with step("VACUUM ANALYZE", timings):
            connection.execute("VACUUM ANALYZE")
        summary = sizes(connection, name)

    print()
    for label, seconds in timings:
        print(f"{label:<60} {seconds:8.1f} s")
    print(f"{'total':<60} {sum(seconds for _, seconds in timings):8.1f} s")
    print(summary)
    print("load average (1, 5, 15 min): " + " ".join(f"{value:.1f}" for value in os.getloadavg()))


def seed(args: argparse.Namespace, name: str, timings: list[tuple[str, float]]) -> None:
    end = datetime.now(UTC)
    start = end - timedelta(days=args.days)
    print(f"seeding {name}: {args.rows:,} rows, {args.users:,} users, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}")
    with step("create the database", timings):
        recreate_database(args.database_url, name)
    with step("migrate", timings):
        _manage("migrate", "-v", "0")
    import django

    django.setup()
    with step("accounts, keys, plans, prices", timings):
        accounts_and_prices(args.users)

    with psycopg.connect(args.database_url) as connection:
        connection.execute("SET synchronous_commit = off")
        connection.execute("SET work_mem = '256MB'")
        connection.execute("SET maintenance_work_mem = '1GB'")
        indexes = secondary_indexes(connection)
        connection.execute("ALTER TABLE requests SET (autovacuum_enabled = false)")
        for index_name, _ in indexes:
            connection.execute(f'DROP INDEX "{index_name}"')
        connection.commit()
        with step(f"requests: {args.rows:,} rows", timings):
            load_requests(connection, args, start=start, end=end)
        with step(f"indexes of requests ({', '.join(index for index, _ in indexes)})", timings):
            for _, definition in indexes:
                connection.execute(definition)
            connection.execute("ALTER TABLE requests RESET (autovacuum_enabled)")
            connection.commit()
        with step("monthly usage and model months", timings):
            monthly_usage(connection)
        # Read by pages_at_size.py: the instant its clock starts from.
        metadata = {
            "rows": args.rows,
            "users": args.users,
            "days": args.days,
            "seed": args.seed,
            "end": end.isoformat(),
        }
        connection.execute(f"COMMENT ON DATABASE \"{name}\" IS '{json.dumps(metadata)}'")
        connection.commit()


def _manage(*command: str) -> None:
    subprocess.run([sys.executable, "manage.py", *command, "--skip-checks"], cwd=BASE, env={**os.environ}, check=True)


if __name__ == "__main__":
    main()
