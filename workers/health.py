"""Worker heartbeat for /metrics: each worker writes ``hostname -> unix time`` into a Redis hash every 10 s.

A bootstep on the worker blueprint (registered in workers/app.py). The beat runs on the worker's own timer, which is
driven by the main process's event loop: a worker whose loop is stuck (or whose broker connection is gone) stops
beating, and ``switchboard_worker_up`` turns 0 thirty seconds later. A warm or cold shutdown removes the entry, so a
worker stopped on purpose disappears from the metrics instead of showing as down; one killed with SIGKILL stays 0
until the metrics view forgets it (an hour). The hash lives on the broker's Redis: the workers need it anyway.

Celery's own worker heartbeats (events) are not used: they need gossip/events enabled and a listener process,
and ``celery inspect ping`` is a broadcast round trip too slow for a scrape.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import bootsteps

from inbox.metrics.prometheus import HEARTBEAT_INTERVAL_SECONDS, WORKERS_KEY, broker_client

logger = logging.getLogger(__name__)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Beat at start, then every HEARTBEAT_INTERVAL_SECONDS on the worker timer; delete the entry at shutdown."""

    requires = ("celery.worker.components:Timer",)
    label = "switchboard heartbeat"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref: Any = None
        self.client: redis.Redis | None = None
        self.failing = False

    def start(self, parent: Any) -> None:
        try:
            self.client = broker_client()
        except ValueError as exc:  # a broker URL redis-py cannot read: no heartbeat, but the worker still works
            logger.warning("worker heartbeat disabled: %s", exc)
            return
        self.beat(parent)
        self.timer_ref = parent.timer.call_repeatedly(HEARTBEAT_INTERVAL_SECONDS, self.beat, (parent,), priority=10)

    def beat(self, parent: Any) -> None:
        if self.client is None:
            return
        try:
            self.client.hset(WORKERS_KEY, parent.hostname, f"{time.time():.3f}")
        except (redis.RedisError, OSError) as exc:
            # Once per outage: the broker connection's own errors tell the rest of the story.
            if not self.failing:
                logger.warning("worker heartbeat: cannot reach Redis: %s", exc)
            self.failing = True
        else:
            if self.failing:
                logger.info("worker heartbeat: Redis reachable again")
            self.failing = False

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None
        if self.client is None:
            return
        try:
            self.client.hdel(WORKERS_KEY, parent.hostname)
        except redis.RedisError as exc:
            logger.warning("worker heartbeat: could not remove %s at shutdown: %s", parent.hostname, exc)
        finally:
            self.client.close()
            self.client = None

    def terminate(self, parent: Any) -> None:
        self.stop(parent)
