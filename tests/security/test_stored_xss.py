"""Stored XSS (issue 10, point 10): hostile text in every field a customer controls, on every channel, entered
through the real intake, then read by an agent and by a manager in a real Chromium with the real CSP.

Intake, exactly as in production (the live stack: uvicorn, the Celery worker, PostgreSQL, Redis):

- e-mail: raw RFC 5322 bytes stored as the IMAP listener stores them (``mail_payload`` events, UIDVALIDITY:UID ids),
  processed by the worker: a multipart/alternative mail with a file, and an HTML-only mail;
- Telegram: Updates POSTed to the bot's webhook with the secret header (a text message, then a document with a
  caption; the worker downloads the document from the fake Bot API server);
- X: an Account Activity DM event (v1.1 shape, text HTML-escaped as X sends it) POSTed signed to the X webhook;
- web chat: the visitor API over HTTP, as the widget calls it (session with the pre-chat name and e-mail, a file,
  a message, "continue by e-mail");
- API channel: a signed event POSTed to the channel's endpoint.

Every field gets its own marker (``ZXnn``, named in FIELDS), and its payload tries to run code four ways: call
``__xss(marker)`` (a global the init script defines, reporting to Python at once), set the global
``window.__pwned = marker`` (read back after each page), ``alert(marker)`` (a "dialog" event) and
``document.title = 'PWNED'``. The e-mail HTML body carries the classic set (script, event handlers, javascript:
URLs, <svg onload>, <iframe srcdoc>, CSS expression(), <meta refresh>, <base href>).

Read back as the English agent (every XSS conversation is assigned to them) and as the manager: the inbox list, a
search for a payload, every conversation page (the HTML e-mail's sandboxed frame opened), the contacts list, a
contacts search for a payload, every contact page (with a merge search listing the others), the dashboard. On
every page: no ``__xss`` call, no dialog, the title unchanged, no page error, no CSP violation
(``securitypolicyviolation`` events from an init script, and console messages naming the Content Security Policy or
blocked script execution), and each field's text visible, as text, where the page shows that field.

The e-mail frame is opened in a second context without the init script and binding: Playwright injects them into
every frame, and in a frame that may not run scripts Chromium logs that attempt as "Blocked script execution" (our
instrumentation, not the page: the message goes away without it); there, every console report is the page's own.
The Telegram username (ZX13) is stored (message metadata) but no page shows it: it is only checked to run nothing.

One deliberate exception, asserted precisely rather than ignored: inside the e-mail frame, the sanitiser (nh3) keeps
``<img src="x">`` (it drops the ``onerror``), and the frame's own policy (``img-src data:``) blocks that load, as
designed (remote images are tracking pixels). Those img-src reports are expected, listed, and only allowed there.

A screenshot of the e-mail conversation with the payloads goes to test-artifacts/screenshots/xss-conversation.png.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import quote

import httpx

from connectors.email.smtp import SMTP_POLICY
from inbox.agents.models import CannedResponse
from inbox.conversations.mail import mail_payload
from inbox.conversations.models import Attachment, ChannelAccount, Contact, Conversation, Message
from inbox.conversations.services import conversation_assign, inbound_events_record
from tests.browser.conftest import AGENT_VIEWPORT, TIMEOUT_MS, skip_unless_browser
from tests.conftest import ROOT, wait_for
from tests.factories import PASSWORD, make_demo
from tests.fakes.telegram_server import TelegramServer
from tests.fakes.x_server import XServer

skip_unless_browser(module=True)  # before any server starts: no Chromium here -> skip (fail under CI)

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright  # noqa: E402

SCREENSHOT = ROOT / "test-artifacts" / "screenshots" / "xss-conversation.png"
SUPPORT = "support@example.test"
TG_SECRET = "tg-webhook-secret-for-the-xss-test"
API_SECRET = "api-signing-secret-for-the-xss-test"
TG_CHAT = 777_001


# --- Payloads -------------------------------------------------------------------------------------------------------
def long_payload(m: str) -> str:
    """Breaks out of an attribute, then an image with an error handler, an <svg onload>, and a script."""
    return (
        f"{m}\"'><img src=x onerror=__xss('{m}')><svg onload=alert('{m}')>"
        f"<script>__xss('{m}');window.__pwned='{m}';document.title='PWNED'</script>"
    )


def short_payload(m: str) -> str:
    """For fields the provider keeps short (Telegram names: 64 characters, X names: 50)."""
    return f"{m}\"'><img src=x onerror=__xss('{m}')>"


def file_payload(m: str) -> str:
    """A file name (no "/": every channel keeps only the last path segment)."""
    return f"{m}\"'><img src=x onerror=__xss('{m}')><svg onload=alert('{m}')>.txt"


def address_payload(m: str) -> str:
    """An e-mail address as the widget's forms take it (no spaces; "<local>@<domain with a dot>")."""
    return f"{m}\"'><svg/onload=__xss('{m}')>@x.example"


HTML_BODY = (  # ZX04: the classic set; nh3 must leave none of it active, the frame's sandbox and CSP back it up
    "<html><head>"
    '<meta http-equiv="refresh" content="0;url=javascript:__xss(\'ZX04\')">'
    '<base href="https://evil.invalid/">'
    "<style>body{background:url(\"javascript:__xss('ZX04')\")}</style>"
    "</head><body onload=\"__xss('ZX04')\">"
    "<p>ZX04 formatted part</p>"
    "<script>__xss('ZX04');window.__pwned='ZX04';alert('ZX04');document.title='PWNED'</script>"
    "<img src=x onerror=\"__xss('ZX04')\">"
    "<a href=\"javascript:__xss('ZX04')\">ZX04 javascript link</a>"
    '<svg onload="__xss(\'ZX04\')"><circle r="4"></circle></svg>'
    "<iframe srcdoc=\"<script>parent.__xss('ZX04')</script>\"></iframe>"
    "<div style=\"width: expression(__xss('ZX04')); background: url(javascript:__xss('ZX04'))\">ZX04 css</div>"
    "<details open ontoggle=\"__xss('ZX04')\"><summary>ZX04 details</summary></details>"
    "<form action=\"javascript:__xss('ZX04')\"><button>ZX04 button</button></form>"
    "<object data=\"javascript:__xss('ZX04')\"></object><embed src=\"javascript:__xss('ZX04')\">"
    "</body></html>"
)
# ZX05: an HTML-only mail; its text is derived from the HTML, so the entities come back as literal markup.
HTML_ONLY_BODY = (
    "<p>ZX05 &lt;img src=x onerror=__xss('ZX05')&gt; &lt;script&gt;__xss('ZX05')&lt;/script&gt;</p>"
    "<script>__xss('ZX05')</script><img src=x onerror=\"__xss('ZX05')\">"
)
# ZX34 on the wire: multipart/form-data writes a '"' in a file name as %22 (the HTML standard's encoding, which
# browsers and httpx follow; Django does not decode it back), so that is the name the widget's visitor sends.
ZX34_SENT = file_payload("ZX34").replace('"', "%22")
ZX05_TEXT = "ZX05 <img src=x onerror=__xss('ZX05')> <script>__xss('ZX05')</script>"

FIELDS: dict[str, tuple[str, str]] = {  # marker -> (field, payload as the customer sent it)
    "ZX01": ("e-mail From display name", long_payload("ZX01")),
    "ZX02": ("e-mail Subject", long_payload("ZX02")),
    "ZX03": ("e-mail plain-text body", long_payload("ZX03")),
    "ZX04": ("e-mail HTML body", HTML_BODY),
    "ZX05": ("e-mail HTML-only body (text derived from the HTML)", HTML_ONLY_BODY),
    "ZX06": ("e-mail attachment file name", file_payload("ZX06")),
    "ZX11": ("Telegram first_name", short_payload("ZX11")),
    "ZX12": ("Telegram last_name", short_payload("ZX12")),
    "ZX13": ("Telegram username", short_payload("ZX13")),
    "ZX14": ("Telegram message text", long_payload("ZX14")),
    "ZX15": ("Telegram document caption", long_payload("ZX15")),
    "ZX16": ("Telegram document file_name", file_payload("ZX16")),
    "ZX21": ("X screen name (username)", short_payload("ZX21")),
    "ZX22": ("X display name", short_payload("ZX22")),
    "ZX23": ("X DM text", long_payload("ZX23")),
    "ZX31": ("widget pre-chat name", long_payload("ZX31")),
    "ZX32": ("widget pre-chat e-mail", address_payload("ZX32")),
    "ZX33": ("widget message text", long_payload("ZX33")),
    "ZX34": ("widget attachment file name", file_payload("ZX34")),
    "ZX35": ("widget continue-by-e-mail address", address_payload("ZX35")),
    "ZX41": ("API channel sender name", long_payload("ZX41")),
    "ZX42": ("API channel sender e-mail", address_payload("ZX42")),
    "ZX43": ("API channel message text", long_payload("ZX43")),
}


def field_name(marker: str) -> str:
    return f"{marker} ({FIELDS[marker][0]})" if marker in FIELDS else marker


def norm(text: str) -> str:
    """Whitespace as a browser renders it in running text (innerText): runs of spaces and line breaks as one space."""
    return " ".join(text.split())


# --- Intake ---------------------------------------------------------------------------------------------------------
def email_bytes(*, subject: str, text: str | None, html_body: str, attachment: str | None) -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = Address(display_name=FIELDS["ZX01"][1], addr_spec="mallory@customer.test")
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="customer.test")
    if text is not None:
        msg.set_content(text)
        msg.add_alternative(html_body, subtype="html")
    else:
        msg.set_content(html_body, subtype="html")
    if attachment is not None:
        msg.add_attachment(b"order 4471, three tent poles\n", maintype="text", subtype="plain", filename=attachment)
    return bytes(msg)


def enter_email(account: ChannelAccount) -> None:
    """Two mails as the IMAP listener records them (mailbox_sync: "<uidvalidity>:<uid>", raw bytes in base64)."""
    first = email_bytes(
        subject=FIELDS["ZX02"][1], text=FIELDS["ZX03"][1], html_body=HTML_BODY, attachment=FIELDS["ZX06"][1]
    )
    second = email_bytes(subject="Order 4471, again", text=None, html_body=HTML_ONLY_BODY, attachment=None)
    events = [
        (f"4242:{uid}", mail_payload(raw, uid=uid, uidvalidity=4242, folder="INBOX"))
        for uid, raw in ((1, first), (2, second))
    ]
    inbound_events_record(account=account, events=events, cursor={"uidvalidity": 4242, "last_uid": 2})


def enter_telegram(base: str, account: ChannelAccount, telegram: TelegramServer) -> None:
    who = {
        "chat_id": TG_CHAT,
        "first_name": FIELDS["ZX11"][1],
        "last_name": FIELDS["ZX12"][1],
        "username": FIELDS["ZX13"][1],
    }
    url = f"{base}/api/channels/{account.public_id}/telegram"
    text = telegram.build_message_update(FIELDS["ZX14"][1], **who)
    document = telegram.add_file(b"order 4471\n", file_name=FIELDS["ZX16"][1], mime_type="text/plain")
    with_file = telegram.build_message_update(None, caption=FIELDS["ZX15"][1], document=document, **who)
    for update in (text, with_file):
        status, body = telegram.post_update(url, update, secret=TG_SECRET)
        assert status == 200, f"the Telegram webhook refused a genuine update: {status} {body!r}"


def enter_x(base: str, account: ChannelAccount, x_api: XServer) -> None:
    customer = x_api.add_user(id="5550001", username=FIELDS["ZX21"][1], name=FIELDS["ZX22"][1])
    dm = x_api.add_dm(sender_id=customer["id"], text=FIELDS["ZX23"][1])
    payload = x_api.aaa_dm_payload(dm)
    data = payload["direct_message_events"][0]["message_create"]["message_data"]
    # X sends v1.1 text HTML-escaped (&amp; &lt; &gt;); the fake leaves it as typed, so escape it as X does.
    data["text"] = data["text"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    status, body = x_api.post_webhook(f"{base}/api/channels/{account.public_id}/x", payload)
    assert status == 200 and json.loads(body)["accepted"] == 1, f"the X webhook refused a genuine event: {body!r}"


def enter_webchat(base: str, account: ChannelAccount) -> None:
    """The visitor API as the widget calls it (Bearer token in the header)."""
    with httpx.Client(base_url=base, timeout=10) as http:
        made = http.post(
            f"/api/webchat/v1/{account.public_id}/sessions",
            json={"name": FIELDS["ZX31"][1], "email": FIELDS["ZX32"][1]},
        )
        assert made.status_code == 201, made.text
        http.headers["Authorization"] = f"Bearer {made.json()['token']}"
        files = {"files": (FIELDS["ZX34"][1], b"order 4471\n", "text/plain")}
        posted = http.post(
            "/api/webchat/v1/attachments", data={"client_id": str(uuid.uuid4()), "text": ""}, files=files
        )
        assert posted.status_code == 202, posted.text
        wait_for(
            lambda: Attachment.objects.filter(message__account=account).exists(),
            what="the widget's file ingested (so the text message comes after it)",
        )
        posted = http.post("/api/webchat/v1/messages", json={"client_id": str(uuid.uuid4()), "text": FIELDS["ZX33"][1]})
        assert posted.status_code == 202, posted.text
        wait_for(lambda: Message.objects.filter(account=account, text=FIELDS["ZX33"][1]).exists(), what="ZX33 in")
        left = http.post("/api/webchat/v1/contact", json={"email": FIELDS["ZX35"][1]})
        assert left.status_code == 200, left.text


def enter_api(base: str, account: ChannelAccount) -> None:
    event = {
        "id": "app-msg-1",
        "sender": {"id": "app-user-77", "name": FIELDS["ZX41"][1], "email": FIELDS["ZX42"][1]},
        "text": FIELDS["ZX43"][1],
        "language": "en",
    }
    body = json.dumps(event).encode()
    signature = "sha256=" + hmac.new(API_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = httpx.post(
        f"{base}/api/channels/{account.public_id}/events",
        content=body,
        headers={"Content-Type": "application/json", "X-Switchboard-Signature": signature},
        timeout=10,
    )
    assert response.status_code == 202, response.text


@dataclass
class World:
    accounts: dict[str, ChannelAccount]
    conversations: dict[str, Conversation]  # "email", "email_html", "telegram", "x", "webchat", "api"
    contacts: dict[str, Contact]  # "email", "telegram", "x", "webchat", "api"
    email_file: str  # the attachment name as stored (the e-mail parser replaces "<>\"" in file names)
    html_message: Message


def build(base: str, telegram: TelegramServer, x_api: XServer) -> World:
    demo = make_demo()
    # A canned response with the contact's name: the customer's text also lands in an attribute (data-text).
    CannedResponse.objects.create(language="", shortcut="xsshi", title="Greeting", text="Hello {contact_name}!")
    accounts = {
        "email": ChannelAccount.objects.create(
            kind="email", name="Support mailbox", settings={"address": SUPPORT, "domain": "example.test"}
        ),
        "telegram": ChannelAccount.objects.create(
            kind="telegram",
            name="Support bot",
            settings={"api_base": telegram.api_base, "mode": "webhook"},
            secrets={"bot_token": telegram.token, "webhook_secret": TG_SECRET},
        ),
        "x": ChannelAccount.objects.create(
            kind="x",
            name="Support on X",
            settings={"api_base": x_api.url, "mode": "webhook", "user_id": x_api.me["id"]},
            secrets=x_api.credentials(),
        ),
        "webchat": demo.webchat,
        "api": ChannelAccount.objects.create(kind="api", name="Our app", secrets={"signing_secret": API_SECRET}),
    }
    enter_email(accounts["email"])
    enter_telegram(base, accounts["telegram"], telegram)
    enter_x(base, accounts["x"], x_api)
    enter_webchat(base, accounts["webchat"])
    enter_api(base, accounts["api"])

    expected = {"email": 2, "telegram": 2, "x": 1, "webchat": 2, "api": 1}

    def ingested() -> bool:
        counts = {
            kind: Message.objects.filter(account=accounts[kind], direction=Message.Direction.INBOUND).count()
            for kind in expected
        }
        files = Message.objects.filter(account=accounts["telegram"], metadata__files_fetched=True).exists()
        return counts == expected and files

    wait_for(ingested, timeout=30, what=f"the worker to ingest every payload ({expected} + the Telegram file)")

    def conversation(kind: str, **extra: Any) -> Conversation:
        return Conversation.objects.select_related("contact", "identity").get(account=accounts[kind], **extra)

    email_first = Message.objects.get(account=accounts["email"], text=FIELDS["ZX03"][1])
    email_second = Message.objects.get(account=accounts["email"], html__contains="ZX05")
    conversations = {
        "email": conversation("email", pk=email_first.conversation_id),
        "email_html": conversation("email", pk=email_second.conversation_id),
        "telegram": conversation("telegram"),
        "x": conversation("x"),
        "webchat": conversation("webchat"),
        "api": conversation("api"),
    }
    contacts = {kind: c.contact for kind, c in conversations.items() if kind != "email_html"}
    # The English agent gets every one of them (whatever queue language detection chose): the agent's pages show
    # what the manager's do.
    for c in conversations.values():
        conversation_assign(conversation=c, assignee=demo.agent_en, actor=demo.manager)
    email_file = Attachment.objects.get(message=email_first).filename
    return World(accounts, conversations, contacts, email_file, email_first)


def check_stored(world: World) -> list[str]:
    """Preconditions: the payloads reached the database as sent (else the browser checks would prove nothing)."""
    c, k = world.conversations, world.contacts
    tg_meta = Message.objects.filter(conversation=c["telegram"]).values_list("metadata", flat=True)
    stored = {
        "ZX01": k["email"].name,
        "ZX02": c["email"].subject,
        "ZX03": world.html_message.text,
        "ZX05": Message.objects.get(conversation=c["email_html"]).text,
        "ZX06": world.email_file,
        "ZX11": c["telegram"].identity.display_name,
        "ZX12": c["telegram"].identity.display_name,
        "ZX13": " ".join(str(m.get("username")) for m in tg_meta),
        "ZX14": " ".join(Message.objects.filter(conversation=c["telegram"]).values_list("text", flat=True)),
        "ZX15": " ".join(Message.objects.filter(conversation=c["telegram"]).values_list("text", flat=True)),
        "ZX16": " ".join(
            Attachment.objects.filter(message__conversation=c["telegram"]).values_list("filename", flat=True)
        ),
        "ZX21": c["x"].identity.display_name,
        "ZX22": c["x"].identity.display_name,
        "ZX23": Message.objects.get(conversation=c["x"]).text,
        "ZX31": k["webchat"].name,
        "ZX32": k["webchat"].email,
        "ZX33": " ".join(Message.objects.filter(conversation=c["webchat"]).values_list("text", flat=True)),
        "ZX34": " ".join(
            Attachment.objects.filter(message__conversation=c["webchat"]).values_list("filename", flat=True)
        ),
        "ZX35": " ".join(
            Message.objects.filter(conversation=c["webchat"], direction="note").values_list("text", flat=True)
        ),
        "ZX41": k["api"].name,
        "ZX42": k["api"].email,
        "ZX43": Message.objects.get(conversation=c["api"]).text,
    }
    problems = []
    for marker, value in stored.items():
        sent = FIELDS[marker][1]
        wanted = {"ZX05": ZX05_TEXT, "ZX06": "ZX06", "ZX34": ZX34_SENT}.get(marker, sent)
        if wanted not in (value or ""):
            problems.append(f"{field_name(marker)}: stored as {value!r}, expected it to contain {wanted!r}")
    # The HTML part is stored sanitised: nothing active is left of the classic set.
    cleaned = world.html_message.html.lower()
    for active in (
        "<script",
        "onerror",
        "onload",
        "ontoggle",
        "javascript:",
        "<iframe",
        "srcdoc",
        "<meta",
        "<base",
        "expression(",
        "<object",
        "<embed",
        "<svg",
        "<style",
        "style=",
        "<form",
    ):
        if active in cleaned:
            problems.append(f"ZX04 (e-mail HTML body): the stored, sanitised HTML still has {active!r}")
    if "ZX04 formatted part" not in world.html_message.html:
        problems.append("ZX04 (e-mail HTML body): the sanitised HTML lost the text of the formatted part")
    return problems


# --- The browser ----------------------------------------------------------------------------------------------------
INIT_SCRIPT = """
(() => {
  const report = (kind, detail) => { try { window.__sbReport(kind, String(detail)); } catch (e) { /* no binding */ } };
  window.__xss = (marker) => report('xss', marker);
  document.addEventListener('securitypolicyviolation', (e) => {
    const where = `${e.sourceFile}:${e.lineNumber}`;
    const directive = e.effectiveDirective || e.violatedDirective;
    report('csp', `${directive} blocked=${e.blockedURI} sample=${e.sample} at ${where}`);
  }, true);
})();
"""
CONSOLE_VIOLATION = re.compile(r"Content Security Policy|Blocked script execution|sandboxed", re.IGNORECASE)
# Chromium's words for an image the frame's policy blocked (older builds: "Refused to load the image ...").
FRAME_IMAGE_BLOCK = re.compile(
    r"(Loading the image|Refused to load the image) '[^']*' (because it )?violates the following Content Security "
    r'Policy directive: "img-src data:"'
)


@dataclass
class Visit:
    role: str
    what: str
    url: str
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, frame url, detail)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Reader:
    """One role's browser context, watching every page it opens for code that runs or is blocked."""

    def __init__(self, browser: Browser, base: str, role: str, username: str, *, instrumented: bool = True) -> None:
        self.base = base
        self.role = role
        self.context: BrowserContext = browser.new_context(viewport=AGENT_VIEWPORT, locale="en-US")
        self.context.set_default_timeout(TIMEOUT_MS)
        self.visit: Visit | None = None
        self.visits: list[Visit] = []
        self.frame_image_blocks: list[str] = []
        if instrumented:
            self.context.expose_binding("__sbReport", self._report)
            self.context.add_init_script(INIT_SCRIPT)
        self.page: Page = self.context.new_page()
        self.page.on("dialog", self._dialog)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.visit and self.visit.errors.append(str(exc)))
        self.page.goto(f"{base}/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(f"{base}/inbox/")

    def _report(self, source: dict[str, Any], kind: str, detail: str) -> None:
        if self.visit is not None:
            self.visit.events.append((kind, source["frame"].url, detail))

    def _dialog(self, dialog: Any) -> None:
        if self.visit is not None:
            self.visit.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if self.visit is not None and CONSOLE_VIOLATION.search(message.text):
            self.visit.console.append(f"{message.type}: {message.text} ({message.location.get('url')})")

    def open(self, path: str, what: str) -> Visit:
        self.visit = Visit(self.role, what, path)
        self.visits.append(self.visit)
        response = self.page.goto(f"{self.base}{path}")
        status = response.status if response is not None else 0
        if status != 200 and not (what == "dashboard" and self.role == "agent" and status == 403):
            self.visit.errors.append(f"GET {path} answered {status}")
        if self.page.locator("body[data-user]").count():
            try:  # the live layer connects, then re-renders the list / timeline from the server (innerHTML)
                self.page.locator("body[data-live=on]").wait_for(state="attached", timeout=5000)
            except Exception:
                self.visit.errors.append("the page's live connection did not come up")
        self.page.wait_for_timeout(250)  # the live refresh (150 ms debounce + fetch) has run
        return self.visit

    def text(self) -> str:
        return norm(self.page.evaluate("() => document.body.innerText"))

    def close(self) -> None:
        self.context.close()


def problems_of(reader: Reader, visit: Visit, expected: dict[str, str]) -> list[str]:
    """Everything wrong on the page just visited. ``expected``: marker -> text that must be visible."""
    where = f"[{visit.role}] {visit.what} ({visit.url})"
    found: list[str] = []
    for kind, frame, detail in visit.events:
        if kind == "xss":
            found.append(f"{where}: SCRIPT RAN for {field_name(detail)} (in frame {frame})")
        else:
            found.append(f"{where}: CSP violation {detail} (frame {frame})")
    found += [f"{where}: dialog opened ({d})" for d in visit.dialogs]
    for line in visit.console:
        if FRAME_IMAGE_BLOCK.search(line) and "/html)" in line and visit.what.endswith("e-mail frame"):
            reader.frame_image_blocks.append(f"{where}: {line}")
            continue
        found.append(f"{where}: console: {line}")
    found += [f"{where}: page error: {e}" for e in visit.errors]
    marker = reader.page.evaluate("() => window.__pwned === undefined ? null : String(window.__pwned)")
    if marker is not None:
        found.append(f"{where}: SCRIPT RAN for {field_name(marker)}: it set the global window.__pwned")
    title = reader.page.title()
    if title.startswith("PWNED") or title == "":
        found.append(f"{where}: document.title was changed to {title!r}")
    if expected:
        shown = reader.text()
        for marker, text in expected.items():
            if norm(text) not in shown:
                snippet = shown[max(0, shown.find(marker) - 60) : shown.find(marker) + 200] if marker in shown else ""
                found.append(
                    f"{where}: {field_name(marker)} is not shown as text: expected {norm(text)!r}"
                    + (f"; the page shows {snippet!r}" if snippet else "; its marker is not on the page at all")
                )
    return found


# --- What each page shows -------------------------------------------------------------------------------------------
def shown_fields(world: World) -> dict[str, dict[str, str]]:
    """Page -> {marker: the text the page must show for that field}. The customer's text exactly, except where the
    app itself transforms it: names joined by the channel's rule, the e-mail parser's safe file name, truncation."""
    f = {m: v for m, (_, v) in FIELDS.items()}
    tg_name = f"{f['ZX11']} {f['ZX12']}"
    x_name = f"{f['ZX22']} (@{f['ZX21']})"
    mail = {"ZX01": f["ZX01"], "ZX02": f["ZX02"], "ZX03": f["ZX03"], "ZX05": ZX05_TEXT, "ZX06": world.email_file}
    note = f"The visitor asked to continue by e-mail: {f['ZX35']}"
    return {
        # Rows: the contact's name, the subject, the last message's first 140 characters.
        "list": {
            "ZX01": f["ZX01"],
            "ZX02": f["ZX02"],
            "ZX11": tg_name,
            "ZX15": f["ZX15"][:140],
            "ZX21": x_name,
            "ZX23": f["ZX23"][:140],
            "ZX31": f["ZX31"],
            "ZX33": f["ZX33"][:140],
            "ZX41": f["ZX41"],
            "ZX43": f["ZX43"][:140],
        },
        "search": {"ZX31": f["ZX31"], "ZX33": f["ZX33"][:140]},
        # A conversation page shows every message of the contact (both e-mail conversations on either).
        "email": mail,
        "email_html": {m: v for m, v in mail.items() if m != "ZX02"},  # its own subject is not ZX02's
        "telegram": {"ZX11": tg_name, "ZX14": f["ZX14"], "ZX15": f["ZX15"], "ZX16": f["ZX16"]},
        "x": {"ZX21": x_name, "ZX23": f["ZX23"]},
        "webchat": {"ZX31": f["ZX31"], "ZX32": f["ZX32"], "ZX33": f["ZX33"], "ZX34": ZX34_SENT, "ZX35": note},
        "api": {"ZX41": f["ZX41"], "ZX42": f["ZX42"], "ZX43": f["ZX43"]},
        "contacts": {
            "ZX01": f["ZX01"],
            "ZX11": tg_name,
            "ZX21": x_name,
            "ZX31": f["ZX31"],
            "ZX32": f["ZX32"],
            "ZX41": f["ZX41"],
            "ZX42": f["ZX42"],
        },
        "contacts-search": {"ZX31": f["ZX31"], "ZX32": f["ZX32"]},
        # A contact page: name, e-mail, identities; its conversations' subject (80) and last text (120) truncated.
        "contact-email": {"ZX01": f["ZX01"], "ZX02": f["ZX02"][:79]},
        "contact-telegram": {"ZX11": tg_name, "ZX15": f["ZX15"][:119]},
        "contact-x": {"ZX21": x_name, "ZX23": f["ZX23"][:119]},
        "contact-webchat": {"ZX31": f["ZX31"], "ZX32": f["ZX32"], "ZX33": f["ZX33"][:119]},
        "contact-api": {"ZX41": f["ZX41"], "ZX42": f["ZX42"], "ZX43": f["ZX43"][:119]},
    }


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, as tests/browser drives it. Started once the data is built: while Playwright's sync API
    runs, an event loop counts as running in this thread, where Django refuses the ORM (and the services could not
    publish their live events); nothing below touches the database."""
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, chromium_sandbox=False
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


def read_everything(reader: Reader, world: World, shown: dict[str, dict[str, str]]) -> list[str]:
    problems: list[str] = []

    def visit(path: str, what: str, expected: dict[str, str]) -> None:
        problems.extend(problems_of(reader, reader.open(path, what), expected))

    visit("/inbox/?status=all", "inbox list", shown["list"])
    visit(f"/inbox/?status=all&q={quote(FIELDS['ZX33'][1])}", "inbox search for the ZX33 payload", shown["search"])
    for kind, conversation in world.conversations.items():
        visit(f"/inbox/c/{conversation.pk}/", f"conversation {kind}", shown[kind])
    visit("/contacts/", "contacts list", shown["contacts"])
    visit(f"/contacts/?q={quote(FIELDS['ZX31'][1])}", "contacts search for the ZX31 payload", shown["contacts-search"])
    for kind, contact in world.contacts.items():
        visit(f"/contacts/{contact.pk}/", f"contact {kind}", shown[f"contact-{kind}"])
    # A merge search on one contact lists the others as candidates (their names, e-mails and handles).
    visit(f"/contacts/{world.contacts['api'].pk}/?merge_q=ZX", "contact merge candidates", {"ZX31": FIELDS["ZX31"][1]})
    visit("/dashboard/", "dashboard", {})
    return problems


def read_email_frame(
    browser: Browser, base: str, role: str, username: str, world: World, *, screenshot: bool = False
) -> tuple[list[str], list[str]]:
    """Open "Show the formatted e-mail": the sanitised HTML in its sandboxed frame, with the frame's own policy.

    In a context without the init script and binding: Playwright injects those into every frame, and in a frame
    that may not run scripts Chromium reports that attempt as "Blocked script execution" (checked: the message
    goes away without them). The frame can run nothing anyway; here every console report from it is the page's own.
    """
    reader = Reader(browser, base, role, username, instrumented=False)
    try:
        path = f"/inbox/c/{world.conversations['email'].pk}/"
        problems = problems_of(reader, reader.open(path, "conversation email (uninstrumented)"), {})
        problems += open_email_frame(reader, world)
        if screenshot:  # the e-mail conversation, every e-mail field on it, the formatted part open
            reader.page.locator(f"#m{world.html_message.pk} iframe").scroll_into_view_if_needed()
            reader.page.wait_for_timeout(500)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            reader.page.screenshot(path=str(SCREENSHOT))
            assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{SCREENSHOT} is not a PNG"
    finally:
        reader.close()
    return problems, reader.frame_image_blocks


def open_email_frame(reader: Reader, world: World) -> list[str]:
    page = reader.page
    url = f"/inbox/m/{world.html_message.pk}/html"
    visit = Visit(reader.role, "conversation email: e-mail frame", url)
    reader.visit = visit
    reader.visits.append(visit)
    with page.expect_response(lambda r: r.url.endswith(url)) as answered:
        page.locator(f"#m{world.html_message.pk} details.msg-html summary").click()
    response = answered.value
    if response.status != 200:
        visit.errors.append(f"the frame answered {response.status}")
    policy = response.headers.get("content-security-policy", "")
    if "sandbox" not in policy or "default-src 'none'" not in policy:
        visit.errors.append(f"the frame's own policy is missing or weak: {policy!r}")
    frame = None
    for _ in range(100):
        frame = next((f for f in page.frames if f.url.endswith(url)), None)
        if frame is not None:
            break
        page.wait_for_timeout(50)
    if frame is None:
        visit.errors.append("the e-mail frame did not load")
    else:
        frame.wait_for_load_state("load")
        page.wait_for_timeout(400)  # a meta refresh, a lazy handler or a blocked load would have happened by now
        inside = norm(frame.locator("body").inner_text())
        if "ZX04 formatted part" not in inside:
            visit.errors.append(f"ZX04 (e-mail HTML body): the frame does not show the formatted text ({inside!r})")
        if not frame.url.endswith(url):
            visit.errors.append(f"the e-mail frame navigated away to {frame.url}")
    sandbox = page.locator(f"#m{world.html_message.pk} iframe").get_attribute("sandbox")
    if sandbox != "":
        visit.errors.append(f"the e-mail frame's sandbox attribute is {sandbox!r}, expected an empty (strictest) one")
    return problems_of(reader, visit, {})


def test_stored_xss_payloads_stay_text_for_agents_and_managers(live_worker, web_server) -> None:
    with TelegramServer() as telegram, XServer() as x_api:
        world = build(web_server.url, telegram, x_api)
    problems = check_stored(world)
    shown = shown_fields(world)
    frame_reports: dict[str, list[str]] = {}
    with chromium() as browser:
        for role, username in (("agent", "ben"), ("manager", "maria")):
            reader = Reader(browser, web_server.url, role, username)
            try:
                problems += read_everything(reader, world, shown)
            finally:
                reader.close()
            pages = len(reader.visits)
            if pages < 17:
                problems.append(f"[{role}] only {pages} pages were read")
            found, frame_reports[role] = read_email_frame(
                browser, web_server.url, role, username, world, screenshot=role == "manager"
            )
            problems += found
    for role, reports in frame_reports.items():
        print(f"[{role}] expected reports from the e-mail frame:\n  " + "\n  ".join(reports))
        # The one expected kind: the frame's img-src 'data:' blocking the image nh3 kept (<img src="x">).
        if not reports:
            problems.append(f"[{role}] the e-mail frame reported no blocked image: was it opened at all?")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
