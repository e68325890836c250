"""Canned responses (rendering hostile names safely, the admin page) and read marks."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from inbox.agents.models import CannedResponse, ConversationRead
from inbox.agents.services import canned_render, conversation_mark_read
from inbox.conversations.models import Contact, ContactIdentity, Conversation
from tests.factories import make_demo


def conversation_with(demo, name: str, display_name: str = "") -> Conversation:  # type: ignore[no-untyped-def]
    contact = Contact.objects.create(name=name)
    identity = ContactIdentity.objects.create(
        contact=contact, kind="webchat", handle=f"h-{Contact.objects.count()}", display_name=display_name
    )
    return Conversation.objects.create(
        account=demo.webchat, contact=contact, identity=identity, language="es", queue=demo.queues["es"]
    )


def canned(text: str) -> CannedResponse:
    return CannedResponse.objects.create(
        language="es", shortcut=f"s{CannedResponse.objects.count()}", title="t", text=text
    )


def test_canned_render_fills_the_variables(demo) -> None:
    demo.agent_es.first_name = "Ana"
    demo.agent_es.save()
    conversation = conversation_with(demo, "Lucía")
    text = canned("Hola {contact_name}, soy {agent_name} de {channel}. Tu caso es el #{conversation_id}.")
    assert canned_render(canned=text, conversation=conversation, agent=demo.agent_es) == (
        f"Hola Lucía, soy Ana de Website. Tu caso es el #{conversation.pk}."
    )
    # No first name: the username.
    assert canned_render(canned=canned("{agent_name}"), conversation=conversation, agent=demo.agent_en) == "ben"


def test_canned_render_with_braces_in_the_contact_name_and_the_text(demo) -> None:
    conversation = conversation_with(demo, "{agent_name} {0} {__class__} {")
    text = canned("Hi {contact_name}! {unknown} {} {{contact_name}} { contact_name } {0} }{ {agent_name}")
    rendered = canned_render(canned=text, conversation=conversation, agent=demo.agent_es)
    # The customer's braces are inserted as text, never expanded; unknown variables and stray braces stay.
    assert rendered == (
        "Hi {agent_name} {0} {__class__} {! {unknown} {} "  # the name, then the text's unknown and empty braces
        "{{agent_name} {0} {__class__} {} { contact_name } {0} }{ ana"
    )


def test_canned_render_falls_back_to_the_channel_display_name(demo) -> None:
    conversation = conversation_with(demo, "", display_name="lucia_99")
    assert canned_render(canned=canned("Hola {contact_name}"), conversation=conversation, agent=demo.agent_es) == (
        "Hola lucia_99"
    )
    nameless = conversation_with(demo, "")
    assert canned_render(canned=canned("Hola {contact_name}"), conversation=nameless, agent=demo.agent_es) == "Hola "


def test_mark_read_inserts_then_moves_forward(demo) -> None:
    conversation = conversation_with(demo, "Lucía")
    conversation_mark_read(conversation=conversation, user=demo.agent_es)
    first = ConversationRead.objects.get(user=demo.agent_es, conversation=conversation).read_at
    assert timezone.now() - first < timedelta(seconds=5)
    conversation_mark_read(conversation=conversation, user=demo.agent_es)
    conversation_mark_read(conversation=conversation, user=demo.manager)
    assert ConversationRead.objects.filter(conversation=conversation).count() == 2
    assert ConversationRead.objects.get(user=demo.agent_es, conversation=conversation).read_at >= first


@pytest.mark.django_db(transaction=True)
def test_mark_read_from_many_tabs_at_once_keeps_one_row() -> None:
    demo = make_demo()
    conversation = conversation_with(demo, "Lucía")
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def mark() -> None:
        try:
            barrier.wait()
            conversation_mark_read(conversation=conversation, user=demo.agent_es)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=mark) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ConversationRead.objects.filter(conversation=conversation, user=demo.agent_es).count() == 1


def test_admin_lists_and_creates_canned_responses(demo, admin_user) -> None:
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        "/admin/agents/cannedresponse/add/",
        {"language": "es", "shortcut": "saludo", "title": "Saludo", "text": "Hola {contact_name}"},
    )
    assert response.status_code == 302, response.content[:2000]
    created = CannedResponse.objects.get(shortcut="saludo")
    assert created.created_by_id == admin_user.pk
    listing = client.get("/admin/agents/cannedresponse/")
    assert listing.status_code == 200 and b"saludo" in listing.content
