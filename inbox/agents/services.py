"""Writes for agents and their set-up."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db import transaction

from inbox.agents.selectors import conversations_visible_to
from inbox.conversations.realtime import publish, visitor_group
from inbox.routing.models import AgentProfile, AgentQueue


def agent_upsert(
    *,
    username: str,
    password: str,
    role: str = AgentProfile.Role.AGENT,
    languages: Iterable[str] = (),
    capacity: int = 5,
    presence: str = AgentProfile.Presence.OFFLINE,
    email: str = "",
) -> AbstractUser:
    """Create or update a user with its agent profile and language skills (the queues of those languages)."""
    User = get_user_model()
    with transaction.atomic():
        user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
        user.set_password(password)
        user.is_staff = role in (AgentProfile.Role.ADMIN, AgentProfile.Role.MANAGER)
        user.is_superuser = role == AgentProfile.Role.ADMIN
        user.save()
        profile, _ = AgentProfile.objects.update_or_create(
            user=user, defaults={"role": role, "capacity": capacity, "presence": presence}
        )
        languages = list(languages)
        queues = list(AgentQueue.objects.filter(language__in=languages))
        missing = set(languages) - {q.language for q in queues}
        if missing:
            raise ValueError(f"no queue for language(s) {', '.join(sorted(missing))}")
        profile.queues.set(queues)
    return user  # type: ignore[return-value]


def agent_typing(*, user: Any, conversation_id: int, state: bool) -> bool:
    """An agent is typing in a conversation they can see: its web chat visitor sees "typing...". Returns whether
    it was relayed (only to a web chat visitor, only for a conversation visible to this agent)."""
    conversation = conversations_visible_to(user).select_related("identity").filter(pk=conversation_id).first()
    if conversation is None or conversation.identity.kind != "webchat":
        return False
    publish([visitor_group(conversation.identity.handle)], {"type": "typing", "from": "agent", "state": state})
    return True
