"""Live events across real processes: uvicorn (HTTP + websockets), the Celery worker, Redis, PostgreSQL.

A visitor and an agent are both connected by websocket; the visitor writes over HTTP, the worker ingests and
the agent's socket hears of it; the agent replies over HTTP, the worker delivers, the visitor's socket gets it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.factories import PASSWORD, make_demo

SPANISH = "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?"


def receive_until(ws: ClientConnection, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    seen = []
    while True:
        event = json.loads(ws.recv(timeout=timeout))
        seen.append(event)
        if predicate(event):
            return event
        if len(seen) > 50:
            raise AssertionError(f"no matching event among {seen}")


def test_agent_and_visitor_get_live_events(live_worker, web_server) -> None:
    demo = make_demo()
    base = web_server.url
    ws_base = base.replace("http://", "ws://")
    with httpx.Client(base_url=base, timeout=10) as agent:
        agent.get("/api/agent/session")
        csrf = agent.cookies["csrftoken"]
        signed_in = agent.post(
            "/api/agent/session", json={"username": "ana", "password": PASSWORD}, headers={"X-CSRFToken": csrf}
        )
        assert signed_in.status_code == 200, signed_in.text
        cookie = "; ".join(f"{k}={v}" for k, v in agent.cookies.items())
        # Without a session the agent socket is refused.
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws_base}/ws/agent/")
        assert refused.value.response.status_code == 403

        with (
            connect(f"{ws_base}/ws/agent/", additional_headers={"Cookie": cookie}) as agent_ws,
            httpx.Client(base_url=base, timeout=10) as visitor,
        ):
            token = visitor.post(f"/api/webchat/v1/{demo.webchat.public_id}/sessions", json={}).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            with connect(f"{ws_base}/ws/webchat/") as visitor_ws:
                visitor_ws.send(json.dumps({"token": token}))
                assert json.loads(visitor_ws.recv(timeout=10)) == {"type": "ready"}

                posted = visitor.post(
                    "/api/webchat/v1/messages", json={"text": SPANISH, "client_id": str(uuid.uuid4())}, headers=auth
                )
                assert posted.status_code == 202
                created = receive_until(agent_ws, lambda e: e.get("type") == "conversation.created")
                assert created["language"] == "es" and created["queue"] == demo.queues["es"].pk
                # The visitor's own widgets (every tab) get the stored message with its id.
                echo = receive_until(visitor_ws, lambda e: e.get("type") == "message")
                assert echo["message"]["from"] == "visitor" and echo["message"]["text"] == SPANISH

                reply = agent.post(
                    f"/api/agent/conversations/{created['conversation']}/reply",
                    json={"text": "¡Hola! Lo revisamos."},
                    headers={"X-CSRFToken": agent.cookies["csrftoken"]},
                )
                assert reply.status_code == 201, reply.text
                pushed = receive_until(
                    visitor_ws, lambda e: e.get("type") == "message" and e["message"]["from"] == "agent"
                )
                assert pushed["message"]["text"] == "¡Hola! Lo revisamos."
                assert pushed["message"]["from"] == "agent" and pushed["message"]["id"] == reply.json()["message"]["id"]
                sent = receive_until(agent_ws, lambda e: e.get("type") == "delivery.updated")
                assert sent["state"] == "sent"

            # A wrong visitor token gets an error and a closed socket, never another visitor's feed.
            with connect(f"{ws_base}/ws/webchat/") as intruder:
                intruder.send(json.dumps({"token": "forged"}))
                assert json.loads(intruder.recv(timeout=10))["type"] == "error"


def test_websocket_messages_are_acknowledged_once_and_typing_goes_both_ways(live_worker, web_server) -> None:
    from inbox.conversations.models import Message

    demo = make_demo()
    base = web_server.url
    ws_base = base.replace("http://", "ws://")
    with httpx.Client(base_url=base, timeout=10) as agent, httpx.Client(base_url=base, timeout=10) as visitor:
        agent.get("/api/agent/session")
        agent.post(
            "/api/agent/session",
            json={"username": "ana", "password": PASSWORD},
            headers={"X-CSRFToken": agent.cookies["csrftoken"]},
        )
        cookie = "; ".join(f"{k}={v}" for k, v in agent.cookies.items())
        token = visitor.post(f"/api/webchat/v1/{demo.webchat.public_id}/sessions", json={}).json()["token"]
        with (
            connect(f"{ws_base}/ws/agent/", additional_headers={"Cookie": cookie}) as agent_ws,
            connect(f"{ws_base}/ws/webchat/") as visitor_ws,
        ):
            visitor_ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(visitor_ws.recv(timeout=10)) == {"type": "ready"}
            client_id = str(uuid.uuid4())
            for attempt in range(3):  # a widget resending after a lost ack: stored once
                visitor_ws.send(json.dumps({"type": "message", "client_id": client_id, "text": SPANISH}))
                ack = receive_until(visitor_ws, lambda e: e.get("type") == "ack")
                assert ack == {"type": "ack", "client_id": client_id, "duplicate": attempt > 0}
            created = receive_until(agent_ws, lambda e: e.get("type") == "conversation.created")
            visitor_ws.send(json.dumps({"type": "typing", "state": True}))
            typing = receive_until(agent_ws, lambda e: e.get("type") == "visitor.typing")
            assert typing == {"type": "visitor.typing", "conversation": created["conversation"], "state": True}
            agent_ws.send(json.dumps({"type": "typing", "conversation": created["conversation"], "state": True}))
            assert receive_until(visitor_ws, lambda e: e.get("type") == "typing") == {
                "type": "typing",
                "from": "agent",
                "state": True,
            }
            visitor_ws.send(json.dumps({"type": "message", "client_id": "nope", "text": "hola"}))
            assert "UUID" in receive_until(visitor_ws, lambda e: e.get("type") == "error")["error"]
    assert Message.objects.filter(account=demo.webchat, direction="in").count() == 1
