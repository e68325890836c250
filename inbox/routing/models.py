"""Language queues and the agents who serve them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class AgentQueue(models.Model):
    """The queue of one language. Exactly one queue is the fallback (unknown / unconfigured languages).

    The configured languages are these rows: an admin adds a language by adding a queue, no code change.
    """

    language = models.CharField(max_length=16, blank=True, help_text="ISO 639-1 code; empty for the fallback queue")
    name = models.CharField(max_length=100)
    is_fallback = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    first_response_sla_seconds = models.PositiveIntegerField(default=15 * 60)
    resolution_sla_seconds = models.PositiveIntegerField(default=24 * 3600)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["language"], condition=~Q(language=""), name="one_queue_per_language"),
            models.UniqueConstraint(fields=["is_fallback"], condition=Q(is_fallback=True), name="one_fallback_queue"),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AgentProfile(models.Model):
    class Role(models.TextChoices):
        AGENT = "agent"
        MANAGER = "manager"
        ADMIN = "admin"

    class Presence(models.TextChoices):
        ONLINE = "online"
        AWAY = "away"
        OFFLINE = "offline"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_profile")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.AGENT)
    # The language queues this agent serves (their language skills).
    queues = models.ManyToManyField(AgentQueue, related_name="agents", blank=True)
    capacity = models.PositiveIntegerField(default=5, help_text="open conversations assigned at most")
    presence = models.CharField(max_length=16, choices=Presence.choices, default=Presence.OFFLINE)
    presence_changed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} ({self.role})"
