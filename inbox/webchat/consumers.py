"""A visitor's live feed. The token comes in the first frame, not the URL (URLs end up in logs)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from inbox.conversations.realtime import visitor_group
from inbox.webchat.selectors import visitor_for_token


class VisitorConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.group is None:
            token = content.get("token") if isinstance(content, dict) else None
            visitor = await database_sync_to_async(visitor_for_token)(token=str(token or ""))
            if visitor is None:
                await self.send_json({"type": "error", "error": "missing or unknown visitor token"})
                await self.close(code=4401)
                return
            self.group = visitor_group(str(visitor.uuid))
            await self.channel_layer.group_add(self.group, self.channel_name)
            await self.send_json({"type": "ready"})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def inbox_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])
