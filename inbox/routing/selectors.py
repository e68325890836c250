"""Reads for routing: the configured languages, the queue of a language, agents with free capacity."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet

from inbox.routing.models import AgentProfile, AgentQueue

_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, object]] = {}


def _cached(key: str, load):  # type: ignore[no-untyped-def]
    """A few seconds of per-process caching: queues change rarely, and this runs once per ingested message."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < settings.SWITCHBOARD_ROUTING_CACHE_SECONDS:
            return hit[1]
    value = load()
    with _cache_lock:
        _cache[key] = (now, value)
    return value


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def configured_languages() -> frozenset[str]:
    """The languages with an active queue: the detector is restricted to these."""

    def load() -> frozenset[str]:
        return frozenset(
            AgentQueue.objects.filter(is_active=True).exclude(language="").values_list("language", flat=True)
        )

    result: frozenset[str] = _cached("languages", load)
    return result


def queue_ids_by_language() -> dict[str, int]:
    """language -> queue id, with "" -> the fallback queue's id (when one exists)."""

    def load() -> dict[str, int]:
        mapping: dict[str, int] = {}
        for qid, language, is_fallback in AgentQueue.objects.filter(is_active=True).values_list(
            "id", "language", "is_fallback"
        ):
            if is_fallback:
                mapping[""] = qid
            if language:
                mapping[language] = qid
        return mapping

    result: dict[str, int] = _cached("queues", load)
    return result


def queue_for_language(language: str) -> int | None:
    """The id of the queue for that language; the fallback queue when none (or None if no fallback exists)."""
    mapping = queue_ids_by_language()
    return mapping.get(language) or mapping.get("")


OPEN_LOAD = Q(user__assigned__status__in=["open", "pending"])


def agents_with_capacity(*, queue_id: int) -> QuerySet[AgentProfile]:
    """Online agents serving the queue and under capacity, least loaded first (ties: longest since presence)."""
    return (
        AgentProfile.objects.filter(queues=queue_id, presence=AgentProfile.Presence.ONLINE, user__is_active=True)
        .annotate(load=Count("user__assigned", filter=OPEN_LOAD, distinct=True))
        .filter(load__lt=F("capacity"))
        .order_by("load", "presence_changed_at", "id")
    )
