"""What an agent may see. Every agent endpoint reads conversations through ``conversations_visible_to``."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from inbox.conversations.models import Conversation, Message
from inbox.routing.models import AgentProfile


def profile_of(user: AbstractBaseUser | AnonymousUser) -> AgentProfile | None:
    if not user.is_authenticated:
        return None
    return AgentProfile.objects.filter(user_id=user.pk).prefetch_related("queues").first()


def sees_everything(user: AbstractBaseUser | AnonymousUser, profile: AgentProfile | None) -> bool:
    return bool(getattr(user, "is_superuser", False)) or (
        profile is not None and profile.role in (AgentProfile.Role.MANAGER, AgentProfile.Role.ADMIN)
    )


def conversations_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Conversation]:
    """Managers and admins: everything. Agents: their language queues and what is assigned to them."""
    profile = profile_of(user)
    base = Conversation.objects.select_related("account", "queue", "identity", "contact")
    if sees_everything(user, profile):
        return base
    if profile is None:
        return base.none()
    return base.filter(Q(queue__in=profile.queues.all()) | Q(assignee_id=user.pk))


def conversation_messages(*, conversation: Conversation) -> QuerySet[Message]:
    return conversation.messages.select_related("delivery", "author", "sender_identity").order_by("created_at", "id")
