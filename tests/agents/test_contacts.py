"""Contacts: merge and undo through the real services and PostgreSQL, the pages against every role, and a bounded
number of queries whatever the number of contacts, identities, conversations and merges."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from inbox.conversations.models import AuditEvent, Contact, ContactIdentity, ContactMerge, Conversation
from inbox.conversations.services import (
    conversation_set_status,
    inbound_events_process,
    inbound_events_record,
)
from inbox.conversations.services.contacts import ContactMergeRefused, contact_merge, contact_unmerge

SPANISH = "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?"
RUSSIAN = "Здравствуйте, я не могу вывести деньги со своего счёта со вчерашнего дня."


def say(demo: Any, visitors: list[str], text: str = SPANISH) -> None:
    """Each visitor writes once on the demo web chat; the whole batch is ingested in one call."""
    events = []
    for visitor in visitors:
        client_id = str(uuid.uuid4())
        events.append((f"{visitor}:{client_id}", {"visitor": visitor, "client_id": client_id, "text": text}))
    report = inbound_events_process(event_ids=inbound_events_record(account=demo.webchat, events=events))
    assert report.done == len(visitors)


def contact_of(visitor: str) -> Contact:
    return ContactIdentity.objects.select_related("contact").get(kind="webchat", handle=visitor).contact


def client_for(user: Any) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def state() -> dict[str, Any]:
    """Where every identity and conversation is, and every contact's name and e-mail."""
    return {
        "identities": dict(ContactIdentity.objects.values_list("pk", "contact_id")),
        "conversations": dict(Conversation.objects.values_list("pk", "contact_id")),
        "contacts": {c.pk: (c.name, c.email) for c in Contact.objects.all()},
    }


@pytest.fixture
def two(demo: Any) -> tuple[Contact, Contact]:
    """Two contacts of one person: an anonymous web chat visitor (kept), and Lucía with a name, an e-mail and a
    second identity (merged in)."""
    say(demo, ["visitor-1", "visitor-2"])
    kept, merged = contact_of("visitor-1"), contact_of("visitor-2")
    Contact.objects.filter(pk=kept.pk).update(name="", email="")
    Contact.objects.filter(pk=merged.pk).update(name="Lucía", email="lucia@example.com")
    ContactIdentity.objects.create(contact=merged, kind="email", handle="lucia@example.com", display_name="Lucía")
    kept.refresh_from_db()
    merged.refresh_from_db()
    return kept, merged


def test_merge_moves_identities_and_conversations_and_new_messages_follow(demo: Any, two: Any) -> None:
    kept, merged = two
    moved_identities = sorted(merged.identities.values_list("pk", flat=True))
    [moved_conversation] = merged.conversations.all()

    merge = contact_merge(target=kept, source=merged, actor=demo.agent_es)

    assert sorted(kept.identities.values_list("pk", flat=True)) == sorted(
        [*moved_identities, *ContactIdentity.objects.filter(handle="visitor-1").values_list("pk", flat=True)]
    )
    assert not merged.identities.exists() and not merged.conversations.exists()
    assert set(kept.conversations.values_list("pk", flat=True)) == {
        moved_conversation.pk,
        *Conversation.objects.filter(identity__handle="visitor-1").values_list("pk", flat=True),
    }
    kept.refresh_from_db()
    assert (kept.name, kept.email) == ("Lucía", "lucia@example.com")  # its empty fields, filled
    assert Contact.objects.filter(pk=merged.pk).exists()  # kept, empty, for the undo
    assert merge.identity_ids == moved_identities and merge.conversation_ids == [moved_conversation.pk]
    assert (merge.source_name, merge.source_email) == ("Lucía", "lucia@example.com")
    assert (merge.filled_name, merge.filled_email) == ("Lucía", "lucia@example.com")
    assert merge.actor == demo.agent_es and merge.undone_at is None
    audit = AuditEvent.objects.filter(action="contact.merged")
    assert audit.filter(target=f"contact:{kept.pk}", data__source=merged.pk).count() == 1
    assert list(audit.filter(conversation__isnull=False).values_list("conversation_id", flat=True)) == [
        moved_conversation.pk
    ]

    # The customer writes again from the merged identity: the open conversation (now the kept contact's) gets it.
    say(demo, ["visitor-2"])
    assert moved_conversation.messages.count() == 2
    # Once that is resolved, the next message opens a new conversation, on the kept contact.
    conversation_set_status(conversation=moved_conversation, status="resolved", actor=demo.agent_es)
    say(demo, ["visitor-2"])
    newest = Conversation.objects.filter(identity__handle="visitor-2").latest("pk")
    assert newest.pk != moved_conversation.pk and newest.contact_id == kept.pk


def test_unmerge_restores_exactly_and_takes_the_identities_new_conversations_along(demo: Any, two: Any) -> None:
    kept, merged = two
    before = state()
    merge = contact_merge(target=kept, source=merged, actor=demo.manager)
    # After the merge the moved identity starts a new conversation (on the kept contact), the kept contact's own
    # identity another; the undo gives the first back with its identity and leaves the second where it is.
    [moved_conversation] = Conversation.objects.filter(identity__handle="visitor-2")
    conversation_set_status(conversation=moved_conversation, status="resolved", actor=demo.manager)
    say(demo, ["visitor-2"])
    since = Conversation.objects.filter(identity__handle="visitor-2").latest("pk")
    assert since.contact_id == kept.pk

    contact_unmerge(merge=merge, actor=demo.manager)

    after = state()
    assert after["identities"] == before["identities"]
    assert after["contacts"] == before["contacts"]  # the kept contact's name and e-mail are empty again
    expected = {**before["conversations"], since.pk: merged.pk}
    assert after["conversations"] == expected
    merge.refresh_from_db()
    assert merge.undone_at is not None and merge.undone_by == demo.manager
    undo = AuditEvent.objects.get(action="contact.unmerged", target=f"contact:{kept.pk}")
    assert sorted(undo.data["conversations"]) == sorted([moved_conversation.pk, since.pk])
    # And from now on the identity's messages land on its own contact again.
    conversation_set_status(conversation=since, status="resolved", actor=demo.manager)
    say(demo, ["visitor-2"])
    assert Conversation.objects.filter(identity__handle="visitor-2").latest("pk").contact_id == merged.pk


def test_undo_keeps_a_name_changed_since_the_merge(demo: Any, two: Any) -> None:
    kept, merged = two
    merge = contact_merge(target=kept, source=merged, actor=demo.manager)
    Contact.objects.filter(pk=kept.pk).update(name="Lucía Pérez")
    contact_unmerge(merge=merge, actor=demo.manager)
    kept.refresh_from_db()
    assert (kept.name, kept.email) == ("Lucía Pérez", "")


def test_double_undo_is_refused(demo: Any, two: Any) -> None:
    kept, merged = two
    merge = contact_merge(target=kept, source=merged, actor=demo.manager)
    contact_unmerge(merge=merge, actor=demo.manager)
    snapshot = state()
    with pytest.raises(ContactMergeRefused, match="already undone"):
        contact_unmerge(merge=ContactMerge.objects.get(pk=merge.pk), actor=demo.manager)
    assert state() == snapshot
    assert AuditEvent.objects.filter(action="contact.unmerged", conversation__isnull=True).count() == 1
    # The page says so, and changes nothing.
    response = client_for(demo.manager).post(f"/contacts/merges/{merge.pk}/undo/", follow=True)
    assert response.status_code == 200 and "already undone" in response.content.decode()
    assert state() == snapshot


def test_merging_a_contact_into_itself_is_refused(demo: Any, two: Any) -> None:
    kept, _ = two
    with pytest.raises(ContactMergeRefused, match="itself"):
        contact_merge(target=kept, source=kept, actor=demo.manager)
    response = client_for(demo.manager).post(f"/contacts/{kept.pk}/merge/", {"source": kept.pk}, follow=True)
    assert response.status_code == 200 and "cannot be merged into itself" in response.content.decode()
    assert not ContactMerge.objects.exists()


def test_a_merged_away_contact_takes_part_in_no_other_merge_and_undos_go_in_order(demo: Any, two: Any) -> None:
    kept, merged = two
    say(demo, ["visitor-3"])
    third = contact_of("visitor-3")
    first = contact_merge(target=kept, source=merged, actor=demo.manager)
    for target, source in ((merged, third), (third, merged)):
        with pytest.raises(ContactMergeRefused, match="was merged into"):
            contact_merge(target=target, source=source, actor=demo.manager)
    second = contact_merge(target=third, source=kept, actor=demo.manager)  # kept, with what it got, into third
    with pytest.raises(ContactMergeRefused, match="undo that merge first"):
        contact_unmerge(merge=first, actor=demo.manager)
    contact_unmerge(merge=second, actor=demo.manager)
    contact_unmerge(merge=first, actor=demo.manager)
    assert set(merged.identities.values_list("handle", flat=True)) == {"visitor-2", "lucia@example.com"}
    assert set(kept.identities.values_list("handle", flat=True)) == {"visitor-1"}
    assert set(third.identities.values_list("handle", flat=True)) == {"visitor-3"}


@pytest.mark.parametrize(
    ("who", "sees_ru"),
    [("agent_es", False), ("agent_en", False), ("agent_ru_offline", True), ("manager", True)],
)
def test_a_contact_is_visible_only_to_who_sees_one_of_its_conversations(demo: Any, who: str, sees_ru: bool) -> None:
    say(demo, ["v-es"])
    say(demo, ["v-ru"], RUSSIAN)
    es, ru = contact_of("v-es"), contact_of("v-ru")
    assert Conversation.objects.get(contact=ru).queue == demo.queues["ru"]
    user = getattr(demo, who)
    client = client_for(user)
    sees_es = who in ("agent_es", "manager")

    assert client.get(f"/contacts/{ru.pk}/").status_code == (200 if sees_ru else 404)
    assert client.get(f"/contacts/{es.pk}/").status_code == (200 if sees_es else 404)
    listed = client.get("/contacts/").content.decode()
    assert (f'data-contact="{ru.pk}"' in listed) is sees_ru
    assert (f'data-contact="{es.pk}"' in listed) is sees_es
    found = client.get(f"/contacts/{es.pk}/", {"merge_q": "v-ru"}).content.decode() if sees_es else ""
    assert (f'data-sb="merge-candidate" data-contact="{ru.pk}"' in found) is (sees_es and sees_ru)

    # Merging ru into es (and back): only for whoever sees both; otherwise 404 and nothing moves.
    response = client.post(f"/contacts/{es.pk}/merge/", {"source": ru.pk})
    if sees_es and sees_ru:
        assert response.status_code == 302 and response["Location"] == f"/contacts/{es.pk}/"
        assert Conversation.objects.get(identity__handle="v-ru").contact_id == es.pk
    else:
        assert response.status_code == 404
        assert client.post(f"/contacts/{ru.pk}/merge/", {"source": es.pk}).status_code == 404
        assert not ContactMerge.objects.exists()
        with pytest.raises(ContactMergeRefused, match="can see"):
            contact_merge(target=es, source=ru, actor=user)
        assert not ContactMerge.objects.exists()


def test_anonymous_is_sent_to_sign_in_and_an_invisible_merge_cannot_be_undone(demo: Any) -> None:
    say(demo, ["v-ru-1", "v-ru-2"], RUSSIAN)
    one, other = contact_of("v-ru-1"), contact_of("v-ru-2")
    merge = contact_merge(target=one, source=other, actor=demo.agent_ru_offline)
    anonymous = Client()
    for url in ("/contacts/", f"/contacts/{one.pk}/"):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    for url, data in ((f"/contacts/{one.pk}/merge/", {"source": other.pk}), (f"/contacts/merges/{merge.pk}/undo/", {})):
        assert anonymous.post(url, data).status_code == 302
    assert client_for(demo.agent_es).post(f"/contacts/merges/{merge.pk}/undo/").status_code == 404
    with pytest.raises(ContactMergeRefused, match="can see"):
        contact_unmerge(merge=merge, actor=demo.agent_es)
    merge.refresh_from_db()
    assert merge.undone_at is None
    assert client_for(demo.agent_ru_offline).post(f"/contacts/merges/{merge.pk}/undo/").status_code == 302
    merge.refresh_from_db()
    assert merge.undone_at is not None


def test_merge_and_undo_through_the_pages(demo: Any, two: Any) -> None:
    kept, merged = two
    client = client_for(demo.agent_es)
    page = client.get(f"/contacts/{kept.pk}/", {"merge_q": "lucia@"})
    assert page.status_code == 200
    assert "default-src 'self'" in page["Content-Security-Policy"]
    html = page.content.decode()
    assert f'data-sb="merge-candidate" data-contact="{merged.pk}"' in html
    assert "Moves 2 identities (email lucia@example.com, webchat visitor-2)" in html
    assert "fills this contact's empty name and e-mail" in html

    response = client.post(f"/contacts/{kept.pk}/merge/", {"source": merged.pk}, follow=True)
    html = response.content.decode()
    assert response.status_code == 200 and "Merged Lucía into this contact" in html
    assert html.count('data-sb="identity-row"') == 3 and html.count('data-sb="conversation-row"') == 2
    merge = ContactMerge.objects.get()
    assert f'action="/contacts/merges/{merge.pk}/undo/"' in html
    # The merged-away contact leaves the list (it is empty) and the search.
    listed = client.get("/contacts/").content.decode()
    assert f'data-contact="{merged.pk}"' not in listed and f'data-contact="{kept.pk}"' in listed

    response = client.post(f"/contacts/merges/{merge.pk}/undo/", follow=True)
    html = response.content.decode()
    assert "Merge undone" in html and "undone " in html and 'data-sb="undo-merge"' not in html
    assert html.count('data-sb="identity-row"') == 1
    assert set(merged.identities.values_list("handle", flat=True)) == {"visitor-2", "lucia@example.com"}


def test_search_by_name_email_and_handle(demo: Any, two: Any) -> None:
    kept, merged = two
    client = client_for(demo.manager)
    for q, expected in (("lucía", {merged.pk}), ("EXAMPLE.COM", {merged.pk}), ("visitor-", {kept.pk, merged.pk})):
        html = client.get("/contacts/", {"q": q}).content.decode()
        shown = {c.pk for c in (kept, merged) if f'data-contact="{c.pk}"' in html}
        assert shown == expected, q


def build(demo: Any, n: int, prefix: str) -> Contact:
    """n contacts merged into one (n-1 merges; n identities of two kinds, n conversations on it), and n more
    contacts named "<prefix>cand-…" to be found as merge candidates: every list on the pages grows with n."""
    say(demo, [f"{prefix}main-{i}" for i in range(n)] + [f"{prefix}cand-{i}" for i in range(n)])
    main = [contact_of(f"{prefix}main-{i}") for i in range(n)]
    for i, contact in enumerate(main):
        ContactIdentity.objects.create(contact=contact, kind="email", handle=f"{prefix}main-{i}@example.com")
    for i in range(n):
        Contact.objects.filter(pk=contact_of(f"{prefix}cand-{i}").pk).update(name=f"{prefix}cand-{i}")
    for other in main[1:]:
        contact_merge(target=main[0], source=other, actor=demo.manager)
    return main[0]


def page_queries(client: Client, url: str, params: dict[str, str] | None = None) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(queries), response.content.decode()


@pytest.mark.parametrize("who", ["agent_es", "manager"])
def test_pages_make_the_same_number_of_queries_for_1_and_30_contacts(
    demo: Any, django_assert_max_num_queries: Any, who: str
) -> None:
    client = client_for(getattr(demo, who))
    counts = {}
    shown = 0
    for n, prefix in ((1, "one-"), (30, "many-")):
        main = build(demo, n, prefix)
        shown += n + 1  # the merged-away contacts are not listed
        with django_assert_max_num_queries(20):
            listing, html = page_queries(client, "/contacts/")
        assert html.count('data-sb="contact-row"') == min(shown, 50)
        with django_assert_max_num_queries(25):
            detail, html = page_queries(client, f"/contacts/{main.pk}/", {"merge_q": f"{prefix}cand-"})
        assert html.count('data-sb="conversation-row"') == n and html.count('data-sb="identity-row"') == 2 * n
        assert html.count('data-sb="merge-row"') == n - 1 and html.count('data-sb="merge-candidate"') == min(n, 20)
        counts[n] = (listing, detail)
    assert counts[1] == counts[30], counts


def test_the_list_is_paginated_by_50_and_keeps_the_search(demo: Any) -> None:
    Contact.objects.bulk_create([Contact(name=f"Paged {i:02d}") for i in range(55)])
    client = client_for(demo.manager)
    first = client.get("/contacts/", {"q": "paged"}).content.decode()
    assert first.count('data-sb="contact-row"') == 50 and "Page 1 of 2" in first
    assert 'href="?q=paged&amp;page=2"' in first
    second = client.get("/contacts/", {"q": "paged", "page": "2"}).content.decode()
    assert second.count('data-sb="contact-row"') == 5 and "Paged 00" in second
