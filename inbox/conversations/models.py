"""Channels, contacts, conversations, messages, and the two work tables (inbound events, outbound deliveries).

No business logic here: writes go through ``services/``, reads through ``selectors.py``.
"""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from inbox.common.crypto import EncryptedJSONField


def _public_id() -> str:
    return secrets.token_urlsafe(16)


class ChannelAccount(models.Model):
    """One connected channel: a mailbox, a Telegram bot, an X account, a website's chat widget."""

    class Health(models.TextChoices):
        UNKNOWN = "unknown"
        OK = "ok"
        DEGRADED = "degraded"
        DOWN = "down"

    kind = models.CharField(max_length=32)  # a key of connectors.registry
    name = models.CharField(max_length=200)
    public_id = models.CharField(max_length=64, unique=True, default=_public_id)  # in webhook URLs / widget tag
    settings = models.JSONField(default=dict, blank=True)  # non-secret configuration
    secrets = EncryptedJSONField(default=dict, blank=True)  # tokens, passwords: encrypted at rest
    cursor = models.JSONField(default=dict, blank=True)  # poll state (IMAP UIDs, update offset, since_id)
    is_active = models.BooleanField(default=True)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    health_detail = models.TextField(blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    # Provider rate limit: no worker sends on this account before this time.
    paused_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class Contact(models.Model):
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name or f"contact {self.pk}"


class ContactIdentity(models.Model):
    """A contact's handle on one channel kind (e-mail address, Telegram user id, X user id, visitor id)."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="identities")
    kind = models.CharField(max_length=32)
    handle = models.CharField(max_length=320)
    display_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "handle"], name="identity_unique_per_kind")]
        verbose_name_plural = "contact identities"

    def __str__(self) -> str:
        return f"{self.kind}:{self.handle}"


class Conversation(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        PENDING = "pending"  # waiting on the customer
        SNOOZED = "snoozed"
        RESOLVED = "resolved"

    class Priority(models.IntegerChoices):
        NORMAL = 0
        HIGH = 1
        URGENT = 2

    UNRESOLVED = (Status.OPEN, Status.PENDING, Status.SNOOZED)

    account = models.ForeignKey(ChannelAccount, on_delete=models.PROTECT, related_name="conversations")
    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="conversations")
    identity = models.ForeignKey(ContactIdentity, on_delete=models.PROTECT, related_name="conversations")
    # "" for chats (one unresolved conversation per identity); the thread root for e-mail.
    thread_key = models.CharField(max_length=500, blank=True, default="")
    subject = models.CharField(max_length=500, blank=True)
    language = models.CharField(max_length=16, blank=True)  # ISO 639-1; "" = not known yet
    queue = models.ForeignKey(
        "routing.AgentQueue", on_delete=models.PROTECT, null=True, blank=True, related_name="conversations"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    priority = models.IntegerField(choices=Priority.choices, default=Priority.NORMAL)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="assigned"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when the customer starts waiting for us; cleared when an agent answers. Orders the queue.
    waiting_since = models.DateTimeField(null=True, blank=True)
    first_response_at = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Channels that limit sends per chat (Telegram: about one message per second per chat): no worker sends to
    # this conversation before this time; taken with a conditional UPDATE, so it holds across all workers.
    next_send_at = models.DateTimeField(null=True, blank=True)
    # Snoozed until then (status "snoozed"); the beat sweep reopens it, as does a new customer message.
    snoozed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Duplicate storms can never open two conversations for the same thread.
            models.UniqueConstraint(
                fields=["account", "identity", "thread_key"],
                condition=Q(status__in=["open", "pending", "snoozed"]),
                name="one_unresolved_conversation_per_thread",
            ),
        ]
        indexes = [
            models.Index(fields=["queue", "status", "-priority", "waiting_since"], name="conv_queue_order"),
            models.Index(fields=["assignee", "status"], name="conv_assignee"),
            models.Index(fields=["-last_message_at"], name="conv_recent"),
            models.Index(fields=["contact", "-last_message_at"], name="conv_contact"),
            models.Index(fields=["status", "-priority", "waiting_since"], name="conv_status_order"),
            # The inbox list's exact order (inbox/agents/selectors.py: inbox_conversations), all queues and per queue:
            # the first page is read off the index whatever the status filter.
            models.Index(
                F("status"),
                F("priority").desc(),
                F("waiting_since").asc(),  # PostgreSQL: ASC is NULLS LAST (SQLite cannot say so in an index)
                F("last_message_at").desc(),
                F("id").desc(),
                name="conv_inbox_order",
            ),
            models.Index(
                F("queue"),
                F("status"),
                F("priority").desc(),
                F("waiting_since").asc(),  # PostgreSQL: ASC is NULLS LAST (SQLite cannot say so in an index)
                F("last_message_at").desc(),
                F("id").desc(),
                name="conv_queue_inbox_order",
            ),
            # Manager metrics over a time range (inbox/metrics/selectors.py).
            models.Index(fields=["created_at"], name="conv_created"),
            models.Index(fields=["first_response_at"], name="conv_first_response"),
            models.Index(fields=["resolved_at"], name="conv_resolved"),
        ]

    def __str__(self) -> str:
        return f"conversation {self.pk}"


class Message(models.Model):
    class Direction(models.TextChoices):
        INBOUND = "in"
        OUTBOUND = "out"
        NOTE = "note"  # private note between agents, never sent

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(ChannelAccount, on_delete=models.PROTECT, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=4, choices=Direction.choices)
    sender_identity = models.ForeignKey(ContactIdentity, on_delete=models.SET_NULL, null=True, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True)  # sanitised with nh3 before it is stored
    language = models.CharField(max_length=16, blank=True)
    language_confidence = models.FloatField(default=0.0)
    # Provider id. Inbound: as received. Outbound: "" until sent, except where we choose the id before the first
    # attempt (an e-mail's Message-ID, reused on every retry).
    external_id = models.CharField(max_length=500, blank=True)
    # Channel details worth keeping: e-mail threading headers, quoted history, recipients, dropped attachments.
    metadata = models.JSONField(default=dict, blank=True)
    reply_to = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    inbound_event = models.ForeignKey(
        "InboundEvent", on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    sent_at = models.DateTimeField(null=True, blank=True)  # provider's time, when given
    # When we had it: for an inbound message the moment its raw event was received, not the moment a worker got to
    # it, so two messages sent one after the other stay in that order even when two workers ingest them at once.
    # A timeline is ordered by (created_at, id).
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "external_id"],
                condition=Q(direction="in") & ~Q(external_id=""),
                name="inbound_message_unique_per_account",
            ),
        ]
        indexes = [models.Index(fields=["conversation", "created_at"], name="msg_timeline")]

    def __str__(self) -> str:
        return f"message {self.pk} ({self.direction})"


class Attachment(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=120)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to="attachments/%Y/%m/")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.filename


class InboundEvent(models.Model):
    """A raw provider event, stored before it is acknowledged to the provider."""

    class State(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"  # dead letter: kept with its error for an admin

    account = models.ForeignKey(ChannelAccount, on_delete=models.PROTECT, related_name="events")
    external_id = models.CharField(max_length=500)
    payload = models.JSONField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    # While claimed_at is fresh a worker owns the event (a lease); the sweeper re-enqueues unclaimed pending
    # events once next_attempt_at has passed (a lost broker message, or the backoff after an error).
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "external_id"], name="event_unique_per_account")]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="event_due")]

    def __str__(self) -> str:
        return f"event {self.account_id}/{self.external_id}"


class OutboundDelivery(models.Model):
    """One outbound message's journey to the provider: every attempt, its result, the reason shown to the agent."""

    class State(models.TextChoices):
        QUEUED = "queued"
        SENDING = "sending"
        SENT = "sent"
        RETRY_WAIT = "retry_wait"
        FAILED = "failed"
        # The worker stopped mid-call, or the provider timed out after accepting the request: it may have
        # arrived. Not resent automatically; the agent decides (retry action).
        UNCERTAIN = "uncertain"

    CLAIMABLE = (State.QUEUED, State.RETRY_WAIT)

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="delivery")
    account = models.ForeignKey(ChannelAccount, on_delete=models.PROTECT, related_name="deliveries")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    provider_id = models.CharField(max_length=500, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="delivery_due"),
            # Manager metrics: replies sent in a range, counts per channel and state (inbox/metrics).
            models.Index(fields=["sent_at"], name="delivery_sent"),
            models.Index(fields=["account", "state"], name="delivery_account_state"),
        ]
        verbose_name_plural = "outbound deliveries"

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.state})"


class AuditEvent(models.Model):
    """Who changed what and when: routing decisions, assignments, language corrections, status changes."""

    created_at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    action = models.CharField(max_length=64)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, null=True, blank=True, related_name="audit_events"
    )
    target = models.CharField(max_length=120, blank=True)  # "model:pk" for anything that is not a conversation
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["conversation", "created_at"], name="audit_conversation")]

    def __str__(self) -> str:
        return f"{self.action} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class ContactMerge(models.Model):
    """One contact merged into another: what moved, so that it can be undone exactly (services/contacts.py).

    The source contact row is kept, emptied of its identities and conversations, while the merge stands.
    """

    target = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="merges_in")
    source = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="merges_out")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    identity_ids = models.JSONField(default=list, blank=True)  # the source's identities that moved
    conversation_ids = models.JSONField(default=list, blank=True)  # the source's conversations that moved
    # The source's name and e-mail at the time (the history shows who was merged, whatever happens later).
    source_name = models.CharField(max_length=200, blank=True)
    source_email = models.EmailField(blank=True)
    # What the merge wrote into the target's empty name / e-mail ("" = left alone); undo clears only these.
    filled_name = models.CharField(max_length=200, blank=True)
    filled_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(target=models.F("source")), name="contact_merge_not_into_itself"),
        ]

    def __str__(self) -> str:
        return f"contact {self.source_id} into {self.target_id}"
