"""A visitor's live connection. The token comes in the first frame, not the URL (URLs end up in logs).

Frames in: {"type": "auth", "token"} first; then {"type": "message", "client_id", "text"} (stored exactly once
per client_id, acknowledged) and {"type": "typing", "state"}. Events out: agent replies, typing, status.
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from inbox.conversations.realtime import visitor_group
from inbox.webchat.models import Visitor
from inbox.webchat.selectors import visitor_for_token
from inbox.webchat.services import message_rate_limited, origin_allowed, visitor_post, visitor_typing


class VisitorConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    visitor: Visitor | None = None

    async def connect(self) -> None:
        await self.accept()

    def _header(self, name: bytes) -> str:
        for key, value in self.scope.get("headers", []):
            if key == name:
                return bytes(value).decode("latin-1")
        return ""

    def _ip(self) -> str:
        client = self.scope.get("client") or ("unknown", 0)
        if settings.SWITCHBOARD_TRUST_X_FORWARDED_FOR:
            forwarded = self._header(b"x-forwarded-for").split(",")[0].strip()
            if forwarded:
                return forwarded
        return str(client[0])

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "error": "frames must be JSON objects"})
            return
        if self.visitor is None:
            await self._auth(content)
            return
        kind = content.get("type")
        if kind == "message":
            await self._message(content)
        elif kind == "typing":
            await database_sync_to_async(visitor_typing)(visitor=self.visitor, state=bool(content.get("state")))
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "error", "error": f"unknown frame type {kind!r}"})

    async def _auth(self, content: dict[str, Any]) -> None:
        token = content.get("token")
        visitor = await database_sync_to_async(visitor_for_token)(token=str(token or ""))
        if visitor is None:
            await self.send_json({"type": "error", "error": "missing or unknown visitor token"})
            await self.close(code=4401)
            return
        if not origin_allowed(visitor.account, self._header(b"origin") or None):
            await self.send_json({"type": "error", "error": "this website is not allowed to use this chat channel"})
            await self.close(code=4403)
            return
        self.visitor = visitor
        self.group = visitor_group(str(visitor.uuid))
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json({"type": "ready"})

    async def _message(self, content: dict[str, Any]) -> None:
        assert self.visitor is not None
        raw_id, text = content.get("client_id"), content.get("text")
        try:
            client_id = uuid.UUID(str(raw_id))
        except ValueError:
            await self.send_json({"type": "error", "client_id": raw_id, "error": "client_id must be a UUID"})
            return
        if not isinstance(text, str) or not text.strip():
            await self.send_json({"type": "error", "client_id": raw_id, "error": "text must not be empty"})
            return
        if len(text) > settings.SWITCHBOARD_MAX_MESSAGE_CHARS:
            error = f"text is longer than {settings.SWITCHBOARD_MAX_MESSAGE_CHARS} characters"
            await self.send_json({"type": "error", "client_id": raw_id, "error": error})
            return
        wait = await database_sync_to_async(message_rate_limited)(self.visitor, self._ip())
        if wait is not None:
            error = f"You are sending messages too fast. Try again in {wait:.0f} s."
            await self.send_json({"type": "error", "client_id": raw_id, "error": error, "retry_after": wait})
            return
        created = await database_sync_to_async(visitor_post)(
            visitor=self.visitor,
            client_id=client_id,
            text=text,
            accept_language=self._header(b"accept-language"),
        )
        await self.send_json({"type": "ack", "client_id": str(client_id), "duplicate": not created})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def inbox_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])
