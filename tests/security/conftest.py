"""The data the authorization matrix runs against, built once per module through the real services.

Built inside one transaction that is rolled back when the module is done; every test of the matrix (pytest-django's
``db``) runs in a savepoint of it, and every cell of a test in a savepoint of that, so a cell that changes something
(an allowed reply, a merge) never leaks into the next cell.

Customers (web chat visitors). Every piece of a customer's data carries the customer's marker (the message, the
contact's name, the agent's reply, the internal note, the attachment's name and bytes, the e-mail HTML), so a leak
is a plain substring search of a response:

=======  ========  ===============================================================================================
marker   queue     what it is
=======  ========  ===============================================================================================
ALFA     es        visitor A: the Spanish conversation (unassigned), with a file, a failed reply, a note, HTML
BRAVO    ru        visitor B: the Russian conversation (unassigned), the same parts
CHARLIE  de        visitor C: a German conversation assigned to the Spanish agent (ana), the same parts
DELTA    es        a spare Spanish contact (merge source in the matrix); ECHO (es) was merged into it
FOXTROT  ru        a spare Russian contact; GOLF (ru) was merged into it
HOTEL    es        one person with INDIA (ru): the manager merged INDIA's contact into HOTEL's ("mixed_contact"),
INDIA    ru        so one contact has a Spanish and a Russian conversation; each has a reply and a note
=======  ========  ===============================================================================================
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.db import transaction
from django.test import Client, override_settings

from inbox.agents.services import agent_upsert
from inbox.conversations.models import (
    Attachment,
    ChannelAccount,
    Contact,
    ContactMerge,
    Conversation,
    InboundEvent,
    Message,
    OutboundDelivery,
)
from inbox.conversations.services import (
    conversation_assign,
    inbound_events_process,
    note_create,
    reply_create,
)
from inbox.conversations.services.contacts import contact_merge
from inbox.routing.models import AgentProfile
from inbox.webchat.models import Visitor
from inbox.webchat.services import VisitorFile, visitor_create, visitor_post, visitor_post_files
from tests.factories import PASSWORD, Demo, make_demo

MISSING = 2_000_000_000  # an id no row has (still a valid PostgreSQL integer)
MISSING_PUBLIC_ID = "no-such-channel"
METRICS_TOKEN = "prometheus-scrape-token-for-the-matrix"
# Channel secrets: never in any response, to anyone (the admin's secret inputs are write-only).
SECRET_VALUES = (
    "SECRETVALUE-IDENTITY",
    "SECRETVALUE-TGBOT",
    "SECRETVALUE-TGHOOK",
    "SECRETVALUE-XAPP",
    "SECRETVALUE-API",
)
INTERNAL_NOTE = "INTERNAL-NOTE"  # every note's text starts with it: never shown to a visitor

MARKERS = {
    "A": "ALFA7731",
    "B": "BRAVO7732",
    "C": "CHARLIE7733",
    "D": "DELTA7734",
    "E": "ECHO7735",
    "F": "FOXTROT7736",
    "G": "GOLF7737",
    "H": "HOTEL7738",
    "I": "INDIA7739",
}
# Which scope (what an agent may see) each customer's data belongs to.
MARKER_SCOPE = {"A": "es", "B": "ru", "C": "assigned", "D": "es", "E": "es", "F": "ru", "G": "ru", "H": "es", "I": "ru"}
TEXTS = {
    "A": "Hola, soy ALFA7731 y no puedo entrar en mi cuenta desde ayer, ¿me pueden ayudar por favor?",
    "B": "Здравствуйте, это BRAVO7732, я не могу войти в свой аккаунт со вчерашнего дня, помогите пожалуйста.",
    "C": "Guten Tag, hier ist CHARLIE7733. Ich kann mich seit gestern nicht mehr in mein Konto einloggen, "
    "können Sie mir bitte helfen?",
    "D": "Buenas tardes, soy DELTA7734, quiero cambiar la dirección de envío de mi pedido, muchas gracias.",
    "E": "Hola, soy ECHO7735, el pago de mi pedido aparece dos veces en la cuenta del banco, ¿qué hago?",
    "F": "Добрый день, это FOXTROT7736, мой заказ до сих пор не доставлен, подскажите пожалуйста, что случилось.",
    "G": "Привет, это GOLF7737, мне не приходит письмо для подтверждения регистрации на вашем сайте.",
    "H": "Hola, soy HOTEL7738, necesito la factura de mi última compra con los datos de mi empresa, gracias.",
    "I": "Здравствуйте, это INDIA7739, прошу выставить счёт на мою компанию за последнюю покупку.",
}
EXPECTED_QUEUE = {"A": "es", "B": "ru", "C": "de", "D": "es", "E": "es", "F": "ru", "G": "ru", "H": "es", "I": "ru"}
# H and I are one person (the manager merged I into H): one contact with a Spanish and a Russian conversation. Their
# names carry no marker (the merged contact's name and identities are the person's, seen by both queues' agents);
# their messages, replies and notes do, and stay with their own queue.
UNMARKED_NAMES = ("H", "I")


@dataclass
class World:
    demo: Demo
    users: dict[str, AbstractUser]  # role -> user (agent roles only)
    tokens: dict[str, str]  # "visitor_a" / "visitor_b" -> bearer token
    visitors: dict[str, Visitor]  # "A".."G"
    conversations: dict[str, Conversation]  # "A".."G"
    ids: dict[str, Any]  # id key (as in the matrix) -> the value that goes into the URL
    merge_source: dict[str, int]  # contact-merge pair key -> the source contact's id
    channels: dict[str, ChannelAccount]
    assigned_before: dict[int, set[int]]  # user id -> the conversations assigned to them in the world as built
    clients: dict[str, Client] = field(default_factory=dict)
    csrf: dict[str, str] = field(default_factory=dict)  # role -> the CSRF token its browser would send

    def user(self, role: str) -> AbstractUser | None:
        return self.users.get(role)


def _visitor(account: ChannelAccount, key: str) -> tuple[Visitor, str]:
    marker = MARKERS[key]
    visitor, token = visitor_create(account=account, name="Cliente" if key in UNMARKED_NAMES else f"Cliente {marker}")
    client_id = uuid.uuid4()
    if key in ("A", "B", "C"):
        receipt = VisitorFile(f"{marker}-recibo.txt", f"receipt of {marker}\n".encode())
        visitor_post_files(visitor=visitor, client_id=client_id, text=TEXTS[key], files=[receipt])
    else:
        visitor_post(visitor=visitor, client_id=client_id, text=TEXTS[key])
    return visitor, token


def _build() -> World:
    demo = make_demo()
    admin = agent_upsert(username="ada", password=PASSWORD, role=AgentProfile.Role.ADMIN)
    webchat = demo.webchat
    webchat.secrets = {"identity_secret": SECRET_VALUES[0]}
    webchat.save(update_fields=["secrets"])
    channels = {
        "webchat": webchat,
        "inactive_webchat": ChannelAccount.objects.create(kind="webchat", name="Old site", is_active=False),
        "telegram": ChannelAccount.objects.create(
            kind="telegram",
            name="Bot",
            secrets={"bot_token": SECRET_VALUES[1], "webhook_secret": SECRET_VALUES[2]},
        ),
        "x": ChannelAccount.objects.create(
            kind="x", name="X account", settings={"user_id": "4242"}, secrets={"consumer_secret": SECRET_VALUES[3]}
        ),
        "api": ChannelAccount.objects.create(kind="api", name="Our app", secrets={"signing_secret": SECRET_VALUES[4]}),
    }

    made = {key: _visitor(webchat, key) for key in MARKERS}
    events = list(InboundEvent.objects.filter(state=InboundEvent.State.PENDING).values_list("pk", flat=True))
    report = inbound_events_process(event_ids=events)
    assert report.done == len(MARKERS), f"the matrix's customers were not all ingested: {report}"
    visitors = {key: visitor for key, (visitor, _) in made.items()}
    conversations = {
        key: Conversation.objects.select_related("queue", "contact").get(identity_id=visitor.identity_id)
        for key, visitor in visitors.items()
    }
    queues = {key: c.queue.language if c.queue else None for key, c in conversations.items()}
    wrong = {key: language for key, language in queues.items() if language != EXPECTED_QUEUE[key]}
    assert not wrong, f"language detection put the matrix's customers in other queues than planned: {wrong}"

    ids: dict[str, Any] = {"-": "", "missing": MISSING}
    for key in ("A", "B", "C", "H", "I"):
        reply = reply_create(conversation=conversations[key], author=demo.manager, text=f"Respuesta {MARKERS[key]}")
        OutboundDelivery.objects.filter(message=reply).update(
            state=OutboundDelivery.State.FAILED, last_error="the provider refused it"
        )
        note_create(conversation=conversations[key], author=demo.manager, text=f"{INTERNAL_NOTE} on {MARKERS[key]}")
    for key, scope in (("A", "es"), ("B", "ru"), ("C", "assigned")):
        conversation = conversations[key]
        inbound = Message.objects.get(conversation=conversation, direction=Message.Direction.INBOUND)
        # As intake stores an e-mail's sanitised HTML part (web chat has none; the URL serves any message's).
        Message.objects.filter(pk=inbound.pk).update(html=f"<p>HTML part of {MARKERS[key]}</p>")
        reply = Message.objects.get(conversation=conversation, direction=Message.Direction.OUTBOUND)
        ids[f"{scope}_conversation"] = conversation.pk
        ids[f"{scope}_message"] = inbound.pk
        ids[f"{scope}_reply"] = reply.pk
        ids[f"{scope}_attachment"] = Attachment.objects.get(message=inbound).pk
        ids[f"{scope}_contact"] = conversation.contact_id

    # Who has what: nobody has the Spanish and Russian conversations (auto-assignment, or the manager's reply, may
    # have given them to someone); the German one is the Spanish agent's, given by the manager.
    Conversation.objects.filter(pk__in=[c.pk for c in conversations.values()]).update(assignee=None)
    conversation_assign(conversation=conversations["C"], assignee=demo.agent_es, actor=demo.manager)
    # A Spanish conversation someone else (the manager) has: the Spanish agent sees it but may not take it.
    conversation_assign(conversation=conversations["E"], assignee=demo.manager, actor=demo.manager)
    ids["es_taken_conversation"] = conversations["E"].pk

    contact = {key: c.contact_id for key, c in conversations.items()}
    es_merge = contact_merge(
        target=Contact.objects.get(pk=contact["D"]), source=Contact.objects.get(pk=contact["E"]), actor=demo.manager
    )
    ru_merge = contact_merge(
        target=Contact.objects.get(pk=contact["F"]), source=Contact.objects.get(pk=contact["G"]), actor=demo.manager
    )
    mixed_merge = contact_merge(
        target=Contact.objects.get(pk=contact["H"]), source=Contact.objects.get(pk=contact["I"]), actor=demo.manager
    )
    ids["es_merge"], ids["ru_merge"], ids["mixed_merge"] = es_merge.pk, ru_merge.pk, mixed_merge.pk
    ids["mixed_contact"] = contact["H"]
    ids["es_merged_conversation"] = conversations["H"].pk
    ids["ru_merged_conversation"] = conversations["I"].pk
    assert ContactMerge.objects.count() == 3

    # contact-merge: "<target><-<source>"; the URL takes the target, the form names the source.
    pairs = {
        "es_contact<-es_spare": (contact["A"], contact["D"]),
        "assigned_contact<-es_spare": (contact["C"], contact["D"]),
        "ru_contact<-es_spare": (contact["B"], contact["D"]),
        "es_contact<-ru_contact": (contact["A"], contact["B"]),
        "ru_contact<-ru_spare": (contact["B"], contact["F"]),
        "missing<-es_spare": (MISSING, contact["D"]),
        "es_contact<-missing": (contact["A"], MISSING),
    }
    merge_source = {}
    for key, (target, source) in pairs.items():
        ids[key] = target
        merge_source[key] = source

    for name, account in channels.items():
        ids[f"{name}_channel"] = account.public_id
        ids[f"{name}_channel_pk"] = account.pk
    ids["missing_channel"] = MISSING_PUBLIC_ID
    ids["ru_queue"] = demo.queues["ru"].pk
    ids["agent_other_queue_profile"] = AgentProfile.objects.get(user=demo.agent_ru_offline).pk

    users = {
        "agent": demo.agent_es,
        "agent_other_queue": demo.agent_ru_offline,
        "manager": demo.manager,
        "admin": admin,
    }
    assigned_before: dict[int, set[int]] = {}
    for pk, assignee in Conversation.objects.filter(assignee__isnull=False).values_list("pk", "assignee_id"):
        assigned_before.setdefault(assignee, set()).add(pk)
    return World(
        demo=demo,
        assigned_before=assigned_before,
        users=users,
        tokens={"visitor_a": made["A"][1], "visitor_b": made["B"][1]},
        visitors=visitors,
        conversations=conversations,
        ids=ids,
        merge_source=merge_source,
        channels=channels,
    )


def _clients(world: World) -> None:
    """One browser per role, each holding the CSRF cookie a browser would have (and sending its token)."""
    plain = {
        "anonymous": None,
        "metrics_wrong_token": "Bearer wrong-token",
        "metrics_right_token": f"Bearer {METRICS_TOKEN}",
    }
    for role, header in plain.items():
        world.clients[role] = Client(enforce_csrf_checks=True, headers={"Authorization": header} if header else None)
    for role, token in world.tokens.items():
        world.clients[role] = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {token}"})
    for role, user in world.users.items():
        world.clients[role] = Client(enforce_csrf_checks=True)
        world.clients[role].force_login(user)
    # The Spanish agent's session, but a request that does not carry the CSRF token (a cross-site form).
    world.clients["agent_without_csrf_token"] = Client(enforce_csrf_checks=True)
    world.clients["agent_without_csrf_token"].force_login(world.users["agent"])
    for role, client in world.clients.items():
        response = client.get("/api/agent/session")  # ensure_csrf_cookie: what the inbox's pages do too
        assert response.status_code == 200, (role, response.status_code)
        world.csrf[role] = client.cookies["csrftoken"].value


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    media = override_settings(MEDIA_ROOT=str(tmp_path_factory.mktemp("authz-media")))
    media.enable()
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            built = _build()
            _clients(built)
            yield built
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
            media.disable()
