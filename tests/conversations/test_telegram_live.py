"""Telegram end to end: the fake Bot API server (real python-telegram-bot talks to it), the real web server
(uvicorn) for webhooks, the live Celery worker, PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO
from itertools import pairwise
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from inbox.conversations.models import ChannelAccount, Conversation, InboundEvent, Message, OutboundDelivery
from inbox.conversations.services import sweep_stuck_work
from tests.conftest import ROOT, wait_for, worker_env
from tests.factories import make_demo
from tests.fakes.telegram_server import TelegramServer

SPANISH = "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?"
SECRET = "webhook-secret-for-tests"


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    with TelegramServer() as server:
        yield server


def bot_account(server: TelegramServer, *, mode: str = "polling") -> ChannelAccount:
    return ChannelAccount.objects.create(
        kind="telegram",
        name="Support bot",
        settings={"api_base": server.api_base, "mode": mode},
        secrets={"bot_token": server.token, "webhook_secret": SECRET},
    )


def webhook_url(web_server, account: ChannelAccount) -> str:  # type: ignore[no-untyped-def]
    return f"{web_server.url}/api/channels/{account.public_id}/telegram"


def test_webhook_refuses_missing_or_wrong_secret_and_stores_nothing(live_worker, web_server, telegram) -> None:
    make_demo()
    account = bot_account(telegram, mode="webhook")
    update = telegram.build_message_update(SPANISH, chat_id=1001)
    url = webhook_url(web_server, account)
    assert telegram.post_update(url, update, secret=None)[0] == 401
    assert telegram.post_update(url, update, secret="wrong")[0] == 403
    assert not InboundEvent.objects.exists()
    status, _ = telegram.post_update(url, update, secret=SECRET)
    assert status == 200
    wait_for(lambda: Message.objects.filter(account=account).exists(), what="the update ingested")


def test_storm_of_each_update_five_times_concurrently(live_worker, web_server, telegram) -> None:
    make_demo()
    account = bot_account(telegram, mode="webhook")
    url = webhook_url(web_server, account)
    updates = []
    for chat in range(4):
        for n in range(2):
            update = telegram.build_message_update(f"{SPANISH} ({n})", chat_id=2000 + chat)
            update["update_id"] = 500 + chat * 10 + n
            updates.append(update)
    statuses: list[int] = []
    barrier = threading.Barrier(len(updates) * 5)

    def post(update: dict) -> None:  # type: ignore[type-arg]
        barrier.wait()
        statuses.append(telegram.post_update(url, update, secret=SECRET)[0])

    threads = [threading.Thread(target=post, args=(u,)) for u in updates for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * len(threads)
    wait_for(lambda: Message.objects.filter(account=account).count() == len(updates), what="one message per update")
    assert InboundEvent.objects.filter(account=account).count() == len(updates)
    for chat in range(4):
        assert Conversation.objects.filter(account=account, identity__handle=str(2000 + chat)).count() == 1


def test_polling_resumes_after_a_restart_without_loss(live_worker, telegram, tmp_path: Path) -> None:
    make_demo()
    account = bot_account(telegram)
    for n in range(130):
        telegram.queue_message(f"{SPANISH} #{n}", chat_id=3000 + n % 7)
    out = StringIO()
    call_command("listen_telegram", "--once", "--account", str(account.pk), stdout=out)  # takes the first 100
    assert "100 updates" in out.getvalue()
    account.refresh_from_db()
    assert account.cursor["offset"] > 0
    # ... then the process is gone (restart); more arrive meanwhile.
    for n in range(130, 140):
        telegram.queue_message(f"{SPANISH} #{n}", chat_id=3000 + n % 7)
    log = (tmp_path / "telegram.log").open("w")
    listener = subprocess.Popen(
        [sys.executable, "manage.py", "listen_telegram", "--account", str(account.pk), "--timeout", "1"],
        cwd=ROOT,
        env=worker_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: Message.objects.filter(account=account).count() == 140, timeout=60, what="all 140")
    finally:
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(timeout=30)
        log.close()
    assert InboundEvent.objects.filter(account=account).count() == 140
    assert telegram.pending_updates() == []  # every update was confirmed by the next offset


def _conversation(telegram: TelegramServer, account: ChannelAccount, chat_id: int) -> Conversation:
    telegram.queue_message(SPANISH, chat_id=chat_id)
    call_command("listen_telegram", "--once", "--account", str(account.pk), stdout=StringIO())
    return wait_for(
        lambda: Conversation.objects.filter(
            account=account, identity__handle=str(chat_id), assignee__isnull=False
        ).first(),
        what="ingest and assignment",
    )


def _reply(agent: Client, conversation: Conversation, text: str) -> int:
    response = agent.post(
        f"/api/agent/conversations/{conversation.pk}/reply", json.dumps({"text": text}), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return int(response.json()["message"]["id"])


def test_reply_round_trip_answers_the_customers_message(live_worker, telegram) -> None:
    demo = make_demo()
    account = bot_account(telegram)
    conversation = _conversation(telegram, account, 4001)
    agent = Client()
    agent.force_login(demo.agent_es)
    message_id = _reply(agent, conversation, "¡Hola! Ya lo revisamos.")
    delivery = wait_for(
        lambda: OutboundDelivery.objects.filter(message_id=message_id, state="sent").first(), what="sent"
    )
    [sent] = telegram.sent_messages(4001)
    assert sent["text"] == "¡Hola! Ya lo revisamos."
    inbound = conversation.messages.get(direction="in")
    assert str(sent["reply_to_message"]["message_id"]) == inbound.external_id.split(":")[1]
    assert delivery.provider_id


def test_429_pauses_the_bot_for_every_worker(live_worker, telegram) -> None:
    demo = make_demo()
    account = bot_account(telegram)
    first = _conversation(telegram, account, 5001)
    second = _conversation(telegram, account, 5002)
    telegram.rate_limit_next("sendMessage", retry_after=2)
    agent = Client()
    agent.force_login(demo.agent_es)
    ids = [_reply(agent, first, "uno"), _reply(agent, second, "dos")]
    wait_for(lambda: ChannelAccount.objects.get(pk=account.pk).paused_until is not None, what="the pause")
    paused_until = ChannelAccount.objects.get(pk=account.pk).paused_until
    deliveries = OutboundDelivery.objects.filter(message_id__in=ids)

    def all_sent() -> bool:
        sweep_stuck_work()  # what beat runs every 10 s: re-enqueues the deliveries whose wait is over
        return all(d.state == "sent" for d in deliveries.all())

    wait_for(all_sent, timeout=30, interval=0.5, what="both replies after the pause")
    sends = telegram.calls_of("sendMessage")
    accepted = [c for c in sends if c.status == 200]
    assert len(accepted) == 2
    assert all(c.at >= paused_until.timestamp() - 0.05 for c in accepted)
    assert timezone.now() >= paused_until


def test_blocked_bot_fails_with_the_reason_and_no_retry(live_worker, telegram) -> None:
    demo = make_demo()
    account = bot_account(telegram)
    conversation = _conversation(telegram, account, 6001)
    telegram.block_chat(6001)
    agent = Client()
    agent.force_login(demo.agent_es)
    message_id = _reply(agent, conversation, "Hola")
    delivery = wait_for(
        lambda: OutboundDelivery.objects.filter(message_id=message_id, state="failed").first(), what="failed"
    )
    assert "blocked" in delivery.last_error
    assert delivery.attempts == 1
    assert len(telegram.calls_of("sendMessage")) == 1


def test_document_is_downloaded_into_an_attachment(live_worker, telegram) -> None:
    make_demo()
    account = bot_account(telegram)
    pdf = b"%PDF-1.4\n% withdrawal receipt\n" + b"0" * 2048
    document = telegram.add_file(pdf, file_name="receipt.pdf", mime_type="application/pdf")
    telegram.queue_message(None, chat_id=7001, document=document, caption="Mi recibo del retiro")
    call_command("listen_telegram", "--once", "--account", str(account.pk), stdout=StringIO())
    message = wait_for(
        lambda: Message.objects.filter(account=account, attachments__isnull=False).first(), what="the attachment"
    )
    [attachment] = message.attachments.all()
    assert attachment.filename == "receipt.pdf" and attachment.content_type == "application/pdf"
    assert attachment.file.read() == pdf
    assert message.text == "Mi recibo del retiro"


def test_edited_message_updates_the_stored_one_and_keeps_its_history(live_worker, telegram) -> None:
    make_demo()
    account = bot_account(telegram)
    original = telegram.queue_message("Hola, mi retiro no llegó", chat_id=8001)
    call_command("listen_telegram", "--once", "--account", str(account.pk), stdout=StringIO())
    message = wait_for(lambda: Message.objects.filter(account=account).first(), what="the original")
    edited_body = dict(original["message"], text="Hola, mi retiro de 500 USDT no llegó", edit_date=int(time.time()))
    telegram.queue_update({"edited_message": edited_body})
    call_command("listen_telegram", "--once", "--account", str(account.pk), stdout=StringIO())
    wait_for(lambda: Message.objects.filter(pk=message.pk, text__contains="500 USDT").exists(), what="the edit applied")
    message.refresh_from_db()
    assert [h["text"] for h in message.metadata["history"]] == ["Hola, mi retiro no llegó"]
    assert Message.objects.filter(account=account).count() == 1


def test_webhook_command_registers_our_url_and_secret(db, telegram) -> None:
    account = bot_account(telegram, mode="webhook")
    out = StringIO()
    call_command("telegram_webhook", "set", "--account", str(account.pk), stdout=out)
    [call] = telegram.calls_of("setWebhook")
    assert call.params["url"].endswith(f"/api/channels/{account.public_id}/telegram")
    assert call.params["secret_token"] == SECRET
    assert telegram.token not in out.getvalue()


def test_test_connection_reports_the_bot(db, telegram) -> None:
    from inbox.conversations.channels import channel_diagnose

    steps = channel_diagnose(account=bot_account(telegram))
    assert all(step.ok for step in steps), steps
    assert any("switchboard_test_bot" in step.detail for step in steps)
    wrong = ChannelAccount.objects.create(
        kind="telegram", name="Wrong", settings={"api_base": telegram.api_base}, secrets={"bot_token": "1:wrong"}
    )
    failed = [step for step in channel_diagnose(account=wrong) if not step.ok]
    assert failed and telegram.token not in str(failed)


def test_replies_to_one_chat_are_paced_about_one_per_second(live_worker, telegram) -> None:
    demo = make_demo()
    account = bot_account(telegram)
    conversation = _conversation(telegram, account, 9001)
    agent = Client()
    agent.force_login(demo.agent_es)
    ids = [_reply(agent, conversation, f"parte {n}") for n in range(3)]
    wait_for(
        lambda: OutboundDelivery.objects.filter(message_id__in=ids, state="sent").count() == 3,
        timeout=30,
        what="three replies sent",
    )
    times = sorted(c.at for c in telegram.calls_of("sendMessage") if c.status == 200)
    assert len(times) == 3
    gaps = [b - a for a, b in pairwise(times)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # two workers, yet never two sends within a second


def test_agent_reply_with_a_photo_reaches_the_chat(live_worker, telegram) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    demo = make_demo()
    account = bot_account(telegram)
    conversation = _conversation(telegram, account, 9101)
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005fe02fe"
        "a7e6a0ca0000000049454e44ae426082"
    )
    agent = Client()
    agent.force_login(demo.agent_es)
    response = agent.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        {"text": "Así se ve el retiro correcto:", "files": [SimpleUploadedFile("paso.dat", png)]},
    )
    assert response.status_code == 201, response.content
    body = response.json()["message"]
    assert body["attachments"] == [{"filename": "paso.dat", "content_type": "image/png", "size": len(png)}]
    wait_for(
        lambda: OutboundDelivery.objects.filter(message_id=body["id"], state="sent").exists(), what="the reply sent"
    )
    [photo] = [c for c in telegram.calls_of("sendPhoto") if c.status == 200]
    [upload] = photo.files.values()
    assert upload.content == png
    assert any(m.get("text") == "Así se ve el retiro correcto:" for m in telegram.sent_messages(9101))
    too_many = agent.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        {"text": "x", "files": [SimpleUploadedFile(f"{n}.txt", b"x") for n in range(11)]},
    )
    assert too_many.status_code == 400 and "at most 10 files" in too_many.json()["error"]
