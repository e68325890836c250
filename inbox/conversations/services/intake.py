"""Receive -> persist -> process -> ingest -> route: the inbound half of the pipeline.

The rules this module keeps (docs/architecture.md):
- a raw event is a row (UNIQUE(account, external_id)) before anyone is told it arrived;
- processing is idempotent: an event is claimed with a lease, processed in one transaction, and a message
  can exist only once per (account, external id);
- every enqueue waits for the commit; the sweeper re-enqueues what a lost broker message left behind;
- backoff lives in the database (next_attempt_at), not in broker countdowns.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nh3
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F, Q, Subquery
from django.utils import timezone

from connectors.base import (
    InboundMessage,
    PermanentError,
)
from inbox.conversations.channels import connector_for, reply_token_read
from inbox.conversations.models import (
    Attachment,
    AuditEvent,
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    InboundEvent,
    Message,
    OutboundDelivery,
)
from inbox.conversations.public import message_public_json
from inbox.conversations.realtime import (
    MANAGERS_GROUP,
    agent_group,
    collect_on_commit,
    publish_on_commit,
    queue_group,
    visitor_group,
)
from inbox.conversations.services.ingest_batch import (  # the language switch rule lives there, shared
    LANGUAGE_SWITCH_CONFIDENCE,  # noqa: F401 (kept importable from here)
    BatchRaced,
    Ingested,
    array_int,
    array_text,
    batch_ingest,
    batch_split,
    ingested_of,
    items_of,
    language_switches,
)
from inbox.routing.services import conversation_route, language_detect, queues_assign
from inbox.taskqueue import FETCH_FILES, PROCESS_INBOUND, enqueue, enqueue_on_commit

logger = logging.getLogger(__name__)


def backoff_seconds(attempts: int) -> float:
    """base, 2x base, 4x base, ... (base 30 s by default), capped at 1 hour."""
    return float(min(3600.0, settings.SWITCHBOARD_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)))


def _chunks(ids: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


# --- Receive ----------------------------------------------------------------------------------------------
def inbound_events_record(
    *,
    account: ChannelAccount,
    events: Sequence[tuple[str, dict[str, Any]]],
    cursor: dict[str, Any] | None = None,
) -> list[int]:
    """Store raw events (duplicates ignored) and, in the same transaction, the account's new poll cursor.

    Returns the ids of the events that were new. Processing is enqueued after the commit, in batches.
    """
    now = timezone.now()
    lost_after = now + timedelta(seconds=settings.SWITCHBOARD_SWEEP_AFTER_SECONDS)
    with transaction.atomic():
        new_ids = _insert_events_returning_new(account=account, events=events, now=now, due=lost_after)
        if cursor is not None:
            ChannelAccount.objects.filter(pk=account.pk).update(cursor=cursor)
        for batch in _chunks(new_ids, settings.SWITCHBOARD_INGEST_BATCH):
            enqueue_on_commit(PROCESS_INBOUND, batch)
    return new_ids


def _insert_events_returning_new(
    *, account: ChannelAccount, events: Sequence[tuple[str, dict[str, Any]]], now: Any, due: Any
) -> list[int]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id: exactly the rows this call created, even when
    another worker inserts the same events at the same moment (PostgreSQL; SQLite >= 3.35 alike)."""
    table = InboundEvent._meta.db_table
    columns = "account_id, external_id, payload, state, attempts, error, received_at, next_attempt_at"
    conflict = "ON CONFLICT (account_id, external_id) DO NOTHING RETURNING id"
    created: list[int] = []
    if connection.vendor == "postgresql" and events:
        # Two array parameters for the whole chunk (see ingest_batch.array_text): quoting a parameter per value
        # was most of a poller's CPU per event.
        encoder = InboundEvent._meta.get_field("payload").encoder  # type: ignore[attr-defined]
        sql = (
            f"INSERT INTO {table} ({columns}) "  # noqa: S608 (the table name from the model; values are parameters)
            f"SELECT %s, v.external_id, v.payload::jsonb, 'pending', 0, '', %s, %s "
            f"FROM unnest(%s::text[], %s::text[]) AS v(external_id, payload) {conflict}"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                sql,
                [
                    account.pk,
                    now,
                    due,
                    array_text(external_id for external_id, _ in events),
                    array_text(json.dumps(payload, cls=encoder) for _, payload in events),
                ],
            )
            created = [row[0] for row in cursor.fetchall()]
        return sorted(created)
    payload_field = InboundEvent._meta.get_field("payload")
    for start in range(0, len(events), 1000):  # 6 parameters a row, far below PostgreSQL's 65,535
        chunk = events[start : start + 1000]
        params: list[Any] = []
        for external_id, payload in chunk:
            params += [account.pk, external_id, payload_field.get_db_prep_save(payload, connection), now, due]
        values = ", ".join(["(%s, %s, %s, 'pending', 0, '', %s, %s)"] * len(chunk))
        # Only the table name (from the model) and placeholders are interpolated; values go as parameters.
        sql = f"INSERT INTO {table} ({columns}) VALUES {values} {conflict}"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            created += [row[0] for row in cursor.fetchall()]
    return sorted(created)


def inbound_event_record(*, account: ChannelAccount, external_id: str, payload: dict[str, Any]) -> bool:
    """Store one raw event (a webhook, a visitor's post). Returns False when it was a duplicate."""
    return bool(inbound_events_record(account=account, events=[(external_id, payload)]))


# --- Process ----------------------------------------------------------------------------------------------
@dataclass
class ProcessReport:
    done: int = 0
    failed: int = 0
    retry: int = 0
    skipped: int = 0
    messages: list[int] = field(default_factory=list)
    # Messages that took message_ingest instead of the set path, by reason (bounce, edit, attachments, reply,
    # sender: another message of the same sender needed it; database: not PostgreSQL; fallback: the batch failed).
    per_message: Counter[str] = field(default_factory=Counter)


def _claim(event_ids: Sequence[int]) -> list[int]:
    """Take the lease on those events that nobody holds; count the attempt before any work is done.

    The attempt is committed first, so an event that kills its worker (time limit, OOM) still reaches
    the dead-letter state after SWITCHBOARD_MAX_ATTEMPTS instead of looping forever.
    """
    now = timezone.now()
    lease_expired = now - timedelta(seconds=settings.SWITCHBOARD_CLAIM_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            InboundEvent.objects.select_for_update(skip_locked=True)
            .filter(pk__in=event_ids, state=InboundEvent.State.PENDING)
            .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=lease_expired))
            .values_list("id", flat=True)
        )
        if ids:
            InboundEvent.objects.filter(pk__in=ids).update(claimed_at=now, attempts=F("attempts") + 1)
    return ids


_EVENT_FIELDS = [f.attname for f in InboundEvent._meta.concrete_fields]
# Read back by the claim; the others are known (state pending, claimed now) or rewritten before they are saved.
_EVENT_READ = ["id", "account_id", "external_id", "payload", "attempts", "received_at", "next_attempt_at"]
_EVENT_TIMES = ("received_at", "next_attempt_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _claim_load(event_ids: Sequence[int]) -> list[InboundEvent]:
    """``_claim``, and the claimed events with their accounts, in id order.

    PostgreSQL: one committed statement (UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …) claims
    and reads them; the accounts come in one more query.
    """
    if not event_ids:
        return []
    if connection.vendor != "postgresql":
        claimed = _claim(event_ids)
        if not claimed:
            return []
        return list(InboundEvent.objects.select_related("account").filter(pk__in=claimed).order_by("id"))
    now = timezone.now()
    lease_expired = now - timedelta(seconds=settings.SWITCHBOARD_CLAIM_LEASE_SECONDS)
    table = InboundEvent._meta.db_table
    column_of = {f.attname: f.column for f in InboundEvent._meta.concrete_fields}
    # Times come back as integer microseconds since the epoch: psycopg parses timestamp text in Python (~3 µs each),
    # an integer plus a timedelta is exact and a fraction of that.
    columns = ", ".join(
        f"(extract(epoch from {column_of[name]}) * 1000000)::bigint" if name in _EVENT_TIMES else column_of[name]
        for name in _EVENT_READ
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET claimed_at = %s, attempts = attempts + 1 WHERE id IN ("  # noqa: S608 (model names)
            f"SELECT id FROM {table} WHERE id = ANY(%s::bigint[]) AND state = %s "
            f"AND (claimed_at IS NULL OR claimed_at < %s) ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING {columns}",
            [now, array_int(sorted(set(event_ids))), InboundEvent.State.PENDING, lease_expired],
        )
        rows = cursor.fetchall()
    if not rows:
        return []
    known = {"state": InboundEvent.State.PENDING, "error": "", "claimed_at": now, "processed_at": None}
    events = []
    for row in sorted(rows):
        values = dict(zip(_EVENT_READ, row, strict=True))
        if isinstance(values["payload"], str | bytes):
            values["payload"] = json.loads(values["payload"])
        for name in _EVENT_TIMES:
            if values[name] is not None:
                values[name] = _EPOCH + timedelta(microseconds=values[name])
        values.update(known)
        events.append(InboundEvent.from_db(connection.alias, _EVENT_FIELDS, [values[f] for f in _EVENT_FIELDS]))
    accounts = ChannelAccount.objects.in_bulk({e.account_id for e in events})
    for event in events:
        event.account = accounts[event.account_id]
    return events


_STATE_FIELDS = ["state", "error", "claimed_at", "next_attempt_at", "processed_at"]


def inbound_events_process(*, event_ids: Sequence[int]) -> ProcessReport:
    """Normalise, ingest and route a batch of events. One event's failure never affects the others.

    The batch is ingested optimistically in one transaction (one commit for up to SWITCHBOARD_INGEST_BATCH
    messages): plain messages set-based (ingest_batch.py, a fixed number of statements for the whole batch), the
    special cases (bounces, edits, attachments, replies to resolved conversations) through message_ingest in the
    same transaction. If the batch loses a race with another one (deadlock, a unique key taken meanwhile, a
    replied conversation resolved while it was read) it is done once more; if anything else fails, or it fails
    again, it is rolled back and redone one event per transaction through message_ingest, so only the culprit is
    marked. Locks are always taken in one order, so concurrent batches cannot deadlock: the batch is normalised
    first (pure, no locks) and ingested sorted by (account, sender, thread); assignment runs after the commit in
    one short transaction for the batch's queues, which locks agents before conversations.
    """
    report = ProcessReport()
    events = _claim_load(event_ids)
    report.skipped = len(set(event_ids)) - len(events)
    if not events:
        return report
    work: list[tuple[InboundEvent, list[InboundMessage]]] = []
    connectors: dict[int, Any] = {}
    for event in events:
        try:
            connector = connectors.get(event.account_id)
            if connector is None:
                connector = connectors[event.account_id] = connector_for(event.account)
            work.append((event, connector.normalize(event.payload)))
        except Exception as exc:
            _event_failed(event, exc, report)

    def lock_order(item: tuple[InboundEvent, list[InboundMessage]]) -> tuple[int, str, str, int]:
        event, inbounds = item
        first = inbounds[0] if inbounds else None
        return (event.account_id, first.sender.handle if first else "", first.thread_key if first else "", event.pk)

    work.sort(key=lock_order)
    ingested: list[Ingested] = []
    for attempt in (1, 2):
        try:
            ingested = _ingest_batch(work, events, report)
            break
        except (BatchRaced, IntegrityError, OperationalError) as exc:
            for event, _ in work:
                event.state, event.error, event.processed_at = InboundEvent.State.PENDING, "", None
            if attempt == 1:
                logger.info("batch of %s events lost a race (%s); doing it again", len(work), exc)
                continue
            logger.info("batch of %s events failed twice; processing them one by one", len(work), exc_info=True)
            ingested = _ingest_one_by_one(work, events, report)
        except Exception:
            for event, _ in work:
                event.state, event.error, event.processed_at = InboundEvent.State.PENDING, "", None
            logger.info("batch of %s events failed as a whole; processing them one by one", len(work), exc_info=True)
            ingested = _ingest_one_by_one(work, events, report)
            break
    report.done = sum(1 for e in events if e.state == InboundEvent.State.DONE)
    report.failed = sum(1 for e in events if e.state == InboundEvent.State.FAILED)
    report.retry = sum(1 for e in events if e.state == InboundEvent.State.PENDING)
    to_assign: dict[int, set[int]] = {}
    for message in ingested:
        report.messages.append(message.message_id)
        if message.assignee_id is None and message.queue_id is not None:
            to_assign.setdefault(message.queue_id, set()).add(message.conversation_id)
    if to_assign:
        queues_assign(queues=to_assign)
    for message in ingested:
        if message.fetch_files:
            # Downloads happen outside the ingest transaction: no row lock waits on a provider's file server.
            enqueue(FETCH_FILES, message.message_id)
    for event in events:
        if event.state == InboundEvent.State.PENDING and event.next_attempt_at is not None:
            delay = (event.next_attempt_at - timezone.now()).total_seconds()
            if delay <= 30:  # longer waits are the sweeper's (next_attempt_at)
                enqueue(PROCESS_INBOUND, [event.pk], countdown=max(0.0, delay))
    return report


def _ingest_batch(
    work: list[tuple[InboundEvent, list[InboundMessage]]], events: list[InboundEvent], report: ProcessReport
) -> list[Ingested]:
    """The whole batch in one transaction: the set path, then message_ingest for the rest, then the events' state."""
    for event, inbounds in work:
        if not inbounds:
            _no_message(event)
    items = items_of(work)
    with transaction.atomic(), collect_on_commit():
        fast, slow = batch_split(items)
        ingested = batch_ingest(fast) if fast else []
        report.per_message = Counter(item.slow for item in slow)
        for item in slow:
            message = message_ingest(account=item.account, inbound=item.inbound, event=item.event)
            if message is not None:
                ingested.append(ingested_of(message))
        for event, _ in work:
            _event_done(event)
        _events_save(events)
    return ingested


def _events_save(events: list[InboundEvent]) -> None:
    """Every event of the batch, claim released: the done ones in one UPDATE, the others (rare) one by one."""
    done = [e for e in events if e.state == InboundEvent.State.DONE and not e.error]
    if done and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {InboundEvent._meta.db_table} SET state = %s, error = '', processed_at = %s, "  # noqa: S608
                f"claimed_at = NULL WHERE id = ANY(%s::bigint[])",
                [InboundEvent.State.DONE, done[0].processed_at, array_int(e.pk for e in done)],
            )
    elif done:
        InboundEvent.objects.filter(pk__in=[e.pk for e in done]).update(
            state=InboundEvent.State.DONE, error="", processed_at=done[0].processed_at, claimed_at=None
        )
    saved = {e.pk for e in done}
    for event in events:
        event.claimed_at = None
        if event.pk not in saved:
            event.save(update_fields=_STATE_FIELDS)


def _ingest_one_by_one(
    work: list[tuple[InboundEvent, list[InboundMessage]]], events: list[InboundEvent], report: ProcessReport
) -> list[Ingested]:
    """The fallback: each event in its own transaction through message_ingest, the culprit alone marked."""
    report.per_message = Counter(fallback=sum(len(inbounds) for _, inbounds in work))
    ingested: list[Ingested] = []
    for event, inbounds in work:
        event.state, event.error, event.processed_at = InboundEvent.State.PENDING, "", None
        try:
            with transaction.atomic(), collect_on_commit():
                stored = [ingested_of(message) for message in _ingest(event, inbounds)]
                _event_done(event)
                event.claimed_at = None
                event.save(update_fields=_STATE_FIELDS)
            ingested += stored
        except Exception as exc:
            _event_failed(event, exc, report)
            event.claimed_at = None
            event.save(update_fields=_STATE_FIELDS)
    in_work = {event.pk for event, _ in work}
    for event in events:
        if event.pk not in in_work:  # failed normalisation: its state was set above
            event.claimed_at = None
            event.save(update_fields=_STATE_FIELDS)
    return ingested


def _no_message(event: InboundEvent) -> None:
    # Acknowledged and kept as a raw event, with its type in the log (a channel post, a poll, a reaction...).
    describe = getattr(connector_for(event.account), "describe", None)
    logger.info("event %s carries no message: %s", event.pk, describe(event.payload) if describe else "empty")


def _ingest(event: InboundEvent, inbounds: list[InboundMessage]) -> list[Message]:
    stored = []
    for inbound in inbounds:
        message = message_ingest(account=event.account, inbound=inbound, event=event)
        if message is not None:
            stored.append(message)
    return stored


def _event_done(event: InboundEvent) -> None:
    event.state, event.error, event.processed_at = InboundEvent.State.DONE, "", timezone.now()


def _event_failed(event: InboundEvent, exc: Exception, report: ProcessReport) -> None:
    """Record why an event failed: quarantine when it can never succeed, else back off in the database."""
    if isinstance(exc, PermanentError):
        # Quarantine: the raw payload stays, with the reason, for an admin to look at (and "process again").
        event.state, event.error = InboundEvent.State.FAILED, f"malformed event: {exc}"
        report.failed += 1
        logger.warning("event %s quarantined: %s", event.pk, exc)
        return
    error = f"{exc.__class__.__name__}: {exc}"
    if event.attempts >= settings.SWITCHBOARD_MAX_ATTEMPTS:
        event.state = InboundEvent.State.FAILED
        event.error = f"gave up after {event.attempts} attempts; last error: {error}"
        report.failed += 1
        logger.error("event %s dead-lettered: %s", event.pk, error)
        return
    # A lock conflict (deadlock, serialization) is worth an immediate retry; anything else backs off.
    delay = 1.0 if isinstance(exc, OperationalError) else backoff_seconds(event.attempts)
    event.error = error
    event.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    report.retry += 1
    logger.warning("event %s failed (attempt %s), retrying in %.0f s: %s", event.pk, event.attempts, delay, error)


def _identity_get_or_create(*, kind: str, inbound: InboundMessage) -> ContactIdentity:
    identity = ContactIdentity.objects.select_related("contact").filter(kind=kind, handle=inbound.sender.handle).first()
    if identity is not None:
        return _identity_key_shared(identity)
    try:
        with transaction.atomic():
            contact = Contact.objects.create(name=inbound.sender.display_name[:200], email=inbound.sender.email[:254])
            return ContactIdentity.objects.create(
                contact=contact, kind=kind, handle=inbound.sender.handle, display_name=inbound.sender.display_name[:200]
            )
    except IntegrityError:
        # Another worker created it first (the first message of a new contact arriving twice at once).
        return ContactIdentity.objects.select_related("contact").get(kind=kind, handle=inbound.sender.handle)


def _identity_key_shared(identity: ContactIdentity) -> ContactIdentity:
    """The identity, FOR KEY SHARE locked, with the contact it has now.

    A contact merge locks the identities it moves FOR UPDATE: this waits for a merge in progress and then reads the
    identity's new contact, and a merge starting after this waits until our new conversation is committed (and
    then moves it too). KEY SHARE does not conflict with itself, nor with the KEY SHARE that inserting a row
    referencing the identity takes anyway, so concurrent ingests of one sender never wait on each other here.
    (Django has no FOR KEY SHARE; SQLite, the single-writer demo database, needs no row lock.)
    """
    if connection.vendor != "postgresql":
        return identity
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT contact_id FROM conversations_contactidentity WHERE id = %s FOR KEY SHARE", [identity.pk]
        )
        row = cursor.fetchone()
    if row is not None and row[0] != identity.contact_id:
        return ContactIdentity.objects.select_related("contact").get(pk=identity.pk)
    return identity


def _replied_conversation(*, account: ChannelAccount, inbound: InboundMessage) -> Conversation | None:
    """E-mail: the conversation this message answers, locked — by our signed reply token first, then by
    In-Reply-To / References pointing at a message we stored or sent. Never by subject; and only when the
    sender is that conversation's own contact identity, so a header match never lets someone else in.
    """
    meta = inbound.metadata
    candidates: list[int] = []
    for token in meta.get("reply_tokens") or ():
        conversation_id = reply_token_read(str(token))
        if conversation_id is not None:
            candidates.append(conversation_id)
    refs = [r for r in [meta.get("in_reply_to"), *reversed(meta.get("references") or [])] if isinstance(r, str) and r]
    if refs:
        found = dict(
            Message.objects.filter(account=account, external_id__in=refs).values_list("external_id", "conversation_id")
        )
        candidates += [found[r] for r in refs if r in found]
    if not candidates:
        return None
    matches = {
        c.pk: c
        for c in Conversation.objects.select_for_update(of=("self",))
        .select_related("identity")
        .filter(pk__in=candidates, account=account, identity__kind=account.kind, identity__handle=inbound.sender.handle)
    }
    conversation = next((matches[c] for c in candidates if c in matches), None)
    if conversation is None or conversation.status != Conversation.Status.RESOLVED:
        return conversation
    # A reply to a resolved conversation reopens it, unless the thread has since got an unresolved one.
    newer = (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("identity")
        .filter(
            account=account,
            identity_id=conversation.identity_id,
            thread_key=conversation.thread_key,
            status__in=Conversation.UNRESOLVED,
        )
        .first()
    )
    if newer is not None:
        return newer
    conversation.status, conversation.resolved_at = Conversation.Status.OPEN, None
    conversation.save(update_fields=["status", "resolved_at"])
    AuditEvent.objects.create(action="conversation.reopened", conversation=conversation, data={"by": "customer reply"})
    return conversation


def _conversation_for(*, account: ChannelAccount, inbound: InboundMessage) -> tuple[Conversation, bool]:
    """The unresolved conversation of this sender's thread, locked; a new one when there is none.

    The common case (a known sender writing again) is one query: conversation and identity together.
    """
    if (
        inbound.metadata.get("reply_tokens")
        or inbound.metadata.get("in_reply_to")
        or inbound.metadata.get("references")
    ):
        replied = _replied_conversation(account=account, inbound=inbound)
        if replied is not None:
            return replied, False
    # The identity is resolved in a scalar subquery so the conversation side always uses the
    # (account, identity, thread_key) index, whatever the planner's statistics say about a join.
    identity_id = ContactIdentity.objects.filter(kind=account.kind, handle=inbound.sender.handle).values("id")[:1]
    conversation = (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("identity")
        .filter(
            account=account,
            identity_id=Subquery(identity_id),
            thread_key=inbound.thread_key,
            status__in=Conversation.UNRESOLVED,
        )
        .first()
    )
    if conversation is not None:
        return conversation, False
    identity = _identity_get_or_create(kind=account.kind, inbound=inbound)
    lookup = {"account": account, "identity": identity, "thread_key": inbound.thread_key}
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                contact=identity.contact, subject=inbound.subject[:500], **lookup
            )
            return conversation, True
    except IntegrityError:
        return Conversation.objects.select_for_update().get(status__in=Conversation.UNRESOLVED, **lookup), False


def _bounce_apply(
    *, account: ChannelAccount, inbound: InboundMessage, bounce: dict[str, Any]
) -> tuple[bool, Message | None]:
    """A delivery status notification (RFC 3464) about one of our replies: that delivery is marked failed with
    the remote server's reason, and the report is attached to its conversation as a note. Returns (handled, note):
    not handled when the report is about no message of ours (it is then ingested as ordinary mail, so nothing is
    lost); handled with no note when this report was applied before."""
    original = (
        Message.objects.select_related("conversation")
        .filter(account=account, direction=Message.Direction.OUTBOUND, external_id=bounce["original_message_id"])
        .first()
    )
    if original is None:
        return False, None
    if Message.objects.filter(
        account=account, direction=Message.Direction.NOTE, external_id=inbound.external_id
    ).exists():
        return True, None
    reason = (
        " ".join(part for part in (str(bounce.get("status") or ""), str(bounce.get("diagnostic") or "")) if part)
        or "no reason given"
    )
    recipient = bounce.get("recipient") or "the recipient"
    if bounce.get("permanent"):
        OutboundDelivery.objects.filter(message=original).update(
            state=OutboundDelivery.State.FAILED, last_error=f"bounced: {recipient}'s mail server said {reason}"
        )
    note = Message.objects.create(
        account=account,
        conversation=original.conversation,
        direction=Message.Direction.NOTE,
        text=f"Delivery report for the reply of {original.created_at:%Y-%m-%d %H:%M} UTC to {recipient}: "
        f"{bounce.get('action') or 'failed'} ({reason})",
        external_id=inbound.external_id,
        reply_to=original,
        metadata={"bounce": bounce},
    )
    publish_on_commit(
        [MANAGERS_GROUP, *([queue_group(original.conversation.queue_id)] if original.conversation.queue_id else [])],
        {"type": "delivery.updated", "message": original.pk, "state": "failed" if bounce.get("permanent") else "sent"},
    )
    return True, note


def _message_edit(*, account: ChannelAccount, inbound: InboundMessage) -> Message | None:
    """The customer edited a message (Telegram edited_message): the stored one takes the new text and keeps every
    earlier version in metadata["history"]. None when the original is unknown (then the edit is ingested as new)."""
    message = (
        Message.objects.select_for_update()
        .filter(account=account, direction=Message.Direction.INBOUND, external_id=inbound.external_id)
        .first()
    )
    if message is None:
        return None
    if message.text == inbound.text:
        return message  # the same edit delivered again: nothing changes
    history = [*message.metadata.get("history", []), {"text": message.text, "replaced_at": timezone.now().isoformat()}]
    message.metadata = {**message.metadata, "history": history}
    message.text = inbound.text
    message.save(update_fields=["text", "metadata"])
    publish_on_commit(
        [MANAGERS_GROUP, *([queue_group(message.conversation.queue_id)] if message.conversation.queue_id else [])],
        {"type": "message.edited", "conversation": message.conversation_id, "message": message.pk},
    )
    return message


def _inbound_external_id(*, account: ChannelAccount, inbound: InboundMessage) -> str | None:
    """The id to store the message under, or None when it is already stored (a duplicate).

    Where the channel gives a content hash (e-mail), a second message that reuses an id with different
    content is a different message (broken clients reuse Message-IDs) and is kept under id#hash; the same id with
    the same content is the same message seen again (a re-sync after UIDVALIDITY changed, a re-import).
    """
    external_id = inbound.external_id
    if not external_id:
        return ""
    stored = Message.objects.filter(account=account, direction=Message.Direction.INBOUND, external_id=external_id)
    existing = list(stored.values_list("metadata__content_hash", flat=True)[:1])
    if not existing:
        return external_id
    content_hash = inbound.metadata.get("content_hash")
    if not content_hash or existing[0] in (None, content_hash):
        return None
    variant = f"{external_id}#{str(content_hash)[:16]}"
    if Message.objects.filter(account=account, direction=Message.Direction.INBOUND, external_id=variant).exists():
        return None
    return variant


def message_ingest(
    *, account: ChannelAccount, inbound: InboundMessage, event: InboundEvent | None = None
) -> Message | None:
    """One normalised inbound message -> contact, conversation, message, language, queue, assignee, live event.

    Returns None when the message was already stored (the provider delivered it twice).
    """
    bounce = inbound.metadata.get("bounce")
    if isinstance(bounce, dict) and bounce.get("original_message_id"):
        handled, note = _bounce_apply(account=account, inbound=inbound, bounce=bounce)
        if handled:
            return note
    if inbound.metadata.get("edit"):
        edited = _message_edit(account=account, inbound=inbound)
        if edited is not None:
            return edited
    external_id = _inbound_external_id(account=account, inbound=inbound)
    if external_id is None:
        return None
    conversation, created = _conversation_for(account=account, inbound=inbound)
    identity = conversation.identity
    detection = language_detect(
        text=inbound.text, declared=inbound.language_hints, conversation_language=conversation.language
    )
    # No savepoint here: the existence check above and the event's claim make a conflict all but impossible;
    # if one still happens the IntegrityError fails this event, whose retry then finds the message stored.
    message = Message.objects.create(
        account=account,
        conversation=conversation,
        direction=Message.Direction.INBOUND,
        sender_identity=identity,
        text=inbound.text,
        html=nh3.clean(inbound.html) if inbound.html else "",
        language=detection.language or "",
        language_confidence=detection.confidence,
        external_id=external_id,
        metadata=dict(inbound.metadata),
        inbound_event=event,
        sent_at=inbound.sent_at,
        created_at=min(event.received_at, timezone.now()) if event is not None else timezone.now(),
    )
    stored = [
        _attachment_store(
            message=message,
            filename=attachment.filename,
            content_type=attachment.content_type,
            content=attachment.content,
        )
        for attachment in inbound.attachments
    ]

    now = timezone.now()
    conversation.last_message_at = now
    # An automatic message (out-of-office, bounce: RFC 3834) is kept, but nobody is waiting for an answer to it.
    if conversation.waiting_since is None and not inbound.metadata.get("auto_submitted"):
        # Waiting since we received it (not since a batch got to it): the queue is first come, first served.
        conversation.waiting_since = min(event.received_at, now) if event is not None else now
    if conversation.status in (Conversation.Status.PENDING, Conversation.Status.SNOOZED):
        conversation.status = Conversation.Status.OPEN
    conversation.save(update_fields=["last_message_at", "waiting_since", "status"])
    if created:
        AuditEvent.objects.create(
            action="conversation.created", conversation=conversation, data={"channel": account.kind}
        )

    language = detection.language or ""
    switch = language_switches(
        detection=detection, language=conversation.language, assignee_id=conversation.assignee_id
    )
    if conversation.queue_id is None or switch:
        conversation_route(
            conversation=conversation,
            language=language if switch or not conversation.language else conversation.language,
        )

    groups = [MANAGERS_GROUP]
    if conversation.queue_id:
        groups.append(queue_group(conversation.queue_id))
    if conversation.assignee_id:
        groups.append(agent_group(conversation.assignee_id))
    if identity.kind == "webchat":
        # The visitor's other tabs (and the one that sent it) see the stored message, with its id and files.
        publish_on_commit(
            [visitor_group(identity.handle)], {"type": "message", "message": message_public_json(message, stored)}
        )
    publish_on_commit(
        groups,
        {
            "type": "conversation.created" if created else "message.created",
            "conversation": conversation.pk,
            "message": message.pk,
            "language": message.language,
            "queue": conversation.queue_id,
        },
    )
    return message


def _attachment_store(*, message: Message, filename: str, content_type: str, content: bytes) -> Attachment:
    digest = hashlib.sha256(content).hexdigest()
    safe_name = Path(filename or "attachment").name[:200] or "attachment"
    attachment = Attachment(
        message=message, filename=safe_name, content_type=content_type[:120], size=len(content), sha256=digest
    )
    attachment.file.save(f"{digest[:16]}-{safe_name}", ContentFile(content), save=False)
    attachment.save()
    return attachment


def message_files_fetch(*, message_id: int) -> int:
    """Download the files a message refers to (Telegram photos, documents, voice...) into attachments.

    Over-limit or refused files are listed in metadata["dropped_files"] with the reason; a transient failure
    raises, so the task retries. Idempotent: files already stored are skipped. Returns how many were stored.
    """
    message = Message.objects.select_related("account").get(pk=message_id)
    if message.metadata.get("files_fetched"):
        return 0
    connector: Any = connector_for(message.account)
    download = getattr(connector, "download_file", None)
    if download is None:
        return 0
    stored = set(message.attachments.values_list("sha256", flat=True))
    kept, dropped = 0, []
    for item in message.metadata.get("files") or []:
        try:
            content, filename, content_type = download(
                str(item["file_id"]), filename=item.get("file_name"), content_type=item.get("mime_type")
            )
        except PermanentError as exc:
            dropped.append({"file_id": item.get("file_id"), "file_name": item.get("file_name"), "reason": str(exc)})
            continue
        if hashlib.sha256(content).hexdigest() not in stored:
            _attachment_store(message=message, filename=filename, content_type=content_type, content=content)
            kept += 1
    Message.objects.filter(pk=message.pk).update(
        metadata={**message.metadata, "files_fetched": True, "dropped_files": dropped}
    )
    return kept
