"""Codex tokens are ciphertext in the database, readable through key rotation."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from accounts import crypto
from accounts.models import CodexCredential
from tests.personas import link_codex, trainee

OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def stored_column(credential_id: int) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token, refresh_token FROM accounts_codexcredential WHERE id = %s", [credential_id]
        )
        return cursor.fetchone()


@pytest.mark.django_db
def test_the_database_column_holds_ciphertext_not_the_token(settings):
    settings.GATEWAY_ENCRYPTION_KEYS = [OLD_KEY]
    account, _ = trainee("alice")
    credential = link_codex(account, "plain-access-token", refresh_token="plain-refresh-token")

    access, refresh = stored_column(credential.pk)

    assert "plain-access-token" not in access and "plain-refresh-token" not in refresh
    assert Fernet(OLD_KEY).decrypt(access.encode()) == b"plain-access-token"
    assert CodexCredential.objects.get(pk=credential.pk).access_token == "plain-access-token"


@pytest.mark.django_db
def test_rotation_keeps_tokens_readable_and_retires_the_old_key(settings):
    settings.GATEWAY_ENCRYPTION_KEYS = [OLD_KEY]
    account, _ = trainee("alice")
    credential = link_codex(account, "access-1", refresh_token="refresh-1")
    before = stored_column(credential.pk)

    settings.GATEWAY_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    readable_during = CodexCredential.objects.get(pk=credential.pk).access_token
    call_command("rotate_encryption_keys", stdout=io.StringIO())
    after = stored_column(credential.pk)
    settings.GATEWAY_ENCRYPTION_KEYS = [NEW_KEY]
    rotated = CodexCredential.objects.get(pk=credential.pk)

    assert readable_during == "access-1"
    assert after != before
    assert (rotated.access_token, rotated.refresh_token) == ("access-1", "refresh-1")
    settings.GATEWAY_ENCRYPTION_KEYS = [OLD_KEY]
    with pytest.raises(crypto.InvalidToken):
        CodexCredential.objects.get(pk=credential.pk)
