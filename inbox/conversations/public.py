"""A message as a customer may see it (the web chat widget): no internal fields, no notes, no agent ids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.urls import reverse

from inbox.conversations.models import Attachment, Message


def agent_public_name(user: Any) -> str | None:
    """The name a customer may see for an agent: the first name, if the agent has one. Never the username: it is
    half of the agent's sign-in, and a visitor who knows it can lock the account out with wrong passwords."""
    return (getattr(user, "first_name", "") or None) if user is not None else None


def author_name(message: Message) -> str | None:
    return agent_public_name(message.author)


def message_public_json(message: Message, attachments: Iterable[Attachment] | None = None) -> dict[str, Any]:
    """``attachments``: the message's files when the caller already has them (saves a query on hot paths)."""
    inbound = message.direction == Message.Direction.INBOUND
    return {
        "id": message.pk,
        "from": "visitor" if inbound else "agent",
        "text": message.text,
        "client_id": message.external_id.partition(":")[2] if inbound else None,
        "created_at": message.created_at.isoformat(),
        "author": None if inbound else author_name(message),
        "attachments": [
            {
                "id": a.pk,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "url": reverse("webchat-attachment", kwargs={"attachment_id": a.pk}),
            }
            for a in (message.attachments.all() if attachments is None else attachments)
        ],
    }
