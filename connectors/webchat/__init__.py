"""Web chat: visitors post through our own API (inbox/webchat), so there is no provider to call.

Inbound events are the visitor's posts as the web chat API stored them; a reply is "sent" by publishing it
to the visitor's open sockets — the visitor's REST history reads the stored message either way.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from connectors.base import (
    ConnectorContext,
    InboundAttachment,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    Sender,
    SendResult,
    require_str,
)


class WebchatConnector:
    kind: ClassVar[str] = "webchat"
    label: ClassVar[str] = "Web chat"
    max_text_length: ClassVar[int] = 10_000
    per_chat_interval: ClassVar[float] = 0.0
    secret_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, settings: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext) -> None:
        self.settings = settings
        self.context = context

    def normalize(self, payload: Mapping[str, Any]) -> list[InboundMessage]:
        visitor = require_str(payload, "visitor")
        client_id = require_str(payload, "client_id")
        text = require_str(payload, "text", allow_empty=True)
        sent_at = None
        if isinstance(payload.get("sent_at"), str):
            try:
                sent_at = datetime.fromisoformat(payload["sent_at"])
            except ValueError as exc:
                raise PermanentError(f"field 'sent_at' is not an ISO 8601 time: {payload['sent_at']!r}") from exc
        hints = tuple(h for h in (payload.get("accept_language"),) if isinstance(h, str) and h)
        attachments = []
        for index, item in enumerate(payload.get("attachments") or [], start=1):
            if not isinstance(item, Mapping) or not isinstance(item.get("content_b64"), str):
                raise PermanentError(f"attachment {index} has no content_b64")
            try:
                content = base64.b64decode(item["content_b64"], validate=True)
            except ValueError as exc:
                raise PermanentError(f"attachment {index} is not valid base64") from exc
            attachments.append(
                InboundAttachment(
                    filename=str(item.get("filename") or f"file-{index}"),
                    content_type=str(item.get("content_type") or "application/octet-stream"),
                    content=content,
                )
            )
        return [
            InboundMessage(
                external_id=f"{visitor}:{client_id}",
                sender=Sender(
                    handle=visitor,
                    display_name=str(payload.get("name") or ""),
                    email=str(payload.get("email") or ""),
                ),
                text=text,
                sent_at=sent_at,
                language_hints=hints,
                attachments=tuple(attachments),
                metadata={"client_id": client_id},
            )
        ]

    def send(self, message: OutboundMessage) -> SendResult:
        """Publish the reply to the visitor's open widgets (every tab). ``metadata["event"]`` is the message as the
        visitor API shows it; the widget drops what it already has, so a retried send shows once."""
        if self.context.publish is not None:
            event = message.metadata.get("event") or {
                "id": message.idempotency_key,
                "from": "agent",
                "text": message.text,
            }
            self.context.publish(message.recipient, {"type": "message", "message": dict(event)})
        return SendResult(provider_id=message.idempotency_key)
