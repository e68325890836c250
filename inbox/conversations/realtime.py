"""Live events to agents' and visitors' websockets through the Channels layer (Redis).

Events are sent after the transaction commits, so a socket never announces a row a reader cannot see yet.
A failed publish is logged and dropped: sockets are a convenience, the REST endpoints read the database.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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


Outgoing = list[tuple[list[str], dict[str, Any]]]
_collector: contextvars.ContextVar[Outgoing | None] = contextvars.ContextVar("realtime_collector", default=None)


def publish(groups: Iterable[str], event: Mapping[str, Any]) -> None:
    publish_many([(list(groups), dict(event))])


def publish_many(items: Outgoing) -> None:
    """Send many events in one crossing into the event loop (one per message would dominate ingest time)."""
    layer = get_channel_layer()
    if layer is None or not items:
        return

    async def send_all() -> None:
        sends = [
            layer.group_send(group, {"type": "inbox.event", "event": event})
            for groups, event in items
            for group in dict.fromkeys(groups)
        ]
        for result in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(result, Exception):
                logger.warning("a live event was not delivered: %s", result)

    try:
        async_to_sync(send_all)()
    except Exception:
        logger.warning("live events not delivered", exc_info=True)


def publish_on_commit(groups: Iterable[str], event: Mapping[str, Any]) -> None:
    item = (list(groups), dict(event))
    collected = _collector.get()
    if collected is not None:
        collected.append(item)
    else:
        transaction.on_commit(lambda: publish_many([item]))


@contextmanager
def collect_on_commit() -> Iterator[None]:
    """Within the block, live events are gathered and sent together after the surrounding commit.

    Use inside a transaction: if it rolls back, Django drops the hook and nothing is sent.
    """
    items: Outgoing = []
    token = _collector.set(items)
    try:
        yield
    finally:
        _collector.reset(token)
    if items:
        transaction.on_commit(lambda: publish_many(items))
