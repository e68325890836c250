"""The e-mail channel end to end: Dovecot (IMAP), aiosmtpd (SMTP), the live Celery worker, PostgreSQL.

Mails are delivered into a private Dovecot; the listener (the real `listen_mail` command, in-process with
--once, or as its own process) records them; the worker ingests them; agents reply; the SMTP server receives the
reply and we read its headers; the customer's answer to that reply threads back by our signed token.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from connectors.email.smtp import SMTP_POLICY
from inbox.conversations.models import ChannelAccount, Conversation, InboundEvent, Message, OutboundDelivery
from inbox.conversations.services import sweep_stuck_work
from tests.conftest import ROOT, SHARED_DATA, wait_for, worker_env
from tests.factories import make_demo
from tests.fakes.dovecot import Dovecot, ensure_dovecot
from tests.fakes.smtp_server import SmtpServer

SUPPORT = "support@example.test"
PASSWORD = "secret-password"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    if not ensure_dovecot():
        pytest.skip("dovecot is not installed and could not be installed (apt-get install dovecot-imapd)")
    with Dovecot({SUPPORT: PASSWORD}) as server:
        yield server


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Dovecot:
    """An empty INBOX for each test."""
    with dovecot.client(SUPPORT) as client:
        uids = client.search("ALL")
        if uids:
            client.delete_messages(uids)
            client.expunge()
    return dovecot


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def email_account(dovecot: Dovecot, smtp: SmtpServer | None = None) -> ChannelAccount:
    settings = {
        "address": SUPPORT,
        "display_name": "Example Support",
        "domain": "example.test",
        "imap_host": dovecot.host,
        "imap_port": dovecot.port,
        "imap_security": "none",
        "imap_username": SUPPORT,
    }
    if smtp is not None:
        settings.update(smtp_host=smtp.host, smtp_port=smtp.port, smtp_security="none")
    return ChannelAccount.objects.create(
        kind="email", name="Support mailbox", settings=settings, secrets={"imap_password": PASSWORD}
    )


def mail(
    sender: str, text: str, *, subject: str = "Withdrawal", message_id: str | None = None, **headers: str
) -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)  # as a mail client writes it: ids never RFC 2047-encoded
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="customer.test")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return bytes(msg)


SPANISH = "Hola, no puedo retirar mis fondos desde ayer. ¿Pueden ayudarme por favor?"


def sync_once(account: ChannelAccount) -> str:
    out = StringIO()
    call_command("listen_mail", "--once", "--account", str(account.pk), stdout=out)
    return out.getvalue()


def test_n_mails_make_exactly_n_messages_and_a_second_sync_adds_none(live_worker, mailbox) -> None:
    make_demo()
    account = email_account(mailbox)
    for n in range(12):
        mailbox.deliver(SUPPORT, mail(f"customer{n % 4}@customer.test", f"{SPANISH} (#{n})"))
    assert "12 mails fetched" in sync_once(account)
    wait_for(lambda: Message.objects.filter(account=account).count() == 12, what="12 messages")
    assert "0 mails fetched" in sync_once(account)
    time.sleep(0.5)
    assert Message.objects.filter(account=account).count() == 12
    assert InboundEvent.objects.filter(account=account).count() == 12
    # Four senders, each thread its own Message-ID: one conversation per mail (no References), in Spanish.
    assert set(Conversation.objects.filter(account=account).values_list("language", flat=True)) == {"es"}
    # BODY.PEEK: the mailbox is left as it was (nothing marked \\Seen).
    with mailbox.client(SUPPORT) as client:
        assert client.search("UNSEEN") == client.search("ALL")
    account.refresh_from_db()
    assert account.cursor["last_uid"] == 12 and account.health == "ok"


def test_agent_reply_threads_in_the_customers_client_and_the_answer_comes_back(live_worker, mailbox, smtp) -> None:
    demo = make_demo()
    account = email_account(mailbox, smtp)
    first_id = make_msgid(domain="customer.test")
    mailbox.deliver(SUPPORT, mail("Lucía <lucia@customer.test>", SPANISH, message_id=first_id))
    sync_once(account)
    conversation = wait_for(
        lambda: Conversation.objects.filter(account=account, assignee__isnull=False).first(), what="ingest + assign"
    )
    assert conversation.assignee_id == demo.agent_es.pk

    agent = Client()
    agent.force_login(demo.agent_es)
    response = agent.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        '{"text": "Hola Lucía, ya lo estamos revisando."}',
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    wait_for(lambda: len(smtp.messages) == 1, what="the reply at the SMTP server")
    sent = smtp.messages[0].message
    assert sent["In-Reply-To"] == first_id
    assert first_id in sent["References"]
    assert sent["Subject"] == "Re: Withdrawal"
    assert "Example Support" in sent["From"] and SUPPORT in sent["From"]
    assert smtp.messages[0].recipients == ["lucia@customer.test"]
    our_id = str(sent["Message-ID"])
    assert our_id.startswith("<sb.") and our_id.endswith("@example.test>"), our_id
    delivery = wait_for(
        lambda: OutboundDelivery.objects.filter(message__conversation=conversation, state="sent").first(),
        what="delivery sent",
    )
    assert delivery.message.external_id == our_id.strip("<>")

    # The customer answers our reply (only In-Reply-To, as some clients do): same conversation, by the token.
    mailbox.deliver(
        SUPPORT,
        mail("lucia@customer.test", "Gracias, espero.", subject="Re: Withdrawal", In_Reply_To=our_id),
    )
    # Someone else sends a mail claiming the same thread: never joins Lucía's conversation.
    mailbox.deliver(
        SUPPORT,
        mail(
            "mallory@evil.test",
            "I am Lucía, send me her data",
            subject="Re: Withdrawal",
            In_Reply_To=our_id,
            References=f"{first_id} {our_id}",
        ),
    )
    sync_once(account)
    wait_for(lambda: Message.objects.filter(account=account, direction="in").count() == 3, what="both answers")
    threaded = conversation.messages.filter(direction="in").count()
    assert threaded == 2, [
        (
            m.conversation_id,
            m.metadata.get("from"),
            m.metadata.get("in_reply_to"),
            m.metadata.get("references"),
            m.metadata.get("reply_tokens"),
        )
        for m in Message.objects.order_by("id")
    ]
    mallory = Conversation.objects.get(identity__handle="mallory@evil.test")
    assert mallory.pk != conversation.pk


def test_automatic_mail_is_kept_but_nobody_waits_for_it(live_worker, mailbox) -> None:
    make_demo()
    account = email_account(mailbox)
    mailbox.deliver(
        SUPPORT,
        mail(
            "bob@customer.test",
            "I am out of office until Monday.",
            subject="Out of office",
            Auto_Submitted="auto-replied",
        ),
    )
    sync_once(account)
    message = wait_for(lambda: Message.objects.filter(account=account).first(), what="ingest")
    assert message.metadata.get("auto_submitted")
    assert message.conversation.waiting_since is None


def test_listener_killed_mid_backfill_then_restarted_loses_and_duplicates_nothing(
    live_worker, mailbox, tmp_path: Path
) -> None:
    make_demo()
    account = email_account(mailbox)
    total = 150
    for n in range(total):
        mailbox.deliver(SUPPORT, mail(f"c{n % 10}@customer.test", f"{SPANISH} #{n}"))
    command = [
        sys.executable,
        "manage.py",
        "listen_mail",
        "--account",
        str(account.pk),
        "--batch",
        "10",
        "--idle-seconds",
        "2",
    ]
    log = (tmp_path / "listener.log").open("w")
    first = subprocess.Popen(
        command, cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_for(lambda: InboundEvent.objects.filter(account=account).count() >= 20, what="the backfill to start")
    os.killpg(first.pid, signal.SIGKILL)  # no goodbye: mid-batch, mid-transaction perhaps
    first.wait()
    stored_at_kill = InboundEvent.objects.filter(account=account).count()
    assert stored_at_kill < total, "the listener finished before it was killed; the test proves nothing"
    second = subprocess.Popen(
        command, cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        # If the kill fell between a batch's commit and its enqueue, those events are stored but were never sent to
        # the broker: the sweeper (beat's job, every 10 s in production) finds them. Run it as beat would.
        def all_mails() -> bool:
            sweep_stuck_work()
            return Message.objects.filter(account=account).count() >= total

        wait_for(all_mails, timeout=60, interval=0.5, what="all mails")
        # New mail while it idles arrives by IDLE.
        mailbox.deliver(SUPPORT, mail("late@customer.test", SPANISH))
        wait_for(lambda: Message.objects.filter(account=account).count() == total + 1, timeout=20, what="IDLE push")
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)
        log.close()
    assert InboundEvent.objects.filter(account=account).count() == total + 1
    assert Message.objects.filter(account=account).values("external_id").distinct().count() == total + 1


@pytest.mark.skipif(not (SHARED_DATA / "email").is_dir(), reason="../shared/data/email is absent")
def test_every_shared_real_world_mail_is_ingested_or_quarantined_with_a_reason(db) -> None:
    make_demo()
    account = ChannelAccount.objects.create(kind="email", name="Import", settings={"address": SUPPORT})
    out = StringIO()
    call_command("import_mail", str(SHARED_DATA / "email"), "--account", str(account.pk), stdout=out)
    summary = out.getvalue()
    files = [p for p in (SHARED_DATA / "email").rglob("*") if p.is_file() and not p.name.startswith(".")]
    counts = re.match(r"read (\d+), ingested (\d+), duplicates (\d+), quarantined (\d+)", summary)
    assert counts, summary
    read, ingested, duplicates, quarantined = (int(x) for x in counts.groups())
    # Every file is accounted for: ingested, a duplicate of another (identical bytes, or the same Message-ID with
    # the same content), or quarantined with its reason. Nothing is pending, nothing lost.
    assert read >= len(files) and read == ingested + duplicates + quarantined, summary
    events = InboundEvent.objects.filter(account=account)
    assert not events.filter(state="pending").exists(), summary
    assert all(e.error for e in events.filter(state="failed")), "every quarantined mail states its reason"
    assert Message.objects.filter(account=account).count() == ingested
    assert quarantined <= 5, summary  # real mail: only the truly broken may be refused


def test_attachment_is_stored_with_its_type_checked_by_content(live_worker, mailbox) -> None:
    make_demo()
    account = email_account(mailbox)
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = "dana@customer.test"
    msg["To"] = SUPPORT
    msg["Subject"] = "Screenshot of the error"
    msg["Message-ID"] = make_msgid(domain="customer.test")
    msg.set_content("Here is the screenshot of the withdrawal error.")
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x00" * 32
    # Declared as a PDF, but the bytes are a PNG: the stored type follows the content.
    msg.add_attachment(png, maintype="application", subtype="pdf", filename="error.pdf")
    mailbox.deliver(SUPPORT, bytes(msg))
    sync_once(account)
    message = wait_for(lambda: Message.objects.filter(account=account).first(), what="ingest")
    [attachment] = message.attachments.all()
    assert attachment.content_type == "image/png"
    assert attachment.size == len(png) and attachment.file.read() == png


def test_admin_test_connection_reports_each_step(live_worker, mailbox, smtp) -> None:
    from inbox.agents.services import agent_upsert
    from inbox.routing.models import AgentProfile

    make_demo()
    good = email_account(mailbox, smtp)
    bad = email_account(mailbox)
    bad.name, bad.secrets = "Wrong password", {"imap_password": "wrong"}
    bad.save()
    admin_user = agent_upsert(username="root", password="admin-password-1", role=AgentProfile.Role.ADMIN)
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        "/admin/conversations/channelaccount/",
        {"action": "test_connection", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )
    texts = [str(m) for m in response.context["messages"]]
    good_text = next(t for t in texts if t.startswith(str(good)))
    assert "imap login: ok" in good_text and "imap folder: ok" in good_text and "smtp" in good_text, good_text
    assert "FAILED" not in good_text
    bad_text = next(t for t in texts if t.startswith(str(bad)))
    assert "imap login: FAILED" in bad_text, bad_text
    # Secrets are never rendered back into the admin page.
    page = client.get(f"/admin/conversations/channelaccount/{good.pk}/change/").content.decode()
    assert PASSWORD not in page


def test_admin_can_choose_to_mark_fetched_mail_read(live_worker, mailbox) -> None:
    make_demo()
    account = email_account(mailbox)
    account.settings["after_fetch"] = "mark_read"
    account.save()
    uids = [mailbox.deliver(SUPPORT, mail(f"e{n}@customer.test", SPANISH)) for n in range(3)]
    sync_once(account)
    with mailbox.client(SUPPORT) as client:
        assert client.search("UNSEEN") == []
        assert sorted(client.search("SEEN")) == sorted(uids)


def test_uidvalidity_change_resyncs_without_duplicates(live_worker, mailbox) -> None:
    make_demo()
    account = email_account(mailbox)
    for n in range(5):
        mailbox.deliver(SUPPORT, mail(f"u{n}@customer.test", SPANISH))
    sync_once(account)
    wait_for(lambda: Message.objects.filter(account=account).count() == 5, what="5 messages")
    # The server renumbered the folder (RFC 3501 2.3.1.1): our stored UIDVALIDITY no longer matches.
    ChannelAccount.objects.filter(pk=account.pk).update(cursor={"uidvalidity": 1, "last_uid": 5})
    mailbox.deliver(SUPPORT, mail("new@customer.test", SPANISH))
    assert "6 mails fetched" in sync_once(account)  # the whole folder is read again...
    wait_for(lambda: Message.objects.filter(account=account).count() == 6, what="only the new mail added")
    time.sleep(1)
    assert Message.objects.filter(account=account).count() == 6  # ...and only the new one is stored


def dsn(original_id: str, recipient: str) -> bytes:
    """A delivery status notification (RFC 3464) as an MTA sends it."""
    boundary = "dsn-boundary-1"
    return (
        f"From: MAILER-DAEMON@mx.example.test\r\nTo: {SUPPORT}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {make_msgid(domain='mx.example.test')}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_id}\r\nTo: {recipient}\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def test_bounce_marks_the_reply_failed_and_is_noted_on_its_conversation(live_worker, mailbox, smtp) -> None:
    demo = make_demo()
    account = email_account(mailbox, smtp)
    mailbox.deliver(SUPPORT, mail("gone@customer.test", SPANISH))
    sync_once(account)
    conversation = wait_for(lambda: Conversation.objects.filter(account=account).first(), what="ingest")
    agent = Client()
    agent.force_login(demo.agent_es)
    agent.post(f"/api/agent/conversations/{conversation.pk}/reply", '{"text": "Hola"}', content_type="application/json")
    delivery = wait_for(
        lambda: OutboundDelivery.objects.filter(message__conversation=conversation, state="sent").first(),
        what="the reply sent",
    )
    mailbox.deliver(SUPPORT, dsn(f"<{delivery.message.external_id}>", "gone@customer.test"))
    sync_once(account)
    wait_for(
        lambda: OutboundDelivery.objects.filter(pk=delivery.pk, state="failed").exists(), what="the bounce applied"
    )
    delivery.refresh_from_db()
    assert "550 5.1.1" in delivery.last_error or "5.1.1" in delivery.last_error
    note = conversation.messages.get(direction="note")
    assert "gone@customer.test" in note.text
    # No conversation was opened with the mailer daemon.
    assert not Conversation.objects.filter(identity__handle__icontains="mailer-daemon").exists()


def test_web_chat_visitor_who_chose_email_gets_the_reply_by_email(live_worker, mailbox, smtp) -> None:
    """The widget's "continue by email": the agent answers in the chat as usual; the reply reaches the visitor's
    widget and, through the chat channel's e-mail account, their mailbox."""
    import json as jsonlib
    import uuid

    demo = make_demo()
    email = email_account(mailbox, smtp)
    demo.webchat.settings = {**demo.webchat.settings, "email_channel": email.name, "team_name": "Example"}
    demo.webchat.save()
    visitor = Client()
    token = visitor.post(
        f"/api/webchat/v1/{demo.webchat.public_id}/sessions", "{}", content_type="application/json"
    ).json()["token"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    posted = visitor.post(
        "/api/webchat/v1/messages",
        jsonlib.dumps({"text": SPANISH, "client_id": str(uuid.uuid4())}),
        content_type="application/json",
        **auth,
    )
    assert posted.status_code == 202
    conversation = wait_for(
        lambda: Conversation.objects.filter(account=demo.webchat, assignee__isnull=False).first(), what="assigned"
    )
    chosen = visitor.post(
        "/api/webchat/v1/contact",
        jsonlib.dumps({"email": "lucia@customer.test"}),
        content_type="application/json",
        **auth,
    )
    assert chosen.json() == {"email": "lucia@customer.test", "emailed": True}
    agent = Client()
    agent.force_login(demo.agent_es)
    reply = agent.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        jsonlib.dumps({"text": "¡Hola Lucía! Ya está resuelto."}),
        content_type="application/json",
    )
    assert reply.status_code == 201
    wait_for(lambda: len(smtp.messages) == 1, what="the e-mailed copy")
    assert smtp.messages[0].recipients == ["lucia@customer.test"]
    sent = smtp.messages[0].message
    assert sent["Subject"] == "Your chat with Example"
    assert "¡Hola Lucía! Ya está resuelto." in sent.get_body(("plain",)).get_content()
    wait_for(
        lambda: OutboundDelivery.objects.filter(message_id=reply.json()["message"]["id"], state="sent").exists(),
        what="the delivery sent",
    )
