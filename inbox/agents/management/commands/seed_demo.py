"""A demo install: language queues, a manager, an admin, agents per language, a web chat channel. Idempotent."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from inbox.agents.models import CannedResponse
from inbox.agents.services import agent_upsert
from inbox.conversations.models import ChannelAccount
from inbox.conversations.services import inbound_events_record
from inbox.routing.models import AgentProfile, AgentQueue
from inbox.routing.services import queue_ensure_fallback

QUEUES = [
    ("en", "English"),
    ("es", "Spanish"),
    ("zh", "Chinese"),
    ("ru", "Russian"),
    ("de", "German"),
    ("fr", "French"),
    ("pt", "Portuguese"),
    ("tr", "Turkish"),
    ("ar", "Arabic"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("vi", "Vietnamese"),
]
DEMO_PASSWORD = "switchboard-demo"  # noqa: S105 - a demo install's documented login, printed at start-up
AGENTS = [
    ("agent-en", ["en"]),
    ("agent-es", ["es", "en"]),
    ("agent-zh", ["zh", "en"]),
    ("agent-ru", ["ru", "en"]),
]


# Canned responses per language: (language, shortcut, title, text with variables).
CANNED = [
    ("en", "hello", "Greeting", "Hi {contact_name}, this is {agent_name} from support. How can I help?"),
    ("en", "order", "Ask for the order number", "Could you send me your order number, please? I'll look it up."),
    ("es", "hola", "Saludo", "Hola {contact_name}, soy {agent_name} del equipo de soporte. ¿En qué puedo ayudarte?"),
    ("es", "pedido", "Número de pedido", "¿Me puedes enviar tu número de pedido, por favor? Lo reviso enseguida."),
    ("ru", "privet", "Приветствие", "Здравствуйте, {contact_name}! Меня зовут {agent_name}, чем могу помочь?"),
    ("zh", "nihao", "问候", "您好，我是客服{agent_name}，请问有什么可以帮您？"),
]
# A few customers already waiting, so the inbox is not empty on first sight. Recorded as raw web chat events with
# fixed ids: seeding again stores nothing twice; the worker ingests and routes them like any message.
SAMPLE_MESSAGES = [
    ("demo-visitor-es", "Hola, hice un pedido hace una semana y todavía no ha llegado. ¿Pueden ayudarme?"),
    ("demo-visitor-en", "Hi! I was charged twice for my last order. Can you refund one of the payments?"),
    ("demo-visitor-ru", "Здравствуйте! Не могу войти в личный кабинет, пишет, что пароль неверный."),
    ("demo-visitor-zh", "你好，我想修改收货地址，订单还没有发货。"),
]


class Command(BaseCommand):
    help = f"Seed a demo: queues, manager/admin/agents (password {DEMO_PASSWORD}), a web chat channel."

    def handle(self, *args: Any, **options: Any) -> None:
        for language, name in QUEUES:
            AgentQueue.objects.get_or_create(language=language, defaults={"name": name})
        queue_ensure_fallback()
        agent_upsert(username="admin", password=DEMO_PASSWORD, role=AgentProfile.Role.ADMIN)
        agent_upsert(username="manager", password=DEMO_PASSWORD, role=AgentProfile.Role.MANAGER)
        for username, languages in AGENTS:
            agent_upsert(
                username=username,
                password=DEMO_PASSWORD,
                languages=languages,
                presence=AgentProfile.Presence.ONLINE,
            )
        webchat, _ = ChannelAccount.objects.get_or_create(kind="webchat", name="Demo website")
        for language, shortcut, title, text in CANNED:
            CannedResponse.objects.get_or_create(
                language=language, shortcut=shortcut, defaults={"title": title, "text": text}
            )
        inbound_events_record(
            account=webchat,
            events=[
                (f"{visitor}:seed", {"visitor": visitor, "client_id": f"{visitor}:seed", "text": text})
                for visitor, text in SAMPLE_MESSAGES
            ],
        )
        self.stdout.write(f"demo ready; web chat key {webchat.public_id}")
        self.stdout.write(f"logins (password {DEMO_PASSWORD}): admin, manager, " + ", ".join(a for a, _ in AGENTS))
