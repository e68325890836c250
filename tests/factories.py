"""Building blocks for tests: real rows through the real services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractUser

from inbox.agents.services import agent_upsert
from inbox.conversations.models import ChannelAccount
from inbox.routing.models import AgentProfile, AgentQueue
from inbox.routing.selectors import clear_cache
from inbox.routing.services import queue_ensure_fallback

LANGUAGES = ["en", "es", "zh", "ru", "de", "fr", "pt", "it", "ar", "tr", "ja", "ko", "uk", "vi"]
PASSWORD = "test-password-123"


@dataclass
class Demo:
    queues: dict[str, AgentQueue]
    fallback: AgentQueue
    agent_es: AbstractUser
    agent_en: AbstractUser
    agent_ru_offline: AbstractUser
    manager: AbstractUser
    webchat: ChannelAccount


def make_demo(**webchat_settings: Any) -> Demo:
    clear_cache()
    queues = {lang: AgentQueue.objects.create(language=lang, name=lang.upper()) for lang in LANGUAGES}
    fallback = queue_ensure_fallback()
    online = AgentProfile.Presence.ONLINE
    agent_es = agent_upsert(username="ana", password=PASSWORD, languages=["es"], presence=online, capacity=3)
    agent_en = agent_upsert(username="ben", password=PASSWORD, languages=["en"], presence=online, capacity=3)
    agent_ru = agent_upsert(
        username="oleg", password=PASSWORD, languages=["ru"], presence=AgentProfile.Presence.OFFLINE
    )
    manager = agent_upsert(username="maria", password=PASSWORD, role=AgentProfile.Role.MANAGER)
    webchat = ChannelAccount.objects.create(kind="webchat", name="Website", settings=webchat_settings)
    clear_cache()
    return Demo(queues, fallback, agent_es, agent_en, agent_ru, manager, webchat)
