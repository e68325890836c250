"""Agents' live feed: the groups of their queues, their own assignments, and (managers) everything."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from inbox.agents.selectors import profile_of, sees_everything
from inbox.agents.services import agent_typing
from inbox.conversations.realtime import MANAGERS_GROUP, agent_group, queue_group


class AgentConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: list[str]

    @database_sync_to_async
    def _groups(self) -> list[str] | None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        profile = profile_of(user)
        if profile is None and not user.is_superuser:
            return None
        groups = [agent_group(user.pk)]
        if sees_everything(user, profile):
            groups.append(MANAGERS_GROUP)
        elif profile is not None:
            groups += [queue_group(q.pk) for q in profile.queues.all()]
        return groups

    async def connect(self) -> None:
        groups = await self._groups()
        if groups is None:
            await self.close(code=4401)
            return
        self.groups_joined = groups
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def inbox_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """{"type": "typing", "conversation": id, "state": bool}: shown in that conversation's web chat widget."""
        if not isinstance(content, dict) or content.get("type") != "typing":
            await self.send_json({"type": "error", "error": "agents send only typing frames here"})
            return
        try:
            conversation_id = int(content.get("conversation"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            await self.send_json({"type": "error", "error": "typing needs a conversation id"})
            return
        await database_sync_to_async(agent_typing)(
            user=self.scope["user"], conversation_id=conversation_id, state=bool(content.get("state"))
        )
