"""Web chat visitors. The token a visitor holds is never stored: only its SHA-256."""

from __future__ import annotations

import uuid

from django.db import models


class Visitor(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)  # the identity handle
    account = models.ForeignKey("conversations.ChannelAccount", on_delete=models.CASCADE, related_name="visitors")
    identity = models.OneToOneField("conversations.ContactIdentity", on_delete=models.CASCADE, related_name="visitor")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"visitor {self.uuid}"
