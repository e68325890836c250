"""Webhook and secret hygiene (issue 10, point 12).

1. Refusals (in-process, Django's test client through the whole middleware stack, PostgreSQL): every webhook and
   widget request that is not genuinely authenticated is answered with the right status and stores NOTHING (the
   rows of every model an inbound request could create are counted before and after). Each refused request is the
   genuine one with only its credential changed: the same requests, correctly authenticated, are accepted
   (``test_the_same_requests_correctly_authenticated_are_accepted``), so a refusal is the credential's doing.

2. Secrets never in URLs or logs (the live stack: uvicorn, the Celery worker, PostgreSQL, Redis, Dovecot, the fake
   Telegram / X / SMTP / callback servers, Chromium). One realistic flow runs once per module (``flow``): every
   channel receives and sends, one send per channel fails at the provider, three listeners fail to log in and log
   the error, a visitor chats over HTTP, over the websocket and in the real widget in Chromium, Prometheus scrapes.
   In this process every logger is at DEBUG and a handler on the root logger keeps every record; the worker's and
   the web server's output (INFO, their production level) is read from their log files; the fakes record every
   request target; Chromium records every URL it requests. Then each secret, raw and URL-encoded (passwords also
   base64, as SMTP AUTH carries them), is looked for in each place:

   ==================================  =======================================================================
   test                                where
   ==================================  =======================================================================
   ``..._in_a_url``                    every request target the fakes received, every URL in the web server's
                                       access log, every URL Chromium requested (the widget, its websocket)
   ``..._in_our_logs[...-INFO+]``      this process's log records at INFO and above (production's level)
   ``..._in_our_logs[...-DEBUG]``      this process's log records at DEBUG
   ``..._in_worker_or_web_output``     the Celery worker's and uvicorn's output during the flow
   ``..._in_what_people_read``         errors stored for agents/admins (delivery, channel health, events),
                                       message metadata and file names, and the HTTP answers of the flow
   ==================================  =======================================================================

   The Telegram bot token is part of every Bot API URL by Telegram's design (https://api.telegram.org/bot<token>/
   METHOD, files at /file/bot<token>/PATH): ``..._in_a_url`` allows it exactly there — as the first path segment
   of requests to the Telegram server — and nowhere else (not in a query string, a parameter or a header, not in
   any other URL). The logs must never carry it: httpx logs every request URL at INFO ("HTTP Request: POST
   http://.../bot<token>/getUpdates ..."), so ``test_httpx_logs_telegram_request_lines_with_the_token_redacted``
   also checks that those INFO lines were written (the check is not vacuous) and read ``/bot<redacted>/``.

   Records that are not ours are left out, and counted: the fakes' own (aiosmtpd's "mail.log", anything logged in the
   fake HTTP servers' request threads, e.g. oauthlib verifying X's signatures) and "websockets.client", the library
   this test uses as the visitor's side of the socket (it logs the auth frame it sends, token included, at DEBUG:
   in production that side is the visitor's browser).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import re
import shutil
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from websockets.sync.client import connect as ws_connect

from connectors.base import OutboundMessage
from connectors.email.smtp import SMTP_POLICY
from inbox.conversations.channels import connector_for
from inbox.conversations.listeners import run_account
from inbox.conversations.management.commands.listen_mail import mail_session
from inbox.conversations.models import (
    Attachment,
    AuditEvent,
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    InboundEvent,
    Message,
    OutboundDelivery,
)
from inbox.conversations.services import inbound_events_process, reply_create
from inbox.conversations.telegram import (
    telegram_poll_once,
    telegram_session,
    telegram_webhook_delete,
    telegram_webhook_set,
)
from inbox.conversations.x import x_poll_stream, x_session, x_webhook_register
from inbox.webchat.models import Visitor, VisitorToken
from inbox.webchat.services import VisitorFile, visitor_create, visitor_post_files
from tests.browser.conftest import skip_unless_browser
from tests.conftest import broker_idle, wait_for
from tests.factories import make_demo
from tests.fakes.callback_server import CallbackServer
from tests.fakes.dovecot import Dovecot, ensure_dovecot
from tests.fakes.smtp_server import SmtpServer
from tests.fakes.telegram_server import TelegramServer, new_token
from tests.fakes.x_server import XServer

# Every test here needs the test database set up: the refusals use it, the flow's tests read what the module's flow
# committed (pytest-django sets up the databases only when a selected test asks for one).
pytestmark = pytest.mark.django_db

SUPPORT = "support@example.test"
ENGLISH = "Hello, my order 4471 has not arrived yet, can you help me please?"

# Every model an inbound request could add a row to.
STORED = (
    InboundEvent,
    Message,
    Conversation,
    Contact,
    ContactIdentity,
    Visitor,
    VisitorToken,
    Attachment,
    OutboundDelivery,
    AuditEvent,
)


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in STORED}


def hmac_sha256_b64(secret: str, body: bytes) -> str:
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def api_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# =====================================================================================================================
# 1. Refusals: the right status, nothing stored
# =====================================================================================================================
TG_SECRET = "tg_webhook_secret_for_the_refusal_tests"
TG_OTHER_SECRET = "another_bots_webhook_secret"
X_SECRET = "x-consumer-secret-for-the-refusal-tests"
API_SECRET = "api-signing-secret-for-the-refusal-tests"
API_OTHER_SECRET = "another-api-channels-signing-secret"


@dataclass
class Setup:
    telegram: ChannelAccount
    telegram_unconfigured: ChannelAccount  # no webhook_secret: every request is refused
    x: ChannelAccount
    api: ChannelAccount
    webchat: ChannelAccount
    telegram_update: bytes
    x_body: bytes
    api_body: bytes
    tokens: dict[str, str]  # "a", "b", "switched_off", "erased"
    b_attachment: int
    a_attachment: int


@pytest.fixture
def setup(db: None, settings: Any, tmp_path: Path) -> Setup:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    demo = make_demo()
    with TelegramServer() as telegram, XServer(consumer_secret=X_SECRET) as x_api:
        tg = ChannelAccount.objects.create(
            kind="telegram",
            name="Bot",
            settings={"api_base": telegram.api_base, "mode": "webhook"},
            secrets={"bot_token": telegram.token, "webhook_secret": TG_SECRET},
        )
        tg_unconfigured = ChannelAccount.objects.create(
            kind="telegram",
            name="Bot without a secret",
            settings={"mode": "webhook"},
            secrets={"bot_token": new_token()},
        )
        ChannelAccount.objects.create(
            kind="telegram", name="Other bot", settings={"mode": "webhook"}, secrets={"webhook_secret": TG_OTHER_SECRET}
        )
        update = json.dumps(telegram.build_message_update(ENGLISH, chat_id=4242)).encode()
        x = ChannelAccount.objects.create(
            kind="x",
            name="X",
            settings={"api_base": x_api.url, "mode": "webhook", "user_id": x_api.me["id"]},
            secrets=x_api.credentials(),
        )
        customer = x_api.add_user(username="lucia_m", name="Lucia M")
        dm = x_api.add_dm(sender_id=customer["id"], text=ENGLISH)
        x_body = json.dumps(x_api.aaa_dm_payload(dm), separators=(",", ":")).encode()
    api = ChannelAccount.objects.create(kind="api", name="Our app", secrets={"signing_secret": API_SECRET})
    ChannelAccount.objects.create(kind="api", name="Other app", secrets={"signing_secret": API_OTHER_SECRET})
    api_body = json.dumps(
        {"id": "app-1", "sender": {"id": "user-7", "name": "Ada"}, "text": ENGLISH, "language": "en"}
    ).encode()

    webchat = demo.webchat
    a, a_token = visitor_create(account=webchat, name="Visitor A")
    b, b_token = visitor_create(account=webchat, name="Visitor B")
    for visitor, name in ((a, "a.txt"), (b, "b.txt")):
        visitor_post_files(visitor=visitor, client_id=uuid.uuid4(), text=ENGLISH, files=[VisitorFile(name, b"hi\n")])
    report = inbound_events_process(event_ids=list(InboundEvent.objects.values_list("pk", flat=True)))
    assert report.done == 2, report
    # "Expired": visitor tokens have no lifetime (the widget keeps its chat across visits, docs/webchat-widget.md),
    # so a token stops being valid when its channel is switched off or its visitor is erased. Both are modelled.
    off_channel = ChannelAccount.objects.create(kind="webchat", name="Old site")
    _, off_token = visitor_create(account=off_channel, name="Visitor of a closed site")
    ChannelAccount.objects.filter(pk=off_channel.pk).update(is_active=False)
    erased, erased_token = visitor_create(account=webchat, name="Erased visitor")
    erased.delete()
    return Setup(
        telegram=tg,
        telegram_unconfigured=tg_unconfigured,
        x=x,
        api=api,
        webchat=webchat,
        telegram_update=update,
        x_body=x_body,
        api_body=api_body,
        tokens={"a": a_token, "b": b_token, "switched_off": off_token, "erased": erased_token},
        a_attachment=Attachment.objects.get(message__conversation__identity=a.identity).pk,
        b_attachment=Attachment.objects.get(message__conversation__identity=b.identity).pk,
    )


def one_byte_changed(body: bytes) -> bytes:
    """The body with one byte changed (a letter of the customer's text), still valid JSON."""
    at = body.index(b"Hello")
    return body[:at] + b"J" + body[at + 1 :]


def tampered(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


Request = Callable[[Client, Setup], Any]


def telegram_post(secret: str | None, *, account: str = "telegram") -> Request:
    def send(client: Client, s: Setup) -> Any:
        headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
        target = getattr(s, account)
        return client.post(
            f"/api/channels/{target.public_id}/telegram", s.telegram_update, "application/json", headers=headers
        )

    return send


def x_post(sign: Callable[[Setup], str | None], body: Callable[[Setup], bytes] = lambda s: s.x_body) -> Request:
    def send(client: Client, s: Setup) -> Any:
        signature = sign(s)
        headers = {} if signature is None else {"X-Twitter-Webhooks-Signature": signature}
        return client.post(f"/api/channels/{s.x.public_id}/x", body(s), "application/json", headers=headers)

    return send


def api_post(sign: Callable[[Setup], str | None], body: Callable[[Setup], bytes] = lambda s: s.api_body) -> Request:
    def send(client: Client, s: Setup) -> Any:
        signature = sign(s)
        headers = {} if signature is None else {"X-Switchboard-Signature": signature}
        return client.post(f"/api/channels/{s.api.public_id}/events", body(s), "application/json", headers=headers)

    return send


def widget(method: str, path: str, token: Callable[[Setup], str | None], *, scheme: str = "Bearer") -> Request:
    """A visitor API request as the widget sends it (Authorization header), with ``token`` (None: no header)."""

    def send(client: Client, s: Setup) -> Any:
        value = token(s)
        headers = {} if value is None else {"Authorization": f"{scheme} {value}"}
        url = path.format(b_attachment=s.b_attachment, a_attachment=s.a_attachment)
        if method == "GET":
            return client.get(url, headers=headers)
        if path.endswith("/attachments"):
            data = {"client_id": str(uuid.uuid4()), "text": ENGLISH, "files": _upload()}
            return client.post(url, data, headers=headers)
        payload = {"client_id": str(uuid.uuid4()), "text": ENGLISH, "email": "ada@example.com"}
        return client.post(url, json.dumps(payload), "application/json", headers=headers)

    return send


def _upload() -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("receipt.txt", b"receipt 4471\n", content_type="text/plain")


REFUSALS: list[tuple[str, Request, int]] = [
    # Telegram: X-Telegram-Bot-Api-Secret-Token (docs/channels/telegram.md)
    ("telegram: secret header missing", telegram_post(None), 401),
    ("telegram: secret header empty", telegram_post(""), 401),
    ("telegram: wrong secret", telegram_post("not-the-secret"), 403),
    ("telegram: one character of the secret changed", telegram_post(tampered(TG_SECRET)), 403),
    ("telegram: another bot's secret", telegram_post(TG_OTHER_SECRET), 403),
    ("telegram: channel without a secret, any header", telegram_post("anything", account="telegram_unconfigured"), 403),
    # X: x-twitter-webhooks-signature over the raw body (docs/channels/x.md: missing 401, wrong or tampered 403)
    ("x: signature missing", x_post(lambda s: None), 401),
    (
        "x: body changed by one byte",
        x_post(lambda s: hmac_sha256_b64(X_SECRET, s.x_body), lambda s: one_byte_changed(s.x_body)),
        403,
    ),
    ("x: signed with another secret", x_post(lambda s: hmac_sha256_b64("not-the-secret", s.x_body)), 403),
    ("x: signature not base64 HMAC", x_post(lambda s: "sha256=not-a-signature"), 403),
    # API channel: X-Switchboard-Signature, HMAC-SHA256 hex of the raw body ("missing or wrong signature": 403)
    ("api: signature missing", api_post(lambda s: None), 403),
    ("api: signed with a wrong token", api_post(lambda s: api_signature("not-the-secret", s.api_body)), 403),
    (
        "api: signed with another API channel's token",
        api_post(lambda s: api_signature(API_OTHER_SECRET, s.api_body)),
        403,
    ),
    (
        "api: body changed by one byte",
        api_post(lambda s: api_signature(API_SECRET, s.api_body), lambda s: one_byte_changed(s.api_body)),
        403,
    ),
    # Web chat visitor API: Authorization: Bearer <token>; every lookup scoped by the token
    ("widget: no token", widget("POST", "/api/webchat/v1/messages", lambda s: None), 401),
    (
        "widget: one character of a token changed",
        widget("POST", "/api/webchat/v1/messages", lambda s: tampered(s.tokens["a"])),
        401,
    ),
    (
        "widget: token under another scheme",
        widget("POST", "/api/webchat/v1/messages", lambda s: s.tokens["a"], scheme="Token"),
        401,
    ),
    (
        "widget: visitor A's token, visitor B's file",
        widget("GET", "/api/webchat/v1/attachments/{b_attachment}", lambda s: s.tokens["a"]),
        404,
    ),
    (
        "widget: visitor B's token, visitor A's file",
        widget("GET", "/api/webchat/v1/attachments/{a_attachment}", lambda s: s.tokens["b"]),
        404,
    ),
    (
        "widget: expired (channel switched off) token, post",
        widget("POST", "/api/webchat/v1/messages", lambda s: s.tokens["switched_off"]),
        401,
    ),
    (
        "widget: expired (channel switched off) token, file",
        widget("POST", "/api/webchat/v1/attachments", lambda s: s.tokens["switched_off"]),
        401,
    ),
    (
        "widget: expired (channel switched off) token, e-mail",
        widget("POST", "/api/webchat/v1/contact", lambda s: s.tokens["switched_off"]),
        401,
    ),
    (
        "widget: expired (channel switched off) token, history",
        widget("GET", "/api/webchat/v1/messages", lambda s: s.tokens["switched_off"]),
        401,
    ),
    (
        "widget: expired (visitor erased) token, post",
        widget("POST", "/api/webchat/v1/messages", lambda s: s.tokens["erased"]),
        401,
    ),
    (
        "widget: expired (visitor erased) token, status",
        widget("GET", "/api/webchat/v1/status", lambda s: s.tokens["erased"]),
        401,
    ),
]


@pytest.mark.parametrize(("request_", "expected"), [(r, e) for _, r, e in REFUSALS], ids=[n for n, _, _ in REFUSALS])
def test_refused_with_the_right_status_and_nothing_stored(setup: Setup, request_: Request, expected: int) -> None:
    before = row_counts()
    response = request_(Client(enforce_csrf_checks=True), setup)
    assert response.status_code == expected, (response.status_code, response.content[:300])
    assert row_counts() == before, "a refused request stored something"
    body = response.content.decode(errors="replace")
    for secret in (TG_SECRET, TG_OTHER_SECRET, X_SECRET, API_SECRET, API_OTHER_SECRET, *setup.tokens.values()):
        assert secret not in body, "the refusal repeats a secret"


def test_a_visitor_reads_only_its_own_history(setup: Setup) -> None:
    """Visitor A's token never shows visitor B's messages (the history is scoped by the token, not by an id)."""
    client = Client()
    mine = client.get("/api/webchat/v1/messages?after=0", headers={"Authorization": f"Bearer {setup.tokens['a']}"})
    assert mine.status_code == 200
    files = [f["id"] for m in mine.json()["messages"] for f in m["attachments"]]
    assert files == [setup.a_attachment], "visitor A's history lists another visitor's file"


def test_credentials_are_never_taken_from_the_url(setup: Setup, settings: Any) -> None:
    """A client that puts a valid visitor token or the Prometheus token in the query string is refused: the API only
    reads the Authorization header, so no working set-up can lead anyone to put a credential in a URL (URLs end up
    in access logs, proxies and browser history)."""
    settings.SWITCHBOARD_METRICS_TOKEN = "prometheus-token-for-the-url-test"
    before = row_counts()
    client = Client()
    token = urllib.parse.quote(setup.tokens["a"])
    for url in (f"/api/webchat/v1/messages?token={token}", f"/api/webchat/v1/messages?access_token={token}"):
        assert client.get(url).status_code == 401, url
        response = client.post(url, json.dumps({"client_id": str(uuid.uuid4()), "text": ENGLISH}), "application/json")
        assert response.status_code == 401, url
    for query in ("token", "access_token", "bearer"):
        assert client.get(f"/metrics?{query}=prometheus-token-for-the-url-test").status_code == 401, query
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert row_counts() == before


def test_the_same_requests_correctly_authenticated_are_accepted(setup: Setup) -> None:
    """The controls: each refused request above, with its genuine credential, is accepted (and stored)."""
    client = Client(enforce_csrf_checks=True)
    events = InboundEvent.objects.count()
    assert telegram_post(TG_SECRET)(client, setup).status_code == 200
    assert x_post(lambda s: hmac_sha256_b64(X_SECRET, s.x_body))(client, setup).status_code == 200
    assert api_post(lambda s: api_signature(API_SECRET, s.api_body))(client, setup).status_code == 202
    assert widget("POST", "/api/webchat/v1/messages", lambda s: s.tokens["a"])(client, setup).status_code == 202
    assert widget("POST", "/api/webchat/v1/attachments", lambda s: s.tokens["a"])(client, setup).status_code == 202
    assert InboundEvent.objects.count() == events + 5
    own = widget("GET", "/api/webchat/v1/attachments/{a_attachment}", lambda s: s.tokens["a"])(client, setup)
    assert own.status_code == 200
    assert widget("GET", "/api/webchat/v1/status", lambda s: s.tokens["b"])(client, setup).status_code == 200


# =====================================================================================================================
# 2. Secrets never in URLs or logs: one realistic flow over every channel
# =====================================================================================================================
SECRET_NAMES = (
    "Telegram bot token",
    "Telegram bot token (mistyped, refused)",
    "Telegram webhook secret",
    "X consumer key",
    "X consumer secret",
    "X consumer secret (mistyped, refused)",
    "X access token",
    "X access token secret",
    "X bearer token",
    "IMAP password",
    "IMAP password (mistyped, refused)",
    "SMTP password",
    "API channel signing secret",
    "Prometheus token",
    "visitor token (visitor API and websocket)",
    "visitor token (the widget in Chromium)",
)
PASSWORDS = ("IMAP password", "IMAP password (mistyped, refused)", "SMTP password")


def forms(name: str, value: str) -> set[str]:
    """The ways a secret could be written down: as is, URL-encoded (quote, quote_plus), and for passwords base64 (SMTP
    AUTH LOGIN sends base64(password); AUTH PLAIN base64("\\0user\\0password"))."""
    found = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    if name in PASSWORDS:
        found.add(base64.b64encode(value.encode()).decode())
        found.add(base64.b64encode(f"\0{SUPPORT}\0{value}".encode()).decode())
    return {f for f in found if f}


@dataclass
class Captured:
    logger: str
    level: int
    thread: str
    text: str


class KeepEverything(logging.Handler):
    """Every record of this process, formatted with its exception and stack, with the logger and thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[Captured] = []
        self.lock_ = threading.Lock()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        with self.lock_:
            self.records.append(Captured(record.name, record.levelno, record.threadName or "", text))


class RecordingTelegram(TelegramServer):
    """The fake Bot API server, also keeping each raw request target (path and query string, as received)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets: list[str] = []

    def _handle(self, handler: Any) -> None:
        self.targets.append(handler.path)
        super()._handle(handler)


class RecordingX(XServer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets: list[str] = []

    def _handle(self, handler: Any) -> None:
        self.targets.append(handler.path)
        super()._handle(handler)


@dataclass
class Flow:
    secrets: dict[str, str]
    records: list[Captured]
    left_out: Counter[str]  # records of the fakes themselves, by logger
    telegram_calls: list[Any]  # the fake Bot API's calls (method, params, headers)
    telegram_targets: list[str]
    other_urls: dict[str, list[str]]  # where -> URLs
    server_output: dict[str, str]  # "worker" / "web" -> their output during the flow
    shown: list[str]  # what people read: stored errors, metadata, file names, HTTP answers
    facts: dict[str, Any] = field(default_factory=dict)


def _mail(sender: str, text: str) -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = "Order 4471"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="customer.test")
    msg.set_content(text)
    return bytes(msg)


def _sent_or_failed(message: Message, state: str = "sent", timeout: float = 30) -> OutboundDelivery:
    return wait_for(
        lambda: OutboundDelivery.objects.filter(message=message, state=state).first(),
        timeout=timeout,
        what=f"the delivery of message {message.pk} to be {state} "
        f"({list(OutboundDelivery.objects.filter(message=message).values('state', 'last_error'))})",
    )


class Listener:
    """A channel listener (inbox.conversations.listeners.run_account) in its own thread, as `listen_*` runs it."""

    def __init__(self, account: ChannelAccount, kind: str, session: Any) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=run_account, args=(account.pk, kind, session, self.stop), name=f"listener-{kind}", daemon=True
        )
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "a listener thread did not stop"


def _log_slice(path: Path, start: int) -> str:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read().decode("utf-8", "replace")


# Loggers that are not ours: aiosmtpd (the fake SMTP server's protocol log) and the websockets client this test uses
# as the visitor's side of the socket (it logs every frame it sends at DEBUG, the auth frame with the token included:
# that is the visitor's own process, a browser in production; the server side runs in uvicorn).
NOT_OURS = ("mail.log", "websockets.client")


def _ours(record: Captured) -> bool:
    """A record of our code or of the libraries it calls; not the fakes' (their request threads, aiosmtpd) nor the
    test's stand-in for the visitor's browser."""
    return not (record.logger.startswith(NOT_OURS) or "process_request_thread" in record.thread)


@pytest.fixture(scope="module")
def flow(django_db_setup: Any, django_db_blocker: Any, celery_worker: Any, web_server: Any) -> Iterator[Flow]:
    """The realistic flow, once for the module, on the live stack (committed rows; the database is flushed after)."""
    skip_unless_browser()  # Chromium: skipped here when missing, a failure under CI
    if not ensure_dovecot():
        pytest.skip("dovecot is not installed and could not be installed (apt-get install dovecot-imapd)")
    handler = KeepEverything()
    root = logging.getLogger()
    levels = {"": root.level}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            levels[name] = logger.level
            logger.setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    worker_log, web_log = celery_worker.log_path, web_server.log_path
    offsets = {"worker": worker_log.stat().st_size, "web": web_log.stat().st_size}
    try:
        with django_db_blocker.unblock():
            try:
                ran = _run_flow(handler, web_server.url, worker_log, web_log, offsets)
            except BaseException:
                _flush()
                raise
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name or None).setLevel(level)
    yield ran
    with django_db_blocker.unblock():
        _flush()


def _flush() -> None:
    """What pytest-django does after a transactional test: the worker first finishes what the flow started."""
    deadline = time.monotonic() + 30
    while not broker_idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    call_command("flush", verbosity=0, interactive=False)


def _run_flow(handler: KeepEverything, base: str, worker_log: Path, web_log: Path, offsets: dict[str, int]) -> Flow:
    import secrets as random

    me_id = "1072250532645998596"
    values = {
        "Telegram bot token": new_token(),
        "Telegram bot token (mistyped, refused)": new_token(),
        "Telegram webhook secret": "whsec_" + random.token_urlsafe(24),
        "X consumer key": "xck" + random.token_hex(10),
        "X consumer secret": "xcs" + random.token_hex(16),
        "X consumer secret (mistyped, refused)": "xcs" + random.token_hex(16),
        "X access token": f"{me_id}-xat{random.token_hex(10)}",
        "X access token secret": "xats" + random.token_hex(16),
        "X bearer token": "AAAAxbt" + random.token_hex(16),
        "IMAP password": "Imap+Pw/" + random.token_hex(8),
        "IMAP password (mistyped, refused)": "Imap+Pw/" + random.token_hex(8),
        "SMTP password": "Smtp+Pw/" + random.token_hex(8),
        "API channel signing secret": "api-" + random.token_hex(16),
        "Prometheus token": "prom-" + random.token_hex(16),
    }
    shown: list[str] = []
    facts: dict[str, Any] = {}
    demo = make_demo()
    with (
        RecordingTelegram(token=values["Telegram bot token"]) as telegram,
        RecordingX(
            consumer_key=values["X consumer key"],
            consumer_secret=values["X consumer secret"],
            access_token=values["X access token"],
            access_token_secret=values["X access token secret"],
            bearer_token=values["X bearer token"],
            me_id=me_id,
        ) as x_api,
        SmtpServer(users={SUPPORT: values["SMTP password"]}) as smtp,
        Dovecot({SUPPORT: values["IMAP password"]}) as dovecot,
        CallbackServer() as callback,
    ):
        accounts = _accounts(values, telegram, x_api, smtp, dovecot, callback, base)
        listeners = {
            "telegram": Listener(accounts["telegram_bad"], "telegram", functools.partial(telegram_session, timeout=1)),
            "x": Listener(accounts["x_bad"], "x", x_session),
            "email": Listener(
                accounts["email_bad"], "email", functools.partial(mail_session, idle_seconds=1, batch=10)
            ),
        }
        _telegram_flow(accounts["telegram"], telegram, demo, shown)
        _x_flow(accounts["x"], x_api, demo, shown)
        _email_flow(accounts["email"], dovecot, smtp, demo)
        _api_flow(base, accounts["api"], callback, demo, values, shown)
        facts["visitor"] = _visitor_flow(base, demo, values, shown)
        facts["prometheus"] = _prometheus(values["Prometheus token"], shown)

        # The three listeners with refused credentials have each logged the refusal (an error) by now.
        def refused(kind: str) -> bool:
            return any(
                r.logger == "inbox.listeners"
                and r.level >= logging.ERROR
                and f"{kind} " in r.text
                and "credentials refused" in r.text
                for r in list(handler.records)
            )

        for kind, listener in listeners.items():
            wait_for(lambda kind=kind: refused(kind), timeout=20, what=f"the {kind} listener to log its refusal")  # type: ignore[misc]
            listener.halt()
        facts["listener_errors"] = sorted(k for k in listeners if refused(k))
        browser_urls = _widget_in_chromium(base, demo, values, facts)
        deadline = time.monotonic() + 30
        while not broker_idle() and time.monotonic() < deadline:
            time.sleep(0.05)
        facts["deliveries"] = Counter(
            f"{kind}:{state}" for kind, state in OutboundDelivery.objects.values_list("account__kind", "state")
        )
        facts["inbound"] = Counter(
            Message.objects.filter(direction=Message.Direction.INBOUND).values_list("account__kind", flat=True)
        )
        facts["smtp_logins"] = [m.login for m in smtp.messages]
        facts["callback_signed"] = all("X-Switchboard-Signature" in r.headers for r in callback.requests)
        other_urls = {
            "the fake X API's request targets": list(x_api.targets),
            "the API channel's callback server's request targets": [r.path for r in callback.requests],
            "Chromium's requests (the widget, its websocket)": browser_urls,
        }
        telegram_calls, telegram_targets = list(telegram.calls), list(telegram.targets)
    shown += [d for d in OutboundDelivery.objects.values_list("last_error", flat=True) if d]
    shown += [d for d in ChannelAccount.objects.values_list("health_detail", flat=True) if d]
    shown += [d for d in InboundEvent.objects.values_list("error", flat=True) if d]
    shown += [json.dumps(m) for m in Message.objects.values_list("metadata", flat=True)]
    shown += list(Attachment.objects.values_list("filename", flat=True))
    shown += [json.dumps(d) for d in AuditEvent.objects.values_list("data", flat=True)]
    values["visitor token (visitor API and websocket)"] = facts["visitor"]["token"]
    values["visitor token (the widget in Chromium)"] = facts["widget_token"]
    output = {"worker": _log_slice(worker_log, offsets["worker"]), "web": _log_slice(web_log, offsets["web"])}
    other_urls["the web server's access log"] = [line for line in output["web"].splitlines() if "HTTP/1.1" in line]
    with handler.lock_:
        records = list(handler.records)
    return Flow(
        secrets=values,
        records=[r for r in records if _ours(r)],
        left_out=Counter(r.logger for r in records if not _ours(r)),
        telegram_calls=telegram_calls,
        telegram_targets=telegram_targets,
        other_urls=other_urls,
        server_output=output,
        shown=shown,
        facts=facts,
    )


def _accounts(
    values: dict[str, str],
    telegram: TelegramServer,
    x_api: XServer,
    smtp: SmtpServer,
    dovecot: Dovecot,
    callback: CallbackServer,
    base: str,
) -> dict[str, ChannelAccount]:
    x_secrets = {
        "consumer_key": values["X consumer key"],
        "consumer_secret": values["X consumer secret"],
        "access_token": values["X access token"],
        "access_token_secret": values["X access token secret"],
        "bearer_token": values["X bearer token"],
    }
    mail = {
        "address": SUPPORT,
        "display_name": "Example Support",
        "domain": "example.test",
        "imap_host": dovecot.host,
        "imap_port": dovecot.port,
        "imap_security": "none",
        "imap_username": SUPPORT,
    }
    made = {
        "telegram": ChannelAccount.objects.create(
            kind="telegram",
            name="Support bot",
            settings={"api_base": telegram.api_base, "mode": "polling"},
            secrets={"bot_token": values["Telegram bot token"], "webhook_secret": values["Telegram webhook secret"]},
        ),
        "telegram_bad": ChannelAccount.objects.create(
            kind="telegram",
            name="Mistyped bot",
            settings={"api_base": telegram.api_base, "mode": "polling"},
            secrets={"bot_token": values["Telegram bot token (mistyped, refused)"]},
        ),
        "x": ChannelAccount.objects.create(
            kind="x",
            name="Support on X",
            settings={"api_base": x_api.url, "mode": "polling", "user_id": x_api.me["id"]},
            secrets=x_secrets,
        ),
        "x_bad": ChannelAccount.objects.create(
            kind="x",
            name="Mistyped X",
            settings={"api_base": x_api.url, "mode": "polling", "user_id": x_api.me["id"]},
            secrets={**x_secrets, "consumer_secret": values["X consumer secret (mistyped, refused)"]},
        ),
        "email": ChannelAccount.objects.create(
            kind="email",
            name="Support mailbox",
            settings={**mail, "smtp_host": smtp.host, "smtp_port": smtp.port, "smtp_security": "none"},
            secrets={"imap_password": values["IMAP password"], "smtp_password": values["SMTP password"]},
        ),
        "email_bad": ChannelAccount.objects.create(
            kind="email",
            name="Mistyped mailbox",
            settings=mail,
            secrets={"imap_password": values["IMAP password (mistyped, refused)"]},
        ),
        "api": ChannelAccount.objects.create(
            kind="api",
            name="Our app",
            settings={"callback_url": callback.url},
            secrets={"signing_secret": values["API channel signing secret"]},
        ),
    }
    for kind in ("telegram", "x"):  # their webhooks point at the live web server
        account = made[kind]
        account.settings = {**account.settings, "webhook_url": f"{base}/api/channels/{account.public_id}/{kind}"}
        account.save(update_fields=["settings"])
    return made


def _inbound(account: ChannelAccount, count: int) -> None:
    wait_for(
        lambda: Message.objects.filter(account=account, direction=Message.Direction.INBOUND).count() >= count,
        timeout=30,
        what=f"{count} inbound messages on {account.name}",
    )


def _replies(account: ChannelAccount, demo: Any, fail: Callable[[], None]) -> None:
    """An agent's reply that is sent, then one the provider refuses (``fail`` arranges it): both by the worker."""
    conversation = Conversation.objects.filter(account=account).order_by("pk").first()
    assert conversation is not None
    _sent_or_failed(reply_create(conversation=conversation, author=demo.manager, text="We are looking into it."))
    fail()
    _sent_or_failed(reply_create(conversation=conversation, author=demo.manager, text="Here it is."), "failed")


def _telegram_flow(account: ChannelAccount, telegram: TelegramServer, demo: Any, shown: list[str]) -> None:
    # Polling, in this process: getUpdates, then the worker ingests and downloads the document (getFile + file URL).
    telegram.queue_message(ENGLISH, chat_id=9001)
    document = telegram.add_file(b"receipt 4471\n", file_name="receipt.txt", mime_type="text/plain")
    telegram.queue_update(telegram.build_message_update(None, chat_id=9001, caption="the receipt", document=document))
    telegram_poll_once(account=account, timeout=0)
    _inbound(account, 2)
    wait_for(
        lambda: Message.objects.filter(account=account, metadata__files_fetched=True).exists(),
        what="the worker to download the Telegram document",
    )
    _replies(account, demo, lambda: telegram.block_next("sendMessage"))
    # The same calls in this process (DEBUG), then the webhook: setWebhook, a delivery to the live server, delete.
    connector: Any = connector_for(account)
    connector.send(OutboundMessage(idempotency_key=str(uuid.uuid4()), recipient="9001", text="In-process reply."))
    connector.download_file(document["file_id"], filename="receipt.txt", content_type="text/plain")
    telegram_webhook_set(account=ChannelAccount.objects.get(pk=account.pk))
    telegram.queue_message("One more thing about order 4471, please.", chat_id=9001)
    # Telegram delivers every update not yet confirmed (the polled ones too: no getUpdates confirmed them since);
    # UNIQUE(bot, update_id) stores each once.
    assert telegram.deliver_webhook() >= 1 and telegram.bot().webhook_error is None, telegram.bot().webhook_error
    telegram_webhook_delete(account=account)
    _inbound(account, 3)


def _x_flow(account: ChannelAccount, x_api: XServer, demo: Any, shown: list[str]) -> None:
    customer = x_api.add_user(username="lucia_m", name="Lucia M")
    x_api.add_dm(sender_id=customer["id"], text=ENGLISH)
    x_poll_stream(account=account, stream="dm")  # in this process: OAuth 1.0a user context
    _inbound(account, 1)
    _replies(account, demo, lambda: x_api.fail_next("POST", "/2/dm_conversations", 401))
    connector: Any = connector_for(account)
    connector.send(
        OutboundMessage(
            idempotency_key=str(uuid.uuid4()), recipient=customer["id"], text="In-process reply.", thread_key="dm"
        )
    )
    # The Account Activity webhook: registered with the bearer token (X runs a CRC against the live server), then a
    # signed delivery to it.
    x_webhook_register(account=ChannelAccount.objects.get(pk=account.pk))
    dm = x_api.add_dm(sender_id=customer["id"], text="One more thing about order 4471, please.")
    delivered = x_api.deliver(x_api.aaa_dm_payload(dm))
    assert [status for _, status in delivered] == [200], delivered
    _inbound(account, 2)


def _email_flow(account: ChannelAccount, dovecot: Dovecot, smtp: SmtpServer, demo: Any) -> None:
    dovecot.deliver(SUPPORT, _mail("customer@customer.test", ENGLISH))
    out = StringIO()
    call_command("listen_mail", "--once", "--account", str(account.pk), stdout=out)  # IMAP LOGIN, in this process
    assert "1 mails fetched" in out.getvalue(), out.getvalue()
    _inbound(account, 1)
    _replies(account, demo, lambda: smtp.script("DATA", "554 5.7.1 Message rejected"))
    connector: Any = connector_for(account)
    connector.send(
        OutboundMessage(
            idempotency_key=str(uuid.uuid4()),
            recipient="customer@customer.test",
            text="In-process reply.",
            subject="Re: Order 4471",
            metadata={"message_id": make_msgid(domain="example.test")},
        )
    )


def _api_flow(
    base: str, account: ChannelAccount, callback: CallbackServer, demo: Any, values: dict[str, str], shown: list[str]
) -> None:
    body = json.dumps({"id": "app-1", "sender": {"id": "user-7", "name": "Ada"}, "text": ENGLISH}).encode()
    secret = values["API channel signing secret"]
    for signature, status in ((api_signature("not-the-secret", body), 403), (api_signature(secret, body), 202)):
        answer = httpx.post(
            f"{base}/api/channels/{account.public_id}/events",
            content=body,
            headers={"Content-Type": "application/json", "X-Switchboard-Signature": signature},
            timeout=10,
        )
        assert answer.status_code == status, answer.text
        shown.append(answer.text)
    _inbound(account, 1)
    _replies(account, demo, lambda: callback.then(401))
    connector: Any = connector_for(account)
    connector.send(OutboundMessage(idempotency_key=str(uuid.uuid4()), recipient="user-7", text="In-process reply."))


def _visitor_flow(base: str, demo: Any, values: dict[str, str], shown: list[str]) -> dict[str, Any]:
    """A visitor over the visitor API and the websocket, as the widget talks; a tampered token on the socket."""
    key = demo.webchat.public_id
    with httpx.Client(base_url=base, timeout=10) as http:
        made = http.post(f"/api/webchat/v1/{key}/sessions", json={"name": "Ada"})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        posted = http.post("/api/webchat/v1/messages", json={"client_id": str(uuid.uuid4()), "text": ENGLISH})
        assert posted.status_code == 202, posted.text
        shown += [posted.text, http.get("/api/webchat/v1/status").text]
        ws_url = base.replace("http://", "ws://") + "/ws/webchat/"
        with ws_connect(ws_url) as ws:
            ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            client_id = str(uuid.uuid4())
            ws.send(json.dumps({"type": "message", "client_id": client_id, "text": "And the tent poles, please."}))
            ack = json.loads(ws.recv(timeout=10))
            assert ack == {"type": "ack", "client_id": client_id, "duplicate": False}, ack
        conversation = wait_for(
            lambda: Conversation.objects.filter(account=demo.webchat).first(), what="the visitor's conversation"
        )
        wait_for(lambda: Message.objects.filter(conversation=conversation).count() >= 2, what="both visitor messages")
        before = row_counts()
        with ws_connect(ws_url) as ws:
            ws.send(json.dumps({"type": "auth", "token": tampered(token)}))
            refusal = json.loads(ws.recv(timeout=10))
            try:
                ws.send(json.dumps({"type": "message", "client_id": str(uuid.uuid4()), "text": "sneaky"}))
                while True:
                    ws.recv(timeout=10)
            except Exception:  # the server closed the socket
                pass
            closed = ws.close_code
        time.sleep(0.5)  # anything the refused socket had handed on would be stored by now
        after = row_counts()
        reply = reply_create(conversation=conversation, author=demo.manager, text="Of course, Ada.")
        _sent_or_failed(reply)
        history = http.get("/api/webchat/v1/messages?after=0")
        shown.append(history.text)
        assert "Of course, Ada." in history.text
    return {"token": token, "refusal": refusal, "closed": closed, "stored_by_refused_socket": after != before}


def _prometheus(token: str, shown: list[str]) -> dict[str, int]:
    statuses = {}
    with override_settings(SWITCHBOARD_METRICS_TOKEN=token):
        client = Client()
        for name, header in (("right", f"Bearer {token}"), ("wrong", "Bearer not-the-token"), ("none", "")):
            response = client.get("/metrics", headers={"Authorization": header} if header else {})
            statuses[name] = response.status_code
            shown.append(response.content.decode(errors="replace"))
    return statuses


def _widget_in_chromium(base: str, demo: Any, values: dict[str, str], facts: dict[str, Any]) -> list[str]:
    """The real widget on the install's demo page: every URL Chromium requests, and the token it keeps."""
    from playwright.sync_api import sync_playwright

    urls: list[str] = []
    key = demo.webchat.public_id
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, chromium_sandbox=False
        )
        context = browser.new_context(locale="en-US")
        context.set_default_timeout(15_000)
        context.on("request", lambda request: urls.append(request.url))
        page = context.new_page()
        page.on("websocket", lambda ws: urls.append(ws.url))
        page.goto(f"{base}/demo/?key={key}")
        panel, launcher = page.locator('[data-sb="panel"]'), page.locator('[data-sb="launcher"]')
        panel.or_(launcher).first.wait_for(state="visible")
        if not panel.is_visible():
            launcher.click()
        text = "Hello from the widget, is anybody there?"
        page.locator('[data-sb="input"]').fill(text)
        page.locator('[data-sb="send"]').click()
        message = off_loop(lambda: wait_for(lambda: Message.objects.filter(text=text).first(), what="widget message"))
        stored = page.evaluate("(k) => window.localStorage.getItem(k)", f"switchboard:{key}:token")
        assert stored, "the widget stored no token"
        try:  # "a plain string" (docs/webchat-widget.md); JSON-encoded would do as well
            decoded = json.loads(stored)
        except ValueError:
            decoded = stored
        facts["widget_token"] = str(decoded["token"] if isinstance(decoded, dict) else decoded)
        off_loop(
            lambda: _sent_or_failed(
                reply_create(conversation=message.conversation, author=demo.manager, text="Yes, Ada here.")
            )
        )
        page.locator('[data-sb="message"][data-from="agent"]').filter(has_text="Yes, Ada here.").wait_for()
        browser.close()
    finally:
        playwright.stop()
    return urls


def off_loop(call: Callable[[], Any]) -> Any:
    """Run database work in a plain thread while Playwright runs: its sync API keeps an event loop marked as running
    in this thread, where Django refuses the ORM (and connections opened there anyway would outlive the test and
    keep the test database from being dropped). The thread closes its connection when done."""

    def run() -> Any:
        try:
            return call()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


# --- The checks -----------------------------------------------------------------------------------------------------
def occurrences(name: str, value: str, text: str) -> list[str]:
    """Where (a snippet around each hit) any form of the secret occurs in ``text``."""
    hits = []
    for form in forms(name, value):
        start = 0
        while (at := text.find(form, start)) != -1:
            hits.append(text[max(0, at - 80) : at + len(form) + 40])
            start = at + 1
    return hits


TELEGRAM_TOKEN_PATH = re.compile(r"^/(?:file/)?bot(?P<token>[^/]+)/")

# Fixed: PTB's setWebhook parameters (secret_token redacted) and OAuth 1.0a's DEBUG records (dropped) leaked the
# Telegram webhook secret, the X consumer key and the access token at DEBUG.
DEBUG_FLAWS: dict[str, str] = {}


def _log_cases() -> list[Any]:
    cases = []
    for name in SECRET_NAMES:
        cases.append(pytest.param(name, logging.INFO, id=f"{name}-INFO+"))
        marks = [pytest.mark.xfail(strict=True, reason=DEBUG_FLAWS[name])] if name in DEBUG_FLAWS else []
        cases.append(pytest.param(name, logging.DEBUG, id=f"{name}-DEBUG", marks=marks))
    return cases


@pytest.mark.parametrize(("name", "level"), _log_cases())
def test_secret_never_in_our_logs(flow: Flow, name: str, level: int) -> None:
    value = flow.secrets[name]
    leaks = [
        f"{r.logger} {logging.getLevelName(r.level)} [{r.thread}]: ...{hit}..."
        for r in flow.records
        if (r.level >= logging.INFO if level == logging.INFO else r.level < logging.INFO)
        for hit in occurrences(name, value, r.text)
    ]
    assert not leaks, f"{name} in {len(leaks)} log record(s):\n" + "\n".join(leaks[:10])


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_never_in_a_url(flow: Flow, name: str) -> None:
    value = flow.secrets[name]
    leaks = [
        f"{where}: {url}" for where, urls in flow.other_urls.items() for url in urls if occurrences(name, value, url)
    ]
    for target in flow.telegram_targets:
        if not occurrences(name, value, target):
            continue
        route = TELEGRAM_TOKEN_PATH.match(target)
        by_design = (  # any bot token, the mistyped one too, is the first path segment of a Bot API URL
            name.startswith("Telegram bot token")
            and route is not None
            and urllib.parse.unquote(route.group("token")) == value
            and not occurrences(name, value, target[route.end() :])
        )
        if not by_design:
            leaks.append(f"the fake Bot API's request targets: {target}")
    assert not leaks, f"{name} in {len(leaks)} URL(s):\n" + "\n".join(leaks[:10])


def test_the_bot_token_is_only_in_the_bot_api_path(flow: Flow) -> None:
    """By Telegram's design the token is the first path segment of every Bot API and file URL; nowhere else: not in
    a query string, a parameter or a header of any call. Every call the fake received went to that path."""
    value = flow.secrets["Telegram bot token"]
    ours = [t for t in flow.telegram_targets if value in urllib.parse.unquote(t)]
    assert ours, "the flow made no Bot API call with the channel's token"
    for target in ours:
        route = TELEGRAM_TOKEN_PATH.match(target)
        assert route and urllib.parse.unquote(route.group("token")) == value, target
        assert "?" not in target or value not in urllib.parse.unquote(target.partition("?")[2]), target
    for call in flow.telegram_calls:
        assert not occurrences("Telegram bot token", value, json.dumps(call.params, default=str)), call.method
        assert not occurrences("Telegram bot token", value, json.dumps(call.headers)), call.method
    methods = {call.method for call in flow.telegram_calls}
    assert {"getUpdates", "sendMessage", "getFile", "download", "setWebhook", "deleteWebhook"} <= methods, methods


def test_httpx_logs_telegram_request_lines_with_the_token_redacted(flow: Flow) -> None:
    """httpx writes "HTTP Request: POST <url> ..." at INFO for every request, and a Bot API URL holds the token:
    those lines exist (so the log check above is not vacuous) and carry "/bot<redacted>/" instead."""
    lines = [r.text for r in flow.records if r.logger == "httpx" and r.level == logging.INFO and "/bot" in r.text]
    assert any("/bot<redacted>/getUpdates" in line for line in lines), lines[:5]
    assert any("/bot<redacted>/sendMessage" in line for line in lines), lines[:5]
    assert any("/file/bot<redacted>/" in line for line in lines), lines[:5]
    worker = flow.server_output["worker"]  # the worker's sends and downloads, at its production level (INFO)
    assert "/bot<redacted>/sendMessage" in worker and "/file/bot<redacted>/" in worker, worker[-2000:]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_never_in_worker_or_web_output(flow: Flow, name: str) -> None:
    value = flow.secrets[name]
    leaks = [
        f"{where}: ...{hit}..." for where, text in flow.server_output.items() for hit in occurrences(name, value, text)
    ]
    assert not leaks, f"{name} in the live processes' output:\n" + "\n".join(leaks[:10])


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_never_in_what_people_read(flow: Flow, name: str) -> None:
    value = flow.secrets[name]
    leaks = [hit for text in flow.shown for hit in occurrences(name, value, text)]
    assert not leaks, f"{name} in stored errors, metadata or answers:\n" + "\n".join(leaks[:10])


def test_the_flow_exercised_every_channel(flow: Flow) -> None:
    """What the checks above stand on: every channel received and sent, each had a send refused by the provider,
    each listener logged its refused login, the visitor talked over HTTP, the socket and the widget."""
    facts = flow.facts
    print(f"records kept: {len(flow.records)}; left out (the fakes' own): {dict(flow.left_out)}")
    print(f"deliveries: {dict(facts['deliveries'])}; inbound: {dict(facts['inbound'])}")
    for kind in ("telegram", "x", "email", "api"):
        assert facts["deliveries"][f"{kind}:sent"] >= 1 and facts["deliveries"][f"{kind}:failed"] == 1, kind
    assert facts["inbound"]["telegram"] == 3 and facts["inbound"]["x"] == 2, facts["inbound"]
    assert facts["inbound"]["email"] == 1 and facts["inbound"]["api"] == 1, facts["inbound"]
    assert facts["inbound"]["webchat"] == 3, facts["inbound"]
    assert facts["listener_errors"] == ["email", "telegram", "x"]
    assert facts["smtp_logins"] and set(facts["smtp_logins"]) == {SUPPORT}, "SMTP AUTH was not used"
    assert facts["callback_signed"]
    assert facts["prometheus"] == {"right": 200, "wrong": 403, "none": 401}
    debug = Counter(r.logger.split(".")[0] for r in flow.records if r.level < logging.INFO)
    for library in ("telegram", "httpcore", "tweepy", "imapclient", "urllib3"):
        assert debug[library], f"no DEBUG record from {library}: the capture did not see it ({dict(debug)})"
    # OAuth 1.0a's DEBUG records (credentials in every one) are dropped by connectors/x/client.py; X requests were
    # still signed (the fake X server checks every signature, and the sends above succeeded).
    assert not debug["requests_oauthlib"] and not debug["oauthlib"], dict(debug)


def test_a_tampered_token_on_the_visitor_socket_is_refused_and_stores_nothing(flow: Flow) -> None:
    visitor = flow.facts["visitor"]
    assert visitor["refusal"] == {"type": "error", "error": "missing or unknown visitor token"}
    assert visitor["closed"] == 4401
    assert not visitor["stored_by_refused_socket"]
