"""The visitor API: sessions, posting, reading, and every kind of bad input. No worker needed here."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client

from inbox.conversations.models import InboundEvent
from inbox.conversations.services import inbound_events_process
from inbox.webchat.models import Visitor
from inbox.webchat.services import token_hash


def start(client: Client, public_id: str, **body: str) -> str:
    response = client.post(f"/api/webchat/v1/{public_id}/sessions", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["token"]


def post(client: Client, token: str, body: object, **headers: str):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(
        "/api/webchat/v1/messages",
        data,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        **headers,
    )


def read(client: Client, token: str, after: int = 0):  # type: ignore[no-untyped-def]
    return client.get(f"/api/webchat/v1/messages?after={after}", HTTP_AUTHORIZATION=f"Bearer {token}")


def test_token_is_random_and_stored_only_hashed(demo) -> None:
    client = Client()
    token = start(client, demo.webchat.public_id, name="Lucía")
    assert len(token) >= 43  # 32 random bytes, url-safe base64
    visitor = Visitor.objects.get()
    assert visitor.token_hash == token_hash(token) and token not in visitor.token_hash
    assert visitor.identity.display_name == "Lucía"


def test_unknown_channel_key_is_404(demo) -> None:
    response = Client().post("/api/webchat/v1/nope/sessions", "{}", content_type="application/json")
    assert response.status_code == 404 and "web chat" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("{not json", 400, "not valid JSON"),
        ("[1, 2]", 400, "JSON object"),
        ({"client_id": str(uuid.UUID(int=1))}, 400, "'text' is required"),
        ({"text": "hi"}, 400, "'client_id' is required"),
        ({"text": "hi", "client_id": "not-a-uuid"}, 400, "must be a UUID"),
        ({"text": 5, "client_id": str(uuid.UUID(int=1))}, 400, "must be a string"),
        ({"text": "   ", "client_id": str(uuid.UUID(int=1))}, 400, "must not be empty"),
        ({"text": "x" * 10_001, "client_id": str(uuid.UUID(int=1))}, 413, "longer than 10000"),
    ],
)
def test_bad_visitor_input_gets_a_clear_error_and_stores_nothing(demo, body: object, status: int, needle: str) -> None:
    client = Client()
    token = start(client, demo.webchat.public_id)
    response = post(client, token, body)
    assert response.status_code == status
    assert needle in response.json()["error"]
    assert InboundEvent.objects.count() == 0


def test_wrong_content_type_is_415(demo) -> None:
    client = Client()
    token = start(client, demo.webchat.public_id)
    response = client.post(
        "/api/webchat/v1/messages",
        "text=hi",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 415


def test_missing_or_wrong_token_is_401(demo) -> None:
    client = Client()
    assert client.get("/api/webchat/v1/messages").status_code == 401
    assert read(client, "forged-token").status_code == 401
    assert post(client, "forged-token", {"text": "hi", "client_id": str(uuid.uuid4())}).status_code == 401


def test_same_client_id_is_accepted_once(demo) -> None:
    client = Client()
    token = start(client, demo.webchat.public_id)
    body = {"text": "hola", "client_id": str(uuid.uuid4())}
    assert post(client, token, body).status_code == 202
    second = post(client, token, body)
    assert second.status_code == 200 and second.json()["duplicate"] is True
    assert InboundEvent.objects.count() == 1


def test_a_visitor_never_sees_another_visitors_messages(demo) -> None:
    client = Client()
    token_a = start(client, demo.webchat.public_id)
    token_b = start(client, demo.webchat.public_id)
    post(client, token_a, {"text": "secret of A: my order 1234", "client_id": str(uuid.uuid4())})
    post(client, token_b, {"text": "B here", "client_id": str(uuid.uuid4())})
    inbound_events_process(event_ids=list(InboundEvent.objects.values_list("id", flat=True)))
    texts_a = [m["text"] for m in read(client, token_a).json()["messages"]]
    texts_b = [m["text"] for m in read(client, token_b).json()["messages"]]
    assert texts_a == ["secret of A: my order 1234"]
    assert texts_b == ["B here"]
