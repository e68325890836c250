"""Agents' actions on a conversation: language, status, assignment, take next, snooze, priority, notes, and the
retry of a failed reply.

Refusals raise ``ReplyRefused`` with a sentence the page shows as is. Every change is audited and announced on the
agents' websockets after the commit (``publish_on_commit``), never to the visitor, except a web chat visitor's
"an agent has it" status, as ``queue_assign`` does.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from inbox.conversations.models import (
    AuditEvent,
    Conversation,
    Message,
    OutboundDelivery,
)
from inbox.conversations.realtime import (
    MANAGERS_GROUP,
    agent_group,
    collect_on_commit,
    publish_on_commit,
    queue_group,
    visitor_group,
)
from inbox.conversations.services.outbound import ReplyRefused
from inbox.routing.models import AgentProfile
from inbox.routing.services import conversation_route, queue_assign
from inbox.taskqueue import ASSIGN_WAITING, SEND_DELIVERY, enqueue_on_commit

logger = logging.getLogger(__name__)

SNOOZE_MAX = timedelta(days=90)


# --- Helpers ----------------------------------------------------------------------------------------------
def _name(user: Any) -> str:
    return str(user.get_full_name() or user.get_username())


def _is_manager(user: User, profile: AgentProfile | None) -> bool:
    """Managers and admins (and superusers) may act on any conversation; agents on their queues'."""
    return bool(user.is_superuser) or (
        profile is not None and profile.role in (AgentProfile.Role.MANAGER, AgentProfile.Role.ADMIN)
    )


def _profile(user: User) -> AgentProfile | None:
    return AgentProfile.objects.filter(user_id=user.pk).first()


def _agent_groups(conversation: Conversation, *also: int | None) -> list[str]:
    """The agents' side only: managers, the queue, the assignee (and anyone in ``also``). Never a visitor."""
    groups = [MANAGERS_GROUP]
    if conversation.queue_id:
        groups.append(queue_group(conversation.queue_id))
    for user_id in (conversation.assignee_id, *also):
        if user_id:
            groups.append(agent_group(user_id))
    return list(dict.fromkeys(groups))


def _publish_updated(conversation: Conversation, *also: int | None) -> None:
    publish_on_commit(
        _agent_groups(conversation, *also),
        {
            "type": "conversation.updated",
            "conversation": conversation.pk,
            "status": conversation.status,
            "priority": conversation.priority,
            "assignee": conversation.assignee_id,
            "snoozed_until": conversation.snoozed_until.isoformat() if conversation.snoozed_until else None,
        },
    )


# --- Language and status ----------------------------------------------------------------------------------
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


def _open_sibling(conversation: Conversation) -> Conversation | None:
    """Another unresolved conversation of the same thread: at most one may exist (a partial unique constraint)."""
    return (
        Conversation.objects.filter(
            account_id=conversation.account_id,
            identity_id=conversation.identity_id,
            thread_key=conversation.thread_key,
            status__in=Conversation.UNRESOLVED,
        )
        .exclude(pk=conversation.pk)
        .first()
    )


def conversation_set_status(*, conversation: Conversation, status: str, actor: User) -> Conversation:
    """Open / pending / snoozed / resolved. Any change clears a snooze time (a snooze with a time is
    ``conversation_snooze``; "snoozed" here waits for the customer's next message)."""
    if status not in Conversation.Status.values:
        raise ReplyRefused(f"status must be one of {', '.join(Conversation.Status.values)}")
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        old = locked.status
        if old == status and locked.snoozed_until is None:
            return locked
        reopening = old == Conversation.Status.RESOLVED and status != Conversation.Status.RESOLVED
        if reopening and (sibling := _open_sibling(locked)) is not None:
            raise ReplyRefused(f"This customer already has an open conversation: #{sibling.pk}")
        locked.status = status
        locked.resolved_at = timezone.now() if status == Conversation.Status.RESOLVED else None
        locked.snoozed_until = None
        try:
            # The customer may open a new conversation between the check above and this write: the constraint
            # decides, and the agent gets the same sentence instead of an error page.
            with transaction.atomic():
                locked.save(update_fields=["status", "resolved_at", "snoozed_until"])
        except IntegrityError:
            sibling = _open_sibling(locked)
            raise ReplyRefused(
                f"This customer already has an open conversation: #{sibling.pk if sibling else '?'}"
            ) from None
        AuditEvent.objects.create(
            actor=actor, action="conversation.status", conversation=locked, data={"from": old, "to": status}
        )
        # Resolved and snoozed conversations do not count against capacity (queue_assign counts open and
        # pending): a slot was freed, give the next waiting conversation of that queue to someone.
        snoozed_a_load = status == Conversation.Status.SNOOZED and old in (
            Conversation.Status.OPEN,
            Conversation.Status.PENDING,
        )
        if locked.queue_id and (status == Conversation.Status.RESOLVED or snoozed_a_load):
            enqueue_on_commit(ASSIGN_WAITING, locked.queue_id)
        _publish_updated(locked)
    return locked


# --- Assignment -------------------------------------------------------------------------------------------
def _assign_locked(*, locked: Conversation, assignee_id: int | None, actor: User, **extra: Any) -> None:
    """Write, audit and announce an assignment; the caller holds the conversation row."""
    old = locked.assignee_id
    locked.assignee_id = assignee_id
    locked.save(update_fields=["assignee"])
    AuditEvent.objects.create(
        actor=actor,
        action="conversation.assigned",
        conversation=locked,
        data={"from": old, "to": assignee_id, **extra},
    )
    publish_on_commit(
        _agent_groups(locked, old),
        {"type": "conversation.assigned", "conversation": locked.pk, "assignee": assignee_id},
    )
    if assignee_id is not None and old is None and locked.identity.kind == "webchat":
        # The visitor's widget stops showing a place in the queue (as queue_assign does).
        publish_on_commit(
            [visitor_group(locked.identity.handle)],
            {"type": "status", "assigned": True, "queue": {"position": None, "expected_wait_seconds": None}},
        )


def _check_assign(*, conversation: Conversation, assignee: User | None, actor: User) -> None:
    """Who may assign what. Managers and admins: anyone with an agent profile. Agents: a conversation of their
    queues that is unassigned or theirs, to themself or to an agent who serves that queue."""
    profile = _profile(actor)
    manager = _is_manager(actor, profile)
    if profile is None and not manager:
        raise ReplyRefused("You have no agent profile; ask an admin to add you as an agent.")
    if assignee is not None and assignee.pk == actor.pk and profile is None:
        raise ReplyRefused("You have no agent profile, so conversations cannot be assigned to you.")
    if (
        assignee is not None
        and assignee.pk != actor.pk
        and not (assignee.is_active and AgentProfile.objects.filter(user_id=assignee.pk).exists())
    ):
        raise ReplyRefused(f"{_name(assignee)} is not an active agent.")
    if manager:
        return
    assert profile is not None
    current = conversation.assignee_id
    if current is not None and current != actor.pk:
        holder = User.objects.filter(pk=current).first()
        raise ReplyRefused(
            f"Conversation #{conversation.pk} is already assigned to {_name(holder) if holder else 'someone else'}; "
            "only a manager can reassign it."
        )
    queue_id = conversation.queue_id
    if current != actor.pk and (queue_id is None or not profile.queues.filter(pk=queue_id).exists()):
        raise ReplyRefused(f"Conversation #{conversation.pk} is not in one of your language queues.")
    if assignee is None or assignee.pk == actor.pk:
        return
    if queue_id is None or not AgentProfile.objects.filter(user_id=assignee.pk, queues=queue_id).exists():
        queue = conversation.queue.name if conversation.queue is not None else "this"
        raise ReplyRefused(f"{_name(assignee)} does not serve the {queue} queue.")


def conversation_assign(*, conversation: Conversation, assignee: User | None, actor: User) -> Conversation:
    """Give the conversation to ``assignee`` (None: unassign). Over capacity is allowed: it is a person's choice."""
    with transaction.atomic():
        locked = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("identity", "queue")
            .get(pk=conversation.pk)
        )
        _check_assign(conversation=locked, assignee=assignee, actor=actor)
        new = assignee.pk if assignee is not None else None
        if locked.assignee_id != new:
            _assign_locked(locked=locked, assignee_id=new, actor=actor)
    return locked


def conversation_claim(*, conversation: Conversation, actor: User) -> Conversation:
    """Assign to me. Refused when someone else has it, unless the actor is a manager (then it is a reassign)."""
    return conversation_assign(conversation=conversation, assignee=actor, actor=actor)


def conversation_take_next(*, actor: User) -> Conversation | None:
    """The agent's "take next": the highest-priority, longest-waiting unassigned open conversation of their queues
    (a manager who serves none: of all queues), assigned to them even over capacity. None when nothing waits.

    SKIP LOCKED: two agents pressing at the same moment each get a different conversation, and neither waits for
    an ingest or auto-assign transaction holding a row.
    """
    profile = _profile(actor)
    if profile is None:
        raise ReplyRefused("You have no agent profile; ask an admin to add you as an agent.")
    queue_ids = list(profile.queues.values_list("id", flat=True))
    if not queue_ids and not _is_manager(actor, profile):
        raise ReplyRefused("You serve no language queue yet; ask a manager to add your languages.")
    with transaction.atomic():
        waiting = Conversation.objects.select_for_update(skip_locked=True, of=("self",)).filter(
            status=Conversation.Status.OPEN, assignee__isnull=True
        )
        if queue_ids:
            waiting = waiting.filter(queue_id__in=queue_ids)
        # PostgreSQL sorts NULLs last in ascending order: a conversation nobody waits on comes after those waiting.
        taken = waiting.select_related("identity").order_by("-priority", "waiting_since", "id").first()
        if taken is None:
            return None
        _assign_locked(locked=taken, assignee_id=actor.pk, actor=actor, take_next=True)
    return taken


# --- Snooze -----------------------------------------------------------------------------------------------
def conversation_snooze(*, conversation: Conversation, until: datetime, actor: User) -> Conversation:
    """Put the conversation aside until a time; the beat sweep reopens it then (or the customer's next message)."""
    if timezone.is_naive(until):
        until = timezone.make_aware(until)
    now = timezone.now()
    if until <= now:
        raise ReplyRefused("Choose a snooze time in the future.")
    if until > now + SNOOZE_MAX:
        raise ReplyRefused(f"A conversation can be snoozed for at most {SNOOZE_MAX.days} days.")
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        old = locked.status
        if old == Conversation.Status.RESOLVED:
            raise ReplyRefused(f"Conversation #{locked.pk} is resolved; reopen it before snoozing it.")
        locked.status = Conversation.Status.SNOOZED
        locked.snoozed_until = until
        locked.save(update_fields=["status", "snoozed_until"])
        AuditEvent.objects.create(
            actor=actor,
            action="conversation.snoozed",
            conversation=locked,
            data={"from": old, "until": until.isoformat()},
        )
        if old != Conversation.Status.SNOOZED and locked.queue_id and locked.assignee_id:
            # A snoozed conversation does not count against capacity: the slot goes to the waiting line.
            enqueue_on_commit(ASSIGN_WAITING, locked.queue_id)
        _publish_updated(locked)
    return locked


def conversations_wake(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Snoozed conversations whose time has come go back to open (the beat sweep calls this). Returns how many.

    SKIP LOCKED: a conversation an agent or an ingest is changing right now is left for the next sweep.
    """
    now = now or timezone.now()
    with transaction.atomic(), collect_on_commit():
        due = list(
            Conversation.objects.select_for_update(skip_locked=True)
            .filter(status=Conversation.Status.SNOOZED, snoozed_until__lte=now)
            .order_by("snoozed_until", "id")[:limit]
        )
        if not due:
            return 0
        Conversation.objects.filter(pk__in=[c.pk for c in due]).update(
            status=Conversation.Status.OPEN, snoozed_until=None
        )
        AuditEvent.objects.bulk_create(
            AuditEvent(
                action="conversation.woken",
                conversation=c,
                data={"snoozed_until": c.snoozed_until.isoformat() if c.snoozed_until else None},
            )
            for c in due
        )
        waiting_queues: set[int] = set()
        for c in due:
            c.status, c.snoozed_until = Conversation.Status.OPEN, None
            _publish_updated(c)
            if c.assignee_id is None and c.queue_id:
                waiting_queues.add(c.queue_id)
        for queue_id in sorted(waiting_queues):
            enqueue_on_commit(ASSIGN_WAITING, queue_id)
    return len(due)


# --- Priority ---------------------------------------------------------------------------------------------
def conversation_set_priority(*, conversation: Conversation, priority: int, actor: User) -> Conversation:
    if isinstance(priority, bool) or priority not in Conversation.Priority.values:
        labels = ", ".join(f"{p.value} ({p.label.lower()})" for p in Conversation.Priority)
        raise ReplyRefused(f"priority must be one of {labels}")
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        old = locked.priority
        if old == priority:
            return locked
        locked.priority = priority
        locked.save(update_fields=["priority"])
        AuditEvent.objects.create(
            actor=actor, action="conversation.priority", conversation=locked, data={"from": old, "to": priority}
        )
        _publish_updated(locked)
    return locked


# --- Notes ------------------------------------------------------------------------------------------------
def note_create(*, conversation: Conversation, author: User, text: str) -> Message:
    """A private note between agents: never delivered, never shown to the customer, never sent to a visitor's
    socket. It does not touch the conversation's waiting time or last message time (those are the customer's)."""
    text = text.strip()
    if not text:
        raise ReplyRefused("The note is empty.")
    limit = settings.SWITCHBOARD_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ReplyRefused(f"A note can be at most {limit} characters; this one has {len(text)}.")
    with transaction.atomic():
        note = Message.objects.create(
            account_id=conversation.account_id,
            conversation=conversation,
            direction=Message.Direction.NOTE,
            author=author,
            text=text,
        )
        AuditEvent.objects.create(
            actor=author, action="conversation.note", conversation=conversation, target=f"message:{note.pk}"
        )
        publish_on_commit(
            _agent_groups(conversation),
            {"type": "message.created", "conversation": conversation.pk, "message": note.pk},
        )
    return note


# --- Delivery retry ---------------------------------------------------------------------------------------
def delivery_retry(*, message: Message, actor: User, resend_uncertain: bool = False) -> OutboundDelivery:
    """The agent's "retry" on a reply that failed or waits for its next attempt: queued, due now, and handed to
    a send worker after the commit (the worker's claim is the same conditional UPDATE as for any send, so a retry
    racing a scheduled attempt still sends once). A fresh round: the attempt counter starts again.

    An *uncertain* delivery may already be with the customer: refused unless ``resend_uncertain`` (the agent
    confirmed sending it again).
    """
    retryable = [OutboundDelivery.State.FAILED, OutboundDelivery.State.RETRY_WAIT]
    if resend_uncertain:
        retryable.append(OutboundDelivery.State.UNCERTAIN)
    with transaction.atomic():
        delivery = (
            OutboundDelivery.objects.select_for_update(of=("self",))
            .select_related("message__conversation")
            .filter(message_id=message.pk)
            .first()
        )
        if delivery is None:
            raise ReplyRefused("Only a reply sent to the customer can be retried; this message has no delivery.")
        state = delivery.state
        if state not in retryable:
            reasons: dict[str, str] = {
                OutboundDelivery.State.SENT: "This reply was already delivered.",
                OutboundDelivery.State.SENDING: "This reply is being sent right now.",
                OutboundDelivery.State.QUEUED: "This reply is already queued to be sent.",
                OutboundDelivery.State.UNCERTAIN: (
                    "This reply may already have reached the customer (the send was interrupted); "
                    "check with them before sending it again."
                ),
            }
            raise ReplyRefused(reasons.get(state, f"A reply in state {state} cannot be retried."))
        now = timezone.now()
        OutboundDelivery.objects.filter(pk=delivery.pk).update(
            state=OutboundDelivery.State.QUEUED, next_attempt_at=now, claimed_at=None, attempts=0, last_error=""
        )
        AuditEvent.objects.create(
            actor=actor,
            action="delivery.retried",
            conversation_id=delivery.message.conversation_id,
            target=f"delivery:{delivery.pk}",
            data={"from": state, "attempts": delivery.attempts, "last_error": delivery.last_error[:500]},
        )
        enqueue_on_commit(SEND_DELIVERY, delivery.pk)
        conversation = delivery.message.conversation
        publish_on_commit(
            _agent_groups(conversation, delivery.message.author_id),
            {"type": "delivery.updated", "message": delivery.message_id, "state": OutboundDelivery.State.QUEUED},
        )
        delivery.refresh_from_db()
    return delivery
