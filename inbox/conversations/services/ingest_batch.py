"""Set-based ingest: a batch of plain inbound messages stored in a fixed number of SQL statements (PostgreSQL).

``message_ingest`` (intake.py) takes one message through about seven statements; at a few hundred microseconds
each on a small machine that caps ingest near 200 messages/s. Here the common case — a plain new message from a
known or new sender, on any channel — is done for a whole batch at once, inside the caller's transaction:

 1. dedupe        one SELECT of the (account, external id) pairs already stored (with the e-mail content-hash
                  variant rule of ``_inbound_external_id``, applied in batch order so duplicates inside the batch
                  count too);
 2. replies       e-mail In-Reply-To / References / reply tokens: one SELECT of the messages referred to and one of
                  their conversations (only when the batch has such mail);
 3. read          one SELECT of the senders' identities and their unresolved conversation per thread (no locks);
 4. identities    new senders: one INSERT of identities ``ON CONFLICT DO NOTHING`` (their contact ids drawn from the
                  contact sequence) and one INSERT of their contacts;
 5. conversations one ``INSERT … ON CONFLICT (account, identity, thread) DO UPDATE`` for every thread of the batch,
                  in lock order: it locks the unresolved conversation of a thread or creates it, in one pass, so
                  "is there one?" and "take it" can never be told apart by a concurrent batch;
 6. language      per message, in Python (~0.05-0.3 ms), with the conversation's language so far as a hint, then
                  the routing rule (``route_change``) per conversation, from the process's cached queue map;
 7. messages      one INSERT … SELECT FROM unnest(…) RETURNING id (array parameters as literals, see array_text);
 8. audit         one INSERT for conversation.created / conversation.routed rows;
 9. fix-ups       only when needed: an UPDATE for conversations whose language or queue changed after step 5, and
                  the FOR KEY SHARE re-read of identities behind conversations just created (contact merges).

Live events are collected and sent after the commit in two Redis round trips (``realtime.publish_many``).

What this path does not take — a bounce (DSN), a Telegram edit, a message with attachments to store, a reply to a
resolved conversation (the reopen rules) — goes to ``message_ingest``, in the same transaction, after this set,
together with every other message of that sender in the batch (so one sender's messages keep their order and their
locks are taken by one path). Everything is PostgreSQL-specific SQL; on another database
(SQLite for ``make run``) every message takes ``message_ingest``.

Lock order (as message_ingest's, so concurrent batches cannot deadlock on each other): identity inserts sorted by
(kind, handle), then threads sorted by (account, handle, thread key) — each one locked or created in that one
statement —, then messages in the same order. A sender's identity is locked FOR KEY SHARE only after its new
conversation exists, and only for identities that existed before this batch: a contact merge (which locks
conversations, then identities FOR UPDATE) then either waits for our commit and moves the new conversation too, or
has committed first and we read the identity's new contact (see intake._identity_key_shared).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

import nh3
from django.db import connection
from django.db.models import Model
from django.utils import timezone

from connectors.base import InboundMessage
from inbox.conversations.channels import reply_token_read
from inbox.conversations.models import (
    AuditEvent,
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    InboundEvent,
    Message,
)
from inbox.conversations.public import message_public_json
from inbox.conversations.realtime import MANAGERS_GROUP, agent_group, publish_on_commit, queue_group, visitor_group
from inbox.routing import langid
from inbox.routing.services import language_detect, route_change

logger = logging.getLogger(__name__)

# A message confidently detected in another language moves an unassigned conversation to that queue.
LANGUAGE_SWITCH_CONFIDENCE = 0.9

_UNRESOLVED = tuple(str(s) for s in Conversation.UNRESOLVED)


def language_switches(*, detection: langid.Detection, language: str, assignee_id: int | None) -> bool:
    """The language switch rule: a conversation's language is set by its first confident message; later it changes
    only while nobody is assigned and a message is confidently (text alone) in another language."""
    detected = detection.language or ""
    return (
        bool(detected)
        and detected != language
        and (
            not language
            or (
                assignee_id is None
                and detection.source == "text"
                and detection.confidence >= LANGUAGE_SWITCH_CONFIDENCE
            )
        )
    )


class BatchRaced(Exception):
    """Something this batch read changed before it could lock it (a replied conversation resolved meanwhile):
    the batch is rolled back and done again, which then sees the new state."""


@dataclass(eq=False, slots=True)
class Item:
    """One inbound message of a batch, in the batch's lock order."""

    event: InboundEvent
    account: ChannelAccount
    inbound: InboundMessage
    slow: str = ""  # why message_ingest takes it ("" = this module)
    thread: str = ""  # the conversation's thread key: the inbound's, or the replied conversation's
    expect_existing: bool = False  # joins an unresolved conversation found through reply headers
    store_id: str | None = ""  # the external id to store it under; None = already stored (a duplicate)
    # Results, set by the plan:
    language: str = ""
    confidence: float = 0.0
    created: bool = False  # this message opened its conversation
    queue_id: int | None = None
    assignee_id: int | None = None
    uuid: uuid.UUID = field(default_factory=uuid.uuid4)
    message_id: int = 0
    created_at: datetime | None = None

    @property
    def sender_key(self) -> tuple[str, str]:
        return (self.account.kind, self.inbound.sender.handle)


@dataclass(frozen=True, slots=True)
class Ingested:
    """A stored message, as the caller needs it after the commit (assignment, file downloads, the report)."""

    message_id: int
    conversation_id: int
    queue_id: int | None
    assignee_id: int | None
    fetch_files: bool


def ingested_of(message: Message) -> Ingested:
    conversation = message.conversation
    return Ingested(
        message_id=message.pk,
        conversation_id=conversation.pk,
        queue_id=conversation.queue_id,
        assignee_id=conversation.assignee_id,
        fetch_files=bool(message.metadata.get("files")) and not message.metadata.get("files_fetched"),
    )


# --- Which path ----------------------------------------------------------------------------------------------
# Every column this module writes, per table. If a migration adds one, the set path stands aside (every message
# takes message_ingest, which the ORM keeps right) until this module learns the new column: never a wrong row.
_COLUMNS: dict[type[Model], frozenset[str]] = {
    Message: frozenset(
        [
            "id",
            "uuid",
            "account_id",
            "conversation_id",
            "direction",
            "sender_identity_id",
            "author_id",
            "text",
            "html",
            "language",
            "language_confidence",
            "external_id",
            "metadata",
            "reply_to_id",
            "inbound_event_id",
            "sent_at",
            "created_at",
        ]
    ),
    Conversation: frozenset(
        [
            "id",
            "account_id",
            "contact_id",
            "identity_id",
            "thread_key",
            "subject",
            "language",
            "queue_id",
            "status",
            "priority",
            "assignee_id",
            "created_at",
            "waiting_since",
            "first_response_at",
            "last_message_at",
            "resolved_at",
            "next_send_at",
            "snoozed_until",
        ]
    ),
    ContactIdentity: frozenset(["id", "contact_id", "kind", "handle", "display_name", "created_at"]),
    Contact: frozenset(["id", "name", "email", "created_at"]),
    AuditEvent: frozenset(["id", "created_at", "actor_id", "action", "conversation_id", "target", "data"]),
}


@functools.cache
def _schema_known() -> bool:
    for model, columns in _COLUMNS.items():
        actual = frozenset(f.column for f in model._meta.concrete_fields)
        if actual != columns:
            logger.warning(
                "set-based ingest disabled: %s has columns %s, this module writes %s; every message takes the "
                "per-message path until inbox/conversations/services/ingest_batch.py is updated",
                model._meta.db_table,
                sorted(actual),
                sorted(columns),
            )
            return False
    return True


def set_path_available() -> bool:
    return connection.vendor == "postgresql" and _schema_known()


def _special(inbound: InboundMessage) -> str:
    meta = inbound.metadata
    bounce = meta.get("bounce")
    if isinstance(bounce, dict) and bounce.get("original_message_id"):
        return "bounce"
    if meta.get("edit"):
        return "edit"
    if inbound.attachments:
        return "attachments"
    return ""


def _has_reply_headers(inbound: InboundMessage) -> bool:
    meta = inbound.metadata
    return bool(meta.get("reply_tokens") or meta.get("in_reply_to") or meta.get("references"))


def batch_split(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(set path, per-message path), both in the batch's order. Call inside the batch's transaction."""
    if not set_path_available():
        for item in items:
            item.slow = "database"
        return [], list(items)
    for item in items:
        item.thread = item.inbound.thread_key
        item.slow = _special(item.inbound)
    _replies_resolve([i for i in items if not i.slow and _has_reply_headers(i.inbound)], items)
    # One path per sender: its messages keep their order, and its rows are locked by one path only.
    slow_senders = {item.sender_key for item in items if item.slow}
    for item in items:
        if not item.slow and item.sender_key in slow_senders:
            item.slow = "sender"
    return [i for i in items if not i.slow], [i for i in items if i.slow]


def _cursor_rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


def _execute(sql: str, params: Sequence[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# Array parameters are written as PostgreSQL array literals here and sent as one text parameter each (cast in
# the SQL: %s::bigint[]). psycopg adapts a Python list element by element in Python, ~3 µs a value: for a batch's
# thirteen message columns that was ~40 µs a message, more than the rest of the set path's Python. A literal costs
# a join. Syntax: https://www.postgresql.org/docs/current/arrays.html#ARRAYS-IO (elements double-quoted, backslash
# and double quote escaped with a backslash, NULL unquoted).
def array_text(values: Iterable[str | None]) -> str:
    return (
        "{"
        + ",".join("NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


def array_int(values: Iterable[int | None]) -> str:
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def array_float(values: Iterable[float]) -> str:
    return "{" + ",".join(repr(float(v)) for v in values) + "}"


def array_time(values: Iterable[datetime | None]) -> str:
    return "{" + ",".join("NULL" if v is None else '"' + v.isoformat() + '"' for v in values) + "}"


def _replies_resolve(replies: list[Item], batch: list[Item]) -> None:
    """E-mail threading for the set path: ``_replied_conversation``'s rules, read for the whole batch at once.

    Candidates in message_ingest's order: our signed tokens, then In-Reply-To, then References newest first; a
    reference is a message stored before this batch or one of this batch's messages ahead of the reply (which
    message_ingest would have stored by then). The first candidate that belongs to the sender's own identity wins:
    an unresolved conversation is joined (the reply takes its thread key, and step 5 locks it by that key), an
    earlier message of the batch is joined in its thread; a resolved conversation (it may reopen, or the thread may
    have a newer one) sends the reply to message_ingest. No candidate of the sender's: the thread key decides.
    """
    if not replies:
        return
    first_in_batch: dict[tuple[int, str], Item] = {}
    for item in batch:
        if item.inbound.external_id:
            first_in_batch.setdefault((item.account.pk, item.inbound.external_id), item)
    position = {id(item): n for n, item in enumerate(batch)}
    tokens: dict[int, list[int]] = {}
    refs: dict[int, list[str]] = {}
    wanted: dict[tuple[int, str], None] = {}
    for n, item in enumerate(replies):
        meta = item.inbound.metadata
        tokens[n] = [cid for t in meta.get("reply_tokens") or () if (cid := reply_token_read(str(t))) is not None]
        chain = [meta.get("in_reply_to"), *reversed(meta.get("references") or [])]
        refs[n] = [r for r in chain if isinstance(r, str) and r]
        for ref in refs[n]:
            wanted[(item.account.pk, ref)] = None
    stored: dict[tuple[int, str], int] = {}
    if wanted:
        accounts = [a for a, _ in wanted]
        ids = [r for _, r in wanted]
        table = Message._meta.db_table
        # Inbound messages through the partial unique index; our own (outbound, notes) by account, as message_ingest
        # reads them (Message.objects.filter(account=..., external_id__in=refs)).
        rows = _cursor_rows(
            f"SELECT m.account_id, m.external_id, m.conversation_id "  # noqa: S608 (table names from the models)
            f"FROM unnest(%s::bigint[], %s::text[]) AS v(account_id, external_id) "
            f"JOIN {table} m ON m.account_id = v.account_id AND m.external_id = v.external_id "
            f"WHERE m.direction = 'in' AND m.external_id <> '' "
            f"UNION ALL "
            f"SELECT m.account_id, m.external_id, m.conversation_id FROM {table} m "
            f"WHERE m.direction <> 'in' AND m.account_id = ANY(%s::bigint[]) AND m.external_id = ANY(%s::text[])",
            [array_int(accounts), array_text(ids), array_int(sorted(set(accounts))), array_text(ids)],
        )
        stored = {(a, e): c for a, e, c in rows}
    # Per reply, its candidates in order: ("conversation", id) or ("item", the batch's earlier message).
    candidates: dict[int, list[tuple[str, Any]]] = {}
    for n, item in enumerate(replies):
        found: list[tuple[str, Any]] = [("conversation", c) for c in tokens[n]]
        for ref in refs[n]:
            key = (item.account.pk, ref)
            if key in stored:
                found.append(("conversation", stored[key]))
            elif key in first_in_batch and position[id(first_in_batch[key])] < position[id(item)]:
                found.append(("item", first_in_batch[key]))
        candidates[n] = found
    every = sorted({c for cs in candidates.values() for kind, c in cs if kind == "conversation"})
    conversations: dict[int, tuple[Any, ...]] = {}
    if every:
        conv = Conversation._meta.db_table
        ident = ContactIdentity._meta.db_table
        rows = _cursor_rows(
            f"SELECT c.id, c.account_id, c.thread_key, c.status, i.kind, i.handle "  # noqa: S608
            f"FROM {conv} c JOIN {ident} i ON i.id = c.identity_id WHERE c.id = ANY(%s::bigint[])",
            [array_int(every)],
        )
        conversations = {row[0]: row[1:] for row in rows}
    for n, item in enumerate(replies):  # in batch order: a reply to a reply finds the thread already decided
        own = (item.account.pk, item.account.kind, item.inbound.sender.handle)
        for kind, candidate in candidates[n]:
            if kind == "item":
                if candidate.account.pk == item.account.pk and candidate.inbound.sender.handle == own[2]:
                    item.thread = candidate.thread  # the same sender's earlier message: its conversation
                    item.expect_existing = candidate.expect_existing
                    break
                continue
            row = conversations.get(candidate)
            if row is None or not _own(row, own):
                continue
            _, thread_key, status, _, _ = row
            if status not in _UNRESOLVED:
                item.slow = "reply"  # reopen, or the thread's newer conversation: message_ingest's rules
            else:
                item.thread = thread_key
                item.expect_existing = True
            break


def _own(row: tuple[Any, ...], own: tuple[int, str, str]) -> bool:
    account_id, _, _, kind, handle = row
    return (account_id, kind, handle) == own


# --- The set path --------------------------------------------------------------------------------------------
@dataclass(eq=False, slots=True)
class _Thread:
    """One (account, sender, thread key) of the batch: one conversation, locked or created in step 5."""

    account: ChannelAccount
    handle: str
    thread: str
    items: list[Item] = field(default_factory=list)
    identity_id: int | None = None
    contact_id: int | None = None
    identity_new: bool = False  # created by this batch (nobody else can see it, let alone merge it)
    # The conversation: as read in step 3 (a prediction), then as locked in step 5.
    conversation_id: int | None = None
    exists: bool = False
    language: str = ""
    queue_id: int | None = None
    assignee_id: int | None = None
    # The plan, from that state: the state after this batch's messages and the routing audit rows.
    planned_from: tuple[bool, str, int | None, int | None] | None = None
    final: tuple[str, int | None, int | None] = ("", None, None)
    routes: list[dict[str, Any]] = field(default_factory=list)
    row: tuple[str, int | None, int | None] = ("", None, None)  # the row's state after step 5

    @property
    def order(self) -> tuple[int, str, str]:
        return (self.account.pk, self.handle, self.thread)


def batch_ingest(items: Sequence[Item]) -> list[Ingested]:
    """Store the set path's messages (see the module's docstring). Inside the caller's transaction and
    ``collect_on_commit()``; raises on any failure, and the caller rolls the whole batch back."""
    now = timezone.now()
    _dedupe(items, now)
    live = [i for i in items if i.store_id is not None]
    if not live:
        return []
    threads: dict[tuple[int, str, str], _Thread] = {}
    for item in live:
        key = (item.account.pk, item.inbound.sender.handle, item.thread)
        thread = threads.get(key)
        if thread is None:
            thread = threads[key] = _Thread(account=item.account, handle=item.inbound.sender.handle, thread=item.thread)
        thread.items.append(item)
    ordered = sorted(threads.values(), key=lambda t: t.order)
    _threads_read(ordered)
    _identities_create([t for t in ordered if t.identity_id is None])
    detections: dict[tuple[int, str], langid.Detection] = {}
    for thread in ordered:
        _plan(thread, detections)
    _conversations_upsert(ordered, now)
    for thread in ordered:
        state = (thread.exists, thread.language, thread.queue_id, thread.assignee_id)
        if state != thread.planned_from:
            _plan(thread, detections)
    _contacts_recheck([t for t in ordered if not t.exists and not t.identity_new])
    _conversations_update([t for t in ordered if t.final != t.row])
    _messages_insert([i for t in ordered for i in t.items], threads, now)
    _audit_insert(ordered, now)
    out: list[Ingested] = []
    for thread in ordered:
        for item in thread.items:
            _publish(item, thread)
            out.append(
                Ingested(
                    message_id=item.message_id,
                    conversation_id=thread.conversation_id or 0,
                    queue_id=thread.final[1],
                    assignee_id=thread.final[2],
                    fetch_files=bool(item.inbound.metadata.get("files"))
                    and not item.inbound.metadata.get("files_fetched"),
                )
            )
    return out


def _dedupe(items: Sequence[Item], now: datetime) -> None:
    """``_inbound_external_id`` for the batch: one read of what is stored, then the rule in batch order."""
    wanted: dict[tuple[int, str], None] = {}
    for item in items:
        external_id = item.inbound.external_id
        if external_id:
            wanted[(item.account.pk, external_id)] = None
            content_hash = item.inbound.metadata.get("content_hash")
            if content_hash:
                wanted[(item.account.pk, f"{external_id}#{str(content_hash)[:16]}")] = None
    stored: dict[tuple[int, str], str | None] = {}
    if wanted:
        rows = _cursor_rows(
            f"SELECT m.account_id, m.external_id, m.metadata->>'content_hash' "  # noqa: S608
            f"FROM unnest(%s::bigint[], %s::text[]) AS v(account_id, external_id) "
            f"JOIN {Message._meta.db_table} m ON m.account_id = v.account_id AND m.external_id = v.external_id "
            f"WHERE m.direction = 'in' AND m.external_id <> ''",
            [array_int(a for a, _ in wanted), array_text(e for _, e in wanted)],
        )
        stored = {(a, e): h for a, e, h in rows}
    for item in items:
        external_id = item.inbound.external_id
        item.created_at = min(item.event.received_at, now)
        if not external_id:
            item.store_id = ""
            continue
        content_hash = item.inbound.metadata.get("content_hash")
        key = (item.account.pk, external_id)
        if key not in stored:
            item.store_id = external_id
            stored[key] = str(content_hash) if content_hash else None
            continue
        if not content_hash or stored[key] in (None, content_hash):
            item.store_id = None  # the same message again
            continue
        variant = (item.account.pk, f"{external_id}#{str(content_hash)[:16]}")
        if variant in stored:
            item.store_id = None
            continue
        item.store_id = variant[1]  # a reused id with other content: another message
        stored[variant] = str(content_hash)


def _threads_read(threads: list[_Thread]) -> None:
    """Step 3: identities and unresolved conversations, unlocked — a prediction that step 5 checks."""
    rows = _cursor_rows(
        f"SELECT v.n, i.id, i.contact_id, c.id, c.language, c.queue_id, c.assignee_id "  # noqa: S608
        f"FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::text[], %s::text[]) "
        f"AS v(n, account_id, kind, handle, thread_key) "
        f"JOIN {ContactIdentity._meta.db_table} i ON i.kind = v.kind AND i.handle = v.handle "
        f"LEFT JOIN {Conversation._meta.db_table} c ON c.account_id = v.account_id AND c.identity_id = i.id "
        f"AND c.thread_key = v.thread_key AND c.status IN ('open', 'pending', 'snoozed')",
        [
            array_int(range(len(threads))),
            array_int(t.account.pk for t in threads),
            array_text(t.account.kind for t in threads),
            array_text(t.handle for t in threads),
            array_text(t.thread for t in threads),
        ],
    )
    for n, identity_id, contact_id, conversation_id, language, queue_id, assignee_id in rows:
        thread = threads[n]
        thread.identity_id, thread.contact_id = identity_id, contact_id
        if conversation_id is not None:
            thread.exists, thread.conversation_id = True, conversation_id
            thread.language, thread.queue_id, thread.assignee_id = language, queue_id, assignee_id


def _identities_create(threads: list[_Thread]) -> None:
    """Step 4: identities (and their contacts) for new senders, in (kind, handle) order.

    The contact ids are drawn from the contact table's sequence inside the identity INSERT, so the contacts are
    inserted afterwards for exactly the identities this batch created (foreign keys are checked at commit). An
    identity another batch created meanwhile is read back instead, as message_ingest does after IntegrityError.
    """
    if not threads:
        return
    senders: dict[tuple[str, str], list[_Thread]] = {}
    for thread in threads:
        senders.setdefault((thread.account.kind, thread.handle), []).append(thread)
    keys = sorted(senders)
    first = {key: senders[key][0].items[0].inbound.sender for key in keys}
    now = timezone.now()
    ident = ContactIdentity._meta.db_table
    rows = _cursor_rows(
        f"INSERT INTO {ident} (contact_id, kind, handle, display_name, created_at) "  # noqa: S608
        f"SELECT nextval(pg_get_serial_sequence(%s, 'id')), v.kind, v.handle, v.display_name, %s "
        f"FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS v(kind, handle, display_name, n) "
        f"ORDER BY v.n ON CONFLICT (kind, handle) DO NOTHING RETURNING id, kind, handle, contact_id",
        [
            Contact._meta.db_table,
            now,
            array_text(k for k, _ in keys),
            array_text(h for _, h in keys),
            array_text(first[key].display_name[:200] for key in keys),
        ],
    )
    created = {(kind, handle): (identity_id, contact_id) for identity_id, kind, handle, contact_id in rows}
    if created:
        made = sorted(created)
        _execute(
            f"INSERT INTO {Contact._meta.db_table} (id, name, email, created_at) "  # noqa: S608
            f"SELECT v.id, v.name, v.email, %s FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, name, email)",
            [
                now,
                array_int(created[key][1] for key in made),
                array_text(first[key].display_name[:200] for key in made),
                array_text(first[key].email[:254] for key in made),
            ],
        )
    lost = [key for key in keys if key not in created]
    if lost:
        rows = _cursor_rows(
            f"SELECT i.kind, i.handle, i.id, i.contact_id FROM {ident} i "  # noqa: S608
            f"JOIN unnest(%s::text[], %s::text[]) AS v(kind, handle) ON i.kind = v.kind AND i.handle = v.handle",
            [array_text(k for k, _ in lost), array_text(h for _, h in lost)],
        )
        created.update({(kind, handle): (identity_id, contact_id) for kind, handle, identity_id, contact_id in rows})
    for key in keys:
        identity_id, contact_id = created[key]
        for thread in senders[key]:
            thread.identity_id, thread.contact_id = identity_id, contact_id
            thread.identity_new = key not in lost


def _plan(thread: _Thread, detections: dict[tuple[int, str], langid.Detection]) -> None:
    """Step 6: message_ingest's language and routing rules over the thread's messages, in order, from the
    conversation's state (as read or as locked). Detections are cached by (message, conversation language)."""
    thread.planned_from = (thread.exists, thread.language, thread.queue_id, thread.assignee_id)
    language, queue_id, assignee_id = thread.language, thread.queue_id, thread.assignee_id
    thread.routes = []
    for n, item in enumerate(thread.items):
        key = (id(item), language)
        detection = detections.get(key)
        if detection is None:
            detection = detections[key] = language_detect(
                text=item.inbound.text, declared=item.inbound.language_hints, conversation_language=language
            )
        detected = detection.language or ""
        switch = language_switches(detection=detection, language=language, assignee_id=assignee_id)
        if queue_id is None or switch:
            change = route_change(
                language_now=language,
                queue_id_now=queue_id,
                assignee_id_now=assignee_id,
                language=detected if switch or not language else language,
            )
            if change is not None:
                language, queue_id, assignee_id = change.language, change.queue_id, change.assignee_id
                thread.routes.append(change.audit)
        item.language, item.confidence = detected, detection.confidence
        item.created = n == 0 and not thread.exists
        item.queue_id, item.assignee_id = queue_id, assignee_id
    thread.final = (language, queue_id, assignee_id)


def _conversations_upsert(threads: list[_Thread], now: datetime) -> None:
    """Step 5: lock or create each thread's unresolved conversation, in lock order, in one statement.

    A new conversation is inserted with the language and queue its plan gave; an existing one only gets what any
    message does (last_message_at, waiting_since if unset, pending/snoozed -> open). RETURNING says which rows
    were created (xmax = 0) and the state of the others, which the caller compares with the prediction.
    """
    table = Conversation._meta.db_table
    rows = []
    for thread in threads:
        first = thread.items[0].inbound
        waiting = next((i.created_at for i in thread.items if not i.inbound.metadata.get("auto_submitted")), None)
        language, queue_id, _ = thread.final if not thread.exists else ("", None, None)
        rows.append((thread, first.subject[:500], waiting, language, queue_id))
    returned = _cursor_rows(
        f"INSERT INTO {table} (account_id, contact_id, identity_id, thread_key, subject, language, queue_id, "  # noqa: S608
        f"status, priority, assignee_id, created_at, waiting_since, first_response_at, last_message_at, "
        f"resolved_at, next_send_at, snoozed_until) "
        f"SELECT v.account_id, v.contact_id, v.identity_id, v.thread_key, v.subject, v.language, v.queue_id, "
        f"'open', 0, NULL, %s, v.waiting_since, NULL, %s, NULL, NULL, NULL "
        f"FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[], "
        f"%s::timestamptz[]) WITH ORDINALITY "
        f"AS v(account_id, contact_id, identity_id, thread_key, subject, language, queue_id, waiting_since, n) "
        f"ORDER BY v.n "
        f"ON CONFLICT (account_id, identity_id, thread_key) WHERE status IN ('open', 'pending', 'snoozed') "
        f"DO UPDATE SET last_message_at = EXCLUDED.last_message_at, "
        f"waiting_since = COALESCE({table}.waiting_since, EXCLUDED.waiting_since), status = 'open' "
        f"RETURNING id, xmax = 0, account_id, identity_id, thread_key, language, queue_id, assignee_id",
        [
            now,
            now,
            array_int(t.account.pk for t, *_ in rows),
            array_int(t.contact_id for t, *_ in rows),
            array_int(t.identity_id for t, *_ in rows),
            array_text(t.thread for t, *_ in rows),
            array_text(subject for _, subject, _, _, _ in rows),
            array_text(language for *_, language, _ in rows),
            array_int(queue_id for *_, queue_id in rows),
            array_time(waiting for _, _, waiting, _, _ in rows),
        ],
    )
    by_key = {(t.account.pk, t.identity_id, t.thread): t for t in threads}
    for conversation_id, inserted, account_id, identity_id, thread_key, language, queue_id, assignee_id in returned:
        thread = by_key[(account_id, identity_id, thread_key)]
        if inserted and any(i.expect_existing for i in thread.items):
            raise BatchRaced(f"conversation of thread {thread_key!r} was resolved while the batch was read")
        thread.conversation_id = conversation_id
        thread.exists = not inserted
        thread.language, thread.queue_id, thread.assignee_id = language, queue_id, assignee_id
        thread.row = (language, queue_id, assignee_id)
        if inserted:
            thread.language, thread.queue_id, thread.assignee_id = "", None, None
    if len(returned) != len(threads):  # cannot happen: every row is inserted or updated
        raise RuntimeError(f"conversation upsert returned {len(returned)} rows for {len(threads)} threads")


def _contacts_recheck(threads: list[_Thread]) -> None:
    """Conversations just created for identities that existed before: lock those identities FOR KEY SHARE and read
    their contact again. A merge in progress holds them FOR UPDATE: this waits for it and then reads the contact it
    moved them to; a merge starting later waits for our commit and then moves our new conversations too."""
    if not threads:
        return
    ident = ContactIdentity._meta.db_table
    rows = _cursor_rows(
        f"SELECT id, contact_id FROM {ident} WHERE id = ANY(%s::bigint[]) ORDER BY id FOR KEY SHARE",  # noqa: S608
        [array_int(sorted({t.identity_id for t in threads if t.identity_id is not None}))],
    )
    contacts = dict(rows)
    moved = [t for t in threads if contacts.get(t.identity_id) not in (None, t.contact_id)]
    if not moved:
        return
    for thread in moved:
        thread.contact_id = contacts[thread.identity_id]
    _execute(
        f"UPDATE {Conversation._meta.db_table} c SET contact_id = v.contact_id "  # noqa: S608
        f"FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, contact_id) WHERE c.id = v.id",
        [array_int(t.conversation_id for t in moved), array_int(t.contact_id for t in moved)],
    )


def _conversations_update(threads: list[_Thread]) -> None:
    """Language, queue and assignee where the plan moved a conversation that step 5 did not already write."""
    if not threads:
        return
    _execute(
        f"UPDATE {Conversation._meta.db_table} c "  # noqa: S608
        f"SET language = v.language, queue_id = v.queue_id, assignee_id = v.assignee_id "
        f"FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::int[]) AS v(id, language, queue_id, assignee_id) "
        f"WHERE c.id = v.id",
        [
            array_int(t.conversation_id for t in threads),
            array_text(t.final[0] for t in threads),
            array_int(t.final[1] for t in threads),
            array_int(t.final[2] for t in threads),
        ],
    )


_METADATA_ENCODER = Message._meta.get_field("metadata").encoder  # type: ignore[attr-defined]


def _messages_insert(items: list[Item], threads: dict[tuple[int, str, str], _Thread], now: datetime) -> None:
    """Step 7: every message in one INSERT; ids come back with the uuid we gave each one."""
    conversations = []
    identities = []
    for item in items:
        thread = threads[(item.account.pk, item.inbound.sender.handle, item.thread)]
        conversations.append(thread.conversation_id)
        identities.append(thread.identity_id)
    rows = _cursor_rows(
        f"INSERT INTO {Message._meta.db_table} (uuid, account_id, conversation_id, direction, sender_identity_id, "  # noqa: S608
        f"author_id, text, html, language, language_confidence, external_id, metadata, reply_to_id, "
        f"inbound_event_id, sent_at, created_at) "
        f"SELECT v.uuid, v.account_id, v.conversation_id, 'in', v.identity_id, NULL, v.text, v.html, v.language, "
        f"v.confidence, v.external_id, v.metadata::jsonb, NULL, v.event_id, v.sent_at, v.created_at "
        f"FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], "
        f"%s::float8[], %s::text[], %s::text[], %s::bigint[], %s::timestamptz[], %s::timestamptz[]) "
        f"AS v(uuid, account_id, conversation_id, identity_id, text, html, language, confidence, external_id, "
        f"metadata, event_id, sent_at, created_at) "
        f"RETURNING id, uuid",
        [
            "{" + ",".join(str(i.uuid) for i in items) + "}",
            array_int(i.account.pk for i in items),
            array_int(conversations),
            array_int(identities),
            array_text(i.inbound.text for i in items),
            array_text(nh3.clean(i.inbound.html) if i.inbound.html else "" for i in items),
            array_text(i.language for i in items),
            array_float(i.confidence for i in items),
            array_text(i.store_id for i in items),
            array_text(json.dumps(dict(i.inbound.metadata), cls=_METADATA_ENCODER) for i in items),
            array_int(i.event.pk for i in items),
            array_time(i.inbound.sent_at for i in items),
            array_time(i.created_at for i in items),
        ],
    )
    ids = {u: message_id for message_id, u in rows}
    for item in items:
        item.message_id = ids[item.uuid]


def _audit_insert(threads: list[_Thread], now: datetime) -> None:
    """Step 8: conversation.created for every conversation this batch opened, conversation.routed for every move."""
    actions: list[str] = []
    data: list[str] = []
    conversations: list[int | None] = []
    for thread in threads:
        if not thread.exists:
            actions.append("conversation.created")
            data.append(json.dumps({"channel": thread.account.kind}))
            conversations.append(thread.conversation_id)
        for route in thread.routes:
            actions.append("conversation.routed")
            data.append(json.dumps(route))
            conversations.append(thread.conversation_id)
    if not actions:
        return
    _execute(
        f"INSERT INTO {AuditEvent._meta.db_table} (created_at, actor_id, action, conversation_id, target, data) "  # noqa: S608
        f"SELECT %s, NULL, v.action, v.conversation_id, '', v.data::jsonb "
        f"FROM unnest(%s::text[], %s::bigint[], %s::text[]) AS v(action, conversation_id, data)",
        [now, array_text(actions), array_int(conversations), array_text(data)],
    )


def _publish(item: Item, thread: _Thread) -> None:
    """message_ingest's live events, collected by the caller's collect_on_commit() and sent after the commit."""
    groups = [MANAGERS_GROUP]
    if item.queue_id:
        groups.append(queue_group(item.queue_id))
    if item.assignee_id:
        groups.append(agent_group(item.assignee_id))
    if thread.account.kind == "webchat":
        # The fields message_public_json reads, without building a model instance per message.
        message = SimpleNamespace(
            pk=item.message_id,
            direction=Message.Direction.INBOUND,
            text=item.inbound.text,
            external_id=item.store_id or "",
            created_at=item.created_at,
            author=None,
        )
        public = message_public_json(cast(Message, message), [])
        publish_on_commit([visitor_group(thread.handle)], {"type": "message", "message": public})
    publish_on_commit(
        groups,
        {
            "type": "conversation.created" if item.created else "message.created",
            "conversation": thread.conversation_id,
            "message": item.message_id,
            "language": item.language,
            "queue": item.queue_id,
        },
    )


def items_of(work: Iterable[tuple[InboundEvent, Sequence[InboundMessage]]]) -> list[Item]:
    return [
        Item(event=event, account=event.account, inbound=inbound) for event, inbounds in work for inbound in inbounds
    ]
