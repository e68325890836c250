"""Live events to agents' and visitors' websockets through the Channels layer (Redis).

Events are sent after the transaction commits, so a socket never announces a row a reader cannot see yet.
A failed publish is logged and dropped: sockets are a convenience, the REST endpoints read the database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def queue_group(queue_id: int) -> str:
    return f"queue.{queue_id}"


def agent_group(user_id: int) -> str:
    return f"agent.{user_id}"


def visitor_group(handle: str) -> str:
    return f"visitor.{handle}"


MANAGERS_GROUP = "managers"


def publish(groups: Iterable[str], event: Mapping[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "inbox.event", "event": dict(event)}
    for group in set(groups):
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            logger.warning("live event to %s not delivered", group, exc_info=True)


def publish_on_commit(groups: Iterable[str], event: Mapping[str, Any]) -> None:
    groups = list(groups)
    transaction.on_commit(lambda: publish(groups, event))
