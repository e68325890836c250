"""What the inbox keeps per agent: canned responses and how far each agent has read each conversation."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class CannedResponse(models.Model):
    """A prepared answer in one language. Variables in the text: {contact_name}, {agent_name}, {conversation_id},
    {channel} (see services.canned_render); an unknown {name} is left as written."""

    language = models.CharField(max_length=16, help_text="ISO 639-1 code of the queue it is for")
    shortcut = models.SlugField(max_length=40, help_text="typed as /shortcut in the reply box")
    title = models.CharField(max_length=120)
    text = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["language", "shortcut"], name="canned_shortcut_unique_per_language")
        ]
        ordering = ["language", "shortcut"]

    def __str__(self) -> str:
        return f"/{self.shortcut} ({self.language})"


class ConversationRead(models.Model):
    """An agent has seen a conversation up to this moment: newer customer messages make it unread for them."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="reads")
    read_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "conversation"], name="one_read_mark_per_agent")]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.conversation_id} at {self.read_at:%Y-%m-%d %H:%M}"
