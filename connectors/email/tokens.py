"""Signed reply tokens: which conversation a customer's reply belongs to, without trusting the subject.

A token is ``sb.{conversation_id}.{mac}`` where ``mac`` is HMAC-SHA256(key, "sb:{conversation_id}") truncated
to 120 bits and written in lower-case base32 (24 characters). Base32 rather than base64url because the token
travels in an address local part (``support+sb.42.xxx@example.com``), and some MTAs lower-case local parts;
a case-insensitive alphabet survives that. It is url-safe and valid in a Message-ID (RFC 5322 dot-atom).

It travels in:

- the Message-ID of every mail we send: ``<sb.{id}.{mac}.{unique}@{domain}>`` — a mail client answering puts it
  in In-Reply-To and References (RFC 5322 §3.6.4). ``unique`` keeps Message-IDs unique per message
  (RFC 5322 §3.6.4 requires it) while staying stable across retries of one delivery;
- optionally a plus-addressed Reply-To: ``support+sb.{id}.{mac}@domain`` (RFC 5233 subaddressing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable

PREFIX = "sb"
MAC_BYTES = 15  # 120 bits -> exactly 24 base32 characters, no padding
MAC_CHARS = 24
# The token anywhere inside a Message-ID, an address or a bare value. Case-insensitive (see module docstring).
TOKEN_RE = re.compile(r"(?<![A-Za-z0-9])sb\.(\d{1,18})\.([a-z2-7]{24})(?![a-z2-7])", re.IGNORECASE)
_UNIQUE_RE = re.compile(r"[^A-Za-z0-9_-]")


def _mac(conversation_id: int, key: bytes) -> str:
    digest = hmac.new(key, f"{PREFIX}:{conversation_id}".encode(), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.b32encode(digest).decode("ascii").lower()


def make_token(conversation_id: int, key: bytes) -> str:
    """``sb.{conversation_id}.{mac}``."""
    if conversation_id < 0:
        raise ValueError("conversation_id must be >= 0")
    if not key:
        raise ValueError("the token key must not be empty")
    return f"{PREFIX}.{int(conversation_id)}.{_mac(conversation_id, key)}"


def read_token(value: str, key: bytes) -> int | None:
    """The conversation id of a genuine token found in ``value``, else None (absent, forged or tampered).

    ``value`` may be the bare token, a Message-ID (with or without <>), or a plus-address.
    """
    if not value or not key:
        return None
    for match in TOKEN_RE.finditer(value):
        conversation_id = int(match.group(1))
        expected = _mac(conversation_id, key)
        if hmac.compare_digest(expected.encode(), match.group(2).lower().encode()):
            return conversation_id
    return None


def make_message_id(conversation_id: int, key: bytes, *, domain: str, unique: str) -> str:
    """``<sb.{id}.{mac}.{unique}@{domain}>`` — pass a value stable across retries (the delivery's idempotency
    key) as ``unique``, so every attempt of one delivery sends the same Message-ID."""
    cleaned = _UNIQUE_RE.sub("", unique)[:64]
    if not cleaned:
        raise ValueError("unique must contain letters or digits")
    if not domain or "@" in domain or any(c in domain for c in "<> "):
        raise ValueError(f"bad domain for a Message-ID: {domain!r}")
    return f"<{make_token(conversation_id, key)}.{cleaned}@{domain}>"


def reply_address(address: str, conversation_id: int, key: bytes) -> str:
    """``support@example.com`` -> ``support+sb.{id}.{mac}@example.com`` (RFC 5233 subaddress)."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise ValueError(f"not an e-mail address: {address!r}")
    local = local.split("+", 1)[0]
    return f"{local}+{make_token(conversation_id, key)}@{domain}"


def find_tokens(values: Iterable[str]) -> list[str]:
    """Candidate tokens (``sb.{id}.{mac}``, lower-cased, unverified, deduplicated, in order) in ``values``."""
    found: list[str] = []
    for value in values:
        for match in TOKEN_RE.finditer(value or ""):
            token = f"{PREFIX}.{int(match.group(1))}.{match.group(2).lower()}"
            if token not in found:
                found.append(token)
    return found
