"""Reads for web chat. Every lookup is scoped by the visitor's token: a visitor sees only its own rows."""

from __future__ import annotations

import math
from datetime import timedelta
from statistics import median
from typing import Any

from django.db.models import F
from django.utils import timezone

from inbox.conversations.models import Attachment, ChannelAccount, Conversation, Message
from inbox.conversations.public import agent_public_name
from inbox.routing.models import AgentProfile
from inbox.routing.selectors import configured_languages
from inbox.webchat.models import Visitor, VisitorToken
from inbox.webchat.services import (
    ATTACHMENT_TYPES,
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    token_hash,
    visitor_conversation,
    webchat_email_account,
)

# Used for the expected wait when the queue has too little history of its own.
DEFAULT_RESPONSE_SECONDS = 180
PRECHAT_CHOICES = ("off", "optional", "required")


def visitor_for_token(*, token: str) -> Visitor | None:
    if not token or len(token) > 200:
        return None
    digest = token_hash(token)
    visitors = Visitor.objects.select_related("account", "identity", "identity__contact").filter(
        account__is_active=True
    )
    visitor = visitors.filter(token_hash=digest).first()
    if visitor is None:
        extra = VisitorToken.objects.filter(token_hash=digest).values_list("visitor_id", flat=True).first()
        visitor = visitors.filter(pk=extra).first() if extra else None
    return visitor


def visitor_messages(*, visitor: Visitor, after_id: int = 0, limit: int = 200) -> list[Message]:
    """The next page after the message id the widget has seen, in timeline order (the order they were received).

    Pages go by id, which is what the widget remembers; within a page the messages are in timeline order.
    """
    page = list(
        Message.objects.filter(conversation__identity_id=visitor.identity_id, id__gt=after_id)
        .exclude(direction=Message.Direction.NOTE)
        .select_related("author")
        .prefetch_related("attachments")
        .order_by("id")[:limit]
    )
    return sorted(page, key=lambda m: (m.created_at, m.pk))


def visitor_attachment(*, visitor: Visitor, attachment_id: int) -> Attachment | None:
    """One of the visitor's own conversation's files (never an internal note's)."""
    return (
        Attachment.objects.filter(
            pk=attachment_id,
            message__conversation__identity_id=visitor.identity_id,
            message__direction__in=[Message.Direction.INBOUND, Message.Direction.OUTBOUND],
        )
        .select_related("message")
        .first()
    )


def agents_online(*, queue_id: int | None = None) -> bool:
    online = AgentProfile.objects.filter(presence=AgentProfile.Presence.ONLINE)
    if queue_id is not None:
        online = online.filter(queues=queue_id)
    return online.exists()


def _typical_response_seconds(queue_id: int) -> float:
    """The median time to first response of the queue's last 50 answered conversations (this week)."""
    since = timezone.now() - timedelta(days=7)
    waits = [
        d.total_seconds()
        for d in Conversation.objects.filter(queue_id=queue_id, first_response_at__isnull=False, created_at__gte=since)
        .order_by("-first_response_at")
        .annotate(wait=F("first_response_at") - F("created_at"))
        .values_list("wait", flat=True)[:50]
        if d is not None
    ]
    return median(waits) if len(waits) >= 5 else DEFAULT_RESPONSE_SECONDS


def visitor_status(*, visitor: Visitor) -> dict[str, Any]:
    """What the widget shows: is anyone online, is someone on it, else the place in the queue and a wait estimate."""
    conversation = visitor_conversation(visitor)
    queue_id = conversation.queue_id if conversation is not None else None
    status: dict[str, Any] = {
        "agents_online": agents_online(queue_id=queue_id) if queue_id else agents_online(),
        "assigned": False,
        "agent": None,
        "queue": {"position": None, "expected_wait_seconds": None},
        "emailed": bool(visitor.email) and webchat_email_account(visitor.account) is not None,
    }
    if conversation is None:
        return status
    if conversation.assignee_id is not None:
        assignee = conversation.assignee
        status["assigned"] = True
        status["agent"] = agent_public_name(assignee)
        return status
    if queue_id is None or conversation.waiting_since is None:
        return status
    ahead = Conversation.objects.filter(
        queue_id=queue_id,
        status=Conversation.Status.OPEN,
        assignee__isnull=True,
        waiting_since__lt=conversation.waiting_since,
    ).count()
    position = ahead + 1
    online = AgentProfile.objects.filter(presence=AgentProfile.Presence.ONLINE, queues=queue_id).count()
    rounds = math.ceil(position / max(online, 1))
    status["queue"] = {
        "position": position,
        "expected_wait_seconds": int(rounds * _typical_response_seconds(queue_id)) if online else None,
    }
    return status


def prechat_settings(account: ChannelAccount) -> dict[str, str]:
    raw = account.settings.get("prechat") or {}
    result = {}
    for field in ("name", "email"):
        value = str(raw.get(field, "off") if isinstance(raw, dict) else "off")
        result[field] = value if value in PRECHAT_CHOICES else "off"
    return result


def channel_config(*, account: ChannelAccount, max_text: int) -> dict[str, Any]:
    return {
        "channel": {"name": str(account.settings.get("team_name") or account.name), "public_key": account.public_id},
        "languages": sorted(configured_languages()),
        "prechat": prechat_settings(account),
        "agents_online": agents_online(),
        "attachments": {"max_bytes": MAX_ATTACHMENT_BYTES, "max_files": MAX_ATTACHMENTS, "types": ATTACHMENT_TYPES},
        "identity_verification": bool(account.secrets.get("identity_secret")),
        "email_fallback": webchat_email_account(account) is not None,
        "max_text": max_text,
    }
