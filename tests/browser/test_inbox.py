"""The agents' inbox in a real Chromium against the live stack: uvicorn, the Celery worker, PostgreSQL, Redis.

An agent signs in on the sign-in page; customers write (web chat over the visitor API, as the widget does); the
list and the conversation update live over the agent's websocket; the agent replies and watches the delivery
state; takes the next waiting conversation; writes a private note that never reaches the customer; and cannot
open another queue's conversation by URL. Screenshots of the main pages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

from inbox.conversations.models import Conversation, Message
from tests.browser.conftest import AGENT_VIEWPORT, Visitor, expect, skip_unless_browser
from tests.browser.test_widget import SCREENSHOTS, assert_png
from tests.conftest import wait_for
from tests.factories import make_demo

skip_unless_browser(module=True)

SPANISH = "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?"
SPANISH_2 = "Además, ¿cuánto tarda una transferencia internacional?"
RUSSIAN = "Здравствуйте, я не могу вывести деньги со своего счёта со вчерашнего дня."
REPLY = "¡Hola! Ya estamos revisando tu retiro."
NOTE = "Nota interna: cliente con dos retiros pendientes, revisar con finanzas."
VIEWPORT = AGENT_VIEWPORT


def routed(text: str) -> Conversation:
    return wait_for(
        lambda: Conversation.objects.select_related("queue").filter(messages__text=text, queue__isnull=False).first(),
        timeout=15,
        what=f"the worker to ingest and route {text!r}",
    )


def test_sign_in_then_messages_arrive_live_and_the_reply_shows_its_delivery(
    live_worker, web_server, agent_page
) -> None:
    demo = make_demo()
    ana = agent_page("ana")
    expect(ana.sb("who")).to_contain_text("ana")
    expect(ana.sb("empty")).to_be_visible()
    ana.live()

    # A customer writes on the web chat: the row appears without a reload, unread, with channel and language.
    customer = Visitor(web_server.url, demo.webchat.public_id)
    customer.say(SPANISH)
    conversation = routed(SPANISH)
    row = ana.row(conversation.pk)
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-unread", "true")
    expect(row.locator(".ch-webchat")).to_have_count(1)
    expect(row.locator(".lang-badge")).to_have_text("es")
    expect(ana.page.locator(f'[data-sb="queue"][data-queue="{demo.queues["es"].pk}"]')).to_be_visible()
    ana.shot("inbox-list")
    assert ana.unlabelled_controls() == []

    # Keyboard: j selects the first row, Enter opens it.
    ana.page.keyboard.press("j")
    ana.page.keyboard.press("Enter")
    expect(ana.page).to_have_url(f"{web_server.url}/inbox/c/{conversation.pk}/")
    expect(ana.sb("message").filter(has_text=SPANISH)).to_have_count(1)
    ana.live()

    # The customer writes again: it shows in the open conversation without a reload.
    customer.say(SPANISH_2)
    expect(ana.sb("message").filter(has_text=SPANISH_2)).to_have_count(1)

    # Reply: the composer says it is private on the web chat; the reply shows as sent once the worker sent it.
    expect(ana.sb("reply-mode")).to_have_attribute("data-visibility", "private")
    ana.sb("reply-text").fill(REPLY)
    ana.sb("reply-text").press("Control+Enter")
    reply = ana.sb("message").filter(has_text=REPLY)
    expect(reply).to_have_count(1)
    expect(reply.locator('[data-sb="delivery"]')).to_have_attribute("data-state", "sent")
    assert any(m["text"] == REPLY for m in customer.sees())
    ana.shot("inbox-conversation")
    assert ana.unlabelled_controls() == []
    assert not ana.errors, ana.errors  # type: ignore[attr-defined]


def test_notes_stay_private(live_worker, web_server, agent_page) -> None:
    demo = make_demo()
    customer = Visitor(web_server.url, demo.webchat.public_id)
    customer.say(SPANISH)
    conversation = routed(SPANISH)
    ana = agent_page("ana")
    ana.page.goto(f"{web_server.url}/inbox/c/{conversation.pk}/")
    ana.page.keyboard.press("p")  # note mode
    expect(ana.sb("composer")).to_have_class("composer note-mode")
    ana.sb("reply-text").fill(NOTE)
    ana.sb("send").click()
    note = ana.sb("message").filter(has_text=NOTE)
    expect(note).to_have_count(1)
    expect(note.locator('[data-sb="note-tag"]')).to_be_visible()
    expect(note.locator('[data-sb="delivery"]')).to_have_count(0)
    stored = Message.objects.get(text=NOTE)
    assert stored.direction == Message.Direction.NOTE and not hasattr(stored, "delivery")
    # The customer never gets it: not over the visitor API, not over the live socket (the worker has finished).
    wait_for(lambda: not Conversation.objects.filter(pk=conversation.pk, assignee__isnull=True).exists(), timeout=10)
    assert [m["text"] for m in customer.sees()] == [SPANISH]
    ana.shot("inbox-note")


def test_take_next_and_another_queue_is_out_of_reach(live_worker, web_server, agent_page) -> None:
    demo = make_demo()
    # Nobody from the ru queue is online: two Russian conversations wait. A Spanish one is Ana's.
    first, second = Visitor(web_server.url, demo.webchat.public_id), Visitor(web_server.url, demo.webchat.public_id)
    first.say(RUSSIAN)
    older = routed(RUSSIAN)
    second.say(RUSSIAN + " Срочно!")
    routed(RUSSIAN + " Срочно!")

    ana = agent_page("ana")
    response = ana.page.goto(f"{web_server.url}/inbox/c/{older.pk}/")
    assert response is not None and response.status == 404
    ana.page.goto(f"{web_server.url}/inbox/?q=вывести")
    expect(ana.sb("empty")).to_be_visible()  # search stays inside her queues

    maria = agent_page("maria")  # the manager sees every queue; "take next" gives her the oldest waiting
    expect(maria.row(older.pk)).to_be_visible()
    maria.page.keyboard.press("n")
    expect(maria.page).to_have_url(f"{web_server.url}/inbox/c/{older.pk}/")
    expect(maria.sb("conversation-assignee")).to_have_text("maria")
    expect(maria.sb("flash")).to_contain_text(f"You took conversation #{older.pk}")
    older.refresh_from_db()
    assert older.assignee_id == demo.manager.pk
    maria.page.goto(f"{web_server.url}/login/")  # signed in: straight on to the inbox
    expect(maria.page).to_have_url(f"{web_server.url}/inbox/")


def test_sign_in_page_screenshot_and_wrong_password(transactional_db, browser, web_server) -> None:
    make_demo()
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"{web_server.url}/login/")
        page.get_by_label("Username").fill("ana")
        page.get_by_label("Password").fill("not-the-password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / "sign-in.png"
        page.screenshot(path=str(path))
        assert_png(path, VIEWPORT["width"], VIEWPORT["height"])
    finally:
        context.close()
