"""The whole loop through a real Celery worker process, PostgreSQL and Redis.

Visitors post over HTTP (Django's test client, in this process); the worker (another process, prefork) does
the ingest and the sends; the assertions read PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import uuid

from django.db import connection
from django.test import Client
from django.utils import timezone

from connectors.api import SIGNATURE_HEADER, sign
from inbox.conversations.models import (
    ChannelAccount,
    Conversation,
    InboundEvent,
    Message,
    OutboundDelivery,
)
from inbox.conversations.services import inbound_event_record
from inbox.taskqueue import PROCESS_INBOUND, SWEEP, app
from tests.conftest import wait_for
from tests.factories import make_demo
from tests.fakes.callback_server import CallbackServer

SPANISH = "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?"


def _session(client: Client, public_id: str) -> str:
    response = client.post(f"/api/webchat/v1/{public_id}/sessions", "{}", content_type="application/json")
    return response.json()["token"]


def _visitor_post(client: Client, token: str, text: str, client_id: str | None = None) -> int:
    response = client.post(
        "/api/webchat/v1/messages",
        json.dumps({"text": text, "client_id": client_id or str(uuid.uuid4())}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_ACCEPT_LANGUAGE="es-ES,es;q=0.9",
    )
    return response.status_code


def test_visitor_in_spanish_reaches_the_spanish_agent_and_reads_the_reply(live_worker) -> None:
    demo = make_demo()
    visitor = Client()
    token = _session(visitor, demo.webchat.public_id)
    assert _visitor_post(visitor, token, SPANISH) == 202

    conversation = wait_for(
        lambda: Conversation.objects.filter(messages__text=SPANISH, assignee__isnull=False).first(),
        what="the worker to ingest, route and assign the visitor's message",
    )
    assert conversation.language == "es"
    assert conversation.queue_id == demo.queues["es"].pk
    assert conversation.assignee_id == demo.agent_es.pk

    demo.agent_es.first_name = "Ana"  # what the customer reads; never the sign-in username
    demo.agent_es.save(update_fields=["first_name"])
    agent = Client()
    agent.force_login(demo.agent_es)
    listing = agent.get("/api/agent/conversations").json()["conversations"]
    assert [c["id"] for c in listing] == [conversation.pk]
    reply = agent.post(
        f"/api/agent/conversations/{conversation.pk}/reply",
        json.dumps({"text": "¡Hola! Ya estamos revisando tu retiro."}),
        content_type="application/json",
    )
    assert reply.status_code == 201
    message_id = reply.json()["message"]["id"]
    wait_for(
        lambda: OutboundDelivery.objects.filter(message_id=message_id, state=OutboundDelivery.State.SENT).exists(),
        what="the worker to deliver the reply",
    )

    seen = visitor.get("/api/webchat/v1/messages", HTTP_AUTHORIZATION=f"Bearer {token}").json()["messages"]
    assert [(m["from"], m["text"], m["author"]) for m in seen] == [
        ("visitor", SPANISH, None),
        ("agent", "¡Hola! Ya estamos revisando tu retiro.", "Ana"),
    ]
    detail = agent.get(f"/api/agent/conversations/{conversation.pk}").json()
    assert detail["messages"][1]["delivery"]["state"] == "sent"


def test_same_raw_event_five_times_concurrently_yields_one_message(live_worker) -> None:
    demo = make_demo()
    visitor = Client()
    token = _session(visitor, demo.webchat.public_id)
    client_id = str(uuid.uuid4())
    barrier = threading.Barrier(5)
    statuses: list[int] = []

    def post_once() -> None:
        try:
            barrier.wait()
            statuses.append(_visitor_post(Client(), token, SPANISH, client_id))
        finally:
            connection.close()

    threads = [threading.Thread(target=post_once) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 200, 200, 200, 202]
    event = InboundEvent.objects.get()
    # And the same event handed to the worker five more times at once.
    for _ in range(5):
        app.send_task(PROCESS_INBOUND, args=[[event.pk]])
    wait_for(
        lambda: InboundEvent.objects.filter(pk=event.pk, state=InboundEvent.State.DONE).exists(),
        what="ingest",
    )
    wait_for(lambda: not _worker_busy(), timeout=10, what="the worker to drain")
    assert Message.objects.count() == 1
    assert Conversation.objects.count() == 1


def _worker_busy() -> bool:
    inspect = app.control.inspect(timeout=1.0)
    active = inspect.active() or {}
    reserved = inspect.reserved() or {}
    return any(active.values()) or any(reserved.values())


def _api_channel(url: str) -> ChannelAccount:
    return ChannelAccount.objects.create(
        kind="api", name="Mobile app", settings={"callback_url": url}, secrets={"signing_secret": "s3cret"}
    )


def _api_event(client: Client, account: ChannelAccount, body: dict[str, object]) -> int:
    raw = json.dumps(body).encode()
    response = client.post(
        f"/api/channels/{account.public_id}/events",
        raw,
        content_type="application/json",
        **{f"HTTP_{SIGNATURE_HEADER.upper().replace('-', '_')}": sign("s3cret", raw)},
    )
    return response.status_code


def test_outbound_retries_after_a_transient_error_and_sends_once(live_worker) -> None:
    demo = make_demo()
    with CallbackServer() as server:
        server.then(500).then(503)
        account = _api_channel(server.url)
        assert _api_event(Client(), account, {"id": "m-1", "sender": {"id": "u-9"}, "text": SPANISH}) == 202
        conversation = wait_for(lambda: Conversation.objects.filter(account=account).first(), what="ingest")
        agent = Client()
        agent.force_login(demo.agent_es)
        reply = agent.post(
            f"/api/agent/conversations/{conversation.pk}/reply",
            json.dumps({"text": "Hola"}),
            content_type="application/json",
        )
        message_id = reply.json()["message"]["id"]
        delivery = wait_for(
            lambda: OutboundDelivery.objects.filter(message_id=message_id, state=OutboundDelivery.State.SENT).first(),
            what="delivery after two provider errors",
        )
    assert delivery.attempts == 3
    assert delivery.provider_id == "cb-3"
    assert len(server.requests) == 3
    # Every attempt carried the same idempotency key: the app can drop a duplicate.
    assert {r.headers["Idempotency-Key"] for r in server.requests} == {str(Message.objects.get(pk=message_id).uuid)}


def test_rate_limit_pauses_the_account_for_every_send(live_worker) -> None:
    demo = make_demo()
    with CallbackServer() as server:
        server.then(429, {"Retry-After": "2"})
        account = _api_channel(server.url)
        _api_event(Client(), account, {"id": "m-1", "sender": {"id": "u-1"}, "text": SPANISH})
        conversation = wait_for(lambda: Conversation.objects.filter(account=account).first(), what="ingest")
        agent = Client()
        agent.force_login(demo.agent_es)
        ids = []
        for text in ("uno", "dos"):
            response = agent.post(
                f"/api/agent/conversations/{conversation.pk}/reply",
                json.dumps({"text": text}),
                content_type="application/json",
            )
            ids.append(response.json()["message"]["id"])
        wait_for(lambda: ChannelAccount.objects.get(pk=account.pk).paused_until is not None, what="the pause")
        paused_until = ChannelAccount.objects.get(pk=account.pk).paused_until
        # Let the sweeper find the waiting deliveries once the pause is over (beat's job in production).
        deliveries = OutboundDelivery.objects.filter(message_id__in=ids)
        waiting = wait_for(
            lambda: [d for d in deliveries.all() if d.state == OutboundDelivery.State.RETRY_WAIT],
            what="a delivery waiting for the rate limit",
        )
        assert "rate limit; sends at" in waiting[0].last_error

        def all_sent() -> bool:
            app.send_task(SWEEP)
            return all(d.state == OutboundDelivery.State.SENT for d in deliveries.all())

        wait_for(all_sent, timeout=30, interval=0.5, what="both replies sent after the pause")
    times = [r for r in server.requests]
    assert len(times) == 3  # one 429, then the two replies
    assert timezone.now() >= paused_until


def test_permanent_error_fails_with_the_reason_and_no_retry(live_worker) -> None:
    demo = make_demo()
    with CallbackServer() as server:
        server.then(403)
        account = _api_channel(server.url)
        _api_event(Client(), account, {"id": "m-1", "sender": {"id": "u-1"}, "text": SPANISH})
        conversation = wait_for(lambda: Conversation.objects.filter(account=account).first(), what="ingest")
        agent = Client()
        agent.force_login(demo.agent_es)
        message_id = agent.post(
            f"/api/agent/conversations/{conversation.pk}/reply",
            json.dumps({"text": "Hola"}),
            content_type="application/json",
        ).json()["message"]["id"]
        delivery = wait_for(
            lambda: OutboundDelivery.objects.filter(message_id=message_id, state=OutboundDelivery.State.FAILED).first(),
            what="the delivery to fail",
        )
        app.send_task(SWEEP)
        wait_for(lambda: not _worker_busy(), timeout=10, what="the worker to drain")
    assert delivery.attempts == 1 and "refused our signature (403)" in delivery.last_error
    assert len(server.requests) == 1


def test_malformed_event_fails_visibly_and_the_worker_goes_on(live_worker) -> None:
    make_demo()
    with CallbackServer() as server:
        account = _api_channel(server.url)
        client = Client()
        assert _api_event(client, account, {"id": "bad", "sender": "not an object", "text": "x"}) == 202
        assert _api_event(client, account, {"id": "good", "sender": {"id": "u"}, "text": SPANISH}) == 202
    wait_for(lambda: Message.objects.filter(external_id="good").exists(), what="the good event")
    bad = wait_for(
        lambda: InboundEvent.objects.filter(external_id="bad", state=InboundEvent.State.FAILED).first(),
        what="the bad event to be dead-lettered",
    )
    assert "sender" in bad.error and bad.payload["sender"] == "not an object"


def test_webhook_signature_is_checked_before_anything_is_stored(live_worker) -> None:
    make_demo()
    account = _api_channel("http://127.0.0.1:9/unused")
    raw = json.dumps({"id": "m", "sender": {"id": "u"}, "text": "hi"}).encode()
    client = Client()
    path = f"/api/channels/{account.public_id}/events"
    assert client.post(path, raw, content_type="application/json").status_code == 403
    tampered = client.post(
        path, raw + b" ", content_type="application/json", HTTP_X_SWITCHBOARD_SIGNATURE=sign("s3cret", raw)
    )
    assert tampered.status_code == 403
    assert InboundEvent.objects.count() == 0


def test_sweeper_recovers_an_event_whose_broker_message_was_lost(live_worker) -> None:
    demo = make_demo()
    # Recorded with its processing task never sent (as if Redis lost it): on_commit is bypassed by writing
    # the row directly, due for the sweeper now.
    event = InboundEvent.objects.create(
        account=demo.webchat,
        external_id="lost:1",
        next_attempt_at=timezone.now(),
        payload={"visitor": "lost", "client_id": "1", "text": SPANISH},
    )
    assert not Message.objects.exists()
    app.send_task(SWEEP)
    wait_for(lambda: InboundEvent.objects.filter(pk=event.pk, state=InboundEvent.State.DONE).exists(), what="sweep")
    assert Message.objects.get().conversation.queue_id == demo.queues["es"].pk


def test_recorded_event_is_enqueued_after_commit(live_worker) -> None:
    demo = make_demo()
    assert inbound_event_record(
        account=demo.webchat, external_id="v:1", payload={"visitor": "v", "client_id": "1", "text": SPANISH}
    )
    wait_for(lambda: Message.objects.filter(text=SPANISH).exists(), what="ingest via on_commit")
