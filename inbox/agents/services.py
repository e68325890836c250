"""Writes for agents and their set-up."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db import transaction
from django.utils import timezone

from inbox.agents.models import CannedResponse, ConversationRead
from inbox.agents.selectors import conversations_visible_to
from inbox.conversations.models import Conversation
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


# A variable is {name} with a plain identifier inside; anything else ("{", "{{x}}", "{ x }") is text.
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def canned_render(*, canned: CannedResponse, conversation: Conversation, agent: Any) -> str:
    """The canned text with {contact_name}, {agent_name}, {conversation_id} and {channel} filled in.

    One pass with re.sub rather than str.format: an unknown {name} or a stray brace stays as written, and a
    value that itself contains braces (a customer named "{agent_name}") is inserted as text, never expanded.
    """
    contact = conversation.contact
    values = {
        "contact_name": contact.name or conversation.identity.display_name or "",
        "agent_name": getattr(agent, "first_name", "") or agent.get_username(),
        "conversation_id": str(conversation.pk),
        "channel": conversation.account.name,
    }

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return _VARIABLE.sub(fill, canned.text)


def conversation_mark_read(*, conversation: Conversation, user: Any, read_at: Any = None) -> None:
    """The agent has seen the conversation up to now: one INSERT ... ON CONFLICT DO UPDATE, so two tabs opening
    it at once never collide on the (user, conversation) constraint.

    `read_at`: the agent's read mark as the caller already read it. When it is at or after the conversation's last
    message nothing is written (the unread marker compares the two), so opening a conversation again is no write."""
    last = conversation.last_message_at
    if read_at is not None and last is not None and read_at >= last:
        return
    ConversationRead.objects.bulk_create(
        [ConversationRead(user_id=user.pk, conversation_id=conversation.pk, read_at=timezone.now())],
        update_conflicts=True,
        unique_fields=["user", "conversation"],
        update_fields=["read_at"],
    )
