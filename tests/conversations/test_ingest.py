"""The ingest pipeline through the real services and PostgreSQL (processing called directly, no worker)."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection

from inbox.agents.selectors import conversation_messages
from inbox.conversations.models import (
    AuditEvent,
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    InboundEvent,
    Message,
)
from inbox.conversations.services import (
    conversation_set_language,
    inbound_event_record,
    inbound_events_process,
    inbound_events_record,
)
from inbox.routing.selectors import clear_cache

# Written for these tests (not taken from the shared language data).
SENTENCES = {
    "en": "Hello, I cannot log in to my account since yesterday, can you help me please?",
    "es": "Hola, no puedo retirar mis fondos desde ayer, ¿pueden ayudarme por favor?",
    "zh": "你好，我的账户从昨天开始无法提现，请帮帮我。",
    "ru": "Здравствуйте, я не могу вывести деньги со своего счёта со вчерашнего дня.",
    "de": "Hallo, ich kann seit gestern kein Geld von meinem Konto abheben, bitte helfen Sie mir.",
    "fr": "Bonjour, je ne peux plus retirer mon argent depuis hier, pouvez-vous m'aider s'il vous plaît ?",
    "pt": "Olá, não consigo sacar o meu dinheiro desde ontem, vocês podem me ajudar por favor?",
    "it": "Buongiorno, da ieri non riesco a prelevare i soldi dal mio conto, potete aiutarmi per favore?",
    "ar": "مرحبا، لا أستطيع سحب أموالي من حسابي منذ الأمس، هل يمكنكم مساعدتي من فضلكم؟",
    "tr": "Merhaba, dünden beri hesabımdan para çekemiyorum, lütfen yardım eder misiniz?",
    "ja": "こんにちは、昨日から口座からお金を引き出すことができません。助けてください。",
    "ko": "안녕하세요, 어제부터 계좌에서 돈을 인출할 수 없습니다. 도와주세요.",
    "uk": "Добрий день, я не можу вивести гроші зі свого рахунку з учорашнього дня, допоможіть будь ласка.",
    "vi": "Xin chào, tôi không thể rút tiền từ tài khoản của mình từ hôm qua, xin hãy giúp tôi.",
}


def post(account: ChannelAccount, visitor: str, text: str, *, accept_language: str = "", client_id: str = "") -> int:
    client_id = client_id or str(uuid.uuid4())
    payload = {"visitor": visitor, "client_id": client_id, "text": text, "accept_language": accept_language}
    [event_id] = inbound_events_record(account=account, events=[(f"{visitor}:{client_id}", payload)])
    return event_id


def conversation_of(visitor: str) -> Conversation:
    return Conversation.objects.select_related("queue").get(identity__handle=visitor)


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_routes_each_language_to_its_queue(demo, language: str) -> None:
    event_id = post(demo.webchat, f"v-{language}", SENTENCES[language])
    report = inbound_events_process(event_ids=[event_id])
    assert report.done == 1
    conversation = conversation_of(f"v-{language}")
    assert conversation.language == language
    assert conversation.queue == demo.queues[language]
    message = conversation.messages.get()
    assert message.language == language and message.language_confidence > 0.5


def test_unconfigured_or_unknown_language_goes_to_the_fallback_queue(demo) -> None:
    ids = [
        post(
            demo.webchat,
            "v-nl",
            "Hallo, ik kan sinds gisteren geen geld meer opnemen van mijn rekening, help alstublieft.",
        ),
        post(demo.webchat, "v-emoji", "👍👍 ??? 12345"),
    ]
    assert inbound_events_process(event_ids=ids).done == 2
    for visitor in ("v-nl", "v-emoji"):
        conversation = conversation_of(visitor)
        assert conversation.queue == demo.fallback, visitor
        assert conversation.language == ""


def test_a_short_message_keeps_the_conversation_language(demo) -> None:
    inbound_events_process(event_ids=[post(demo.webchat, "v1", SENTENCES["es"])])
    inbound_events_process(event_ids=[post(demo.webchat, "v1", "ok")])
    conversation = conversation_of("v1")
    assert conversation.language == "es" and conversation.queue == demo.queues["es"]
    assert conversation.messages.count() == 2


def test_browser_language_is_a_hint_for_a_short_first_message(demo) -> None:
    inbound_events_process(event_ids=[post(demo.webchat, "v2", "hola", accept_language="es-ES,es;q=0.9,en;q=0.5")])
    assert conversation_of("v2").queue == demo.queues["es"]


def test_auto_assigns_to_the_least_loaded_online_agent_and_waits_when_full(demo) -> None:
    # ana (es) has capacity 3: the 4th Spanish conversation waits in the queue, unassigned.
    for n in range(4):
        inbound_events_process(event_ids=[post(demo.webchat, f"es-{n}", SENTENCES["es"])])
    assigned = [conversation_of(f"es-{n}").assignee_id for n in range(4)]
    assert assigned == [demo.agent_es.pk] * 3 + [None]
    # oleg (ru) is offline: the Russian conversation waits.
    inbound_events_process(event_ids=[post(demo.webchat, "ru-1", SENTENCES["ru"])])
    assert conversation_of("ru-1").assignee_id is None
    assert AuditEvent.objects.filter(action="conversation.assigned").count() == 3


def test_agent_corrects_the_language_and_the_conversation_moves(demo) -> None:
    inbound_events_process(event_ids=[post(demo.webchat, "v3", SENTENCES["es"])])
    conversation = conversation_of("v3")
    assert conversation.assignee_id == demo.agent_es.pk
    conversation_set_language(conversation=conversation, language="en", actor=demo.agent_es)
    conversation.refresh_from_db()
    assert conversation.language == "en" and conversation.queue_id == demo.queues["en"].pk
    # ana does not serve English: released, then auto-assigned to ben who does.
    assert conversation.assignee_id == demo.agent_en.pk
    audit = AuditEvent.objects.filter(conversation=conversation, action="conversation.routed").latest("id")
    assert audit.actor_id == demo.agent_es.pk and audit.data["reason"] == "corrected by agent"


def test_duplicate_events_are_stored_once(demo) -> None:
    first = post(demo.webchat, "v4", "hello there", client_id="11111111-1111-1111-1111-111111111111")
    again = inbound_events_record(
        account=demo.webchat,
        events=[
            (
                "v4:11111111-1111-1111-1111-111111111111",
                {"visitor": "v4", "client_id": "x", "text": "changed"},
            )
        ],
    )
    assert again == []
    assert InboundEvent.objects.count() == 1
    inbound_events_process(event_ids=[first, first, first])
    inbound_events_process(event_ids=[first])
    assert Message.objects.count() == 1


def test_messages_keep_the_order_they_were_received_in_when_ingested_out_of_order(demo) -> None:
    """Two workers may ingest a visitor's two quick messages in either order: the timeline follows receipt."""
    first = post(demo.webchat, "v-order", "Hi, my order arrived without the tent poles.")
    second = post(demo.webchat, "v-order", "The order number is 4471, placed last Tuesday.")
    inbound_events_process(event_ids=[second])
    inbound_events_process(event_ids=[first])
    conversation = conversation_of("v-order")
    texts = [m.text for m in conversation_messages(conversation=conversation)]
    assert texts == ["Hi, my order arrived without the tent poles.", "The order number is 4471, placed last Tuesday."]
    received = dict(InboundEvent.objects.values_list("pk", "received_at"))
    by_event = dict(Message.objects.values_list("inbound_event_id", "created_at"))
    assert by_event == {first: received[first], second: received[second]}


def test_malformed_event_is_quarantined_and_the_batch_goes_on(demo) -> None:
    good = post(demo.webchat, "v5", SENTENCES["en"])
    inbound_event_record(account=demo.webchat, external_id="bad-1", payload={"visitor": 42, "text": None})
    bad = InboundEvent.objects.get(external_id="bad-1").pk
    report = inbound_events_process(event_ids=[bad, good])
    assert (report.done, report.failed) == (1, 1)
    event = InboundEvent.objects.get(pk=bad)
    assert event.state == InboundEvent.State.FAILED
    assert "field 'visitor' must be a string" in event.error
    assert event.payload == {"visitor": 42, "text": None}  # kept as received
    assert Message.objects.filter(conversation__identity__handle="v5").count() == 1


def test_new_conversation_after_resolve(demo) -> None:
    inbound_events_process(event_ids=[post(demo.webchat, "v6", SENTENCES["en"])])
    first = conversation_of("v6")
    Conversation.objects.filter(pk=first.pk).update(status=Conversation.Status.RESOLVED)
    inbound_events_process(event_ids=[post(demo.webchat, "v6", SENTENCES["en"])])
    assert Conversation.objects.filter(identity__handle="v6").count() == 2
    assert Contact.objects.filter(identities__handle="v6").count() == 1


@pytest.mark.django_db(transaction=True)
def test_first_messages_of_a_new_contact_concurrently_make_one_contact_and_one_conversation() -> None:
    from tests.factories import make_demo

    demo = make_demo()
    ids = [post(demo.webchat, "new-visitor", f"{SENTENCES['en']} #{n}") for n in range(6)]
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def run(event_id: int) -> None:
        try:
            barrier.wait()
            inbound_events_process(event_ids=[event_id])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ContactIdentity.objects.filter(handle="new-visitor").count() == 1
    assert Conversation.objects.filter(identity__handle="new-visitor").count() == 1
    assert Message.objects.filter(conversation__identity__handle="new-visitor").count() == 6
    assert InboundEvent.objects.filter(state=InboundEvent.State.DONE).count() == 6
    clear_cache()


# --- Set-based ingest: a batch of every channel at once -------------------------------------------------------
# The batch path (inbox/conversations/services/ingest_batch.py) stores plain messages of a whole batch in a fixed
# number of statements; bounces, edits, attachments and replies to resolved conversations take message_ingest in
# the same transaction. These tests hold both to message_ingest's rules.
X_ME = "4000"  # our X account's user id


@pytest.fixture
def no_fallback(caplog):
    """The batch path must not have fallen back to one transaction per event (which would hide its bugs)."""
    import logging

    caplog.set_level(logging.INFO, logger="inbox.conversations.services.intake")
    yield
    assert "one by one" not in caplog.text


@pytest.fixture
def channels(demo, no_fallback):
    """The demo plus a Telegram bot, an X account and a mailbox (normalisation needs no network)."""
    demo.telegram = ChannelAccount.objects.create(  # type: ignore[misc]  # secrets: an EncryptedJSONField
        kind="telegram",
        name="Bot",
        settings={"mode": "webhook"},
        secrets={"bot_token": "1:test"},
    )
    demo.x = ChannelAccount.objects.create(kind="x", name="X", settings={"mode": "webhook", "user_id": X_ME})
    demo.email = ChannelAccount.objects.create(
        kind="email", name="Mailbox", settings={"address": "support@example.test", "domain": "example.test"}
    )
    return demo


def tg_update(update_id: int, chat_id: int, message_id: int, text: str, *, lang: str = "", edited: bool = False):
    user = {
        "id": chat_id,
        "is_bot": False,
        "first_name": f"User {chat_id}",
        **({"language_code": lang} if lang else {}),
    }
    message = {
        "message_id": message_id,
        "from": user,
        "chat": {"id": chat_id, "first_name": f"User {chat_id}", "type": "private"},
        "date": 1_763_000_000 + update_id,
        "text": text,
        **({"edit_date": 1_763_000_100 + update_id} if edited else {}),
    }
    return (str(update_id), {"update_id": update_id, ("edited_message" if edited else "message"): message})


def x_dm(event_id: str, sender: str, text: str):
    from connectors.x.normalize import dm_event_item

    event = {
        "id": event_id,
        "event_type": "MessageCreate",
        "text": text,
        "sender_id": sender,
        "dm_conversation_id": f"{sender}-{X_ME}",
        "created_at": "2026-11-20T10:00:00.000Z",
    }
    users = {"users": [{"id": sender, "name": f"Customer {sender}", "username": f"c{sender}"}]}
    return (f"dm:{event_id}", dm_event_item(event, users, X_ME))


def x_mention(tweet_id: str, author: str, text: str):
    from connectors.x.normalize import mention_item

    tweet = {
        "id": tweet_id,
        "text": f"@support {text}",
        "author_id": author,
        "created_at": "2026-11-20T10:00:00.000Z",
        "conversation_id": tweet_id,
        "edit_history_tweet_ids": [tweet_id],
    }
    users = {"users": [{"id": author, "name": f"Customer {author}", "username": f"c{author}"}]}
    return (f"tweet:{tweet_id}", mention_item(tweet, users, X_ME))


def mail(sender: str, text: str, *, message_id: str, subject: str = "Withdrawal", **headers: str) -> bytes:
    from email.message import EmailMessage

    from connectors.email.smtp import SMTP_POLICY

    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = "support@example.test"
    msg["Subject"] = subject
    msg["Date"] = "Thu, 20 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<{message_id}>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return bytes(msg)


_uids = iter(range(1, 1_000_000))


def mail_event(raw: bytes):
    from inbox.conversations.mail import mail_payload

    uid = next(_uids)
    return (f"7:{uid}", mail_payload(raw, uid=uid, uidvalidity=7, folder="INBOX"))


def chat(visitor: str, text: str, *, client_id: str = "", **extra):
    client_id = client_id or str(uuid.uuid4())
    return (f"{visitor}:{client_id}", {"visitor": visitor, "client_id": client_id, "text": text, **extra})


def record(account: ChannelAccount, *events) -> list[int]:
    return inbound_events_record(account=account, events=list(events))


def split_of(event_ids: list[int]) -> dict[str, str]:
    """Which path each message of these events takes: external id -> "" (set) or the per-message reason."""
    from django.db import transaction

    from inbox.conversations.channels import connector_for
    from inbox.conversations.services.ingest_batch import batch_split, items_of

    events = list(InboundEvent.objects.select_related("account").filter(pk__in=event_ids).order_by("id"))
    items = items_of((e, connector_for(e.account).normalize(e.payload)) for e in events)
    with transaction.atomic():
        batch_split(items)
    return {item.inbound.external_id: item.slow for item in items}


def test_one_batch_of_every_channel_makes_one_message_each_and_one_conversation_per_thread(channels) -> None:
    ids = record(
        channels.webchat,
        chat("v-es", SENTENCES["es"]),
        chat("v-es", "¿Hay alguien ahí? Sigo esperando una respuesta sobre mi retiro."),
        chat("v-es", "gracias"),
        chat("v-fr", SENTENCES["fr"], accept_language="fr-FR,fr;q=0.9"),
    )
    ids += record(
        channels.telegram,
        tg_update(501, 9001, 1, SENTENCES["de"], lang="de"),
        tg_update(502, 9001, 2, "Ich warte immer noch auf eine Antwort von Ihnen, bitte melden Sie sich."),
        tg_update(503, 9002, 1, "hallo", lang="de"),
    )
    ids += record(
        channels.x,
        x_dm("7001", "3001", SENTENCES["en"]),
        x_mention("8001", "3001", "Why has nobody answered my direct message about my account yet?"),
    )
    ids += record(
        channels.email,
        mail_event(mail("ana@customer.test", SENTENCES["pt"], message_id="a1@customer.test")),
        mail_event(mail("ana@customer.test", SENTENCES["it"], message_id="a2@customer.test", subject="Other")),
    )
    assert set(split_of(ids).values()) == {""}  # all plain: the set path
    report = inbound_events_process(event_ids=ids)
    assert (report.done, report.failed, report.retry) == (len(ids), 0, 0)
    assert len(report.messages) == 11 == Message.objects.count()
    assert InboundEvent.objects.filter(state=InboundEvent.State.DONE, claimed_at__isnull=True).count() == len(ids)

    def conv(kind: str, handle: str, thread: str = "") -> Conversation:
        return Conversation.objects.select_related("queue").get(
            identity__kind=kind, identity__handle=handle, thread_key=thread
        )

    es = conv("webchat", "v-es")
    assert es.messages.count() == 3 and es.language == "es" and es.queue == channels.queues["es"]
    assert conv("webchat", "v-fr").language == "fr"
    de = conv("telegram", "9001")
    assert de.messages.count() == 2 and de.language == "de" and de.subject == ""
    assert conv("telegram", "9002").queue == channels.queues["de"]  # "hallo" + the client's language_code
    # One X identity, two threads: its DMs and its public posts.
    assert conv("x", "3001", "dm").language == "en" and conv("x", "3001", "public").messages.count() == 1
    assert ContactIdentity.objects.filter(kind="x", handle="3001").count() == 1
    # E-mail: each new mail without References is its own thread (its Message-ID), the subject kept.
    mails = Conversation.objects.filter(account=channels.email).order_by("id")
    assert [(c.thread_key, c.subject, c.language) for c in mails] == [
        ("a1@customer.test", "Withdrawal", "pt"),
        ("a2@customer.test", "Other", "it"),
    ]
    assert Contact.objects.filter(identities__handle="ana@customer.test").get().email == "ana@customer.test"
    # Every conversation: one "created" and one "routed" audit row, the message times = the events' receipt.
    assert AuditEvent.objects.filter(action="conversation.created").count() == Conversation.objects.count() == 8
    assert AuditEvent.objects.filter(action="conversation.routed").count() == 8
    received = dict(InboundEvent.objects.values_list("pk", "received_at"))
    for message in Message.objects.all():
        assert message.inbound_event_id is not None
        assert message.created_at == received[message.inbound_event_id]
        assert message.sender_identity_id == message.conversation.identity_id
        assert message.conversation.waiting_since is not None
    # Assigned after the commit, as before: Spanish to ana (capacity 3), English to ben.
    assert es.assignee_id == channels.agent_es.pk
    assert conv("x", "3001", "dm").assignee_id == channels.agent_en.pk


def test_known_and_new_senders_and_duplicates_within_and_across_batches(channels) -> None:
    first = record(channels.webchat, chat("known", SENTENCES["en"]))
    first += record(channels.email, mail_event(mail("m@customer.test", SENTENCES["es"], message_id="m1@customer.test")))
    inbound_events_process(event_ids=first)
    known = Conversation.objects.get(identity__handle="known")
    again = mail("m@customer.test", SENTENCES["es"], message_id="m1@customer.test")
    batch = record(
        channels.webchat,
        chat("known", "I am still waiting for an answer about my account, please."),
        chat("new-1", SENTENCES["ru"]),
        chat("new-1", "Алло? Я всё ещё жду ответа по поводу моего счёта."),
        chat("new-2", SENTENCES["uk"]),
    )
    batch += record(
        channels.email,
        mail_event(again),  # the first batch's mail, fetched again (a new UID): a duplicate across batches
        mail_event(mail("n@customer.test", SENTENCES["de"], message_id="n1@customer.test")),
        mail_event(mail("n@customer.test", SENTENCES["de"], message_id="n1@customer.test")),  # within the batch
        # A reused Message-ID with other content is another message (stored under id#hash), once.
        mail_event(mail("n@customer.test", SENTENCES["fr"], message_id="n1@customer.test")),
        mail_event(mail("n@customer.test", SENTENCES["fr"], message_id="n1@customer.test")),
    )
    assert set(split_of(batch).values()) == {""}
    report = inbound_events_process(event_ids=batch)
    assert report.done == len(batch) == 9 and len(report.messages) == 6
    assert Conversation.objects.get(identity__handle="known").pk == known.pk
    assert known.messages.count() == 2
    assert Conversation.objects.filter(identity__handle="new-1").get().messages.count() == 2
    assert Message.objects.filter(external_id="m1@customer.test").count() == 1
    stored = sorted(Message.objects.filter(external_id__startswith="n1@").values_list("external_id", flat=True))
    assert stored[0] == "n1@customer.test" and stored[1].startswith("n1@customer.test#") and len(stored) == 2
    assert ContactIdentity.objects.filter(handle__in=["known", "new-1", "new-2"]).count() == 3
    assert Contact.objects.count() == ContactIdentity.objects.count()
    # Processing the same events again changes nothing.
    assert inbound_events_process(event_ids=batch).skipped == len(batch)
    assert Message.objects.count() == 8


def test_a_batch_takes_the_same_number_of_statements_for_5_and_50_messages(channels) -> None:
    from django.test.utils import CaptureQueriesContext

    def run(n: int, tag: str) -> int:
        events = [chat(f"{tag}-{i}", SENTENCES[("en", "es", "de", "fr")[i % 4]]) for i in range(n)]
        events += [chat(f"{tag}-{i}", "Any news about this?") for i in range(0, n, 2)]
        ids = record(channels.webchat, *events)
        with CaptureQueriesContext(connection) as queries:
            assert inbound_events_process(event_ids=ids).done == len(ids)
        # Assignment writes once per agent who gets conversations; everything else is once per batch.
        return sum(
            1 for q in queries if not q["sql"].startswith('UPDATE "conversations_conversation" SET "assignee_id"')
        )

    run(1, "warm-up")  # the routing cache (queues, languages) is read once per process every few seconds
    small, large = run(5, "small"), run(50, "large")
    assert small == large, (small, large)
    assert large <= 25  # ~7 statements a message before


def test_special_cases_take_the_per_message_path_in_the_same_batch(channels) -> None:
    from inbox.conversations.models import OutboundDelivery

    # An e-mail conversation with our reply (sent), one resolved conversation, a Telegram message to edit.
    inbound_events_process(
        event_ids=record(
            channels.email,
            mail_event(mail("b@customer.test", SENTENCES["en"], message_id="b1@customer.test")),
            mail_event(mail("r@customer.test", SENTENCES["en"], message_id="r1@customer.test")),
        )
        + record(channels.telegram, tg_update(600, 9100, 7, SENTENCES["de"]))
    )
    bounced = Conversation.objects.get(identity__handle="b@customer.test")
    reply = Message.objects.create(
        account=channels.email,
        conversation=bounced,
        direction=Message.Direction.OUTBOUND,
        text="Hello",
        external_id="sb.reply.1@example.test",
    )
    delivery = OutboundDelivery.objects.create(message=reply, account=channels.email, state="sent")
    resolved = Conversation.objects.get(identity__handle="r@customer.test")
    Conversation.objects.filter(pk=resolved.pk).update(status=Conversation.Status.RESOLVED)
    dsn = (
        b"From: MAILER-DAEMON@mx.example.test\r\nTo: support@example.test\r\nSubject: Undelivered\r\n"
        b"Message-ID: <dsn1@mx.example.test>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n"
        b"Final-Recipient: rfc822; b@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <sb.reply.1@example.test>\r\n--b--\r\n"
    )
    picture = {"filename": "p.txt", "content_type": "text/plain", "content_b64": "aGVsbG8="}
    batch = record(
        channels.email,
        mail_event(dsn),
        mail_event(
            mail(
                "r@customer.test",
                "It happened again today, same problem as before with my withdrawal.",
                message_id="r2@customer.test",
                In_Reply_To="<r1@customer.test>",
                References="<r1@customer.test>",
            )
        ),
        mail_event(mail("plain@customer.test", SENTENCES["it"], message_id="p1@customer.test")),
    )
    batch += record(
        channels.telegram,
        tg_update(601, 9100, 7, "Hallo, ich habe meine Frage geändert: wann kommt das Geld?", edited=True),
        tg_update(602, 9100, 8, "Und noch etwas: bitte antworten Sie bald."),  # same sender: same path
        tg_update(603, 9200, 1, SENTENCES["de"]),
    )
    batch += record(
        channels.webchat,
        chat("v-file", "here is the file", attachments=[picture]),
        chat("v-plain", SENTENCES["es"]),
    )
    assert split_of(batch) == {
        "dsn1@mx.example.test": "bounce",
        "r2@customer.test": "reply",
        "p1@customer.test": "",
        "9100:7": "edit",
        "9100:8": "sender",
        "9200:1": "",
        next(k for k in split_of(batch) if k.startswith("v-file:")): "attachments",
        next(k for k in split_of(batch) if k.startswith("v-plain:")): "",
    }
    report = inbound_events_process(event_ids=batch)
    assert (report.done, report.failed) == (len(batch), 0)
    # Bounce: the delivery failed with the server's words, a note on its conversation, no mailer-daemon contact.
    delivery.refresh_from_db()
    assert delivery.state == "failed" and "5.1.1" in delivery.last_error
    assert bounced.messages.filter(direction="note").count() == 1
    assert not ContactIdentity.objects.filter(handle__icontains="mailer-daemon").exists()
    # A reply to a resolved conversation reopens it.
    resolved.refresh_from_db()
    assert resolved.status == Conversation.Status.OPEN and resolved.messages.count() == 2
    assert AuditEvent.objects.filter(conversation=resolved, action="conversation.reopened").exists()
    # The edit replaced the text and kept the old one; the next message joined the same conversation.
    edited = Message.objects.get(account=channels.telegram, external_id="9100:7")
    assert edited.text.startswith("Hallo, ich habe") and edited.metadata["history"][0]["text"] == SENTENCES["de"]
    assert Conversation.objects.get(identity__handle="9100").messages.count() == 2
    # The file was stored with its message.
    assert Message.objects.get(external_id__startswith="v-file:").attachments.get().size == 5
    assert Message.objects.filter(account=channels.email, external_id="p1@customer.test").exists()
    assert Conversation.objects.filter(identity__handle__in=["9200", "v-plain", "plain@customer.test"]).count() == 3


def test_email_replies_to_open_conversations_join_them_in_the_set_path(channels) -> None:
    from connectors.email.tokens import make_token
    from inbox.conversations.channels import signing_key

    inbound_events_process(
        event_ids=record(
            channels.email,
            mail_event(mail("c@customer.test", SENTENCES["es"], message_id="c1@customer.test")),
            mail_event(mail("e@customer.test", SENTENCES["es"], message_id="e1@customer.test")),
        )
    )
    c1 = Conversation.objects.get(identity__handle="c@customer.test")
    e1 = Conversation.objects.get(identity__handle="e@customer.test")
    token = make_token(e1.pk, signing_key())
    batch = record(
        channels.email,
        # By In-Reply-To / References to the customer's own mail.
        mail_event(
            mail(
                "c@customer.test",
                "Sigo sin poder retirar mi dinero, ¿me pueden ayudar?",
                message_id="c2@customer.test",
                In_Reply_To="<c1@customer.test>",
                References="<c1@customer.test>",
            )
        ),
        # Someone else replying to c's mail does not get into c's conversation: a new one, on that thread key.
        mail_event(
            mail(
                "d@customer.test",
                "Tengo el mismo problema que mi compañero, no puedo retirar.",
                message_id="d1@customer.test",
                References="<c1@customer.test>",
            )
        ),
        # By our signed token (the Message-ID of our reply), whatever the thread root says.
        mail_event(
            mail(
                "e@customer.test",
                "Gracias por la respuesta, pero todavía no funciona.",
                message_id="e2@customer.test",
                In_Reply_To=f"<{token}.abc@example.test>",
                References=f"<root-unknown@elsewhere.test> <{token}.abc@example.test>",
            )
        ),
    )
    assert set(split_of(batch).values()) == {""}
    assert inbound_events_process(event_ids=batch).done == 3
    assert c1.messages.count() == 2 and e1.messages.count() == 2
    d = Conversation.objects.get(identity__handle="d@customer.test")
    assert d.thread_key == "c1@customer.test" and d.pk not in (c1.pk, e1.pk)


def test_waiting_since_status_and_automatic_mail(channels) -> None:
    from datetime import timedelta

    from django.utils import timezone

    auto = record(
        channels.email,
        mail_event(
            mail("ooo@customer.test", SENTENCES["en"], message_id="o1@customer.test", Auto_Submitted="auto-replied")
        ),
    )
    snoozed = record(channels.webchat, chat("v-snooze", SENTENCES["en"]))
    inbound_events_process(event_ids=auto + snoozed)
    ooo = Conversation.objects.get(identity__handle="ooo@customer.test")
    assert ooo.waiting_since is None and ooo.messages.count() == 1  # kept, but nobody waits for an answer
    Conversation.objects.filter(identity__handle="v-snooze").update(
        status=Conversation.Status.SNOOZED, snoozed_until=timezone.now() + timedelta(hours=1), waiting_since=None
    )
    batch = record(
        channels.email,
        mail_event(
            mail(
                "ooo@customer.test",
                "Back at work now: the problem with my account is still there.",
                message_id="o2@customer.test",
                References="<o1@customer.test>",
            )
        ),
    )
    batch += record(channels.webchat, chat("v-snooze", "Hello? Any news about my account?"))
    received = timezone.now() - timedelta(minutes=5)
    InboundEvent.objects.filter(pk__in=batch).update(received_at=received)
    inbound_events_process(event_ids=batch)
    ooo.refresh_from_db()
    assert ooo.waiting_since == received  # the time we received it, not when a worker got to it
    woken = Conversation.objects.get(identity__handle="v-snooze")
    assert woken.status == Conversation.Status.OPEN and woken.waiting_since == received


def test_language_switch_rule_holds_within_a_batch(channels) -> None:
    ids = record(
        channels.webchat,
        chat("v-switch", SENTENCES["es"]),
        chat("v-switch", "ok"),  # no text evidence: keeps Spanish
        chat("v-switch", SENTENCES["en"]),  # confident English, nobody assigned yet: moves to English
    )
    inbound_events_process(event_ids=ids)
    conversation = conversation_of("v-switch")
    assert conversation.language == "en" and conversation.queue == channels.queues["en"]
    routed = AuditEvent.objects.filter(conversation=conversation, action="conversation.routed").order_by("id")
    assert [(a.data["from"]["language"], a.data["to"]["language"]) for a in routed] == [("", "es"), ("es", "en")]
    assert list(conversation.messages.order_by("id").values_list("language", flat=True)) == ["es", "es", "en"]
    assert conversation.assignee_id == channels.agent_en.pk
    # Assigned now: a confident message in another language no longer moves it.
    inbound_events_process(event_ids=record(channels.webchat, chat("v-switch", SENTENCES["es"])))
    assert conversation_of("v-switch").language == "en"


def test_a_batch_publishes_each_message_once_after_the_commit(channels, django_capture_on_commit_callbacks) -> None:
    from inbox.conversations.realtime import MANAGERS_GROUP, queue_group, visitor_group
    from tests.conversations.test_actions import Listener

    managers = Listener(MANAGERS_GROUP)
    spanish = Listener(queue_group(channels.queues["es"].pk))
    visitor = Listener(visitor_group("v-live"))
    ids = record(channels.webchat, chat("v-live", SENTENCES["es"]), chat("v-live", "¿Alguien me puede ayudar?"))
    with django_capture_on_commit_callbacks(execute=True):
        inbound_events_process(event_ids=ids)
    messages = list(Message.objects.order_by("id").values_list("pk", flat=True))
    seen = [e for e in managers.events() if e["type"] in ("conversation.created", "message.created")]
    assert [(e["type"], e["message"]) for e in seen] == [
        ("conversation.created", messages[0]),
        ("message.created", messages[1]),
    ]
    assert [e["type"] for e in spanish.events() if e["type"] != "conversation.assigned"] == [
        "conversation.created",
        "message.created",
    ]
    shown = visitor.events()
    assert [e["message"]["id"] for e in shown if e["type"] == "message"] == messages
    assert shown[0]["message"]["from"] == "visitor" and shown[0]["message"]["attachments"] == []


@pytest.mark.django_db(transaction=True)
def test_two_batches_with_overlapping_events_and_senders_at_once(no_fallback) -> None:
    """Two workers handed overlapping batches (a redelivered task, the sweeper) and sharing senders, new and known:
    every event is processed once, one message each, one contact and one conversation per sender."""
    from tests.factories import make_demo

    demo = make_demo()
    inbound_events_process(event_ids=record(demo.webchat, *[chat(f"known-{n}", SENTENCES["en"]) for n in range(5)]))
    for round_ in range(3):
        events = [
            chat(f"{'known' if n % 3 == 0 else f'new{round_}'}-{n % 12}", f"{SENTENCES['es']} #{round_}.{n}")
            for n in range(40)
        ]
        ids = record(demo.webchat, *events)
        batches = [ids[:28], ids[12:]]  # 16 events in both
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(batch: list[int], barrier: threading.Barrier = barrier, errors: list[BaseException] = errors) -> None:
            try:
                barrier.wait()
                inbound_events_process(event_ids=batch)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert InboundEvent.objects.filter(pk__in=ids, state=InboundEvent.State.DONE).count() == 40
        assert Message.objects.filter(inbound_event_id__in=ids).count() == 40
        assert InboundEvent.objects.filter(pk__in=ids, attempts=1).count() == 40
    handles = set(ContactIdentity.objects.values_list("handle", flat=True))
    assert Contact.objects.count() == ContactIdentity.objects.count() == len(handles)
    for handle in handles:
        assert Conversation.objects.filter(identity__handle=handle).count() == 1, handle
    assert Message.objects.count() == 5 + 3 * 40
    clear_cache()


@pytest.mark.django_db(transaction=True)
def test_a_merge_in_progress_is_waited_for_and_the_new_conversation_follows_it(no_fallback) -> None:
    """A contact merge holds the sender's identity FOR UPDATE while a batch opens a new conversation for it: the
    batch waits for the merge and files the conversation under the contact the identity now belongs to."""
    import time

    from django.db import transaction

    from tests.factories import make_demo

    demo = make_demo()
    inbound_events_process(event_ids=record(demo.webchat, chat("moving", SENTENCES["en"])))
    identity = ContactIdentity.objects.get(handle="moving")
    Conversation.objects.filter(identity=identity).update(status=Conversation.Status.RESOLVED)
    target = Contact.objects.create(name="Target")
    ids = record(demo.webchat, chat("moving", "I am back with a new question about my invoice."))
    locked = threading.Event()
    errors: list[BaseException] = []

    def merge() -> None:
        try:
            with transaction.atomic():
                # What contact_merge does to the identities it moves (after locking their conversations).
                list(ContactIdentity.objects.select_for_update().filter(pk=identity.pk))
                ContactIdentity.objects.filter(pk=identity.pk).update(contact=target)
                Conversation.objects.filter(identity=identity).update(contact=target)
                locked.set()
                time.sleep(0.5)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=merge)
    thread.start()
    assert locked.wait(10)
    inbound_events_process(event_ids=ids)
    thread.join()
    assert not errors
    new = Conversation.objects.get(identity=identity, status=Conversation.Status.OPEN)
    assert new.contact_id == target.pk
    assert set(Conversation.objects.filter(identity=identity).values_list("contact_id", flat=True)) == {target.pk}
    clear_cache()


def test_one_bad_message_in_a_batch_backs_off_alone(demo, caplog) -> None:
    """A message the database refuses (a Message-ID longer than the column) fails the batch as a whole; the batch is
    redone one event per transaction through message_ingest, so only that event waits for a retry."""
    import logging

    caplog.set_level(logging.INFO, logger="inbox.conversations.services.intake")
    mailbox = ChannelAccount.objects.create(kind="email", name="Mailbox", settings={"address": "support@example.test"})
    long_id = f"{'x' * 600}@customer.test"
    ids = record(demo.webchat, chat("ok-1", SENTENCES["en"]))
    ids += record(mailbox, mail_event(mail("long@customer.test", SENTENCES["en"], message_id=long_id)))
    ids += record(demo.webchat, chat("ok-2", SENTENCES["es"]))
    report = inbound_events_process(event_ids=ids)
    assert (report.done, report.retry, report.failed) == (2, 1, 0)
    assert "one by one" in caplog.text
    bad = InboundEvent.objects.get(pk=ids[1])
    assert bad.state == InboundEvent.State.PENDING and bad.attempts == 1 and bad.error and bad.claimed_at is None
    assert bad.next_attempt_at is not None
    assert sorted(Message.objects.values_list("conversation__identity__handle", flat=True)) == ["ok-1", "ok-2"]


def test_texts_with_quotes_backslashes_and_braces_are_stored_exactly(channels) -> None:
    """The set path sends its columns as PostgreSQL array literals: every character must survive the quoting."""
    tricky = 'He said "hi" \\ back\\slash {a,b} NULL,\n\ttabs and ✓ — 你好 "" \\"'
    ids = record(
        channels.webchat,
        chat('v-quote\\"{x}', tricky, name='Ann "The" {Boss}', email="ann@example.test"),
        chat("v-null", "NULL"),
        chat("v-empty", ""),
    )
    assert inbound_events_process(event_ids=ids).done == 3
    assert Message.objects.get(conversation__identity__handle='v-quote\\"{x}').text == tricky
    assert Message.objects.get(conversation__identity__handle="v-null").text == "NULL"
    assert Message.objects.get(conversation__identity__handle="v-empty").text == ""
    identity = ContactIdentity.objects.select_related("contact").get(handle='v-quote\\"{x}')
    assert identity.display_name == 'Ann "The" {Boss}' == identity.contact.name
    assert identity.contact.email == "ann@example.test"
    assert Message.objects.get(conversation__identity__handle="v-null").metadata["client_id"]


def test_a_reply_to_a_mail_of_the_same_batch_joins_its_conversation(channels) -> None:
    ids = record(
        channels.email,
        mail_event(mail("f@customer.test", SENTENCES["es"], message_id="f1@customer.test")),
        mail_event(
            mail(
                "f@customer.test",
                "Perdón, olvidé decir que mi número de cliente es 4471.",
                message_id="f2@customer.test",
                In_Reply_To="<f1@customer.test>",
                References="<f1@customer.test>",
            )
        ),
        # Another sender quoting f's mail: not f's conversation.
        mail_event(
            mail(
                "g@customer.test",
                "Yo también tengo este problema con mi retiro.",
                message_id="g1@customer.test",
                In_Reply_To="<f1@customer.test>",
            )
        ),
    )
    assert set(split_of(ids).values()) == {""}
    assert inbound_events_process(event_ids=ids).done == 3
    f = Conversation.objects.get(identity__handle="f@customer.test")
    assert f.messages.count() == 2 and f.thread_key == "f1@customer.test"
    assert Conversation.objects.get(identity__handle="g@customer.test").messages.count() == 1


def test_a_reply_to_our_own_message_joins_its_conversation(channels) -> None:
    """In-Reply-To naming a reply we sent (an id without our token, e.g. written by another client) finds the
    conversation through the stored outbound message, as message_ingest does."""
    inbound_events_process(
        event_ids=record(channels.email, mail_event(mail("h@customer.test", SENTENCES["en"], message_id="h1@x.test")))
    )
    conversation = Conversation.objects.get(identity__handle="h@customer.test")
    Message.objects.create(
        account=channels.email,
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        text="We are looking into it.",
        external_id="out-1@example.test",
    )
    ids = record(
        channels.email,
        mail_event(
            mail(
                "h@customer.test",
                "Thank you, I am still waiting for the money to arrive in my account.",
                message_id="h2@x.test",
                In_Reply_To="<out-1@example.test>",
                References="<unknown-root@elsewhere.test> <out-1@example.test>",
            )
        ),
    )
    assert split_of(ids) == {"h2@x.test": ""}
    inbound_events_process(event_ids=ids)
    assert conversation.messages.filter(direction="in").count() == 2


def test_files_referred_to_are_fetched_after_the_commit(channels, django_capture_on_commit_callbacks) -> None:
    """A Telegram document is stored with its file reference in the set path; the download is a task enqueued after
    the commit (read back from the real broker queue)."""
    import base64
    import json as jsonlib

    import redis
    from django.conf import settings

    from inbox.taskqueue import FETCH_FILES

    key, update = tg_update(700, 9300, 1, "")
    message = update["message"]
    del message["text"]
    message["document"] = {"file_id": "DOC-1", "file_unique_id": "U1", "file_name": "invoice.pdf", "file_size": 10}
    message["caption"] = "Here is the invoice you asked for."
    ids = record(channels.telegram, (key, update))
    assert split_of(ids) == {"9300:1": ""}
    broker = redis.Redis.from_url(settings.REDIS_URL)
    before = broker.lrange("ingest", 0, -1)
    report = inbound_events_process(event_ids=ids)
    stored = Message.objects.get(pk=report.messages[0])
    assert stored.metadata["files"][0]["file_id"] == "DOC-1" and stored.text == "Here is the invoice you asked for."
    sent = [jsonlib.loads(raw) for raw in broker.lrange("ingest", 0, -1) if raw not in before]
    fetches = [m for m in sent if m["headers"]["task"] == FETCH_FILES]
    assert [jsonlib.loads(base64.b64decode(m["body"]))[0] for m in fetches] == [[stored.pk]]  # the task's args


@pytest.mark.django_db(transaction=True)
def test_four_batches_of_the_same_new_senders_at_once(no_fallback) -> None:
    """Four workers each ingest a different batch in which the same new senders write (web chat, Telegram, e-mail):
    the identity and conversation inserts race row by row; each sender ends with one contact and one conversation
    per thread, and every message is stored once."""
    from tests.factories import make_demo

    demo = make_demo()
    telegram = ChannelAccount.objects.create(  # type: ignore[misc]  # secrets: an EncryptedJSONField
        kind="telegram", name="Bot", settings={"mode": "webhook"}, secrets={"bot_token": "1:test"}
    )
    mailbox = ChannelAccount.objects.create(kind="email", name="Mailbox", settings={"address": "support@example.test"})
    batches: list[list[int]] = []
    for worker in range(4):
        ids = record(demo.webchat, *[chat(f"crowd-{n}", f"{SENTENCES['fr']} ({worker}.{n})") for n in range(15)])
        ids += record(
            telegram,
            *[tg_update(10_000 + worker * 100 + n, 5000 + n, worker * 100 + n, SENTENCES["it"]) for n in range(15)],
        )
        ids += record(
            mailbox,
            *[
                mail_event(
                    mail(
                        f"crowd{n}@customer.test",
                        f"{SENTENCES['pt']} ({worker})",
                        message_id=f"crowd.{worker}.{n}@customer.test",
                        References="<crowd-root@customer.test>",  # one thread per sender, whoever comes first
                    )
                )
                for n in range(5)
            ],
        )
        batches.append(ids)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run(batch: list[int]) -> None:
        try:
            barrier.wait()
            inbound_events_process(event_ids=batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert InboundEvent.objects.exclude(state=InboundEvent.State.DONE).count() == 0
    assert Message.objects.count() == 4 * 35
    for kind, handles in (("webchat", 15), ("telegram", 15), ("email", 5)):
        assert ContactIdentity.objects.filter(kind=kind).count() == handles
        for identity in ContactIdentity.objects.filter(kind=kind):
            conversations = Conversation.objects.filter(identity=identity)
            assert conversations.count() == 1, identity
            assert conversations.get().messages.count() == 4
    assert Contact.objects.count() == ContactIdentity.objects.count()
    assert AuditEvent.objects.filter(action="conversation.created").count() == Conversation.objects.count() == 35
    clear_cache()
