"""Contacts as an agent may see them: reads for the contact pages and the merge service's permission check.

A contact is visible to a manager or an admin always, and to an agent when at least one of its conversations is
(``conversations_visible_to``: the agent's language queues and what is assigned to them). Every query here is
bounded: identities come in one prefetch, counts and the last message as subqueries, never one query per row.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Left

from inbox.agents.selectors import conversations_visible_to, role_of
from inbox.conversations.models import Contact, ContactIdentity, ContactMerge, Conversation, Message

User = AbstractBaseUser | AnonymousUser

CONTACTS_PAGE_SIZE = 50
MERGE_CANDIDATES_SHOWN = 20
CONVERSATIONS_SHOWN = 100
MERGES_SHOWN = 50


def contacts_visible_to(user: User) -> QuerySet[Contact]:
    if not user.is_authenticated:
        return Contact.objects.none()
    if role_of(user).is_manager:
        return Contact.objects.all()
    return Contact.objects.filter(Exists(conversations_visible_to(user).filter(contact=OuterRef("pk"))))


def contact_visible(*, user: User, contact_id: int) -> Contact | None:
    return contacts_visible_to(user).filter(pk=contact_id).first()


def _merged_away() -> Exists:
    """Merged into another contact, and the merge not undone: an empty row kept so the merge can be undone."""
    return Exists(ContactMerge.objects.filter(source=OuterRef("pk"), undone_at__isnull=True))


def _identities_prefetch() -> Prefetch:  # type: ignore[type-arg]
    return Prefetch("identities", queryset=ContactIdentity.objects.order_by("kind", "handle", "id"))


def contact_search(*, user: User, q: str = "") -> QuerySet[Contact]:
    """Contacts the user can see matching ``q`` (name, e-mail, an identity's handle or display name; substring,
    any case), newest first, with ``conversation_count`` (of the conversations the user can see) and their
    identities prefetched. Contacts merged away (empty, kept for the undo) are left out."""
    contacts = contacts_visible_to(user).exclude(
        _merged_away() & ~Exists(ContactIdentity.objects.filter(contact=OuterRef("pk")))
    )
    q = q.strip()
    if q:
        handle_matches = ContactIdentity.objects.filter(contact=OuterRef("pk")).filter(
            Q(handle__icontains=q) | Q(display_name__icontains=q)
        )
        contacts = contacts.filter(Q(name__icontains=q) | Q(email__icontains=q) | Exists(handle_matches))
    counts = (
        conversations_visible_to(user)
        .filter(contact=OuterRef("pk"))
        .order_by()
        .values("contact")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        contacts.annotate(conversation_count=Coalesce(Subquery(counts, output_field=IntegerField()), Value(0)))
        .prefetch_related(_identities_prefetch())
        .order_by("-pk")
    )


def contact_detail(*, user: User, contact_id: int) -> Contact | None:
    """The contact with its identities, or None when it does not exist or the user cannot see it."""
    return contacts_visible_to(user).prefetch_related(_identities_prefetch()).filter(pk=contact_id).first()


def contact_conversations(*, user: User, contact: Contact) -> QuerySet[Conversation]:
    """The contact's conversations that the user can see, latest first, each with ``last_text`` (the start of its
    last message to or from the customer) — at most CONVERSATIONS_SHOWN."""
    last = (
        Message.objects.filter(conversation=OuterRef("pk"))
        .exclude(direction=Message.Direction.NOTE)
        .order_by("-created_at", "-id")
        .annotate(start=Left("text", 200))
        .values("start")[:1]
    )
    return (
        conversations_visible_to(user)
        .filter(contact=contact)
        .annotate(last_text=Subquery(last))
        .order_by("-last_message_at", "-id")[:CONVERSATIONS_SHOWN]
    )


def contact_merges(*, contact: Contact) -> QuerySet[ContactMerge]:
    """Merges this contact took part in (as the one kept or the one merged in), latest first."""
    return (
        ContactMerge.objects.filter(Q(target=contact) | Q(source=contact))
        .select_related("target", "source", "actor", "undone_by")
        .order_by("-created_at", "-id")[:MERGES_SHOWN]
    )


def merge_candidates(*, user: User, contact: Contact, q: str) -> list[Contact]:
    """Contacts the user could merge into ``contact``: visible, matching ``q``, not itself, not merged away."""
    if not q.strip():
        return []
    return list(contact_search(user=user, q=q).exclude(pk=contact.pk).exclude(_merged_away())[:MERGE_CANDIDATES_SHOWN])


def contact_merged_into(*, contact: Contact) -> ContactMerge | None:
    """The merge that emptied this contact into another, while it stands."""
    return (
        ContactMerge.objects.filter(source=contact, undone_at__isnull=True)
        .select_related("target")
        .order_by("-created_at")
        .first()
    )


def merge_visible(*, user: User, merge_id: int) -> ContactMerge | None:
    """A merge the user may look at and undo: one whose kept contact (or, once undone, either side) they can see."""
    visible = contacts_visible_to(user)
    return (
        ContactMerge.objects.filter(pk=merge_id)
        .filter(Q(target__in=visible) | Q(source__in=visible))
        .select_related("target", "source")
        .first()
    )
