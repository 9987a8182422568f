from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import CodexCredential
from gateway_project.lib.wording import counted


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored token under the first key of GATEWAY_ENCRYPTION_KEYS. "
        "Put the new key first, keep the old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args, **options):
        if not settings.GATEWAY_ENCRYPTION_KEYS:
            self.stderr.write(
                "GATEWAY_ENCRYPTION_KEYS is not set: re-encrypting under the key derived from SECRET_KEY."
            )
        count = 0
        with transaction.atomic():
            # Loading decrypts with whichever key fits; saving encrypts with the first.
            for credential in CodexCredential.objects.select_for_update().order_by("pk"):
                credential.save(update_fields=["access_token", "refresh_token"])
                count += 1
        self.stdout.write(f"Re-encrypted the tokens of {counted(count, 'Codex credential')} under the newest key.")
