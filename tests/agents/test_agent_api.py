"""The agent API against every role: an id an agent may not see answers 404, like one that does not exist."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from inbox.conversations.models import Conversation, Message, OutboundDelivery
from inbox.conversations.services import inbound_events_process, inbound_events_record


def spanish_conversation(demo) -> Conversation:  # type: ignore[no-untyped-def]
    payload = {
        "visitor": "v-es",
        "client_id": "c1",
        "text": "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme?",
    }
    ids = inbound_events_record(account=demo.webchat, events=[("v-es:c1", payload)])
    inbound_events_process(event_ids=ids)
    return Conversation.objects.get(identity__handle="v-es")


def client_for(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize(
    ("who", "list_sees", "detail", "reply"),
    [
        ("agent_es", True, 200, 201),
        ("agent_en", False, 404, 404),
        ("manager", True, 200, 201),
        (None, None, 401, 401),
    ],
)
def test_every_role_against_every_conversation_endpoint(demo, who, list_sees, detail, reply) -> None:  # type: ignore[no-untyped-def]
    conversation = spanish_conversation(demo)
    client = client_for(getattr(demo, who) if who else None)
    listing = client.get("/api/agent/conversations")
    if list_sees is None:
        assert listing.status_code == 401
    else:
        ids = [c["id"] for c in listing.json()["conversations"]]
        assert (conversation.pk in ids) is list_sees
    assert client.get(f"/api/agent/conversations/{conversation.pk}").status_code == detail
    response = client.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        json.dumps({"text": "¡Hola!"}),
        content_type="application/json",
    )
    assert response.status_code == reply
    for action, body in (("status", {"status": "pending"}), ("language", {"language": "en"})):
        response = client.post(
            f"/api/agent/conversations/{conversation.pk}/{action}",
            json.dumps(body),
            content_type="application/json",
        )
        assert response.status_code in ((200,) if detail == 200 else (detail,))
        conversation.refresh_from_db()
    if detail != 200:
        assert conversation.language == "es" and conversation.status == "open"


def test_reply_creates_message_and_queued_delivery(demo) -> None:
    conversation = spanish_conversation(demo)
    client = client_for(demo.agent_es)
    inbound = conversation.messages.get()
    response = client.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        json.dumps({"text": "Hola Lucía, lo revisamos ahora.", "reply_to": inbound.pk}),
        content_type="application/json",
    )
    assert response.status_code == 201
    body = response.json()["message"]
    assert body["delivery"]["state"] == "queued" and body["direction"] == "out"
    message = Message.objects.get(pk=body["id"])
    assert message.reply_to_id == inbound.pk
    assert OutboundDelivery.objects.get(message=message).state == OutboundDelivery.State.QUEUED
    conversation.refresh_from_db()
    assert conversation.first_response_at is not None and conversation.waiting_since is None


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"text": ""}, 422, "empty"),
        ({"text": "x" * 10_001}, 422, "allows 10000 characters"),
        ({}, 400, "'text' is required"),
        ({"text": "ok", "reply_to": 999999}, 400, "reply_to"),
    ],
)
def test_bad_replies_are_refused_with_a_reason(demo, body, status, needle) -> None:  # type: ignore[no-untyped-def]
    conversation = spanish_conversation(demo)
    response = client_for(demo.agent_es).post(
        f"/api/agent/conversations/{conversation.pk}/reply", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == status and needle in response.json()["error"]
    assert not Message.objects.filter(direction="out").exists()


def test_presence_validation(demo) -> None:
    client = client_for(demo.agent_es)
    ok = client.post("/api/agent/presence", json.dumps({"presence": "away"}), content_type="application/json")
    assert ok.status_code == 200 and ok.json()["presence"] == "away"
    bad = client.post("/api/agent/presence", json.dumps({"presence": "asleep"}), content_type="application/json")
    assert bad.status_code == 400 and "presence must be one of" in bad.json()["error"]


def test_sign_in_with_csrf_then_reply_then_sign_out(demo) -> None:
    from tests.factories import PASSWORD

    client = Client(enforce_csrf_checks=True)
    assert client.get("/api/agent/session").json() == {"authenticated": False, "username": None}
    csrf = client.cookies["csrftoken"].value
    no_csrf = client.post(
        "/api/agent/session", json.dumps({"username": "ana", "password": PASSWORD}), content_type="application/json"
    )
    assert no_csrf.status_code == 403
    wrong = client.post(
        "/api/agent/session",
        json.dumps({"username": "ana", "password": "nope"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf,
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "wrong username or password"
    ok = client.post(
        "/api/agent/session",
        json.dumps({"username": "ana", "password": PASSWORD}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf,
    )
    assert ok.status_code == 200 and ok.json()["username"] == "ana"
    csrf = client.cookies["csrftoken"].value  # rotated on login
    conversation = spanish_conversation(demo)
    reply = client.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        json.dumps({"text": "Hola"}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf,
    )
    assert reply.status_code == 201
    client.delete("/api/agent/session", HTTP_X_CSRFTOKEN=csrf)
    assert client.get("/api/agent/conversations").status_code == 401
