"""Live events to agents' and visitors' websockets through the Channels layer (Redis).

Events are sent after the transaction commits, so a socket never announces a row a reader cannot see yet.
A failed publish is logged and dropped: sockets are a convenience, the REST endpoints read the database.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
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
    """Send many events with as few Redis round trips as we can (one per event would dominate ingest time).

    Each event still reaches each of its groups as its own ``inbox.event`` message, in the order given, so the
    consumers see exactly what one ``group_send`` per event and group would have sent them.
    """
    layer = get_channel_layer()
    if layer is None or not items:
        return
    by_group: dict[str, list[dict[str, Any]]] = {}
    for groups, event in items:
        for group in dict.fromkeys(groups):
            by_group.setdefault(group, []).append(event)
    try:
        client = _pipeline_client(layer)
        if client is not None:
            _send_pipelined(layer, client, by_group)
        else:
            async_to_sync(_send_each)(layer, by_group)
    except Exception:
        logger.warning("live events not delivered", exc_info=True)


async def _send_each(layer: Any, by_group: dict[str, list[dict[str, Any]]]) -> None:
    sends = [
        layer.group_send(group, {"type": "inbox.event", "event": event})
        for group, events in by_group.items()
        for event in events
    ]
    for result in await asyncio.gather(*sends, return_exceptions=True):
        if isinstance(result, Exception):
            logger.warning("a live event was not delivered: %s", result)


_clients: dict[int, tuple[int, redis.Redis]] = {}


def _pipeline_client(layer: Any) -> redis.Redis | None:
    """A plain (synchronous) Redis client on the channel layer's own server, one per process, for bulk sends.

    Only for the single-host Redis layer whose keys and message format ``_send_pipelined`` reproduces
    (channels_redis 4.x); anything else (several hosts, Sentinel, another layer) takes group_send.
    """
    if not (
        isinstance(layer, RedisChannelLayer)
        and getattr(layer, "ring_size", 0) == 1
        and all(hasattr(layer, name) for name in ("_group_key", "_map_channel_keys_to_connection", "hosts"))
        and "master_name" not in layer.hosts[0]
    ):
        return None
    cached = _clients.get(id(layer))
    if cached is not None and cached[0] == os.getpid():  # never a connection inherited across a fork
        return cached[1]
    host = dict(layer.hosts[0])
    host.setdefault("socket_timeout", 5)  # a stuck Redis must not hold an ingest task until its time limit
    address = host.pop("address", None)
    pool = redis.ConnectionPool.from_url(address, **host) if address else redis.ConnectionPool(**host)
    client = redis.Redis(connection_pool=pool)
    _clients[id(layer)] = (os.getpid(), client)
    return client


# What group_send does first for each group (channels_redis/core.py, 4.x: ZREMRANGEBYSCORE of the members older
# than group_expiry, then ZRANGE), for all the batch's groups in one call: most of them (a visitor's, an offline
# agent's) have no member, and one command each was most of the cost of publishing a batch.
_GROUP_MEMBERS_LUA = """
local members = {}
for i=1,#KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
    members[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
end
return members
"""

# channels_redis's own group_send script (channels_redis/core.py, 4.x): add the message to each channel's sorted
# set unless that channel is over capacity.
_GROUP_SEND_LUA = """
local over_capacity = 0
local current_time = ARGV[#ARGV - 1]
local expiry = ARGV[#ARGV]
for i=1,#KEYS do
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], current_time, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""


def _send_pipelined(layer: Any, client: redis.Redis, by_group: dict[str, list[dict[str, Any]]]) -> None:
    """channels_redis's group_send for many (group, event) pairs in two round trips: one script reads every
    group's members (dropping expired ones, as group_send does), one pipeline adds every message with the layer's
    own capacity script. Same keys, same serialised messages, same capacity and expiry rules; a group nobody has
    joined (no open socket) costs one key in the first call and nothing else."""
    groups = list(by_group)
    members = client.register_script(_GROUP_MEMBERS_LUA)
    replies = members(keys=[layer._group_key(group) for group in groups], args=[int(time.time()) - layer.group_expiry])
    script = client.register_script(_GROUP_SEND_LUA)
    pipe = client.pipeline(transaction=False)
    cleaned: set[str] = set()
    scripts: list[int] = []  # positions of the scripts' answers among the pipeline's answers
    commands = 0
    for index, group in enumerate(groups):
        channels = [name.decode("utf8") for name in replies[index]]
        if not channels:
            continue
        for event in by_group[group]:
            by_connection, messages, capacities = layer._map_channel_keys_to_connection(
                channels, {"type": "inbox.event", "event": event}
            )
            keys = [key for keys in by_connection.values() for key in keys]
            for key in keys:
                if key not in cleaned:  # group_send drops a channel's expired messages before adding
                    pipe.zremrangebyscore(key, min=0, max=int(time.time()) - int(layer.expiry))
                    cleaned.add(key)
                    commands += 1
            args = [messages[key] for key in keys] + [capacities[key] for key in keys] + [time.time(), layer.expiry]
            script(keys=keys, args=args, client=pipe)
            scripts.append(commands)
            commands += 1
    if not scripts:
        return
    answers = pipe.execute()
    over = sum(int(answers[position]) for position in scripts)
    if over > 0:
        logger.info("live events: %s messages not delivered, their channels over capacity", over)


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
