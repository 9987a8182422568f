"""Every change to who a caller is (a key, an account, a Codex session) bumps the callers'
table version, so each worker reads its cached key lookups again within CHANGE_CHECK_MS."""

import asyncio
from io import StringIO

import pytest
from django.core.management import call_command

from accounts import caller_changes, signin
from accounts.models import Account, ApiKey, CodexCredential
from gateway_project.lib import async_sql, process_state, shared_redis, table_versions
from tests.personas import link_codex, trainee

pytestmark = pytest.mark.django_db(transaction=True)


def version() -> int | None:
    async def main():
        try:
            return await table_versions.read(caller_changes.TABLE)
        finally:
            await shared_redis.close()
            await async_sql.close()

    process_state.reset()
    return asyncio.run(main())


def _pin(account: Account, tmp_path) -> None:
    path = tmp_path / "routes.toml"
    routes = '[upstreams.bridge]\nbase_url = "http://127.0.0.1:9/"\n\n[pins.accounts]\n'
    path.write_text(f'{routes}{account.user_id} = "bridge"\n')
    call_command("load_routes", str(path), stdout=StringIO())


CHANGES = {
    "a key issued": lambda account, tmp_path: ApiKey.objects.issue(account),
    "keys revoked": lambda account, tmp_path: ApiKey.objects.filter(account=account).revoke(),
    "a tier changed": lambda account, tmp_path: account.set_tier("pro", source="admin"),
    "an account saved": lambda account, tmp_path: account.save(),
    "a Codex session linked": lambda account, tmp_path: link_codex(account, "token"),
    "Codex sessions removed": lambda account, tmp_path: (
        link_codex(account, "token"),
        CodexCredential.objects.filter(account=account).delete(),
    ),
    "an account pinned by load_routes": _pin,
    "an account deleted": lambda account, tmp_path: account.delete(),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_a_caller_bumps_the_callers_version(change, tmp_path):
    account, _ = trainee("alice")
    before = version()

    CHANGES[change](account, tmp_path)

    assert version() != before


def test_signing_in_with_a_key_changes_no_caller():
    _, raw_key = trainee("alice")
    before = version()

    assert signin.key_of(raw_key) is not None  # records when the account signed in

    assert version() == before
