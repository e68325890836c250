"""What an agent may see. Every agent endpoint reads conversations through ``conversations_visible_to``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import CharField, Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Concat, Substr

from inbox.agents.models import ConversationRead
from inbox.conversations.models import Conversation, Message
from inbox.routing.models import AgentProfile, AgentQueue


@dataclass(frozen=True)
class Role:
    """What the signed-in user may do: agents work their queues, managers see everything, admins also configure."""

    profile: AgentProfile | None
    is_manager: bool  # sees every queue and conversation (managers and admins)
    is_admin: bool  # configures channels, queues, agents

    @property
    def label(self) -> str:
        return "admin" if self.is_admin else "manager" if self.is_manager else "agent"

    @property
    def presence(self) -> str:
        return self.profile.presence if self.profile else AgentProfile.Presence.OFFLINE


def role_of(user: AbstractBaseUser | AnonymousUser) -> Role:
    profile = profile_of(user)
    is_admin = bool(getattr(user, "is_superuser", False)) or (
        profile is not None and profile.role == AgentProfile.Role.ADMIN
    )
    return Role(profile=profile, is_manager=sees_everything(user, profile), is_admin=is_admin)


def profile_of(user: AbstractBaseUser | AnonymousUser) -> AgentProfile | None:
    """The user's agent profile with its queues, read once per user object (one request, one socket)."""
    if not user.is_authenticated:
        return None
    cached: AgentProfile | bool | None = getattr(user, "_switchboard_profile", False)
    if cached is not False:
        return cached  # type: ignore[return-value]
    profile = AgentProfile.objects.filter(user_id=user.pk).prefetch_related("queues").first()
    user._switchboard_profile = profile  # type: ignore[union-attr,attr-defined]
    return profile


def sees_everything(user: AbstractBaseUser | AnonymousUser, profile: AgentProfile | None) -> bool:
    return bool(getattr(user, "is_superuser", False)) or (
        profile is not None and profile.role in (AgentProfile.Role.MANAGER, AgentProfile.Role.ADMIN)
    )


def conversations_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Conversation]:
    """Managers and admins: everything. Agents: their language queues and what is assigned to them."""
    profile = profile_of(user)
    base = Conversation.objects.select_related("account", "queue", "identity", "contact")
    if sees_everything(user, profile):
        return base
    if profile is None:
        return base.none()
    return base.filter(Q(queue__in=profile.queues.all()) | Q(assignee_id=user.pk))


def conversation_visible(*, user: AbstractBaseUser | AnonymousUser, conversation_id: int) -> Conversation | None:
    """The conversation if this user may see it, with its assignee and `read_at`: the user's read mark on it."""
    mine = ConversationRead.objects.filter(conversation=OuterRef("pk"), user_id=cast(int, user.pk)).values("read_at")
    return (
        conversations_visible_to(user)
        .select_related("assignee")
        .annotate(read_at=Subquery(mine[:1]))
        .filter(pk=conversation_id)
        .first()
    )


def conversation_messages(*, conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.select_related("delivery", "author", "sender_identity").order_by("created_at", "id")


# --- The inbox list -------------------------------------------------------------------------------------------
STATUS_FILTERS = ("open", "pending", "snoozed", "resolved", "all")


@dataclass(frozen=True)
class InboxFilters:
    """The list's filters, as read from the query string (bad values are dropped, never an error page)."""

    queue: int | None = None
    channel: str = ""
    status: str = "open"
    assignee: str = ""  # "" any, "me", "none" (unassigned), or a user id
    priority: int | None = None
    q: str = ""
    page: int = 1

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> InboxFilters:
        def number(name: str) -> int | None:
            value = params.get(name, "").strip()
            return int(value) if value.isdigit() else None

        status = params.get("status", "open")
        assignee = params.get("assignee", "").strip()
        return cls(
            queue=number("queue"),
            channel=params.get("channel", "").strip()[:32],
            status=status if status in STATUS_FILTERS else "open",
            assignee=assignee if assignee in ("me", "none") or assignee.isdigit() else "",
            priority=number("priority"),
            q=" ".join(params.get("q", "").split())[:200],
            page=max(1, min(number("page") or 1, 1000)),
        )

    def query(self, **changes: Any) -> str:
        """This filter set as a query string, with some values changed (links to pages, to other queues)."""
        values = {
            "queue": self.queue,
            "channel": self.channel,
            "status": self.status if self.status != "open" else "",
            "assignee": self.assignee,
            "priority": self.priority,
            "q": self.q,
            "page": self.page if self.page != 1 else "",
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


# A word that the planner expects in fewer messages than this is looked up through the trigram index first.
RARE_WORD_MESSAGES = 2000


def _few_messages_contain(word: str) -> bool:
    """Whether PostgreSQL expects few messages to contain `word` (pg_trgm's estimate from the GIN index's statistics;
    planning only, nothing is read). Always False elsewhere."""
    if connection.vendor != "postgresql":
        return False
    sql, params = Message.objects.filter(text__icontains=word).values("pk").query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cur.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"]) < RARE_WORD_MESSAGES


def _search(qs: QuerySet[Conversation], q: str) -> QuerySet[Conversation]:
    """Every word must occur in one of the conversation's messages (any language, any script: a substring
    match served by the trigram index on PostgreSQL), or in its subject or the contact's name."""
    for word in q.split()[:8]:
        matching = Message.objects.filter(text__icontains=word)
        if _few_messages_contain(word):
            # A rare word (an order number, a name): the conversations that have it come off three trigram indexes
            # (messages, subjects, contacts' names: agents/0002), hashed once; each candidate is then a lookup.
            # EXISTS would read every candidate's messages looking for it.
            having = (
                matching.values("conversation_id")
                .union(Conversation.objects.filter(subject__icontains=word).values("pk"))
                .union(Conversation.objects.filter(contact__name__icontains=word).values("pk"))
            )
            qs = qs.filter(pk__in=having)
        else:
            # EXISTS per candidate conversation (through msg_timeline), not IN (all matching messages): a common
            # word matches tens of thousands of messages, but the list only needs the first page of conversations.
            in_messages = Exists(matching.filter(conversation=OuterRef("pk")))
            qs = qs.filter(in_messages | Q(subject__icontains=word) | Q(contact__name__icontains=word))
    return qs


# The columns a row of the list shows (inbox_tags.conversation_rows).
ROW_FIELDS = (
    *("priority", "status", "language", "subject", "waiting_since", "last_message_at", "queue_id"),
    *("account__kind", "account__name", "contact__name", "assignee__username"),
    *("identity__kind", "identity__handle", "identity__display_name"),
)


def inbox_conversations(
    *, user: AbstractBaseUser | AnonymousUser, filters: InboxFilters, page_size: int
) -> tuple[list[Conversation], bool]:
    """One page of the list and whether there is another. One query, whatever the page size: the row's channel,
    queue, contact, assignee, last message preview and the caller's read mark come in the same statement."""
    qs = conversations_visible_to(user)
    if filters.status != "all":
        qs = qs.filter(status=filters.status)
    if filters.queue is not None:
        qs = qs.filter(queue_id=filters.queue)
    if filters.channel:
        qs = qs.filter(account__kind=filters.channel)
    if filters.assignee == "me":
        qs = qs.filter(assignee_id=user.pk)
    elif filters.assignee == "none":
        qs = qs.filter(assignee__isnull=True)
    elif filters.assignee:
        qs = qs.filter(assignee_id=int(filters.assignee))
    if filters.priority is not None:
        qs = qs.filter(priority=filters.priority)
    if filters.q:
        qs = _search(qs, filters.q)
    # The order of the conv_inbox_order index (models.py), so the first page is read off it.
    order = [F("priority").desc(), F("waiting_since").asc(nulls_last=True), F("last_message_at").desc(), F("id").desc()]
    start = (filters.page - 1) * page_size
    # The page's ids first, in a subquery: the rows skipped to reach a later page are then only index entries, and
    # the row's details (joins, last message, read mark) are computed for the rows shown alone.
    page = qs.order_by(*order).values("pk")[start : start + page_size + 1]
    last = Message.objects.filter(conversation=OuterRef("pk")).exclude(direction=Message.Direction.NOTE)
    last = last.order_by("-created_at", "-id")
    mine = ConversationRead.objects.filter(conversation=OuterRef("pk"), user_id=cast(int, user.pk))
    # One subquery for the last message's direction and the start of its text ("in|Hello...").
    head = Concat(F("direction"), Value("|"), Substr("text", 1, 140), output_field=CharField())
    shown = (
        Conversation.objects.filter(pk__in=page)
        .select_related("account", "identity", "contact", "assignee")
        # What a row shows, no more: each column is parsed into 50 model instances per page.
        .only(*ROW_FIELDS)
        .annotate(
            last=Subquery(last.annotate(head=head).values("head")[:1]),
            read_at=Subquery(mine.values("read_at")[:1]),
        )
    )
    rows: list[Any] = list(shown.order_by(*order))
    for row in rows:
        direction, _, row.preview = (row.last or "").partition("|")
        row.unread = direction == Message.Direction.INBOUND and (
            row.read_at is None or (row.last_message_at is not None and row.last_message_at > row.read_at)
        )
    return rows[:page_size], len(rows) > page_size


@dataclass(frozen=True)
class QueueCount:
    queue: AgentQueue
    open: int
    waiting: int  # open and nobody has it yet


def queue_counts(*, user: AbstractBaseUser | AnonymousUser) -> list[QueueCount]:
    """Per queue the caller works (managers: all): open conversations, and how many of them nobody has yet."""
    role = role_of(user)
    queues = AgentQueue.objects.filter(is_active=True)
    if not role.is_manager:
        queues = queues.filter(pk__in=[q.pk for q in role.profile.queues.all()] if role.profile else [])
    counts = {
        row["queue_id"]: row
        for row in Conversation.objects.filter(status=Conversation.Status.OPEN, queue__in=queues)
        .values("queue_id")
        .annotate(open=Count("id"), waiting=Count("id", filter=Q(assignee__isnull=True)))
    }
    return [
        QueueCount(queue=q, open=counts.get(q.pk, {}).get("open", 0), waiting=counts.get(q.pk, {}).get("waiting", 0))
        for q in queues.order_by("is_fallback", "name")
    ]
