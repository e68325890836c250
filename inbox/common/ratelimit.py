"""Fixed-window rate limits kept in Redis, shared by every web process: ``hit`` counts one request and says how long
to wait when the limit is passed. Redis being down never blocks a customer: the request is let through (logged).
"""

from __future__ import annotations

import functools
import logging
import time

import redis
from django.conf import settings

logger = logging.getLogger(__name__)


@functools.cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1.0, socket_connect_timeout=1.0)


def hit(key: str, *, limit: int, window: int) -> float | None:
    """Count one request under ``key``; None when within ``limit`` per ``window`` seconds, else the seconds until
    the window ends (what the client should wait)."""
    if limit <= 0:
        return None
    now = time.time()
    bucket = f"ratelimit:{key}:{int(now // window)}"
    try:
        pipe = _client().pipeline()
        pipe.incr(bucket)
        pipe.expire(bucket, window + 1)
        count = int(pipe.execute()[0])
    except redis.RedisError:
        logger.warning("rate limit store unavailable; letting %s through", key, exc_info=True)
        return None
    if count <= limit:
        return None
    return max(1.0, round(window - now % window, 1))
