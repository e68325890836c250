"""Web chat visitors. The token a visitor holds is never stored: only its SHA-256."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class Visitor(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)  # the identity handle
    account = models.ForeignKey("conversations.ChannelAccount", on_delete=models.CASCADE, related_name="visitors")
    identity = models.OneToOneField("conversations.ContactIdentity", on_delete=models.CASCADE, related_name="visitor")
    token_hash = models.CharField(max_length=64, unique=True)
    # The host site's own user id, when its server signed it (identity verification): the same user on another
    # device or browser continues the same conversation.
    verified_user_id = models.CharField(max_length=200, blank=True, default="")
    # "Continue by email": agents' replies are also sent here by the channel's e-mail account.
    email = models.EmailField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "verified_user_id"],
                condition=~Q(verified_user_id=""),
                name="one_visitor_per_verified_user",
            )
        ]

    def __str__(self) -> str:
        return f"visitor {self.uuid}"


class VisitorToken(models.Model):
    """A further token of the same visitor: a verified user signing in from another device or browser gets one,
    so every device keeps its own (only the hash is stored, as for the first)."""

    visitor = models.ForeignKey(Visitor, on_delete=models.CASCADE, related_name="tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"token of {self.visitor}"
