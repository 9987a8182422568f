"""The contract of table versions, run against each backend: a committed change reads as a
new version, a rolled-back one does not, and an unreachable backend reads as None (logged
once) without failing the change or the caller."""

import asyncio
import contextlib
import logging

import pytest
from django.db import transaction

from gateway_project.lib import async_sql, process_state, shared_redis, table_versions
from tests.servers import closed_port_url


def read(name: str) -> int | None:
    async def main():
        try:
            return await table_versions.read(name)
        finally:
            await shared_redis.close()
            await async_sql.close()

    return asyncio.run(main())


@pytest.fixture(params=["database", "redis"])
def backend(request, settings, transactional_db):
    process_state.reset()
    if request.param == "database":
        settings.REDIS_URL = None
    elif not settings.REDIS_URL:
        settings.REDIS_URL = request.getfixturevalue("private_redis").url
    return request.param


def test_a_committed_change_reads_as_a_new_version(backend):
    before = read("contract")
    again = read("contract")
    with transaction.atomic():
        table_versions.bump("contract")
    after = read("contract")

    assert before == again is not None
    assert after is not None and after != before


def test_changes_in_one_transaction_make_one_bump_once_it_commits(backend):
    before = read("contract")
    with transaction.atomic():
        with contextlib.suppress(RuntimeError), transaction.atomic():
            table_versions.bump("contract")
            raise RuntimeError("this savepoint rolls back, and its bump with it")
        for _ in range(3):
            table_versions.bump("contract")
        during = read("contract")

    assert (during, read("contract")) == (before, before + 1)


def test_a_change_rolled_back_leaves_the_version_as_it_was(backend):
    before = read("contract")
    with pytest.raises(RuntimeError), transaction.atomic():
        table_versions.bump("contract")
        raise RuntimeError("the change failed")

    assert read("contract") == before


def test_tables_have_versions_of_their_own(backend):
    other = read("contract-other")
    with transaction.atomic():
        table_versions.bump("contract")

    assert read("contract-other") == other


def test_an_unreachable_redis_reads_as_none_and_is_reported_once(settings, transactional_db, caplog):
    process_state.reset()
    settings.REDIS_URL = closed_port_url().replace("http", "redis")
    caplog.set_level(logging.WARNING, logger="gateway_project.lib.table_versions")

    with transaction.atomic():
        table_versions.bump("contract")  # the change commits all the same
    versions = [read("contract"), read("contract")]

    assert versions == [None, None]
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 2, reports
    assert reports[0].startswith("table versions: contract changed, but Redis could not be told")
    assert reports[1].startswith("table versions: Redis is unreachable (ConnectionError")
