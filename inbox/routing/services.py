"""Routing: a conversation goes to its language's queue and, when someone can take it, to an agent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


@dataclass(frozen=True)
class RouteChange:
    """Where a conversation goes: its new language, queue and assignee, and the audit row's data."""

    language: str
    queue_id: int | None
    assignee_id: int | None
    audit: dict[str, Any]


def _agent_serves(user_id: int, queue_id: int) -> bool:
    return AgentProfile.objects.filter(user_id=user_id, queues=queue_id).exists()


def route_change(
    *,
    language_now: str,
    queue_id_now: int | None,
    assignee_id_now: int | None,
    language: str,
    reason: str = "detected",
    serves: Callable[[int, int], bool] = _agent_serves,
) -> RouteChange | None:
    """The routing rule alone (no writes): None when the conversation stays where it is.

    An assignee who does not serve the new queue is released, so the conversation reaches someone who can read it.
    Shared by ``conversation_route`` (one conversation) and the set-based ingest (a batch of them).
    """
    queue_id = queue_for_language(language)
    changed_language = language_now != language
    changed_queue = queue_id_now != queue_id
    if not (changed_language or changed_queue):
        return None
    old: dict[str, Any] = {"language": language_now, "queue": queue_id_now}
    assignee_id = assignee_id_now
    if changed_queue and assignee_id is not None and queue_id is not None and not serves(assignee_id, queue_id):
        old["assignee"] = assignee_id
        assignee_id = None
    audit = {"reason": reason, "from": old, "to": {"language": language, "queue": queue_id}}
    return RouteChange(language=language, queue_id=queue_id, assignee_id=assignee_id, audit=audit)


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
    change = route_change(
        language_now=conversation.language,
        queue_id_now=conversation.queue_id,
        assignee_id_now=conversation.assignee_id,
        language=language,
        reason=reason,
    )
    if change is None:
        return False
    changed_queue = conversation.queue_id != change.queue_id
    conversation.language = change.language
    conversation.queue_id = change.queue_id
    fields = ["language", "queue"]
    if change.assignee_id != conversation.assignee_id:
        conversation.assignee_id = change.assignee_id
        fields.append("assignee")
    conversation.save(update_fields=fields)
    AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        action="conversation.routed",
        conversation=conversation,
        data=change.audit,
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
    return queues_assign(queues={queue_id: conversation_ids}, limit=limit)


def queues_assign(*, queues: Mapping[int, Iterable[int] | None], limit: int = 200) -> list[int]:
    """``queue_assign`` for several queues in one transaction (an ingest batch touches many queues at once).

    The agents of all those queues are locked together, in id order (the one lock order of queue_assign), their
    loads counted once, and the queues served in id order, each up to ``limit`` conversations; an agent who serves
    two of them has one capacity for both. Then the conversations are locked (SKIP LOCKED), as in queue_assign.
    """
    queue_ids = sorted(queues)
    if not queue_ids:
        return []
    with transaction.atomic(), collect_on_commit():
        rows = list(
            AgentProfile.objects.select_for_update(of=("self",))
            .filter(queues__in=queue_ids, presence=AgentProfile.Presence.ONLINE, user__is_active=True)
            .order_by("id")
            .values_list("user_id", "capacity", "presence_changed_at", "queues")
        )
        if not rows:
            return []
        serving: dict[int, list[int]] = {}
        capacity: dict[int, int] = {}
        since: dict[int, datetime] = {}
        for user_id, cap, changed, queue_id in rows:
            serving.setdefault(queue_id, []).append(user_id)
            capacity[user_id] = cap
            since[user_id] = changed or _EPOCH
        loads = dict(
            Conversation.objects.filter(
                assignee_id__in=list(capacity),
                status__in=[Conversation.Status.OPEN, Conversation.Status.PENDING],
            )
            .values_list("assignee_id")
            .annotate(n=Count("id"))
            .values_list("assignee_id", "n")
        )
        room = {user_id: cap - loads.get(user_id, 0) for user_id, cap in capacity.items()}
        if max(room.values()) <= 0:
            return []
        served = [q for q in queue_ids if any(room[u] > 0 for u in serving.get(q, ()))]
        if not served:
            return []
        waiting = (
            Conversation.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(queue_id__in=served, assignee__isnull=True, status=Conversation.Status.OPEN)
            .order_by("queue_id", "-priority", "waiting_since", "id")
            .values_list("id", "queue_id", "identity__kind", "identity__handle")
        )
        narrowed = {q: queues[q] is not None for q in served}
        wanted = {q: {int(c) for c in queues[q] or ()} for q in served}
        if all(narrowed.values()):
            waiting = waiting.filter(pk__in=sorted(set().union(*wanted.values())))
        elif len(served) == 1:
            waiting = waiting[:limit]
        assigned: list[tuple[int, int]] = []
        taken: dict[int, int] = {}
        kinds: dict[int, tuple[str, str]] = {}
        for conversation_id, queue_id, kind, handle in waiting:
            if narrowed[queue_id] and conversation_id not in wanted[queue_id]:
                continue
            if taken.get(queue_id, 0) >= limit:
                continue
            free = [(-room[u], since[u], u) for u in serving.get(queue_id, ()) if room[u] > 0]
            if not free:
                continue
            # The least-loaded agent (most room left), ties to whoever has been online longest.
            user_id = min(free)[2]
            room[user_id] -= 1
            taken[queue_id] = taken.get(queue_id, 0) + 1
            assigned.append((conversation_id, user_id))
            kinds[conversation_id] = (kind, handle)
            publish_on_commit(
                [agent_group(user_id), queue_group(queue_id), MANAGERS_GROUP],
                {"type": "conversation.assigned", "conversation": conversation_id, "assignee": user_id},
            )
            if kind == "webchat":
                # The visitor's widget stops showing a place in the queue.
                publish_on_commit(
                    [visitor_group(handle)],
                    {"type": "status", "assigned": True, "queue": {"position": None, "expected_wait_seconds": None}},
                )
        if not assigned:
            return []
        by_assignee: dict[int, list[int]] = {}
        for conversation_id, user_id in assigned:
            by_assignee.setdefault(user_id, []).append(conversation_id)
        for user_id, conversation_ids in sorted(by_assignee.items()):
            Conversation.objects.filter(pk__in=conversation_ids).update(assignee_id=user_id)
        AuditEvent.objects.bulk_create(
            [
                AuditEvent(
                    action="conversation.assigned",
                    conversation_id=conversation_id,
                    data={"to": user_id, "auto": True},
                )
                for conversation_id, user_id in assigned
            ],
            batch_size=500,
        )
    return [conversation_id for conversation_id, _ in assigned]


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
    "RouteChange",
    "agent_set_presence",
    "assign_waiting",
    "conversation_route",
    "language_detect",
    "queue_assign",
    "queue_ensure_fallback",
    "queues_assign",
    "route_change",
]
