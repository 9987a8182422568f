"""The request path's raw SQL and the models it writes and reads never drift apart: each
statement names only its model's columns, fills every column the database cannot fill
itself, adds to every counter, and runs on this database; the raw key lookup finds exactly
the keys the ORM calls active."""

import asyncio
import importlib
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from django.db import DataError, models
from django.db.models import Count
from django.db.models.fields import NOT_PROVIDED, AutoFieldMixin
from django.test import RequestFactory

from accounts import identity, signin
from accounts.models import Account, ApiKey, active_key_filter, hash_key
from billing import monthly_usage, rollups
from billing.models import HourlyUsage, ModelMonth, MonthlyUsage, UserTotal
from gateway_project.lib import async_sql, process_state, shared_redis
from gateway_project.lib.errors import GatewayError
from gateway_project.models import TableVersion
from proxy import accesslog
from proxy.models import RequestLog
from tests.personas import link_codex, trainee

# Every raw statement of the request path, and the model of the table it works on.
STATEMENTS = {
    "proxy.accesslog._INSERT_SQL": RequestLog,
    "billing.rollups.HOUR_ADD_SQL": HourlyUsage,
    "billing.rollups.TOTAL_ADD_SQL": UserTotal,
    "billing.monthly_usage._COUNT_IF_UNDER_SQL": MonthlyUsage,
    "billing.monthly_usage._STANDING_SQL": MonthlyUsage,
    "billing.monthly_usage._UNCOUNT_SQL": MonthlyUsage,
    "billing.monthly_usage.RELEASE_SQL": MonthlyUsage,
    "billing.monthly_usage.ADD_SQL": MonthlyUsage,
    "billing.monthly_usage.MODEL_ADD_SQL": ModelMonth,
    "accounts.identity._TIER_SQL": Account,
    "accounts.identity._MARK_USED_SQL": ApiKey,
    "gateway_project.lib.table_versions._BUMP_SQL": TableVersion,
    "gateway_project.lib.table_versions._READ_SQL": TableVersion,
}
# The ORM's own statement, compiled (quoted names): held to the ORM by what it finds, below.
COMPILED = {"accounts.identity._KEY_SQL"}
# The statements that add a batch's counts to a counter table: each must add to every counter.
ADDING = {
    "billing.rollups.HOUR_ADD_SQL",
    "billing.rollups.TOTAL_ADD_SQL",
    "billing.monthly_usage.ADD_SQL",
    "billing.monthly_usage.MODEL_ADD_SQL",
}
APPS = ("accounts", "billing", "proxy", "gateway_project")
ROOT = Path(__file__).resolve().parent.parent


def statement(name: str) -> str:
    module, attribute = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), attribute)


def columns_named(sql: str, table: str) -> set[str]:
    """The column names in one of these statements (SQL words in capitals, names in lower case)."""
    sql = re.sub(rf"\b(INTO|UPDATE|FROM) {table}\b", " ", sql.replace("%s", "?"))
    sql = re.sub(rf"\b({table}|excluded)\.", "", sql)
    return set(re.findall(r"\b[a-z_][a-z0-9_]*\b", sql))


def inserted(sql: str) -> list[str]:
    found = re.match(r"\s*INSERT INTO \w+ \(([^)]*)\)", sql)
    return [] if found is None else [column.strip() for column in found.group(1).split(",")]


def added(sql: str, table: str) -> set[str]:
    """The columns an upsert adds its row's value to."""
    return set(re.findall(rf"\b(\w+) = {table}\.\1 \+ excluded\.\1\b", sql))


def required(model: type[models.Model]) -> set[str]:
    """The columns an INSERT must fill: NOT NULL, with no default in the database."""
    return {
        field.column
        for field in model._meta.concrete_fields
        if not field.null and field.db_default is NOT_PROVIDED and not isinstance(field, AutoFieldMixin)
    }


def counters(model: type[models.Model]) -> set[str]:
    return {
        field.column
        for field in model._meta.concrete_fields
        if isinstance(field, models.IntegerField) and not field.primary_key
    }


def problems(sql: str, model: type[models.Model], *, adds: bool = False) -> list[str]:
    table = model._meta.db_table
    found = [f"{table} has no column {name}" for name in sorted(columns_named(sql, table) - model_columns(model))]
    if sql.lstrip().startswith("INSERT"):
        found += [f"{column} is not filled" for column in sorted(required(model) - set(inserted(sql)))]
    if adds:
        found += [f"{column} is not added to" for column in sorted(counters(model) - added(sql, table))]
    return found


def model_columns(model: type[models.Model]) -> set[str]:
    return {field.column for field in model._meta.concrete_fields}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_each_statement_names_only_its_models_columns_and_fills_the_required_ones(name):
    assert problems(statement(name), STATEMENTS[name], adds=name in ADDING) == []


def test_the_checks_catch_an_unknown_column_a_missing_one_and_a_counter_left_out():
    table = MonthlyUsage._meta.db_table
    assert problems(f"SELECT requests, tokens FROM {table} WHERE user_id = %s", MonthlyUsage) == [
        f"{table} has no column tokens"
    ]
    unfilled = problems(f"INSERT INTO {table} (user_id, requests) VALUES (%s, 1)", MonthlyUsage)
    assert "month is not filled" in unfilled and "total_tokens is not filled" in unfilled
    assert "single_call_until is not filled" not in unfilled  # NULL will do
    without_cost = monthly_usage.ADD_SQL.replace(
        f", cost_pico_usd = {table}.cost_pico_usd + excluded.cost_pico_usd", ""
    )
    assert without_cost != monthly_usage.ADD_SQL
    assert problems(without_cost, MonthlyUsage, adds=True) == ["cost_pico_usd is not added to"]


def test_every_raw_statement_of_the_apps_is_checked_here():
    """A module of the apps that runs SQL of its own through async_sql holds its statements
    in *_SQL names; each is listed above."""
    found = set()
    for path in sorted(p for app in APPS for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        source = path.read_text()
        if "async_sql" in source and module != "gateway_project.lib.async_sql":
            found |= {f"{module}.{name}" for name in re.findall(r"^(\w+_SQL)\b", source, re.MULTILINE)}
    assert found == set(STATEMENTS) | COMPILED


def test_each_statement_runs_on_this_database_through_async_sql(transactional_db):
    async def explain_all() -> None:
        try:
            for name in sorted(STATEMENTS):
                sql = statement(name)
                await async_sql.fetchone(f"EXPLAIN {sql}", [None] * sql.count("%s"))
        finally:
            await async_sql.close()

    asyncio.run(explain_all())


def test_the_access_log_row_is_every_column_of_requests_in_order():
    columns = [f.column for f in RequestLog._meta.concrete_fields if not f.primary_key]
    assert list(accesslog.LogRow._fields) == columns
    assert inserted(accesslog._INSERT_SQL) == columns


def test_the_counters_written_are_every_counter_of_their_models():
    assert set(monthly_usage.COUNTERS) == counters(MonthlyUsage)
    assert set(rollups.COUNTERS) == counters(HourlyUsage) == counters(UserTotal)


def callers_of(raw_keys: list[str]) -> list[identity.Caller | None]:
    """Who each key identifies on /v1 (None: refused as unknown or revoked)."""

    async def look_up() -> list[identity.Caller | None]:
        found = []
        try:
            for raw_key in raw_keys:
                request = RequestFactory().get("/v1/models", headers={"X-Gateway-Key": raw_key})
                try:
                    found.append(await identity.identify_by_key(request))
                except GatewayError:
                    found.append(None)
        finally:
            await identity.settle_background_work()
            await async_sql.close()
            await shared_redis.close()  # the callers' version was read on this loop
        return found

    process_state.reset()
    return asyncio.run(look_up())


def test_the_raw_key_lookup_finds_exactly_the_keys_the_orm_calls_active(transactional_db):
    ada, ada_key = trainee("ada", tier="tier2")
    link_codex(ada, "codex-access-ada")
    _, bo_key = trainee("bo")  # no Codex session: the outer join still finds the key
    cy, cy_key = trainee("cy")
    spare, spare_key = ApiKey.objects.issue(cy, name="spare")
    ApiKey.objects.filter(pk=spare.pk).revoke()
    _, dee_key = trainee("dee")
    ApiKey.objects.filter(account__user_id="dee").revoke()
    keys = {"ada": ada_key, "bo": bo_key, "cy": cy_key, "cy, revoked": spare_key, "dee, revoked": dee_key}

    on_v1 = {name: caller and caller.user_id for name, caller in zip(keys, callers_of([*keys.values()]), strict=True)}

    active = set(ApiKey.objects.active().values_list("key_hash", flat=True))
    assert {name: hash_key(raw) in active for name, raw in keys.items()} == {
        name: on_v1[name] is not None for name in keys
    }
    assert on_v1 == {"ada": "ada", "bo": "bo", "cy": "cy", "cy, revoked": None, "dee, revoked": None}
    # Sign-in, the model's property and filters from accounts say the same.
    assert {name: signin.key_of(raw) is not None for name, raw in keys.items()} == {
        name: on_v1[name] is not None for name in keys
    }
    assert all(key.is_active == (key.key_hash in active) for key in ApiKey.objects.all())
    per_account = Account.objects.annotate(active_keys=Count("api_keys", filter=active_key_filter("api_keys__")))
    assert {account.user_id: account.active_keys for account in per_account} == {"ada": 1, "bo": 1, "cy": 1, "dee": 0}


def test_the_raw_key_lookup_reads_the_callers_account_and_codex_session(transactional_db):
    ada, ada_key = trainee("ada", tier="tier2")
    link_codex(ada, "codex-access-ada")

    [found] = callers_of([ada_key])

    assert (found.user_id, found.account_id, found.tier) == ("ada", ada.pk, "tier2")
    assert found.codex.access_token == "codex-access-ada"
    assert found.codex.expires_at == ada.codex_credential.expires_at


def test_the_raw_key_lookup_is_the_orms_own_statement():
    sql, params = (
        ApiKey.objects.active_with_hash("x").order_by().values_list(*identity._KEY_COLUMNS).query.sql_with_params()
    )
    assert (identity._KEY_SQL, params) == (sql, ("x",))


def test_a_batch_lands_as_given_when_its_rows_go_as_arrays(transactional_db):
    """On PostgreSQL an INSERT's rows go as one array per column, in one execution: each
    value (None, a timestamp's microseconds) lands as a row of its own would, and an upsert
    adds to the row already there."""
    at = datetime(2026, 12, 6, 17, 5, 3, 123456, tzinfo=UTC)
    log_rows = [
        accesslog.LogRow(
            "amy",
            "POST",
            "/v1/chat/completions",
            200,
            12,
            10,
            4,
            20,
            30,
            12_345,
            "gpt-4o-mini",
            "ab12cd34",
            at,
            "r-1",
            "main",
            1,
        ),
        accesslog.LogRow(
            "bo",
            "POST",
            "/v1/responses",
            502,
            7,
            None,
            None,
            None,
            None,
            None,
            "",
            "ab12cd34",
            at + timedelta(microseconds=1),
            "r-2",
            "",
            2,
        ),
    ]
    month = date(2026, 12, 1)
    MonthlyUsage.objects.create(user_id="amy", month=month, requests=5, total_tokens=100)
    added = [(user, month, *range(1, len(monthly_usage.COUNTERS) + 1)) for user in ("amy", "bo")]

    async def write() -> None:
        try:
            await async_sql.execute_in_one_transaction(
                [(accesslog._INSERT_SQL, log_rows), (monthly_usage.ADD_SQL, added)]
            )
        finally:
            await async_sql.close()

    asyncio.run(write())

    stored = RequestLog.objects.order_by("request_id").values_list(*accesslog.LogRow._fields)
    assert [accesslog.LogRow(*row) for row in stored] == log_rows
    counts = {row.user_id: row for row in MonthlyUsage.objects.all()}
    assert (counts["amy"].requests, counts["amy"].total_tokens) == (5 + 1, 100 + 2)
    assert (counts["bo"].requests, counts["bo"].total_tokens) == (1, 2)
    if async_sql.on_postgresql():  # the arrays were what went
        assert "unnest(" in async_sql._arrays_cache[accesslog._INSERT_SQL]
        assert "unnest(" in async_sql._arrays_cache[monthly_usage.ADD_SQL]


def test_only_an_insert_whose_parameters_are_all_values_goes_as_arrays():
    for sql in (monthly_usage.RELEASE_SQL, "INSERT INTO t (a, b) VALUES (%s, 1) RETURNING %s"):
        assert asyncio.run(async_sql._as_arrays(None, sql)) is None


def test_an_upsert_batch_naming_one_key_twice_is_refused_for_its_content(transactional_db):
    """As arrays (PostgreSQL) one statement may not update a row twice: the batch is refused
    as a DataError, which the access log answers by writing its rows one by one rather than
    retrying the batch for ever. SQLite runs each row on its own and adds both."""
    month = date(2026, 12, 1)
    twice = [("amy", month, *([1] * len(monthly_usage.COUNTERS)))] * 2

    async def write() -> None:
        try:
            await async_sql.execute_in_one_transaction([(monthly_usage.ADD_SQL, twice)])
        finally:
            await async_sql.close()

    if async_sql.on_postgresql():
        with pytest.raises(DataError):
            asyncio.run(write())
        assert not MonthlyUsage.objects.exists()
    else:
        asyncio.run(write())
        assert MonthlyUsage.objects.get(user_id="amy").requests == 2
