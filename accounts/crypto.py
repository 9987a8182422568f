"""Encryption at rest for OAuth tokens: Fernet under GATEWAY_ENCRYPTION_KEYS.

The first key encrypts; every key decrypts, so a new key is put first, everything is
re-encrypted (`manage.py rotate_encryption_keys`), then old keys can be dropped.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = ["InvalidToken", "decrypt", "encrypt", "rotate"]


@cache
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        # Fallback so a fresh machine works; system check gateway.W002 warns about it.
        derived = hashlib.sha256(b"organized-gateway token encryption:" + secret_key.encode()).digest()
        keys = (base64.urlsafe_b64encode(derived).decode(),)
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.GATEWAY_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _current().decrypt(token.encode()).decode()


def rotate(token: str) -> str:
    """The same plaintext, encrypted under the newest key."""
    return _current().rotate(token.encode()).decode()
