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
