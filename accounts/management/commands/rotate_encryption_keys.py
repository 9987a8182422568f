from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.fields import EncryptedTextField
from gateway_project.lib.wording import counted


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (Codex tokens, upstreams' API keys) under the first key of "
        "GATEWAY_ENCRYPTION_KEYS. Put the new key first, keep the old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args, **options):
        if not settings.GATEWAY_ENCRYPTION_KEYS:
            self.stderr.write(
                "GATEWAY_ENCRYPTION_KEYS is not set: re-encrypting under the key derived from SECRET_KEY."
            )
        counts = []
        with transaction.atomic():
            # Every model with an encrypted column, whichever app holds it (accounts imports none).
            for model in apps.get_models():
                fields = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
                if not fields:
                    continue
                count = 0
                # Loading decrypts with whichever key fits; saving encrypts with the first.
                for row in model.objects.select_for_update().order_by("pk"):
                    row.save(update_fields=fields)
                    count += 1
                counts.append(counted(count, str(model._meta.verbose_name)))
        self.stdout.write(f"Re-encrypted the secrets of {', '.join(counts)} under the newest key.")
