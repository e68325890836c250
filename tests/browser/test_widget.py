"""The web chat widget in a real Chromium against the live stack: uvicorn, the Celery worker, PostgreSQL, Redis.

A visitor types in the widget (a customer page on another origin, or the install's /demo/ page); the worker
ingests and routes; an agent's websocket hears of it; the agent replies over the agent API; the widget shows
the reply live. Plus: history across reloads, offline typing delivered exactly once, isolation between
visitors, right-to-left layout, and screenshots for people to look at (test-artifacts/screenshots/).
"""

from __future__ import annotations

import json
import re
import secrets
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from inbox.conversations.models import Conversation, Message
from tests.browser.conftest import Agent, WidgetVisitor, expect, skip_unless_browser
from tests.conftest import ROOT, broker_idle, wait_for
from tests.factories import make_demo

skip_unless_browser(module=True)  # before any server starts: no Chromium here -> skip (fail under CI)

SPANISH = "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?"
SPANISH_REPLY = "¡Hola! Ya estamos revisando tu retiro."
ENGLISH_0 = "Hello! Quick question about my order, please."
ENGLISH_1 = "Hi, my order arrived without the tent poles. Can you send them?"
ENGLISH_2 = "The order number is 4471, placed last Tuesday."
ARABIC = "مرحبا، لم يصل طلبي بعد. هل يمكنكم مساعدتي من فضلكم؟"
SENT = re.compile(r"^(sent|delivered)$")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def receive_until(ws: ClientConnection, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []
    while True:
        event = json.loads(ws.recv(timeout=timeout))
        seen.append(event)
        if predicate(event):
            return event
        if len(seen) > 50:
            raise AssertionError(f"no matching event among {seen}")


def visitor_messages_stored(account_id: int) -> list[Message]:
    return list(
        Message.objects.filter(account_id=account_id, direction=Message.Direction.INBOUND).order_by("created_at", "pk")
    )


def routed_conversation(account_id: int, text: str) -> Conversation:
    """The conversation holding the visitor's text, once the worker has routed and assigned it."""
    return wait_for(
        lambda: (
            Conversation.objects.select_related("queue")
            .filter(account_id=account_id, messages__text=text, queue__isnull=False, assignee__isnull=False)
            .first()
        ),
        timeout=15,
        what=f"the worker to ingest, route and assign {text!r}",
    )


def exchange(visitor: WidgetVisitor, account_id: int, agent: Agent, text: str, reply: str) -> Conversation:
    """The visitor writes; the agent replies over the agent API; the reply shows in the open panel."""
    visitor.open()
    visitor.send(text)
    expect(visitor.messages("visitor", text)).to_have_attribute("data-state", SENT)
    conversation = routed_conversation(account_id, text)
    agent.reply(conversation.pk, reply)
    expect(visitor.messages("agent", reply)).to_have_count(1)
    return conversation


def assert_png(path: Path, width: int, height: int) -> None:
    """A real screenshot: a PNG of the viewport's size whose pixels are not all alike."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    got = struct.unpack(">II", data[16:24])
    assert got == (width, height), f"{path}: {got} px, expected the {width}x{height} viewport"
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes"
    idat, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            idat += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    pixels = zlib.decompress(idat)
    assert len(set(pixels)) > 32, f"{path} looks blank ({len(set(pixels))} distinct byte values)"


def test_spanish_visitor_reaches_the_spanish_queue_and_sees_the_reply_live(live_worker, page_for, agents) -> None:
    demo = make_demo()
    ana = agents("ana")
    with ana.websocket() as agent_ws:
        visitor = page_for("es-ES", demo.webchat.public_id, site=True)
        visitor.open()
        visitor.send(SPANISH)
        mine = visitor.messages("visitor", SPANISH)
        expect(mine).to_have_count(1)
        expect(mine).to_have_attribute("data-state", SENT)

        created = receive_until(agent_ws, lambda e: e.get("type") == "conversation.created")
        conversation = Conversation.objects.select_related("queue").get(pk=created["conversation"])
        assert created["language"] == "es"
        assert conversation.queue is not None and conversation.queue.language == "es"
        assert created["queue"] == demo.queues["es"].pk
        assert [m.text for m in visitor_messages_stored(demo.webchat.pk)] == [SPANISH]

        # The reply arrives over the visitor's socket: no navigation, no reload.
        navigations: list[str] = []
        visitor.page.on("framenavigated", lambda frame: navigations.append(frame.url))
        routed_conversation(demo.webchat.pk, SPANISH)  # assigned to ana (the only Spanish agent online)
        ana.reply(conversation.pk, SPANISH_REPLY)
        expect(visitor.messages("agent", SPANISH_REPLY)).to_have_count(1)
        assert navigations == []
        expect(visitor.messages()).to_have_count(2)


def test_reload_keeps_the_history(live_worker, page_for, agents) -> None:
    demo = make_demo()
    visitor = page_for("es-ES", demo.webchat.public_id, site=True)
    exchange(visitor, demo.webchat.pk, agents("ana"), SPANISH, SPANISH_REPLY)

    visitor.page.reload()
    visitor.open()
    expect(visitor.messages("visitor", SPANISH)).to_have_count(1)
    expect(visitor.messages("agent", SPANISH_REPLY)).to_have_count(1)
    expect(visitor.messages()).to_have_count(2)


@pytest.mark.parametrize("chatting", [False, True], ids=["new-visitor", "socket-open"])
def test_messages_typed_offline_are_delivered_once_on_reconnect(live_worker, page_for, chatting: bool) -> None:
    """Offline before the first message (no session yet), or in the middle of a chat (socket open)."""
    demo = make_demo()
    visitor = page_for("en-US", demo.webchat.public_id, site=True)
    visitor.open()
    earlier = [ENGLISH_0] if chatting else []
    if chatting:
        visitor.send(ENGLISH_0)
        expect(visitor.messages("visitor", ENGLISH_0)).to_have_attribute("data-state", SENT)
        wait_for(lambda: visitor_messages_stored(demo.webchat.pk), timeout=15, what="the first message stored")

    visitor.context.set_offline(True)
    expect(visitor.sb("offline")).to_be_visible()
    visitor.send(ENGLISH_1)
    visitor.send(ENGLISH_2)
    for text in (ENGLISH_1, ENGLISH_2):
        expect(visitor.messages("visitor", text)).to_have_attribute("data-state", "queued")
    outbox = visitor.storage("outbox") or ""
    assert ENGLISH_1 in outbox and ENGLISH_2 in outbox, f"outbox in localStorage: {outbox!r}"
    assert [m.text for m in visitor_messages_stored(demo.webchat.pk)] == earlier

    visitor.context.set_offline(False)
    for text in (ENGLISH_1, ENGLISH_2):
        expect(visitor.messages("visitor", text)).to_have_attribute("data-state", SENT)
    wait_for(
        lambda: len(visitor_messages_stored(demo.webchat.pk)) >= len(earlier) + 2,
        timeout=15,
        what="both offline messages to be stored",
    )
    expect(visitor.sb("offline")).to_be_hidden()

    # A further reload: the history shows each message once and nothing is sent again.
    visitor.page.reload()
    visitor.open()
    for text in (*earlier, ENGLISH_1, ENGLISH_2):
        expect(visitor.messages("visitor", text)).to_have_count(1)
    expect(visitor.messages("visitor")).to_have_count(len(earlier) + 2)
    outbox = visitor.storage("outbox") or ""
    assert ENGLISH_1 not in outbox and ENGLISH_2 not in outbox, f"delivered messages left in the outbox: {outbox!r}"
    wait_for(broker_idle, timeout=15, what="the worker to finish")
    stored = visitor_messages_stored(demo.webchat.pk)
    assert [m.text for m in stored] == [*earlier, ENGLISH_1, ENGLISH_2]
    assert len({m.conversation_id for m in stored}) == 1


def test_a_second_visitor_cannot_see_the_first_ones_conversation(live_worker, page_for) -> None:
    demo = make_demo()
    key = demo.webchat.public_id
    first = page_for("es-ES", key, site=True)
    first.open()
    first.send(SPANISH)
    expect(first.messages("visitor", SPANISH)).to_have_attribute("data-state", SENT)
    conversation = routed_conversation(demo.webchat.pk, SPANISH)
    first_visitor_id = str(conversation.identity.visitor.uuid)

    second = page_for("es-ES", key, site=True)
    second.open()
    own = "Hola, ¿tienen tiendas en Valencia?"
    second.send(own)
    expect(second.messages("visitor", own)).to_have_attribute("data-state", SENT)
    expect(second.messages(text=SPANISH)).to_have_count(0)
    expect(second.messages("visitor")).to_have_count(1)
    routed_conversation(demo.webchat.pk, own)  # stored: the REST listing below reads the database

    token = second.token()
    assert token != first.token()
    # The second visitor's own token lists only its own messages, whatever it adds to the request.
    for path in (
        "/api/webchat/v1/messages",
        "/api/webchat/v1/messages?after=0",
        f"/api/webchat/v1/messages?visitor={first_visitor_id}",
    ):
        answer = second.fetch(path, token)
        assert answer["status"] == 200, answer
        listed = answer["body"]["messages"]
        for message in listed:
            missing = {"id", "from", "text", "client_id", "created_at", "author", "attachments"} - set(message)
            assert not missing, f"GET {path}: a message lacks {sorted(missing)}: {message}"
        texts = [m["text"] for m in listed]
        assert texts == [own], f"GET {path} with the second visitor's token -> {texts}"
    # The first visitor's id is not a credential, and neither is a guess.
    for guess in (first_visitor_id, secrets.token_urlsafe(32), None):
        answer = second.fetch("/api/webchat/v1/messages", guess)
        assert answer["status"] == 401, f"GET /messages with Bearer {guess!r} -> {answer}"
        assert "messages" not in (answer["body"] or {})
    with connect(f"{second.api.replace('http://', 'ws://')}/ws/webchat/") as ws:
        ws.send(json.dumps({"type": "auth", "token": first_visitor_id}))
        assert json.loads(ws.recv(timeout=10))["type"] == "error"


def test_arabic_panel_is_right_to_left(live_worker, page_for) -> None:
    demo = make_demo()
    visitor = page_for("ar", demo.webchat.public_id, site=True)
    visitor.open()
    expect(visitor.sb("panel")).to_have_attribute("dir", "rtl")

    english = page_for("en-US", demo.webchat.public_id, site=True)
    english.open()
    expect(english.sb("panel")).not_to_have_attribute("dir", "rtl")


def test_screenshots_of_the_open_widget_ltr_and_rtl(live_worker, page_for, agents) -> None:
    demo = make_demo()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ltr_path, rtl_path = SCREENSHOTS / "widget-ltr.png", SCREENSHOTS / "widget-rtl.png"
    for path in (ltr_path, rtl_path):
        path.unlink(missing_ok=True)

    ltr = page_for("es-ES", demo.webchat.public_id)  # the install's demo page
    exchange(ltr, demo.webchat.pk, agents("ana"), SPANISH, SPANISH_REPLY)
    expect(ltr.sb("panel")).not_to_have_attribute("dir", "rtl")
    ltr.page.screenshot(path=ltr_path, animations="disabled")

    rtl = page_for("ar", demo.webchat.public_id)
    rtl.open()
    rtl.send(ARABIC)
    expect(rtl.messages("visitor", ARABIC)).to_have_attribute("data-state", SENT)
    expect(rtl.sb("panel")).to_have_attribute("dir", "rtl")
    rtl.page.screenshot(path=rtl_path, animations="disabled")

    for path in (ltr_path, rtl_path):
        assert path.is_file(), f"no screenshot at {path}"
        assert_png(path, 1024, 760)
    assert ltr_path.read_bytes() != rtl_path.read_bytes()
