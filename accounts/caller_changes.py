"""The table version of who callers are (gateway_project.lib.table_versions): every change to
an API key, an account or a Codex session bumps it, and each worker then reads its cached
key lookups again (accounts.identity). A revoked key stops, a tier or a newly linked
session applies, within CHANGE_CHECK_MS on every worker."""

from gateway_project.lib import table_versions

TABLE = "callers"


def follow_changes() -> None:
    """Have every save and delete of a key, account or Codex session through the ORM (admin,
    shell, the account page, Stripe's webhooks, token refreshes) reach the workers."""
    from accounts.models import Account, ApiKey, CodexCredential

    for model in (ApiKey, Account, CodexCredential):
        table_versions.bump_on_change(model, TABLE)


def changed() -> None:
    """Tell the workers callers changed, in the transaction of a change the ORM sends no
    signal for (QuerySet.update(), bulk_create())."""
    table_versions.bump(TABLE)
