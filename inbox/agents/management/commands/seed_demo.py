"""A demo install: language queues, a manager, an admin, agents per language, a web chat channel. Idempotent."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from inbox.agents.services import agent_upsert
from inbox.conversations.models import ChannelAccount
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
        self.stdout.write(f"demo ready; web chat key {webchat.public_id}")
        self.stdout.write(f"logins (password {DEMO_PASSWORD}): admin, manager, " + ", ".join(a for a, _ in AGENTS))
