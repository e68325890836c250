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


# Check-then-count in one step: when every key is under its limit, count one attempt under each (a key's window
# starts at its first attempt); otherwise count nothing and return the longest wait of the keys at their limit.
# One Lua script, so parallel attempts cannot all pass the check before any of them is counted.
_ATTEMPT_COUNT = """
local window = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then ttl = window end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'EX', window, 'NX')
  redis.call('INCR', key)
end
return 0
"""

# Take back one counted attempt, keeping the window (DECR keeps the TTL; a key that has expired stays absent).
_ATTEMPT_REFUND = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def attempt_count(limits: dict[str, int], *, window: int) -> int | None:
    """Count one attempt under each key of ``limits`` (key -> attempts allowed per ``window`` seconds) unless one of
    them has used up its attempts: then count nothing and return the seconds until that key's window ends.

    Unlike ``hit`` this raises ``redis.RedisError``: whether to fail open or closed is the caller's decision.
    """
    keys = [f"attempts:{key}" for key, limit in limits.items() if limit > 0]
    if not keys:
        return None
    args = [window, *(limit for limit in limits.values() if limit > 0)]
    client = _client()
    wait = int(client.register_script(_ATTEMPT_COUNT)(keys=keys, args=args, client=client))
    return wait or None


def attempt_refund(key: str) -> None:
    """Take back one attempt counted by ``attempt_count`` (it turned out not to count, e.g. a success)."""
    client = _client()
    client.register_script(_ATTEMPT_REFUND)(keys=[f"attempts:{key}"], client=client)


def attempts_clear(key: str) -> None:
    client = _client()
    client.delete(f"attempts:{key}")
