"""Agents' actions on a conversation (language, status)."""

from __future__ import annotations

import logging

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from inbox.conversations.models import (
    AuditEvent,
    Conversation,
)
from inbox.conversations.realtime import (
    MANAGERS_GROUP,
    publish_on_commit,
    queue_group,
)
from inbox.conversations.services.outbound import ReplyRefused
from inbox.routing.services import conversation_route, queue_assign
from inbox.taskqueue import ASSIGN_WAITING, enqueue_on_commit

logger = logging.getLogger(__name__)


# --- Conversation actions ---------------------------------------------------------------------------------
def conversation_set_language(*, conversation: Conversation, language: str, actor: User) -> Conversation:
    """An agent corrects the language: the conversation moves to that language's queue."""
    language = language.strip().lower()
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        conversation_route(conversation=locked, language=language, actor=actor, reason="corrected by agent")
        publish_on_commit(
            [MANAGERS_GROUP, *([queue_group(locked.queue_id)] if locked.queue_id else [])],
            {
                "type": "conversation.routed",
                "conversation": locked.pk,
                "language": language,
                "queue": locked.queue_id,
            },
        )
    if locked.assignee_id is None and locked.queue_id is not None:
        queue_assign(queue_id=locked.queue_id, conversation_ids=[locked.pk])
        locked.refresh_from_db(fields=["assignee"])
    return locked


def conversation_set_status(*, conversation: Conversation, status: str, actor: User) -> Conversation:
    if status not in Conversation.Status.values:
        raise ReplyRefused(f"status must be one of {', '.join(Conversation.Status.values)}")
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        old = locked.status
        locked.status = status
        locked.resolved_at = timezone.now() if status == Conversation.Status.RESOLVED else None
        locked.save(update_fields=["status", "resolved_at"])
        AuditEvent.objects.create(
            actor=actor, action="conversation.status", conversation=locked, data={"from": old, "to": status}
        )
        if status == Conversation.Status.RESOLVED and locked.queue_id:
            # A slot was freed: give the next waiting conversation of that queue to someone.
            enqueue_on_commit(ASSIGN_WAITING, locked.queue_id)
    return locked
