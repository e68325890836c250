"""Reads for web chat. Every lookup is scoped by the visitor's token: a visitor sees only its own rows."""

from __future__ import annotations

from django.db.models import QuerySet

from inbox.conversations.models import Message
from inbox.webchat.models import Visitor
from inbox.webchat.services import token_hash


def visitor_for_token(*, token: str) -> Visitor | None:
    if not token or len(token) > 200:
        return None
    return (
        Visitor.objects.select_related("account", "identity")
        .filter(token_hash=token_hash(token), account__is_active=True)
        .first()
    )


def visitor_messages(*, visitor: Visitor, after_id: int = 0, limit: int = 200) -> QuerySet[Message]:
    return (
        Message.objects.filter(conversation__identity_id=visitor.identity_id, id__gt=after_id)
        .exclude(direction=Message.Direction.NOTE)
        .select_related("delivery")
        .order_by("id")[:limit]
    )
