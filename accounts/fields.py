from django.db import models

from accounts import crypto


class EncryptedTextField(models.TextField):
    """Text stored as Fernet ciphertext; Python code sees plaintext.

    Ciphertext differs on every save, so the column cannot be searched or filtered.
    """

    def from_db_value(self, value, expression, connection):
        # Empty stays empty (not None): a row read and saved again must not become NULL.
        return value if value is None or value == "" else crypto.decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return value if value is None or value == "" else crypto.encrypt(value)
