"""Routing: a conversation goes to its language's queue and, when someone can take it, to an agent."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from inbox.conversations.models import AuditEvent, Conversation
from inbox.conversations.realtime import (
    MANAGERS_GROUP,
    agent_group,
    collect_on_commit,
    publish_on_commit,
    queue_group,
    visitor_group,
)
from inbox.routing import langid
from inbox.routing.models import AgentProfile, AgentQueue
from inbox.routing.selectors import configured_languages, queue_for_language
from inbox.taskqueue import ASSIGN_WAITING, enqueue_on_commit

logger = logging.getLogger(__name__)

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def language_detect(*, text: str, declared: tuple[str, ...] = (), conversation_language: str = "") -> langid.Detection:
    """The one entry point the pipeline uses: text + channel hints + the conversation's language so far."""
    hints = langid.Hints(declared=declared, conversation=conversation_language or None)
    return langid.detect(text, hints, languages=configured_languages())


def conversation_route(
    *,
    conversation: Conversation,
    language: str,
    actor: User | None = None,
    reason: str = "detected",
) -> bool:
    """Put the conversation in its language's queue (the fallback queue when the language has none).

    Returns True when the queue changed. The caller holds the conversation row (it is saved here).
    An assignee who does not serve the new queue is released, so the conversation reaches someone who can read it.
    """
    queue_id = queue_for_language(language)
    changed_language = conversation.language != language
    changed_queue = conversation.queue_id != queue_id
    if not (changed_language or changed_queue):
        return False
    old = {"language": conversation.language, "queue": conversation.queue_id}
    conversation.language = language
    conversation.queue_id = queue_id
    fields = ["language", "queue"]
    if changed_queue and conversation.assignee_id and queue_id is not None:
        serves = AgentProfile.objects.filter(user_id=conversation.assignee_id, queues=queue_id).exists()
        if not serves:
            old["assignee"] = conversation.assignee_id
            conversation.assignee = None
            fields.append("assignee")
    conversation.save(update_fields=fields)
    AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        action="conversation.routed",
        conversation=conversation,
        data={"reason": reason, "from": old, "to": {"language": language, "queue": queue_id}},
    )
    return changed_queue


def queue_assign(*, queue_id: int, conversation_ids: Iterable[int] | None = None, limit: int = 200) -> list[int]:
    """Hand unassigned open conversations of a queue to its online agents with room; returns the ids assigned.

    ``conversation_ids`` narrows it to those conversations (just ingested); None means the queue's waiting line,
    highest priority then longest waiting first. Runs in its own short transaction and always locks the
    queue's agent rows first (in id order), then the conversations (SKIP LOCKED: one that an ingest batch holds
    is assigned by that batch's own pass after it commits). One lock order everywhere means two workers can
    never deadlock here, and counting loads under the agent locks means no agent is given more than capacity.
    """
    with transaction.atomic(), collect_on_commit():
        agents = list(
            AgentProfile.objects.select_for_update(of=("self",))
            .filter(queues=queue_id, presence=AgentProfile.Presence.ONLINE, user__is_active=True)
            .order_by("id")
            .values_list("user_id", "capacity", "presence_changed_at")
        )
        if not agents:
            return []
        loads = dict(
            Conversation.objects.filter(
                assignee_id__in=[a[0] for a in agents],
                status__in=[Conversation.Status.OPEN, Conversation.Status.PENDING],
            )
            .values_list("assignee_id")
            .annotate(n=Count("id"))
            .values_list("assignee_id", "n")
        )
        room = {user_id: capacity - loads.get(user_id, 0) for user_id, capacity, _ in agents}
        if max(room.values()) <= 0:
            return []
        since = {user_id: changed or _EPOCH for user_id, _, changed in agents}
        waiting = (
            Conversation.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("identity")
            .filter(queue_id=queue_id, assignee__isnull=True, status=Conversation.Status.OPEN)
        )
        if conversation_ids is not None:
            waiting = waiting.filter(pk__in=list(conversation_ids))
        assigned: list[int] = []
        for conversation in waiting.order_by("-priority", "waiting_since", "id")[:limit]:
            free = [(-room[u], since[u], u) for u in room if room[u] > 0]
            if not free:
                break
            # The least-loaded agent (most room left), ties to whoever has been online longest.
            user_id = min(free)[2]
            room[user_id] -= 1
            conversation.assignee_id = user_id
            conversation.save(update_fields=["assignee"])
            AuditEvent.objects.create(
                action="conversation.assigned", conversation=conversation, data={"to": user_id, "auto": True}
            )
            publish_on_commit(
                [agent_group(user_id), queue_group(queue_id), MANAGERS_GROUP],
                {"type": "conversation.assigned", "conversation": conversation.pk, "assignee": user_id},
            )
            if conversation.identity.kind == "webchat":
                # The visitor's widget stops showing a place in the queue.
                publish_on_commit(
                    [visitor_group(conversation.identity.handle)],
                    {"type": "status", "assigned": True, "queue": {"position": None, "expected_wait_seconds": None}},
                )
            assigned.append(conversation.pk)
    return assigned


def assign_waiting(*, queue_id: int, limit: int = 200) -> int:
    """Give a queue's waiting line to agents who have room (an agent came online, a conversation closed)."""
    return len(queue_assign(queue_id=queue_id, limit=limit))


def agent_set_presence(*, user: User, presence: str) -> AgentProfile:
    if presence not in AgentProfile.Presence.values:
        raise ValueError(f"presence must be one of {', '.join(AgentProfile.Presence.values)}")
    with transaction.atomic():
        profile = AgentProfile.objects.select_for_update().get(user=user)
        if profile.presence != presence:
            profile.presence = presence
            profile.presence_changed_at = timezone.now()
            profile.save(update_fields=["presence", "presence_changed_at"])
            if presence == AgentProfile.Presence.ONLINE:
                for queue_id in profile.queues.values_list("id", flat=True):
                    enqueue_on_commit(ASSIGN_WAITING, queue_id)
    return profile


def queue_ensure_fallback() -> AgentQueue:
    queue, _ = AgentQueue.objects.get_or_create(is_fallback=True, defaults={"name": "Other languages", "language": ""})
    return queue


__all__ = [
    "agent_set_presence",
    "assign_waiting",
    "conversation_route",
    "language_detect",
    "queue_assign",
    "queue_ensure_fallback",
]
