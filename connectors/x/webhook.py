"""Account Activity webhooks: the CRC challenge, the signature of every POST, and splitting a body into events.

https://docs.x.com/x-api/webhooks/introduction (CRC and signatures) and the Account Activity API docs:

- CRC: X sends ``GET <url>?crc_token=<token>`` when the webhook is registered and about hourly after; we answer
  ``{"response_token": "sha256=" + base64(HMAC-SHA256(key=consumer_secret, msg=crc_token))}``.
- Every event POST carries ``x-twitter-webhooks-signature: sha256=`` + base64(HMAC-SHA256(consumer_secret, raw
  body)). Check it on the raw bytes, in constant time, before parsing the JSON.
- A body holds ``for_user_id`` (the subscribed account: us) and one kind of events: ``direct_message_events``
  (v1.1 DM events, with a ``users`` map), ``tweet_create_events`` (v1.1 tweets: mentions, replies, and our own
  posts), or kinds that carry no customer message (favorite_events, follow_events, typing indicators, read
  receipts, ...), which ``split_webhook`` lists by name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from connectors.base import PermanentError

SIGNATURE_HEADER = "x-twitter-webhooks-signature"
# The same header as Django exposes it in request.META.
SIGNATURE_META_KEY = "HTTP_X_TWITTER_WEBHOOKS_SIGNATURE"
CRC_PARAM = "crc_token"
SOURCE = "account_activity"
# Keys of a body that describe it rather than carry events.
_ENVELOPE_KEYS = frozenset({"for_user_id", "users", "apps", "user_has_blocked", "is_blocked_by", "source"})


def _digest(consumer_secret: str, message: bytes) -> str:
    mac = hmac.new(consumer_secret.encode("utf-8"), message, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(mac).decode("ascii")


# What X sends as a CRC token: a short random string (base64 / URL-safe characters). Nothing else is signed: the
# answer is the HMAC a POST body equal to the token would carry, so signing an arbitrary token (a JSON body of
# events) would let anyone forge a signed webhook delivery. No JSON text fits these characters.
CRC_TOKEN_RE = re.compile(r"[A-Za-z0-9+/=_.~-]{1,256}")


def crc_token_valid(crc_token: str) -> bool:
    return CRC_TOKEN_RE.fullmatch(crc_token) is not None


def crc_response_token(consumer_secret: str, crc_token: str) -> str:
    """``sha256=<base64 HMAC-SHA256(consumer_secret, crc_token)>``. Raises PermanentError for anything that is not
    a token's shape (see CRC_TOKEN_RE)."""
    if not crc_token_valid(crc_token):
        raise PermanentError("a crc_token is 1-256 letters, digits and + / = _ . ~ -")
    return _digest(consumer_secret, crc_token.encode("utf-8"))


def crc_response(consumer_secret: str, crc_token: str) -> dict[str, str]:
    """The JSON body answering X's CRC GET."""
    return {"response_token": crc_response_token(consumer_secret, crc_token)}


def sign(consumer_secret: str, body: bytes) -> str:
    """The ``x-twitter-webhooks-signature`` value X sends for ``body``."""
    return _digest(consumer_secret, body)


def verify_signature(consumer_secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of the signature header against the raw body. False without a consumer secret."""
    if not consumer_secret or not header:
        return False
    expected = sign(consumer_secret, body)
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8", "replace"))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _event_id(event: Mapping[str, Any], where: str) -> str:
    value = event.get("id_str", event.get("id"))
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.isdigit():
        raise PermanentError(f"malformed X webhook: {where}.id must be a numeric id, got {value!r}")
    return value


def _events(payload: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = payload.get(key)
    if not isinstance(value, list):
        raise PermanentError(f"malformed X webhook: field {key!r} must be a list, got {type(value).__name__}")
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise PermanentError(f"malformed X webhook: {key}[{index}] must be an object")
    return value


def split_webhook(payload: Mapping[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """An Account Activity body -> ([(external_id, stored payload)], [names of the event kinds ignored]).

    One stored payload per DM event (``dm:<id>``, with the sender's and recipient's user objects) and per tweet
    (``tweet:<id_str>``), the same external ids as polling gives, so the two paths dedupe. Our own posts and DMs are
    included (X sends them too); ``normalize`` turns them into nothing.
    """
    if not isinstance(payload, Mapping):
        raise PermanentError(f"malformed X webhook: the body must be a JSON object, got {type(payload).__name__}")
    raw_for_user = payload.get("for_user_id")
    for_user_id = str(raw_for_user) if isinstance(raw_for_user, str | int) and raw_for_user != "" else ""
    users = _mapping(payload.get("users"))
    items: list[tuple[str, dict[str, Any]]] = []
    ignored: list[str] = []
    for key in payload:
        if key in _ENVELOPE_KEYS:
            continue
        if key == "direct_message_events":
            for index, event in enumerate(_events(payload, key)):
                event_id = _event_id(event, f"direct_message_events[{index}]")
                create = _mapping(event.get("message_create"))
                target = _mapping(create.get("target"))
                wanted = {str(create.get("sender_id") or ""), str(target.get("recipient_id") or "")}
                involved = {str(uid): user for uid, user in users.items() if str(uid) in wanted}
                stored = {"source": SOURCE, "for_user_id": for_user_id, "direct_message_event": dict(event)}
                stored["users"] = involved
                items.append((f"dm:{event_id}", stored))
        elif key == "tweet_create_events":
            for index, tweet in enumerate(_events(payload, key)):
                tweet_id = _event_id(tweet, f"tweet_create_events[{index}]")
                stored = {"source": SOURCE, "for_user_id": for_user_id, "tweet_create_event": dict(tweet)}
                items.append((f"tweet:{tweet_id}", stored))
        else:
            ignored.append(str(key))
    return items, ignored
