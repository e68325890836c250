"""API channel: a team's own app (mobile app, game client, back office) talks to the inbox over HTTP.

Inbound: the app POSTs customer messages to ``/api/channels/<public id>/events`` signed with the channel's
secret (HMAC-SHA256 of the raw body, header ``X-Switchboard-Signature: sha256=<hex>``).
Outbound: each agent reply is POSTed as JSON to the app's ``callback_url``, signed the same way, with
``Idempotency-Key`` so the app can drop a retried duplicate. The app answers 2xx (optionally ``{"id": ...}``),
429 with Retry-After, or an error. Chatwoot's "API channel" is the same idea.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import requests

from connectors.base import (
    AuthError,
    ConnectorContext,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    RateLimited,
    Sender,
    SendResult,
    TransientError,
    require_str,
)

SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMEOUT = (5.0, 15.0)  # connect, read (seconds)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    return bool(secret) and signature is not None and hmac.compare_digest(sign(secret, body), signature)


def _retry_after(value: str | None, default: float = 60.0) -> float:
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        return max(0.0, when.timestamp() - datetime.now(when.tzinfo).timestamp())


class ApiConnector:
    kind: ClassVar[str] = "api"
    label: ClassVar[str] = "API"
    max_text_length: ClassVar[int] = 10_000
    per_chat_interval: ClassVar[float] = 0.0
    secret_fields: ClassVar[tuple[str, ...]] = ("signing_secret",)

    def __init__(self, *, settings: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext) -> None:
        self.callback_url = str(settings.get("callback_url") or "")
        self.secret = str(secrets.get("signing_secret") or "")
        self.session = requests.Session()

    def normalize(self, payload: Mapping[str, Any]) -> list[InboundMessage]:
        sender = payload.get("sender")
        if not isinstance(sender, Mapping):
            raise PermanentError("field 'sender' must be an object with at least an 'id'")
        language = payload.get("language")
        return [
            InboundMessage(
                external_id=require_str(payload, "id"),
                sender=Sender(
                    handle=require_str(sender, "id"),
                    display_name=str(sender.get("name") or ""),
                    email=str(sender.get("email") or ""),
                ),
                text=require_str(payload, "text", allow_empty=True),
                language_hints=(language,) if isinstance(language, str) and language else (),
            )
        ]

    def send(self, message: OutboundMessage) -> SendResult:
        if not self.callback_url:
            raise PermanentError("this API channel has no callback_url configured")
        body = json.dumps(
            {"id": message.idempotency_key, "recipient": message.recipient, "text": message.text}
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
            SIGNATURE_HEADER: sign(self.secret, body),
        }
        try:
            response = self.session.post(self.callback_url, data=body, headers=headers, timeout=TIMEOUT)
        except requests.ConnectTimeout as exc:
            raise TransientError(f"callback did not accept the connection: {exc}") from exc
        except requests.ReadTimeout as exc:
            raise TransientError("callback timed out after the request was sent", maybe_delivered=True) from exc
        except requests.RequestException as exc:
            raise TransientError(f"callback unreachable: {exc.__class__.__name__}") from exc
        status = response.status_code
        if status == 429:
            raise RateLimited(
                "callback rate limit (429)", retry_after=_retry_after(response.headers.get("Retry-After"))
            )
        if status in (401, 403):
            raise AuthError(f"callback refused our signature ({status})")
        if status >= 500:
            raise TransientError(f"callback answered {status}")
        if status >= 400:
            raise PermanentError(f"callback rejected the message ({status}): {response.text[:200]}")
        provider_id = message.idempotency_key
        try:
            data = response.json()
            if isinstance(data, dict) and data.get("id"):
                provider_id = str(data["id"])
        except ValueError:
            pass
        return SendResult(provider_id=provider_id)
