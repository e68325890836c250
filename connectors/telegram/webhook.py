"""Webhook authentication: the secret Telegram repeats in a header of every webhook request.

https://core.telegram.org/bots/api#setwebhook : ``secret_token`` "A secret token to be sent in a header
“X-Telegram-Bot-Api-Secret-Token” in every webhook request, 1-256 characters. Only characters A-Z, a-z, 0-9, _
and - are allowed."
"""

from __future__ import annotations

import hmac
import re
import secrets

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name, not a secret)
# The same header as Django exposes it in request.META.
SECRET_META_KEY = "HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN"  # noqa: S105
SECRET_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def verify_webhook_secret(expected: str, received: str | None) -> bool:
    """Constant-time comparison of the configured secret with the header's value.

    An empty (unconfigured) expected secret never verifies: a channel without a secret accepts no webhook.
    """
    if not expected or received is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), received.encode("utf-8"))


def generate_webhook_secret() -> str:
    """A fresh secret: 256 random bits in the alphabet Telegram allows (43 characters)."""
    return secrets.token_urlsafe(32)


def is_valid_secret_token(value: str) -> bool:
    return bool(SECRET_TOKEN_RE.match(value))
