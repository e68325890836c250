"""Channel secrets encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256, from ``cryptography``).

Keys come from ``FIELD_ENCRYPTION_KEYS`` (newest first, so keys can be rotated: old ones still decrypt); when
unset, one key is derived from ``SECRET_KEY`` with HKDF so a fresh install works without configuration.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models


@functools.cache
def _fernet() -> MultiFernet:
    keys = list(settings.FIELD_ENCRYPTION_KEYS)
    if not keys:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"switchboard-field-encryption").derive(
            settings.SECRET_KEY.encode()
        )
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return MultiFernet([Fernet(k) for k in keys])


def encrypt_text(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt_text(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("channel secret cannot be decrypted: wrong or rotated-out FIELD_ENCRYPTION_KEYS") from exc


class EncryptedJSONField(models.TextField):
    """A JSON object stored as one Fernet token; the database never sees the clear text."""

    description = "JSON encrypted at rest"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return {}
        return json.loads(decrypt_text(value))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        if value in (None, ""):
            return {}
        return json.loads(decrypt_text(value))

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            value = {}
        return encrypt_text(json.dumps(value, sort_keys=True))
