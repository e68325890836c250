"""Merging two contacts that are one person (an e-mail address and a Telegram account, say), and undoing it.

A merge moves the source contact's identities and conversations to the target and records exactly what moved
in a ``ContactMerge`` row; the source row stays (empty) so that an undo can give everything back. Because intake
finds the contact through the sender's identity (``identity.contact``), a customer who writes again from a moved
identity lands on the target from then on, and on the source again after an undo.

Rules:
- both contacts are locked in id order (``SELECT ... FOR UPDATE``), so two merges touching the same contacts,
  or a merge and its undo, run one after the other and cannot deadlock;
- a contact that is merged away (the source of a merge that stands) takes part in no other merge, and a merge
  whose target has since been merged away cannot be undone until that later merge is: undos go back in order,
  so what a merge recorded is always still where it put it;
- the actor must see both contacts (an agent: at least one conversation of each; managers and admins: any).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from inbox.agents.contact_selectors import contacts_visible_to
from inbox.conversations.models import AuditEvent, Contact, ContactIdentity, ContactMerge, Conversation


class ContactMergeRefused(ValueError):
    """A merge or an undo that is not allowed; the message says why, in words an agent can act on."""


def _label(contact: Contact) -> str:
    return f"{contact.name or contact.email or 'contact'} (#{contact.pk})"


def _lock(*contact_ids: int) -> dict[int, Contact]:
    """Lock the contacts in id order: every merge and undo takes them in the same order, so none deadlock.

    FOR NO KEY UPDATE, not FOR UPDATE: merges and undos of the same contacts still wait for each other, but
    intake creating a conversation for one of them (an insert whose foreign key takes FOR KEY SHARE on the
    contact) does not wait for a merge, nor a merge for it.
    """
    contacts = Contact.objects.select_for_update(no_key=True).filter(pk__in=contact_ids).order_by("pk")
    return {c.pk: c for c in contacts}


def _merged_into(contact_id: int) -> ContactMerge | None:
    return (
        ContactMerge.objects.filter(source_id=contact_id, undone_at__isnull=True)
        .select_related("target")
        .order_by("-created_at")
        .first()
    )


def _audit(*, action: str, actor: Any, merge: ContactMerge, conversation_ids: list[int], data: dict[str, Any]) -> None:
    """One row for the contact, and one on each conversation that changed contact (its own history shows it)."""
    rows = [AuditEvent(actor=actor, action=action, target=f"contact:{merge.target_id}", data=data)]
    rows += [
        AuditEvent(actor=actor, action=action, conversation_id=conversation_id, data=data)
        for conversation_id in conversation_ids
    ]
    AuditEvent.objects.bulk_create(rows, batch_size=500)


def contact_merge(*, target: Contact, source: Contact, actor: Any) -> ContactMerge:
    """Merge ``source`` into ``target``: its identities and conversations move to ``target``, and ``target``'s
    empty name / e-mail take the source's. Audited ("contact.merged"); undone by ``contact_unmerge``."""
    if target.pk == source.pk:
        raise ContactMergeRefused("a contact cannot be merged into itself")
    with transaction.atomic():
        locked = _lock(target.pk, source.pk)
        if len(locked) != 2:
            raise ContactMergeRefused("one of the contacts does not exist (any more)")
        visible = set(contacts_visible_to(actor).filter(pk__in=locked).values_list("pk", flat=True))
        if visible != set(locked):
            # The same words whichever one it is: an agent learns nothing about a contact they cannot see.
            raise ContactMergeRefused("you can merge only contacts whose conversations you can see")
        kept, merged = locked[target.pk], locked[source.pk]
        for contact in (kept, merged):
            away = _merged_into(contact.pk)
            if away is not None:
                raise ContactMergeRefused(
                    f"{_label(contact)} was merged into {_label(away.target)}: use that contact, "
                    "or undo that merge first"
                )

        # Lock order, the same as intake's: the conversations first (a reply being ingested into one of them
        # finishes first and is moved with it), then the identities FOR UPDATE, which waits for an intake that has
        # read an identity FOR KEY SHARE to open a new conversation (intake._identity_key_shared) and makes any
        # later one wait for us. Then the conversations again, to take those that such an intake just committed.
        def conversations() -> list[int]:
            rows = Conversation.objects.select_for_update().filter(contact=merged).order_by("pk")
            return sorted(rows.values_list("pk", flat=True))

        conversations()
        identity_ids = sorted(
            ContactIdentity.objects.select_for_update()
            .filter(contact=merged)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        conversation_ids = conversations()
        ContactIdentity.objects.filter(pk__in=identity_ids).update(contact=kept)
        Conversation.objects.filter(pk__in=conversation_ids).update(contact=kept)
        filled_name = merged.name if not kept.name and merged.name else ""
        filled_email = merged.email if not kept.email and merged.email else ""
        if filled_name or filled_email:
            kept.name = kept.name or filled_name
            kept.email = kept.email or filled_email
            kept.save(update_fields=["name", "email"])
        merge = ContactMerge.objects.create(
            target=kept,
            source=merged,
            actor=actor,
            identity_ids=identity_ids,
            conversation_ids=conversation_ids,
            source_name=merged.name,
            source_email=merged.email,
            filled_name=filled_name,
            filled_email=filled_email,
        )
        _audit(
            action="contact.merged",
            actor=actor,
            merge=merge,
            conversation_ids=conversation_ids,
            data={
                "merge": merge.pk,
                "target": kept.pk,
                "source": merged.pk,
                "identities": identity_ids,
                "conversations": conversation_ids,
                "filled": {k: v for k, v in (("name", filled_name), ("email", filled_email)) if v},
            },
        )
    return merge


def contact_unmerge(*, merge: ContactMerge, actor: Any) -> None:
    """Undo a merge: the identities it moved go back to the source contact, with the conversations it moved and
    the conversations those identities started on the target since (a conversation belongs with the identity it
    is with: had the merge never happened, intake would have put it on the source). Conversations of the target's
    own identities stay. The target's name / e-mail are cleared where the merge filled them and nobody has
    changed them since. Audited ("contact.unmerged")."""
    with transaction.atomic():
        record = ContactMerge.objects.select_for_update().filter(pk=merge.pk).first()
        if record is None:
            raise ContactMergeRefused("that merge does not exist")
        if record.undone_at is not None:
            raise ContactMergeRefused(f"this merge was already undone on {record.undone_at:%Y-%m-%d %H:%M} UTC")
        locked = _lock(record.target_id, record.source_id)
        kept, merged = locked[record.target_id], locked[record.source_id]
        if not contacts_visible_to(actor).filter(pk=kept.pk).exists():
            raise ContactMergeRefused("you can undo only merges of contacts whose conversations you can see")
        later = _merged_into(kept.pk)
        if later is not None:
            raise ContactMergeRefused(
                f"{_label(kept)} has since been merged into {_label(later.target)}: undo that merge first"
            )
        identity_ids = sorted(
            ContactIdentity.objects.filter(pk__in=record.identity_ids, contact=kept).values_list("pk", flat=True)
        )
        conversation_ids = sorted(
            Conversation.objects.select_for_update()
            .filter(contact=kept)
            .filter(Q(pk__in=record.conversation_ids) | Q(identity_id__in=identity_ids))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        ContactIdentity.objects.filter(pk__in=identity_ids).update(contact=merged)
        Conversation.objects.filter(pk__in=conversation_ids).update(contact=merged)
        cleared = []
        if record.filled_name and kept.name == record.filled_name:
            kept.name = ""
            cleared.append("name")
        if record.filled_email and kept.email == record.filled_email:
            kept.email = ""
            cleared.append("email")
        if cleared:
            kept.save(update_fields=cleared)
        record.undone_at = timezone.now()
        record.undone_by = actor
        record.save(update_fields=["undone_at", "undone_by"])
        _audit(
            action="contact.unmerged",
            actor=actor,
            merge=record,
            conversation_ids=conversation_ids,
            data={
                "merge": record.pk,
                "target": kept.pk,
                "source": merged.pk,
                "identities": identity_ids,
                "conversations": conversation_ids,
                "cleared": cleared,
            },
        )
    merge.undone_at, merge.undone_by = record.undone_at, record.undone_by
