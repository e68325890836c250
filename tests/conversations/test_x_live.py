"""X (Twitter) end to end: the fake X API server (the real tweepy client talks to it), the real web server (uvicorn)
for the Account Activity webhook, the live Celery worker, PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from io import StringIO
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from inbox.conversations.channels import channel_diagnose
from inbox.conversations.models import ChannelAccount, Conversation, InboundEvent, Message, OutboundDelivery
from inbox.conversations.services import sweep_stuck_work
from inbox.conversations.x import x_webhook_register
from tests.conftest import ROOT, wait_for, worker_env
from tests.factories import make_demo
from tests.fakes.x_server import XServer

SPANISH = "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?"
ENGLISH = "Hi, my withdrawal has been pending since yesterday, can you help me please?"


@pytest.fixture
def x_api() -> Iterator[XServer]:
    with XServer() as server:
        yield server


def x_account(server: XServer, *, mode: str = "polling", **settings: Any) -> ChannelAccount:
    return ChannelAccount.objects.create(
        kind="x",
        name="Support on X",
        settings={"api_base": server.url, "mode": mode, "user_id": server.me["id"], **settings},
        secrets=server.credentials(),
    )


def poll(account: ChannelAccount) -> str:
    out = StringIO()
    call_command("listen_x", "--once", "--account", str(account.pk), stdout=out)
    return out.getvalue()


def assigned(account: ChannelAccount, handle: str, thread_key: str) -> Conversation:
    return wait_for(
        lambda: Conversation.objects.filter(
            account=account, identity__handle=handle, thread_key=thread_key, assignee__isnull=False
        ).first(),
        what=f"the {thread_key} conversation of {handle} ingested and assigned",
    )


def reply(agent: Client, conversation: Conversation, text: str, **options: Any) -> Any:
    return agent.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        json.dumps({"text": text, **options}),
        content_type="application/json",
    )


def sent(message_id: int) -> OutboundDelivery:
    return wait_for(
        lambda: OutboundDelivery.objects.filter(message_id=message_id, state="sent").first(), what="the reply sent"
    )


def webhook_url(web_server: Any, account: ChannelAccount) -> str:
    return f"{web_server.url}/api/channels/{account.public_id}/x"


def test_dm_round_trip(live_worker, x_api) -> None:
    demo = make_demo()
    account = x_account(x_api)
    customer = x_api.add_user(username="lucia_m", name="Lucía M.")
    dm = x_api.add_dm(sender_id=customer["id"], text=SPANISH)
    poll(account)
    conversation = assigned(account, customer["id"], "dm")
    assert conversation.language == "es" and conversation.assignee_id == demo.agent_es.pk
    inbound = conversation.messages.get(direction="in")
    assert inbound.external_id == f"dm:{dm['id']}" and inbound.text == SPANISH
    assert "Lucía M." in conversation.identity.display_name

    agent = Client()
    agent.force_login(demo.agent_es)
    mode = agent.get(f"/api/agent/conversations/{conversation.pk}").json()["conversation"]["reply_mode"]
    assert mode["visibility"] == "private" and "DM" in mode["label"]
    response = reply(agent, conversation, "¡Hola Lucía! Ya lo revisamos.")
    assert response.status_code == 201, response.content
    delivery = sent(response.json()["message"]["id"])
    [dm_out] = x_api.sent_dms
    assert dm_out["participant_id"] == customer["id"] and dm_out["text"] == "¡Hola Lucía! Ya lo revisamos."
    assert delivery.provider_id == f"dm:{dm_out['dm_event_id']}"
    # Our own DM comes back in the next poll (X lists both sides): it is not taken for a customer message.
    poll(account)
    assert Message.objects.filter(account=account, direction="in").count() == 1


def test_mention_gets_a_public_reply_threaded_to_the_tweet(live_worker, x_api) -> None:
    demo = make_demo()
    account = x_account(x_api)
    customer = x_api.add_user(username="ben_k", name="Ben K")
    tweet = x_api.add_mention(author_id=customer["id"], text=f"@{x_api.me['username']} {ENGLISH}", lang="en")
    poll(account)
    conversation = assigned(account, customer["id"], "public")
    inbound = conversation.messages.get(direction="in")
    assert inbound.external_id == f"tweet:{tweet['id']}"
    assert inbound.text == ENGLISH  # the reply prefix (@mentions) is not part of what the customer said

    agent = Client()
    agent.force_login(demo.agent_en)
    mode = agent.get(f"/api/agent/conversations/{conversation.pk}").json()["conversation"]["reply_mode"]
    assert mode["visibility"] == "public" and mode["max_text_length"] == 280 and mode["can_move_to_private"]
    response = reply(agent, conversation, "Sorry about that! We're on it.")
    assert response.status_code == 201, response.content
    assert response.json()["message"]["visibility"] == "public"
    delivery = sent(response.json()["message"]["id"])
    [posted] = x_api.tweets
    assert posted["in_reply_to_tweet_id"] == tweet["id"] and posted["text"] == "Sorry about that! We're on it."
    assert delivery.provider_id == f"tweet:{posted['id']}"

    # Over 280 characters: refused with the choices, unless the agent asks for a thread.
    long_text = " ".join(["We checked your withdrawal and the transfer left our wallet this morning."] * 6)
    refused = reply(agent, conversation, long_text)
    assert refused.status_code == 422
    assert "280" in refused.json()["error"] and "thread" in refused.json()["error"]
    response = reply(agent, conversation, long_text, thread=True)
    assert response.status_code == 201, response.content
    assert response.json()["message"]["thread"] is True
    sent(response.json()["message"]["id"])
    thread = x_api.tweets[1:]
    assert len(thread) >= 2
    assert thread[0]["in_reply_to_tweet_id"] == tweet["id"]
    for previous, part in pairwise(thread):
        assert part["in_reply_to_tweet_id"] == previous["id"]


def test_a_public_mention_moves_to_dm(live_worker, x_api) -> None:
    demo = make_demo()
    account = x_account(x_api)
    customer = x_api.add_user(username="ana_p", name="Ana P")
    x_api.add_mention(author_id=customer["id"], text=f"@{x_api.me['username']} {SPANISH}", lang="es")
    poll(account)
    public = assigned(account, customer["id"], "public")
    agent = Client()
    agent.force_login(demo.agent_es)
    response = reply(agent, public, "Te escribimos por mensaje privado con los datos de tu cuenta.", private=True)
    assert response.status_code == 201, response.content
    body = response.json()["message"]
    assert body["conversation"] != public.pk and body["visibility"] == "private"
    sent(body["id"])
    [dm_out] = x_api.sent_dms
    assert dm_out["participant_id"] == customer["id"]
    assert not x_api.tweets  # nothing was posted publicly
    private = Conversation.objects.get(pk=body["conversation"])
    assert private.thread_key == "dm" and private.queue_id == public.queue_id
    note = public.messages.get(direction="note")
    assert f"#{private.pk}" in note.text
    # The customer's answer by DM lands in that same private conversation.
    x_api.add_dm(sender_id=customer["id"], text="Gracias, ya os respondí por aquí.")
    poll(account)
    wait_for(lambda: private.messages.filter(direction="in").exists(), what="the customer's DM in the moved one")


def test_polling_after_downtime_loses_nothing(live_worker, x_api, tmp_path: Path) -> None:
    make_demo()
    account = x_account(x_api)
    users = [x_api.add_user(username=f"user{n}", name=f"User {n}") for n in range(9)]
    x_api.add_dm(sender_id=users[0]["id"], text=ENGLISH)
    x_api.add_mention(author_id=users[1]["id"], text=f"@{x_api.me['username']} {ENGLISH}")
    poll(account)  # the positions are now known
    account.refresh_from_db()
    assert account.cursor.get("dm_newest_id") and account.cursor.get("mentions_newest_id")
    # Down for a while: 250 DMs and 130 mentions arrive, and X repeats items across pages.
    for n in range(250):
        x_api.add_dm(sender_id=users[n % 9]["id"], text=f"{ENGLISH} #{n}")
    for n in range(130):
        x_api.add_mention(author_id=users[n % 9]["id"], text=f"@{x_api.me['username']} {ENGLISH} #{n}")
    x_api.duplicate_pages(True)
    log = (tmp_path / "x.log").open("w")
    listener = subprocess.Popen(
        [sys.executable, "manage.py", "listen_x", "--account", str(account.pk)],
        cwd=ROOT,
        env=worker_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: Message.objects.filter(account=account, direction="in").count() == 2 + 250 + 130,
            timeout=90,
            interval=0.5,
            what="every DM and mention from the downtime",
        )
    finally:
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(timeout=30)
        log.close()
    assert InboundEvent.objects.filter(account=account).count() == 2 + 250 + 130
    for user in users:  # one DM conversation and one public conversation per customer, however many messages
        assert Conversation.objects.filter(account=account, identity__handle=user["id"], thread_key="dm").count() <= 1
        assert Conversation.objects.filter(account=account, identity__handle=user["id"]).count() <= 2


def test_webhook_crc_and_signature(live_worker, web_server, x_api) -> None:
    make_demo()
    account = x_account(x_api, mode="webhook")
    url = webhook_url(web_server, account)
    assert x_api.crc_check(url)
    with urllib.request.urlopen(f"{url}?crc_token=abc123", timeout=10) as response:  # noqa: S310 - loopback
        assert json.loads(response.read()) == {"response_token": x_api.crc_response_token("abc123")}

    customer = x_api.add_user(username="webhook_user", name="Hook")
    payload = x_api.aaa_dm_payload(x_api.add_dm(sender_id=customer["id"], text=SPANISH))
    body = json.dumps(payload).encode()
    assert x_api.post_webhook(url, body, signature=None)[0] == 401
    assert x_api.post_webhook(url, body, signature="sha256=" + "A" * 44)[0] == 403
    tampered = body.replace(b"fondos", b"fondue")
    assert x_api.post_webhook(url, tampered, signature=x_api.sign(body))[0] == 403
    assert not InboundEvent.objects.exists()

    status, answer = x_api.post_webhook(url, body)
    assert status == 200, answer
    conversation = assigned(account, customer["id"], "dm")
    assert conversation.language == "es"


def test_webhook_and_polling_deliver_the_same_dm_once(live_worker, web_server, x_api) -> None:
    make_demo()
    account = x_account(x_api, mode="webhook")
    url = webhook_url(web_server, account)
    customer = x_api.add_user(username="twice", name="Twice")
    dm = x_api.add_dm(sender_id=customer["id"], text=ENGLISH)
    mention = x_api.add_mention(author_id=customer["id"], text=f"@{x_api.me['username']} {ENGLISH}")
    statuses: list[int] = []

    def post(payload: dict[str, Any]) -> None:
        statuses.append(x_api.post_webhook(url, payload)[0])

    payloads = [x_api.aaa_dm_payload(dm), x_api.aaa_tweet_payload(mention)] * 4
    threads = [threading.Thread(target=post, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * len(payloads)
    poll(account)  # the catch-up poll finds the same two
    wait_for(lambda: Message.objects.filter(account=account, direction="in").count() == 2, what="two messages")
    sweep_stuck_work()
    live_worker_idle = wait_for(
        lambda: not InboundEvent.objects.filter(account=account, state="pending").exists(), what="all processed"
    )
    assert live_worker_idle
    assert sorted(Message.objects.filter(account=account).values_list("external_id", flat=True)) == sorted(
        [f"dm:{dm['id']}", f"tweet:{mention['id']}"]
    )
    assert InboundEvent.objects.filter(account=account).count() == 2


def test_429_pauses_the_account_for_every_worker(live_worker, x_api) -> None:
    demo = make_demo()
    account = x_account(x_api)
    customers = [x_api.add_user(username=f"rl{n}", name=f"RL {n}") for n in range(2)]
    for customer in customers:
        x_api.add_dm(sender_id=customer["id"], text=SPANISH)
    poll(account)
    conversations = [assigned(account, c["id"], "dm") for c in customers]
    x_api.fail_next("POST", "/2/dm_conversations", 429, reset_in=3)
    agent = Client()
    agent.force_login(demo.agent_es)
    ids = [reply(agent, c, f"Respuesta {n}").json()["message"]["id"] for n, c in enumerate(conversations)]
    wait_for(lambda: ChannelAccount.objects.get(pk=account.pk).paused_until is not None, what="the pause")
    paused_until = ChannelAccount.objects.get(pk=account.pk).paused_until
    waiting = wait_for(
        lambda: [d for d in OutboundDelivery.objects.filter(message_id__in=ids) if d.state == "retry_wait"],
        what="a reply queued behind the rate limit",
    )
    assert "queued: X (Twitter) rate limit; sends at" in waiting[0].last_error
    # What the agent sees on the waiting reply: queued, why, and when it goes.
    waiting_message = waiting[0].message
    shown = agent.get(f"/api/agent/conversations/{waiting_message.conversation_id}").json()["messages"]
    [out] = [m for m in shown if m["id"] == waiting_message.pk]
    assert out["delivery"]["state"] in ("retry_wait", "sent")

    def all_sent() -> bool:
        sweep_stuck_work()  # beat's job: re-enqueue the deliveries whose wait is over
        return all(d.state == "sent" for d in OutboundDelivery.objects.filter(message_id__in=ids))

    wait_for(all_sent, timeout=40, interval=0.5, what="both replies after the reset")
    accepted = [c for c in x_api.calls("POST", "/2/dm_conversations") if c["status"] == 201]
    assert len(accepted) == 2
    assert all(c["at"] >= paused_until.timestamp() - 0.05 for c in accepted)


def test_dm_photo_becomes_an_attachment_and_oversize_media_is_dropped(live_worker, x_api) -> None:
    make_demo()
    account = x_account(x_api, max_media_bytes=50_000)
    customer = x_api.add_user(username="pics", name="Pics")
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005fe02fe"
        "a7e6a0ca0000000049454e44ae426082"
    )
    x_api.add_dm(sender_id=customer["id"], text="Mi captura", media=[("captura.png", "image/png", png)])
    x_api.add_dm(sender_id=customer["id"], text="Y el vídeo", media=[("video.mp4", "video/mp4", b"\0" * 80_000)])
    poll(account)
    message = wait_for(
        lambda: Message.objects.filter(account=account, attachments__isnull=False).first(), what="the attachment"
    )
    [attachment] = message.attachments.all()
    assert attachment.file.read() == png and attachment.content_type == "image/png"
    big = wait_for(
        lambda: Message.objects.filter(account=account, text="Y el vídeo", metadata__files_fetched=True).first(),
        what="the oversize video handled",
    )
    assert not big.attachments.exists()
    [dropped] = big.metadata["dropped_files"]
    assert "limit" in dropped["reason"]


def test_test_connection_reports_the_account_and_never_the_keys(db, x_api) -> None:
    steps = channel_diagnose(account=x_account(x_api))
    assert steps and all(step.ok for step in steps), steps
    assert any(x_api.me["username"] in step.detail for step in steps)
    wrong = ChannelAccount.objects.create(
        kind="x",
        name="Wrong keys",
        settings={"api_base": x_api.url},
        secrets={**x_api.credentials(), "consumer_secret": "not-the-secret"},
    )
    failed = [step for step in channel_diagnose(account=wrong) if not step.ok]
    assert failed and "not-the-secret" not in str(failed)


def test_register_webhook_passes_the_crc_check(transactional_db, web_server, x_api) -> None:
    account = x_account(x_api, mode="webhook")
    account.settings = {**account.settings, "webhook_url": webhook_url(web_server, account)}
    account.save()
    result = x_webhook_register(account=account)
    assert result["valid"] and result["subscribed"]
    account.refresh_from_db()
    assert account.settings["webhook_id"] == result["webhook_id"]


def test_polling_spreads_calls_over_the_rate_limit_and_waits_out_a_429(db, x_api) -> None:
    from inbox.conversations.x import x_poll_stream

    account = x_account(x_api, min_poll_interval=1)
    x_api.set_rate_limit("GET", "/2/users", limit=5, window=600)
    delay = x_poll_stream(account=account, stream="mentions")
    assert 600 / 4 - 5 <= delay <= 600 / 4 + 1  # 4 calls left for about 600 s
    x_api.fail_next("GET", "/2/dm_events", 429, reset_in=120)
    delay = x_poll_stream(account=account, stream="dm")
    assert 115 <= delay <= 125  # nothing more until X's reset
    account.refresh_from_db()
    assert account.health == ChannelAccount.Health.DEGRADED and "rate limit" in account.health_detail


def test_an_admin_sets_up_x_in_the_admin(transactional_db, web_server, x_api) -> None:
    """Paste the keys (write-only), test the connection, register the webhook: what an operator does."""
    from inbox.agents.services import agent_upsert
    from inbox.routing.models import AgentProfile

    admin_user = agent_upsert(username="root", password="admin-password-1", role=AgentProfile.Role.ADMIN)
    client = Client()
    client.force_login(admin_user)
    keys = x_api.credentials()
    response = client.post(
        "/admin/conversations/channelaccount/add/",
        {
            "kind": "x",
            "name": "Brand on X",
            "is_active": "on",
            "settings": json.dumps({"api_base": x_api.url, "mode": "webhook"}),
            **{f"secret_{name}": value for name, value in keys.items()},
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    account = ChannelAccount.objects.get(name="Brand on X")
    assert account.secrets == keys
    account.settings = {**account.settings, "webhook_url": webhook_url(web_server, account)}
    account.save()

    page = client.get(f"/admin/conversations/channelaccount/{account.pk}/change/").content.decode()
    assert all(value not in page for value in keys.values())
    response = client.post(
        "/admin/conversations/channelaccount/",
        {"action": "x_register_webhook", "_selected_action": [account.pk]},
        follow=True,
    )
    [text] = [str(m) for m in response.context["messages"]]
    assert "subscribed: True" in text and webhook_url(web_server, account) in text, text
    account.refresh_from_db()
    assert account.settings["user_id"] == x_api.me["id"]  # events name it in for_user_id
    assert account.settings["mode"] == "webhook" and account.settings["webhook_id"]
    response = client.post(
        "/admin/conversations/channelaccount/",
        {"action": "test_connection", "_selected_action": [account.pk]},
        follow=True,
    )
    [text] = [str(m) for m in response.context["messages"]]
    assert "FAILED" not in text and x_api.me["username"] in text, text


def test_webhook_events_go_to_the_account_they_are_for(live_worker, web_server, x_api) -> None:
    """One app's webhook carries every subscribed account: an event lands under the account named by for_user_id,
    and one for an account not connected here is acknowledged and not stored anywhere."""
    make_demo()
    first = x_account(x_api, mode="webhook")
    second = ChannelAccount.objects.create(
        kind="x",
        name="Second brand",
        settings={"api_base": x_api.url, "mode": "webhook", "user_id": "987654321"},
        secrets=x_api.credentials(),
    )
    customer = x_api.add_user(username="routed", name="Routed")
    payload = x_api.aaa_dm_payload(x_api.add_dm(sender_id=customer["id"], text=SPANISH))
    status, _ = x_api.post_webhook(webhook_url(web_server, first), {**payload, "for_user_id": "987654321"})
    assert status == 200
    wait_for(lambda: Message.objects.filter(account=second).exists(), what="the DM under the second account")
    assert not InboundEvent.objects.filter(account=first).exists()
    stranger = {**payload, "for_user_id": "555"}
    status, body = x_api.post_webhook(webhook_url(web_server, first), stranger)
    assert status == 200 and json.loads(body)["accepted"] == 0
    assert InboundEvent.objects.count() == 1
