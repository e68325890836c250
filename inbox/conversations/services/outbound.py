"""Reply -> deliver: the agent's replies and their deliveries (claim, pacing, rate-limit pauses, retries)."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from connectors.base import (
    AssignsOutboundIds,
    ConnectorError,
    OutboundMessage,
    PermanentError,
    RateLimited,
    TransientError,
)
from connectors.email.parse import sniff_content_type
from inbox.conversations.channels import connector_for, registry, reply_mode, text_length
from inbox.conversations.models import (
    AuditEvent,
    ChannelAccount,
    Conversation,
    Message,
    OutboundDelivery,
)
from inbox.conversations.public import message_public_json
from inbox.conversations.realtime import (
    MANAGERS_GROUP,
    agent_group,
    publish_on_commit,
    queue_group,
)
from inbox.conversations.services.intake import _attachment_store, backoff_seconds
from inbox.taskqueue import SEND_DELIVERY, enqueue, enqueue_on_commit

logger = logging.getLogger(__name__)


# --- Reply ------------------------------------------------------------------------------------------------
class ReplyRefused(ValueError):
    """The reply cannot be sent as written (too long for the channel, conversation closed...). Shown as is."""


@dataclass(frozen=True)
class ReplyFile:
    filename: str
    content: bytes


def reply_create(
    *,
    conversation: Conversation,
    author: User,
    text: str,
    reply_to: Message | None = None,
    files: Sequence[ReplyFile] = (),
    thread: bool = False,
) -> Message:
    """An agent's reply: a Message (with its attachments) and its OutboundDelivery, sent by a worker after commit.

    Attachment types are taken from the bytes (magic numbers), never from the agent's file name. ``thread``: the
    agent's choice for a public reply over the channel's limit (X: 280) — sent as a thread of posts instead of
    being refused.
    """
    text = text.strip()
    if not text and not files:
        raise ReplyRefused("the reply is empty")
    connector = connector_for(conversation.account)
    mode = reply_mode(connector, conversation.thread_key)
    length = text_length(connector, mode, text)
    as_thread = False
    if length > mode.max_text_length:
        if not mode.max_thread_parts:
            raise ReplyRefused(f"{mode.label}: allows {mode.max_text_length} characters; this reply has {length}")
        if not thread:
            alternatives = "send it as a thread of posts"
            if mode.private_thread_key:
                alternatives += ", or move the conversation to a private message"
            raise ReplyRefused(
                f"{mode.label}: allows {mode.max_text_length} characters; this reply counts {length}. "
                f"Shorten it, {alternatives}."
            )
        if length > mode.max_text_length * mode.max_thread_parts:
            raise ReplyRefused(
                f"{mode.label}: a thread has at most {mode.max_thread_parts} posts of {mode.max_text_length} "
                f"characters; this reply counts {length}"
            )
        as_thread = True
    now = timezone.now()
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        message = Message.objects.create(
            account_id=locked.account_id,
            conversation=locked,
            direction=Message.Direction.OUTBOUND,
            author=author,
            text=text,
            language=locked.language,
            language_confidence=1.0,
            reply_to=reply_to,
            metadata={"visibility": mode.visibility, **({"thread": True} if as_thread else {})},
        )
        if isinstance(connector, AssignsOutboundIds):
            message.external_id = connector.outbound_id(conversation_id=locked.pk, idempotency_key=str(message.uuid))
            message.save(update_fields=["external_id"])
        for item in files:
            _attachment_store(
                message=message,
                filename=item.filename,
                content_type=sniff_content_type(item.content, mimetypes.guess_type(item.filename)[0] or ""),
                content=item.content,
            )
        delivery = OutboundDelivery.objects.create(message=message, account_id=locked.account_id)
        locked.last_message_at = now
        locked.waiting_since = None
        fields = ["last_message_at", "waiting_since"]
        if locked.first_response_at is None:
            locked.first_response_at = now
            fields.append("first_response_at")
        if locked.assignee_id is None:
            locked.assignee_id = author.pk
            fields.append("assignee")
        if locked.status != Conversation.Status.OPEN:
            locked.status = Conversation.Status.OPEN
            locked.resolved_at = None
            fields += ["status", "resolved_at"]
        locked.save(update_fields=fields)
        enqueue_on_commit(SEND_DELIVERY, delivery.pk)
        publish_on_commit(
            [MANAGERS_GROUP, *([queue_group(locked.queue_id)] if locked.queue_id else [])],
            {"type": "message.created", "conversation": locked.pk, "message": message.pk},
        )
    return message


# --- Deliver ----------------------------------------------------------------------------------------------
def _delivery_update(delivery_id: int, **fields: Any) -> None:
    OutboundDelivery.objects.filter(pk=delivery_id).update(**fields)


def delivery_attempt(*, delivery_id: int) -> str:
    """Claim one delivery and call the provider once. Returns the resulting state.

    The claim is one conditional UPDATE, so of any number of workers handed the same id exactly one sends.
    """
    now = timezone.now()
    claimed = (
        OutboundDelivery.objects.filter(pk=delivery_id, state__in=OutboundDelivery.CLAIMABLE)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(state=OutboundDelivery.State.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    )
    if not claimed:
        return "skipped"
    delivery = OutboundDelivery.objects.select_related(
        "account", "message", "message__author", "message__conversation", "message__conversation__identity"
    ).get(pk=delivery_id)
    account = delivery.account
    if account.paused_until and account.paused_until > now:
        _delivery_update(
            delivery_id,
            state=OutboundDelivery.State.RETRY_WAIT,
            next_attempt_at=account.paused_until,
            attempts=F("attempts") - 1,
            last_error=f"queued: {registry().get(account.kind).label} rate limit; "
            f"sends at {account.paused_until:%H:%M:%S} UTC",
        )
        return OutboundDelivery.State.RETRY_WAIT
    message = delivery.message
    conversation = message.conversation
    connector = connector_for(account)
    interval = float(getattr(connector, "per_chat_interval", 0.0) or 0.0)
    if interval > 0:
        # Take this chat's next send slot, or wait for it (with the attempt given back: waiting is no failure).
        took = (
            Conversation.objects.filter(pk=conversation.pk)
            .filter(Q(next_send_at__isnull=True) | Q(next_send_at__lte=now))
            .update(next_send_at=now + timedelta(seconds=interval))
        )
        if not took:
            slot = Conversation.objects.values_list("next_send_at", flat=True).get(pk=conversation.pk) or now
            _delivery_update(
                delivery_id,
                state=OutboundDelivery.State.RETRY_WAIT,
                next_attempt_at=slot,
                attempts=F("attempts") - 1,
                last_error="",
            )
            enqueue(SEND_DELIVERY, delivery_id, countdown=max(0.0, (slot - now).total_seconds()))
            return OutboundDelivery.State.RETRY_WAIT
    # Channels that thread replies answer the message the agent picked, else the customer's latest one.
    anchors = conversation.messages.filter(direction=Message.Direction.INBOUND)
    anchor = (
        anchors.filter(pk=message.reply_to_id).first()
        if message.reply_to_id
        else anchors.filter(id__lt=message.pk).order_by("-id").first()
    )
    references = [*(anchor.metadata.get("references") or []), anchor.external_id] if anchor is not None else []
    files = list(message.attachments.all())
    outbound = OutboundMessage(
        idempotency_key=str(message.uuid),
        recipient=conversation.identity.handle,
        text=message.text,
        subject=conversation.subject,
        reply_to_external_id=anchor.external_id if anchor is not None else "",
        thread_key=conversation.thread_key,
        metadata={
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "content": a.file.read()} for a in files
            ],
            "message_id": message.external_id,
            "in_reply_to": anchor.external_id if anchor is not None else "",
            "references": [r for r in references if r][-20:],
            "thread": bool(message.metadata.get("thread")),
            # The reply as the customer may see it, for channels that show it themselves (the web chat widget).
            "event": message_public_json(message, files),
        },
    )
    try:
        result = connector.send(outbound)
        if account.kind == "webchat":
            # A visitor who chose "continue by email" gets the reply by e-mail too; a failure here retries the
            # whole delivery, which is harmless for the widget (it shows a message once, by id).
            from inbox.webchat.services import webchat_email_copy

            webchat_email_copy(message=message, conversation=conversation)
    except RateLimited as exc:
        until = timezone.now() + timedelta(seconds=max(1.0, exc.retry_after))
        # Pause the whole account for every worker: never move the pause earlier than another worker set it.
        ChannelAccount.objects.filter(pk=account.pk).filter(
            Q(paused_until__isnull=True) | Q(paused_until__lt=until)
        ).update(paused_until=until)
        label = connector.__class__.label
        state = _retry_or_fail(delivery, f"queued: {label} rate limit; sends at {until:%H:%M:%S} UTC", until)
    except TransientError as exc:
        if exc.maybe_delivered:
            _delivery_update(
                delivery_id,
                state=OutboundDelivery.State.UNCERTAIN,
                last_error=f"may or may not have been delivered: {exc}",
            )
            state = OutboundDelivery.State.UNCERTAIN
        else:
            when = timezone.now() + timedelta(seconds=backoff_seconds(delivery.attempts))
            state = _retry_or_fail(delivery, f"{exc}; retrying at {when:%H:%M:%S} UTC", when)
    except PermanentError as exc:
        _delivery_update(delivery_id, state=OutboundDelivery.State.FAILED, last_error=str(exc))
        state = OutboundDelivery.State.FAILED
    except ConnectorError as exc:
        _delivery_update(delivery_id, state=OutboundDelivery.State.FAILED, last_error=str(exc))
        state = OutboundDelivery.State.FAILED
    else:
        sent_at = result.sent_at or timezone.now()
        with transaction.atomic():
            _delivery_update(
                delivery_id,
                state=OutboundDelivery.State.SENT,
                provider_id=result.provider_id,
                sent_at=sent_at,
                last_error="",
            )
            updates: dict[str, Any] = {"sent_at": sent_at}
            if not message.external_id:  # an id chosen before the first attempt stays as it is
                updates["external_id"] = result.provider_id
            Message.objects.filter(pk=message.pk).update(**updates)
        state = OutboundDelivery.State.SENT
    groups = [MANAGERS_GROUP, *([queue_group(conversation.queue_id)] if conversation.queue_id else [])]
    if message.author_id:
        groups.append(agent_group(message.author_id))
    publish_on_commit(groups, {"type": "delivery.updated", "message": message.pk, "state": state})
    return state


def _retry_or_fail(delivery: OutboundDelivery, reason: str, when: Any) -> str:
    if delivery.attempts >= settings.SWITCHBOARD_MAX_ATTEMPTS:
        _delivery_update(
            delivery.pk,
            state=OutboundDelivery.State.FAILED,
            last_error=f"gave up after {delivery.attempts} attempts; last error: {reason}",
        )
        return OutboundDelivery.State.FAILED
    _delivery_update(delivery.pk, state=OutboundDelivery.State.RETRY_WAIT, next_attempt_at=when, last_error=reason)
    delay = (when - timezone.now()).total_seconds()
    if delay <= 30:
        # Short waits ride on a broker countdown; longer ones are found by the sweeper (next_attempt_at).
        enqueue(SEND_DELIVERY, delivery.pk, countdown=max(0.0, delay))
    return OutboundDelivery.State.RETRY_WAIT


def _private_conversation(*, public: Conversation, thread_key: str, author: User) -> Conversation:
    """The customer's unresolved private conversation on the same account, locked; opened when there is none (in
    the public one's queue and language, with the moving agent as assignee)."""
    lookup = {"account_id": public.account_id, "identity_id": public.identity_id, "thread_key": thread_key}
    existing = Conversation.objects.select_for_update().filter(status__in=Conversation.UNRESOLVED, **lookup).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            created = Conversation.objects.create(
                contact_id=public.contact_id,
                subject=public.subject,
                language=public.language,
                queue_id=public.queue_id,
                assignee=author,
                **lookup,
            )
    except IntegrityError:  # the customer's own first DM opened it at the same moment
        return Conversation.objects.select_for_update().get(status__in=Conversation.UNRESOLVED, **lookup)
    AuditEvent.objects.create(
        actor=author, action="conversation.created", conversation=created, data={"moved_from": public.pk}
    )
    return created


def conversation_move_to_private(
    *, conversation: Conversation, author: User, text: str, files: Sequence[ReplyFile] = ()
) -> Message:
    """Answer a public conversation (an X mention) privately: the reply goes to the same customer's private
    conversation (found or opened), and the public one gets a note saying where the conversation went.

    Nothing is posted publicly: an agent who wants to say "we sent you a DM" replies in the public conversation.
    """
    connector = connector_for(conversation.account)
    mode = reply_mode(connector, conversation.thread_key)
    if mode.visibility != "public":
        raise ReplyRefused("this conversation is already private")
    if not mode.private_thread_key:
        raise ReplyRefused(f"{connector.__class__.label} has no private messages to move this conversation to")
    with transaction.atomic():
        # Private before public: the same order as ingest ("dm" < "public"), so the two cannot deadlock.
        private = _private_conversation(public=conversation, thread_key=mode.private_thread_key, author=author)
        public = Conversation.objects.select_for_update().get(pk=conversation.pk)
        message = reply_create(conversation=private, author=author, text=text, files=files)
        Message.objects.create(
            account_id=public.account_id,
            conversation=public,
            direction=Message.Direction.NOTE,
            author=author,
            text=f"Moved to a private conversation (#{private.pk}): the reply went as a direct message.",
            metadata={"moved_to": private.pk},
        )
        AuditEvent.objects.create(
            actor=author, action="conversation.moved_to_private", conversation=public, data={"to": private.pk}
        )
        publish_on_commit(
            [MANAGERS_GROUP, *([queue_group(public.queue_id)] if public.queue_id else [])],
            {"type": "conversation.moved", "conversation": public.pk, "to": private.pk},
        )
    return message
