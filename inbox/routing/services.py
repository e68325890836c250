"""Routing: a conversation goes to its language's queue and, when someone can take it, to an agent."""

from __future__ import annotations

import logging

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from inbox.conversations.models import AuditEvent, Conversation
from inbox.conversations.realtime import MANAGERS_GROUP, agent_group, publish_on_commit, queue_group
from inbox.routing import langid
from inbox.routing.models import AgentProfile, AgentQueue
from inbox.routing.selectors import configured_languages, queue_for_language
from inbox.taskqueue import ASSIGN_WAITING, enqueue_on_commit

logger = logging.getLogger(__name__)


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


def conversation_auto_assign(*, conversation: Conversation) -> int | None:
    """Give an unassigned, unresolved conversation to the least-loaded online agent of its queue with room.

    The candidates' profile rows are locked (in id order, so two workers never deadlock) before loads are
    counted, so two concurrent assignments cannot both take an agent's last free slot.
    """
    if conversation.assignee_id or conversation.queue_id is None or conversation.status == Conversation.Status.RESOLVED:
        return None
    candidates = list(
        AgentProfile.objects.select_for_update()
        .filter(queues=conversation.queue_id, presence=AgentProfile.Presence.ONLINE, user__is_active=True)
        .order_by("id")
        .values_list("id", "user_id", "capacity", "presence_changed_at")
    )
    if not candidates:
        return None
    loads = dict(
        Conversation.objects.filter(
            assignee_id__in=[c[1] for c in candidates],
            status__in=[Conversation.Status.OPEN, Conversation.Status.PENDING],
        )
        .values_list("assignee_id")
        .annotate(n=Count("id"))
        .values_list("assignee_id", "n")
    )
    epoch = timezone.now().replace(year=2000)
    free = [
        (loads.get(user_id, 0), changed or epoch, pid, user_id)
        for pid, user_id, cap, changed in candidates
        if loads.get(user_id, 0) < cap
    ]
    if not free:
        return None
    _, _, _, user_id = min(free)
    conversation.assignee_id = user_id
    conversation.save(update_fields=["assignee"])
    AuditEvent.objects.create(
        action="conversation.assigned", conversation=conversation, data={"to": user_id, "auto": True}
    )
    publish_on_commit(
        [agent_group(user_id), queue_group(conversation.queue_id), MANAGERS_GROUP],
        {"type": "conversation.assigned", "conversation": conversation.pk, "assignee": user_id},
    )
    return user_id


def assign_waiting(*, queue_id: int, limit: int = 200) -> int:
    """Hand waiting conversations of a queue to agents with room, highest priority then oldest first."""
    assigned = 0
    waiting_ids = list(
        Conversation.objects.filter(queue_id=queue_id, assignee__isnull=True, status=Conversation.Status.OPEN)
        .order_by("-priority", "waiting_since", "id")
        .values_list("id", flat=True)[:limit]
    )
    for conversation_id in waiting_ids:
        with transaction.atomic():
            conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
            if conversation is None or conversation.assignee_id or conversation.status != Conversation.Status.OPEN:
                continue
            if conversation_auto_assign(conversation=conversation) is None:
                break  # nobody has room left in this queue
            assigned += 1
    return assigned


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
    "conversation_auto_assign",
    "conversation_route",
    "language_detect",
    "queue_ensure_fallback",
]
