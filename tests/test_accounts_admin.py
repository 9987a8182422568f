"""Operators manage accounts, keys, Codex sessions and tiers from admin."""

import re

import pytest

from accounts.models import Account, ApiKey, CodexCredential, TierChange, hash_key
from tests.personas import link_codex, trainee

pytestmark = pytest.mark.django_db


def test_anonymous_visitors_are_sent_to_log_in(client):
    for url in ("/admin/accounts/account/", "/admin/accounts/apikey/", "/admin/accounts/codexcredential/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_the_account_list_shows_active_keys_without_a_query_per_row(admin_client, django_assert_max_num_queries):
    for user in ("alice", "bob", "carol"):
        trainee(user)
    ApiKey.objects.issue(Account.objects.get(user_id="alice"))

    with django_assert_max_num_queries(8):
        response = admin_client.get("/admin/accounts/account/")

    assert response.status_code == 200
    rows = {row.user_id: row.active_key_count for row in response.context["cl"].result_list}
    assert rows == {"alice": 2, "bob": 1, "carol": 1}


def test_issuing_a_key_shows_it_once(admin_client):
    account, _ = trainee("alice")

    response = admin_client.post(
        "/admin/accounts/account/", {"action": "issue_api_key", "_selected_action": [account.pk]}
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    [raw_key] = re.findall(r"gk_[A-Za-z0-9_-]{43}", response.content.decode())
    assert ApiKey.objects.filter(account=account, key_hash=hash_key(raw_key)).exists()
    assert raw_key not in admin_client.get(f"/admin/accounts/account/{account.pk}/change/").content.decode()
    assert raw_key not in admin_client.get("/admin/accounts/apikey/").content.decode()


def test_revoking_keys_reports_back(admin_client):
    account, _ = trainee("alice")
    key = ApiKey.objects.get(account=account)

    response = admin_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )

    assert "Revoked 1 key(s)." in response.content.decode()
    key.refresh_from_db()
    assert not key.is_active


def test_codex_tokens_are_write_only(admin_client):
    account, _ = trainee("alice")
    credential = link_codex(account, "secret-access-token", refresh_token="secret-refresh-token")
    url = f"/admin/accounts/codexcredential/{credential.pk}/change/"

    page = admin_client.get(url).content.decode()
    listing = admin_client.get("/admin/accounts/codexcredential/").content.decode()
    kept = admin_client.post(
        url,
        {
            "account": account.pk,
            "access_token": "",
            "refresh_token": "",
            "expires_at_0": "2031-01-01",
            "expires_at_1": "00:00:00",
        },
    )
    after_blank_save = CodexCredential.objects.get(pk=credential.pk)
    admin_client.post(
        url,
        {
            "account": account.pk,
            "access_token": "new-access",
            "refresh_token": "",
            "expires_at_0": "2031-01-01",
            "expires_at_1": "00:00:00",
        },
    )

    for text in (page, listing):
        assert "secret-access-token" not in text and "secret-refresh-token" not in text
    assert "expires in" in listing
    assert kept.status_code == 302
    assert (after_blank_save.access_token, after_blank_save.refresh_token) == (
        "secret-access-token",
        "secret-refresh-token",
    )
    assert CodexCredential.objects.get(pk=credential.pk).access_token == "new-access"


def test_a_tier_changed_in_admin_lands_in_the_history(admin_client, admin_user):
    account, _ = trainee("alice", tier="tier1")

    response = admin_client.post(
        f"/admin/accounts/account/{account.pk}/change/",
        {
            "user_id": "alice",
            "email": "",
            "name": "",
            "tier": "tier3",
            "stripe_customer_id": "",
            "api_keys-TOTAL_FORMS": "1",
            "api_keys-INITIAL_FORMS": "1",
            "api_keys-0-id": ApiKey.objects.get(account=account).pk,
            "api_keys-0-account": account.pk,
            "tier_changes-TOTAL_FORMS": "0",
            "tier_changes-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    assert Account.objects.get(pk=account.pk).tier == "tier3"
    change = TierChange.objects.get(account=account)
    assert (change.old_tier, change.new_tier, change.source, change.reference) == (
        "tier1",
        "tier3",
        "admin",
        admin_user.username,
    )
