"""What the widget relies on, through the real views, PostgreSQL and Redis (rate limits): config, origins, limits,
identity verification, files, queue status, continue by email."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from inbox.conversations.models import ChannelAccount, InboundEvent, Message
from inbox.conversations.services import inbound_events_process
from inbox.webchat.models import Visitor
from inbox.webchat.services import identity_hash
from tests.factories import make_demo

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005fe02fe"
    "a7e6a0ca0000000049454e44ae426082"
)
SPANISH = "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?"


def start(client: Client, account: ChannelAccount, status: int = 201, **body: Any) -> Any:
    response = client.post(
        f"/api/webchat/v1/{account.public_id}/sessions", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == status, response.content
    return response.json()


def post(client: Client, token: str, text: str, client_id: str | None = None, **headers: str) -> Any:
    return client.post(
        "/api/webchat/v1/messages",
        json.dumps({"text": text, "client_id": client_id or str(uuid.uuid4())}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        **headers,
    )


def process_all() -> None:
    inbound_events_process(event_ids=list(InboundEvent.objects.values_list("id", flat=True)))


def test_config_tells_the_widget_what_it_needs(db) -> None:
    demo = make_demo(prechat={"name": "required", "email": "optional"}, team_name="Northwind Support")
    body = Client().get(f"/api/webchat/v1/{demo.webchat.public_id}/config").json()
    assert body["channel"] == {"name": "Northwind Support", "public_key": demo.webchat.public_id}
    assert "es" in body["languages"] and body["prechat"] == {"name": "required", "email": "optional"}
    assert body["agents_online"] is True and body["identity_verification"] is False
    assert body["attachments"]["max_bytes"] == 10 * 2**20 and "image/png" in body["attachments"]["types"]
    assert Client().get("/api/webchat/v1/nope/config").status_code == 404


def test_origin_allowlist_and_cors(db) -> None:
    demo = make_demo(allowed_origins=["https://www.northwind.test"])
    key = demo.webchat.public_id
    client = Client()
    ok = client.get(f"/api/webchat/v1/{key}/config", HTTP_ORIGIN="https://www.northwind.test")
    assert ok.status_code == 200 and ok["Access-Control-Allow-Origin"] == "https://www.northwind.test"
    refused = client.get(f"/api/webchat/v1/{key}/config", HTTP_ORIGIN="https://evil.test")
    assert refused.status_code == 403 and "not allowed" in refused.json()["error"]
    preflight = client.options("/api/webchat/v1/messages", HTTP_ORIGIN="https://www.northwind.test")
    assert preflight.status_code == 204 and "Authorization" in preflight["Access-Control-Allow-Headers"]
    token = start(client, demo.webchat, HTTP_ORIGIN="https://www.northwind.test")["token"]
    # A token taken to another site is refused there too.
    assert post(client, token, "hola", HTTP_ORIGIN="https://evil.test").status_code == 403
    assert post(client, token, "hola", HTTP_ORIGIN="https://www.northwind.test").status_code == 202


def test_rate_limits_answer_429_with_the_wait_and_store_nothing_more(db) -> None:
    demo = make_demo(rate_limits={"messages_per_minute": 3, "sessions_per_minute_per_ip": 2})
    client = Client()
    token = start(client, demo.webchat)["token"]
    assert [post(client, token, f"mensaje {n}").status_code for n in range(3)] == [202, 202, 202]
    limited = post(client, token, "uno más")
    assert limited.status_code == 429
    assert 0 < limited.json()["retry_after"] <= 60 and int(limited["Retry-After"]) >= 1
    assert "too fast" in limited.json()["error"]
    assert InboundEvent.objects.count() == 3
    start(client, demo.webchat)
    refused = start(client, demo.webchat, status=429)
    assert "Too many new chats" in refused["error"]


def test_identity_verification(db) -> None:
    demo = make_demo()
    demo.webchat.secrets = {"identity_secret": "host-site-secret"}
    demo.webchat.save()
    client = Client()
    good = identity_hash("host-site-secret", "user-42")
    first = start(client, demo.webchat, user_id="user-42", user_hash=good, name="Ana")
    second = start(client, demo.webchat, user_id="user-42", user_hash=good)  # another device
    assert first["visitor"] == second["visitor"] and first["token"] != second["token"]
    post(client, first["token"], SPANISH)
    process_all()
    history = client.get("/api/webchat/v1/messages", HTTP_AUTHORIZATION=f"Bearer {second['token']}").json()
    assert [m["text"] for m in history["messages"]] == [SPANISH]  # the history follows the signed-in user
    forged = start(client, demo.webchat, status=403, user_id="user-43", user_hash=good)
    assert "signature" in forged["error"]
    assert Visitor.objects.filter(verified_user_id="user-43").count() == 0


def test_files_in_and_out_only_to_their_owner(db) -> None:
    demo = make_demo()
    client = Client()
    token = start(client, demo.webchat)["token"]
    response = client.post(
        "/api/webchat/v1/attachments",
        {"client_id": str(uuid.uuid4()), "text": "Mi captura", "files": [SimpleUploadedFile("captura.dat", PNG)]},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 202, response.content
    process_all()
    message = Message.objects.get(direction="in")
    [attachment] = message.attachments.all()
    assert attachment.content_type == "image/png" and attachment.file.read() == PNG
    [shown] = client.get("/api/webchat/v1/messages", HTTP_AUTHORIZATION=f"Bearer {token}").json()["messages"]
    url = shown["attachments"][0]["url"]
    download = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert download.status_code == 200 and b"".join(download.streaming_content) == PNG
    assert "attachment" in download["Content-Disposition"]
    other = start(Client(), demo.webchat)["token"]
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {other}").status_code == 404

    too_big = SimpleUploadedFile("big.png", PNG + b"\0" * (10 * 2**20))
    refused = client.post(
        "/api/webchat/v1/attachments",
        {"client_id": str(uuid.uuid4()), "files": [too_big]},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert refused.status_code == 413 and "larger than 10 MB" in refused.json()["error"]
    exe = SimpleUploadedFile("tool.pdf", b"MZ\x90\x00" + b"\0" * 200)
    refused = client.post(
        "/api/webchat/v1/attachments",
        {"client_id": str(uuid.uuid4()), "files": [exe]},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert refused.status_code == 415 and "cannot be sent" in refused.json()["error"]
    assert InboundEvent.objects.count() == 1


def test_status_shows_the_place_in_the_queue_when_nobody_is_free(db) -> None:
    from inbox.routing.models import AgentProfile

    demo = make_demo()
    AgentProfile.objects.update(presence=AgentProfile.Presence.OFFLINE)
    tokens = []
    for n in range(3):
        client = Client()
        token = start(client, demo.webchat)["token"]
        post(client, token, f"{SPANISH} ({n})")
        tokens.append(token)
    process_all()
    statuses = [Client().get("/api/webchat/v1/status", HTTP_AUTHORIZATION=f"Bearer {t}").json() for t in tokens]
    assert [s["queue"]["position"] for s in statuses] == [1, 2, 3]
    assert all(s["agents_online"] is False and s["assigned"] is False for s in statuses)
    assert statuses[0]["queue"]["expected_wait_seconds"] is None  # nobody online: no made-up estimate
    AgentProfile.objects.filter(user=demo.agent_es).update(presence=AgentProfile.Presence.ONLINE)
    status = Client().get("/api/webchat/v1/status", HTTP_AUTHORIZATION=f"Bearer {tokens[1]}").json()
    assert status["agents_online"] is True and status["queue"]["expected_wait_seconds"] > 0


def test_continue_by_email_is_recorded_for_the_agents(db) -> None:
    demo = make_demo()
    client = Client()
    token = start(client, demo.webchat)["token"]
    post(client, token, SPANISH)
    process_all()
    bad = client.post(
        "/api/webchat/v1/contact",
        json.dumps({"email": "not an address"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert bad.status_code == 400
    response = client.post(
        "/api/webchat/v1/contact",
        json.dumps({"email": "lucia@example.test"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 200 and response.json() == {"email": "lucia@example.test", "emailed": False}
    note = Message.objects.get(direction="note")
    assert "lucia@example.test" in note.text and "no e-mail channel" in note.text
    assert Visitor.objects.get().email == "lucia@example.test"
