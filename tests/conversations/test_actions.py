"""Agents' actions on a conversation, through the real services, PostgreSQL and the Redis channel layer.

Assignment rules by role, take next (including two agents pressing at the same moment), snooze and the sweep that
wakes it, priority, status (a reopen that would break the one-open-conversation rule), private notes, and the
retry of a failed reply (through a live worker against the API channel's callback server).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from inbox.agents.services import agent_upsert
from inbox.conversations.models import (
    AuditEvent,
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    Message,
    OutboundDelivery,
)
from inbox.conversations.realtime import MANAGERS_GROUP, agent_group, queue_group, visitor_group
from inbox.conversations.services import (
    ReplyRefused,
    conversation_assign,
    conversation_claim,
    conversation_set_priority,
    conversation_set_status,
    conversation_snooze,
    conversation_take_next,
    conversations_wake,
    delivery_retry,
    note_create,
    reply_create,
    sweep_stuck_work,
)
from inbox.routing.models import AgentProfile
from tests.conftest import wait_for
from tests.factories import PASSWORD, make_demo
from tests.fakes.callback_server import CallbackServer

_handles = itertools.count(1)


def conversation_in(
    demo: Any,
    language: str,
    *,
    account: ChannelAccount | None = None,
    assignee: Any = None,
    priority: int = Conversation.Priority.NORMAL,
    waiting_minutes: float | None = 5,
    status: str = Conversation.Status.OPEN,
    identity: ContactIdentity | None = None,
) -> Conversation:
    """A conversation already routed to a language's queue (ingest itself is tested in test_ingest.py)."""
    account = account or demo.webchat
    if identity is None:
        contact = Contact.objects.create(name=f"Customer {next(_handles)}")
        identity = ContactIdentity.objects.create(contact=contact, kind=account.kind, handle=f"h-{next(_handles)}")
    now = timezone.now()
    return Conversation.objects.create(
        account=account,
        contact=identity.contact,
        identity=identity,
        language=language,
        queue=demo.queues[language],
        assignee=assignee,
        priority=priority,
        status=status,
        resolved_at=now if status == Conversation.Status.RESOLVED else None,
        waiting_since=None if waiting_minutes is None else now - timedelta(minutes=waiting_minutes),
        last_message_at=now,
    )


def second_spanish_agent() -> Any:
    return agent_upsert(
        username="eva", password=PASSWORD, languages=["es"], presence=AgentProfile.Presence.ONLINE, capacity=3
    )


def audits(conversation: Conversation, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(conversation=conversation, action=action).order_by("id"))


class Listener:
    """A websocket's view of one channel-layer group: what was published to it (through real Redis)."""

    def __init__(self, group: str) -> None:
        self.layer = get_channel_layer()
        assert self.layer is not None
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(group, self.channel)

    def events(self, wait: float = 0.5) -> list[dict[str, Any]]:
        layer = self.layer
        assert layer is not None

        async def drain() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            while True:
                try:
                    message = await asyncio.wait_for(layer.receive(self.channel), wait)
                except TimeoutError:
                    return out
                out.append(message["event"])

        return async_to_sync(drain)()


# --- Assign / claim ---------------------------------------------------------------------------------------
def test_agent_assigns_to_self_then_to_a_colleague_of_the_queue(demo, django_capture_on_commit_callbacks) -> None:
    eva = second_spanish_agent()
    conversation = conversation_in(demo, "es")
    conversation_assign(conversation=conversation, assignee=demo.agent_es, actor=demo.agent_es)
    listeners = {
        name: Listener(group)
        for name, group in {
            "ana": agent_group(demo.agent_es.pk),
            "eva": agent_group(eva.pk),
            "queue": queue_group(demo.queues["es"].pk),
            "managers": MANAGERS_GROUP,
            "ben": agent_group(demo.agent_en.pk),
        }.items()
    }
    with django_capture_on_commit_callbacks(execute=True):
        result = conversation_assign(conversation=conversation, assignee=eva, actor=demo.agent_es)
    assert result.assignee_id == eva.pk
    conversation.refresh_from_db()
    assert conversation.assignee_id == eva.pk
    assert [(a.actor_id, a.data) for a in audits(conversation, "conversation.assigned")] == [
        (demo.agent_es.pk, {"from": None, "to": demo.agent_es.pk}),
        (demo.agent_es.pk, {"from": demo.agent_es.pk, "to": eva.pk}),
    ]
    expected = {"type": "conversation.assigned", "conversation": conversation.pk, "assignee": eva.pk}
    for name in ("ana", "eva", "queue", "managers"):
        assert listeners[name].events() == [expected], name
    assert listeners["ben"].events(wait=0.2) == []


def test_agent_cannot_assign_to_an_agent_outside_the_queue(demo) -> None:
    conversation = conversation_in(demo, "es")
    with pytest.raises(ReplyRefused, match="ben does not serve the ES queue"):
        conversation_assign(conversation=conversation, assignee=demo.agent_en, actor=demo.agent_es)
    # Nor act on a conversation of a queue they do not serve.
    with pytest.raises(ReplyRefused, match=f"#{conversation.pk} is not in one of your language queues"):
        conversation_assign(conversation=conversation, assignee=demo.agent_en, actor=demo.agent_en)
    with pytest.raises(ReplyRefused, match="not in one of your language queues"):
        conversation_claim(conversation=conversation, actor=demo.agent_en)
    conversation.refresh_from_db()
    assert conversation.assignee_id is None
    assert audits(conversation, "conversation.assigned") == []


def test_claim_refused_when_a_colleague_has_it_unless_manager(demo) -> None:
    eva = second_spanish_agent()
    conversation = conversation_in(demo, "es", assignee=eva)
    with pytest.raises(ReplyRefused, match=r"already assigned to eva; only a manager can reassign it"):
        conversation_claim(conversation=conversation, actor=demo.agent_es)
    with pytest.raises(ReplyRefused, match="already assigned to eva"):
        conversation_assign(conversation=conversation, assignee=None, actor=demo.agent_es)
    conversation.refresh_from_db()
    assert conversation.assignee_id == eva.pk

    taken = conversation_claim(conversation=conversation, actor=demo.manager)
    assert taken.assignee_id == demo.manager.pk
    [audit] = audits(conversation, "conversation.assigned")
    assert audit.actor_id == demo.manager.pk and audit.data == {"from": eva.pk, "to": demo.manager.pk}


def test_claim_of_an_unassigned_conversation_and_of_ones_own_is_fine(demo) -> None:
    conversation = conversation_in(demo, "es")
    assert conversation_claim(conversation=conversation, actor=demo.agent_es).assignee_id == demo.agent_es.pk
    assert conversation_claim(conversation=conversation, actor=demo.agent_es).assignee_id == demo.agent_es.pk
    assert len(audits(conversation, "conversation.assigned")) == 1  # the second claim changed nothing


def test_agent_releases_their_own_conversation(demo) -> None:
    conversation = conversation_in(demo, "es", assignee=demo.agent_es)
    assert conversation_assign(conversation=conversation, assignee=None, actor=demo.agent_es).assignee_id is None
    [audit] = audits(conversation, "conversation.assigned")
    assert audit.data == {"from": demo.agent_es.pk, "to": None}


def test_manager_assigns_to_any_agent_but_not_to_a_non_agent(demo) -> None:
    conversation = conversation_in(demo, "es")
    # ben does not serve Spanish: a manager may still give it to him (over capacity too).
    conversation_assign(conversation=conversation, assignee=demo.agent_en, actor=demo.manager)
    conversation.refresh_from_db()
    assert conversation.assignee_id == demo.agent_en.pk

    User = get_user_model()
    outsider = User.objects.create_user(username="visitor-desk", password=PASSWORD)
    with pytest.raises(ReplyRefused, match="visitor-desk is not an active agent"):
        conversation_assign(conversation=conversation, assignee=outsider, actor=demo.manager)
    User.objects.filter(pk=demo.agent_ru_offline.pk).update(is_active=False)
    demo.agent_ru_offline.refresh_from_db()
    with pytest.raises(ReplyRefused, match="oleg is not an active agent"):
        conversation_assign(conversation=conversation, assignee=demo.agent_ru_offline, actor=demo.manager)
    # Someone without an agent profile cannot assign at all.
    with pytest.raises(ReplyRefused, match="You have no agent profile"):
        conversation_assign(conversation=conversation, assignee=None, actor=outsider)

    conversation_assign(conversation=conversation, assignee=None, actor=demo.manager)
    conversation.refresh_from_db()
    assert conversation.assignee_id is None
    assert [a.data["to"] for a in audits(conversation, "conversation.assigned")] == [demo.agent_en.pk, None]


def test_assigning_a_web_chat_conversation_tells_the_visitor_it_is_taken(
    demo, django_capture_on_commit_callbacks
) -> None:
    conversation = conversation_in(demo, "es")
    visitor = Listener(visitor_group(conversation.identity.handle))
    with django_capture_on_commit_callbacks(execute=True):
        conversation_claim(conversation=conversation, actor=demo.agent_es)
    assert [e["type"] for e in visitor.events()] == ["status"]


# --- Take next --------------------------------------------------------------------------------------------
def test_take_next_takes_highest_priority_then_longest_waiting_of_own_queues(demo) -> None:
    normal_10 = conversation_in(demo, "es", waiting_minutes=10)
    high_1 = conversation_in(demo, "es", priority=Conversation.Priority.HIGH, waiting_minutes=1)
    normal_20 = conversation_in(demo, "es", waiting_minutes=20)
    answered = conversation_in(demo, "es", waiting_minutes=None)  # nobody waits on it: last
    conversation_in(demo, "en", priority=Conversation.Priority.URGENT)  # not ana's queue
    conversation_in(demo, "es", priority=Conversation.Priority.URGENT, assignee=demo.agent_en)  # taken
    conversation_in(demo, "es", priority=Conversation.Priority.URGENT, status=Conversation.Status.PENDING)
    # ana is at capacity (3): an explicit take is allowed anyway.
    for _ in range(3):
        conversation_in(demo, "es", assignee=demo.agent_es)

    taken = [conversation_take_next(actor=demo.agent_es) for _ in range(5)]
    assert [c.pk if c else None for c in taken] == [high_1.pk, normal_20.pk, normal_10.pk, answered.pk, None]
    for conversation in taken[:4]:
        assert conversation is not None
        conversation.refresh_from_db()
        assert conversation.assignee_id == demo.agent_es.pk
        [audit] = audits(conversation, "conversation.assigned")
        assert audit.actor_id == demo.agent_es.pk
        assert audit.data == {"from": None, "to": demo.agent_es.pk, "take_next": True}


def test_take_next_for_a_manager_without_queues_looks_at_every_queue(demo) -> None:
    conversation_in(demo, "es", waiting_minutes=30)
    urgent_ru = conversation_in(demo, "ru", priority=Conversation.Priority.URGENT, waiting_minutes=1)
    taken = conversation_take_next(actor=demo.manager)
    assert taken is not None and taken.pk == urgent_ru.pk and taken.assignee_id == demo.manager.pk


def test_take_next_refused_for_an_agent_without_queues_or_profile(demo) -> None:
    conversation_in(demo, "es")
    lonely = agent_upsert(username="lin", password=PASSWORD, languages=[])
    with pytest.raises(ReplyRefused, match="You serve no language queue yet"):
        conversation_take_next(actor=lonely)
    outsider = get_user_model().objects.create_user(username="nobody", password=PASSWORD)
    with pytest.raises(ReplyRefused, match="You have no agent profile"):
        conversation_take_next(actor=outsider)


def test_take_next_publishes_the_assignment(demo, django_capture_on_commit_callbacks) -> None:
    conversation = conversation_in(demo, "es")
    ana = Listener(agent_group(demo.agent_es.pk))
    with django_capture_on_commit_callbacks(execute=True):
        conversation_take_next(actor=demo.agent_es)
    assert ana.events() == [
        {"type": "conversation.assigned", "conversation": conversation.pk, "assignee": demo.agent_es.pk}
    ]


@pytest.mark.django_db(transaction=True)
def test_agents_pressing_take_next_at_the_same_moment_get_different_conversations() -> None:
    demo = make_demo()
    agents = [demo.agent_es, second_spanish_agent()]
    agents += [
        agent_upsert(username=name, password=PASSWORD, languages=["es"], presence=AgentProfile.Presence.AWAY)
        for name in ("ivo", "kai")
    ]
    waiting = {conversation_in(demo, "es", waiting_minutes=n).pk for n in (1, 2, 3)}
    barrier = threading.Barrier(len(agents))
    results: dict[int, int | None] = {}
    errors: list[BaseException] = []

    def press(agent: Any) -> None:
        try:
            barrier.wait()
            taken = conversation_take_next(actor=agent)
            results[agent.pk] = taken.pk if taken else None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=press, args=(agent,)) for agent in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = [pk for pk in results.values() if pk is not None]
    # Three conversations for four agents: each taken exactly once, one agent gets nothing.
    assert sorted(got) == sorted(waiting)
    assert list(results.values()).count(None) == 1
    owners = dict(Conversation.objects.filter(pk__in=waiting).values_list("pk", "assignee_id"))
    assert owners == {pk: agent_pk for agent_pk, pk in results.items() if pk is not None}
    assert AuditEvent.objects.filter(action="conversation.assigned", conversation_id__in=waiting).count() == 3


# --- Snooze -----------------------------------------------------------------------------------------------
def test_snooze_then_wake_when_the_time_has_passed(demo, django_capture_on_commit_callbacks) -> None:
    conversation = conversation_in(demo, "es", assignee=demo.agent_es)
    until = timezone.now() + timedelta(hours=2)
    snoozed = conversation_snooze(conversation=conversation, until=until, actor=demo.agent_es)
    assert snoozed.status == Conversation.Status.SNOOZED and snoozed.snoozed_until == until
    [audit] = audits(conversation, "conversation.snoozed")
    assert audit.actor_id == demo.agent_es.pk and audit.data == {"from": "open", "until": until.isoformat()}

    assert conversations_wake(now=until - timedelta(seconds=1)) == 0
    ana = Listener(agent_group(demo.agent_es.pk))
    with django_capture_on_commit_callbacks(execute=True):
        assert conversations_wake(now=until + timedelta(seconds=1)) == 1
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN and conversation.snoozed_until is None
    assert conversation.assignee_id == demo.agent_es.pk
    [woken] = audits(conversation, "conversation.woken")
    assert woken.actor_id is None and woken.data == {"snoozed_until": until.isoformat()}
    [event] = ana.events()
    assert event["type"] == "conversation.updated" and event["conversation"] == conversation.pk
    assert event["status"] == "open" and event["snoozed_until"] is None
    assert conversations_wake(now=until + timedelta(days=1)) == 0


def test_the_beat_sweep_wakes_snoozed_conversations(demo) -> None:
    due = conversation_in(demo, "es")
    later = conversation_in(demo, "es")
    conversation_snooze(conversation=due, until=timezone.now() + timedelta(minutes=5), actor=demo.agent_es)
    conversation_snooze(conversation=later, until=timezone.now() + timedelta(days=3), actor=demo.agent_es)
    Conversation.objects.filter(pk=due.pk).update(snoozed_until=timezone.now() - timedelta(seconds=1))
    assert sweep_stuck_work().woken == 1
    due.refresh_from_db()
    later.refresh_from_db()
    assert due.status == Conversation.Status.OPEN and due.snoozed_until is None
    assert later.status == Conversation.Status.SNOOZED


def test_snooze_refusals(demo) -> None:
    conversation = conversation_in(demo, "es")
    now = timezone.now()
    with pytest.raises(ReplyRefused, match="Choose a snooze time in the future"):
        conversation_snooze(conversation=conversation, until=now - timedelta(minutes=1), actor=demo.agent_es)
    with pytest.raises(ReplyRefused, match="at most 90 days"):
        conversation_snooze(conversation=conversation, until=now + timedelta(days=91), actor=demo.agent_es)
    resolved = conversation_in(demo, "es", status=Conversation.Status.RESOLVED)
    with pytest.raises(ReplyRefused, match=f"#{resolved.pk} is resolved; reopen it before snoozing it"):
        conversation_snooze(conversation=resolved, until=now + timedelta(hours=1), actor=demo.agent_es)
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN and conversation.snoozed_until is None
    assert AuditEvent.objects.filter(action="conversation.snoozed").count() == 0


# --- Priority ---------------------------------------------------------------------------------------------
def test_set_priority(demo, django_capture_on_commit_callbacks) -> None:
    conversation = conversation_in(demo, "es")
    queue = Listener(queue_group(demo.queues["es"].pk))
    with django_capture_on_commit_callbacks(execute=True):
        updated = conversation_set_priority(
            conversation=conversation, priority=Conversation.Priority.URGENT, actor=demo.agent_es
        )
    assert updated.priority == Conversation.Priority.URGENT
    [audit] = audits(conversation, "conversation.priority")
    assert audit.actor_id == demo.agent_es.pk and audit.data == {"from": 0, "to": 2}
    [event] = queue.events()
    assert event["type"] == "conversation.updated" and event["priority"] == 2
    for bad in (7, -1, True):
        with pytest.raises(ReplyRefused, match="priority must be one of 0 \\(normal\\), 1 \\(high\\), 2 \\(urgent\\)"):
            conversation_set_priority(conversation=conversation, priority=bad, actor=demo.agent_es)
    conversation.refresh_from_db()
    assert conversation.priority == Conversation.Priority.URGENT


# --- Status -----------------------------------------------------------------------------------------------
def test_reopening_refused_while_the_customer_has_another_open_conversation(demo) -> None:
    old = conversation_in(demo, "es", status=Conversation.Status.RESOLVED)
    newer = conversation_in(demo, "es", identity=old.identity)
    for status in ("open", "pending", "snoozed"):
        with pytest.raises(ReplyRefused, match=f"This customer already has an open conversation: #{newer.pk}$"):
            conversation_set_status(conversation=old, status=status, actor=demo.agent_es)
    old.refresh_from_db()
    assert old.status == Conversation.Status.RESOLVED and old.resolved_at is not None
    assert audits(old, "conversation.status") == []
    # Once the newer one is resolved, the old one can be reopened.
    conversation_set_status(conversation=newer, status="resolved", actor=demo.agent_es)
    assert conversation_set_status(conversation=old, status="open", actor=demo.agent_es).status == "open"
    old.refresh_from_db()
    assert old.resolved_at is None


def test_status_change_clears_the_snooze_and_is_published(demo, django_capture_on_commit_callbacks) -> None:
    conversation = conversation_in(demo, "es", assignee=demo.agent_es)
    conversation_snooze(conversation=conversation, until=timezone.now() + timedelta(hours=1), actor=demo.agent_es)
    listeners = [
        Listener(group) for group in (MANAGERS_GROUP, queue_group(demo.queues["es"].pk), agent_group(demo.agent_es.pk))
    ]
    visitor = Listener(visitor_group(conversation.identity.handle))
    with django_capture_on_commit_callbacks(execute=True):
        conversation_set_status(conversation=conversation, status="pending", actor=demo.agent_es)
    conversation.refresh_from_db()
    assert conversation.status == "pending" and conversation.snoozed_until is None
    [audit] = audits(conversation, "conversation.status")
    assert audit.data == {"from": "snoozed", "to": "pending"}
    for listener in listeners:
        [event] = listener.events()
        assert event == {
            "type": "conversation.updated",
            "conversation": conversation.pk,
            "status": "pending",
            "priority": 0,
            "assignee": demo.agent_es.pk,
            "snoozed_until": None,
        }
    assert visitor.events(wait=0.2) == []
    with pytest.raises(ReplyRefused, match="status must be one of"):
        conversation_set_status(conversation=conversation, status="archived", actor=demo.agent_es)


# --- Notes ------------------------------------------------------------------------------------------------
def test_a_note_is_private_never_delivered_and_never_sent_to_the_visitor(
    demo, django_capture_on_commit_callbacks
) -> None:
    conversation = conversation_in(demo, "es", assignee=demo.agent_es)
    before = Conversation.objects.values_list("last_message_at", "waiting_since").get(pk=conversation.pk)
    visitor = Listener(visitor_group(conversation.identity.handle))
    queue = Listener(queue_group(demo.queues["es"].pk))
    with django_capture_on_commit_callbacks(execute=True):
        note = note_create(conversation=conversation, author=demo.agent_es, text="  Refund approved by finance.  ")
    assert note.direction == Message.Direction.NOTE and note.text == "Refund approved by finance."
    assert note.author_id == demo.agent_es.pk
    assert not OutboundDelivery.objects.filter(message=note).exists()
    assert Conversation.objects.values_list("last_message_at", "waiting_since").get(pk=conversation.pk) == before
    [audit] = audits(conversation, "conversation.note")
    assert audit.actor_id == demo.agent_es.pk and audit.target == f"message:{note.pk}"
    assert queue.events() == [{"type": "message.created", "conversation": conversation.pk, "message": note.pk}]
    assert visitor.events(wait=0.2) == []

    with pytest.raises(ReplyRefused, match="The note is empty"):
        note_create(conversation=conversation, author=demo.agent_es, text=" \n ")
    assert conversation.messages.count() == 1


# --- Delivery retry ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("sent", "This reply was already delivered."),
        ("sending", "This reply is being sent right now."),
        ("queued", "This reply is already queued to be sent."),
        ("uncertain", "This reply may already have reached the customer"),
    ],
)
def test_retry_refused_unless_the_delivery_failed_or_waits(demo, state: str, reason: str) -> None:
    conversation = conversation_in(demo, "es", assignee=demo.agent_es)
    reply = reply_create(conversation=conversation, author=demo.agent_es, text="Hola")
    OutboundDelivery.objects.filter(message=reply).update(state=state, attempts=1)
    with pytest.raises(ReplyRefused, match=reason):
        delivery_retry(message=reply, actor=demo.agent_es)
    assert OutboundDelivery.objects.get(message=reply).state == state
    assert not AuditEvent.objects.filter(action="delivery.retried").exists()


def test_retry_refused_for_a_message_without_delivery(demo) -> None:
    conversation = conversation_in(demo, "es", assignee=demo.agent_es)
    note = note_create(conversation=conversation, author=demo.agent_es, text="internal")
    with pytest.raises(ReplyRefused, match="this message has no delivery"):
        delivery_retry(message=note, actor=demo.agent_es)


def test_retry_of_an_uncertain_delivery_once_the_agent_confirms(demo) -> None:
    conversation = conversation_in(demo, "es", assignee=demo.agent_es)
    reply = reply_create(conversation=conversation, author=demo.agent_es, text="Hola")
    OutboundDelivery.objects.filter(message=reply).update(state="uncertain", attempts=1)
    delivery = delivery_retry(message=reply, actor=demo.agent_es, resend_uncertain=True)
    assert delivery.state == OutboundDelivery.State.QUEUED


def test_retry_of_a_reply_waiting_to_retry_is_due_now(demo, django_capture_on_commit_callbacks) -> None:
    conversation = conversation_in(demo, "es", assignee=demo.agent_es)
    reply = reply_create(conversation=conversation, author=demo.agent_es, text="Hola")
    later = timezone.now() + timedelta(minutes=30)
    OutboundDelivery.objects.filter(message=reply).update(
        state="retry_wait", attempts=3, next_attempt_at=later, last_error="callback answered 503"
    )
    ana = Listener(agent_group(demo.agent_es.pk))
    with django_capture_on_commit_callbacks(execute=False) as hooks:
        delivery = delivery_retry(message=reply, actor=demo.agent_es)
    assert delivery.state == OutboundDelivery.State.QUEUED and delivery.attempts == 0
    assert delivery.next_attempt_at is not None and delivery.next_attempt_at <= timezone.now()
    assert delivery.last_error == ""
    [audit] = AuditEvent.objects.filter(action="delivery.retried")
    assert audit.actor_id == demo.agent_es.pk and audit.conversation_id == conversation.pk
    assert audit.target == f"delivery:{delivery.pk}"
    assert audit.data == {"from": "retry_wait", "attempts": 3, "last_error": "callback answered 503"}
    assert len(hooks) == 2  # the send enqueued and the live event, both after the commit
    hooks[1]()
    assert ana.events() == [{"type": "delivery.updated", "message": reply.pk, "state": "queued"}]


def test_a_failed_reply_retried_is_sent_by_the_worker(live_worker) -> None:
    demo = make_demo()
    with CallbackServer() as server:
        server.then(422, body=b'{"error": "user is blocked"}')
        account = ChannelAccount.objects.create(
            kind="api", name="Mobile app", settings={"callback_url": server.url}, secrets={"signing_secret": "s3"}
        )
        conversation = conversation_in(demo, "es", account=account, assignee=demo.agent_es)
        reply = reply_create(conversation=conversation, author=demo.agent_es, text="Hola, ya está resuelto.")
        failed = wait_for(
            lambda: OutboundDelivery.objects.filter(message=reply, state=OutboundDelivery.State.FAILED).first(),
            what="the first attempt to fail",
        )
        assert "422" in failed.last_error

        delivery_retry(message=reply, actor=demo.agent_es)
        sent = wait_for(
            lambda: OutboundDelivery.objects.filter(message=reply, state=OutboundDelivery.State.SENT).first(),
            what="the retried delivery to be sent",
        )
    assert sent.attempts == 1 and sent.provider_id == "cb-2" and sent.last_error == ""
    assert len(server.requests) == 2
    assert {r.headers["Idempotency-Key"] for r in server.requests} == {str(reply.uuid)}
    [audit] = AuditEvent.objects.filter(action="delivery.retried")
    assert audit.data["from"] == "failed" and audit.actor_id == demo.agent_es.pk
    # Sent now: a second retry is refused.
    with pytest.raises(ReplyRefused, match="already delivered"):
        delivery_retry(message=reply, actor=demo.agent_es)
