"""Boot Django, take the Celery app from ``inbox.taskqueue``, register the tasks, warm the models before fork."""

from __future__ import annotations

import logging
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
django.setup()

from celery.signals import worker_init  # noqa: E402

from inbox.taskqueue import app  # noqa: E402

logger = logging.getLogger(__name__)


# The queues whose tasks detect languages (ingest; routing re-detects on a language change).
DETECTING_QUEUES = frozenset({"ingest", "routing"})


def _consumed_queues(worker: object) -> set[str] | None:
    """The queues this worker consumes (-Q), or None when it consumes every queue."""
    queues = getattr(getattr(getattr(worker, "app", None), "amqp", None), "queues", None)
    consume_from = getattr(queues, "consume_from", None)
    return set(consume_from) if consume_from else None


@worker_init.connect
def _warm_up(sender: object = None, **_: object) -> None:
    """Load the language models in the parent before the pool forks, so children share their pages. A worker that
    consumes none of the detecting queues (an outbound-only worker) skips it: ~280 MiB it would never use."""
    from inbox.routing import langid
    from inbox.routing.selectors import configured_languages

    queues = _consumed_queues(sender)
    if queues is not None and not queues & DETECTING_QUEUES:
        logger.info("queues %s detect no language: the language models are not loaded", ", ".join(sorted(queues)))
        from django.db import connections

        connections.close_all()
        return
    try:
        languages = configured_languages()
        langid.warm_up(languages)
        logger.info("language models loaded for %s", ", ".join(sorted(languages)) or "no languages")
    except Exception:
        logger.warning("could not warm up the language detector (database not ready?)", exc_info=True)
    finally:
        # Never carry the parent's database connection into forked children.
        from django.db import connections

        connections.close_all()


import workers.tasks  # noqa: E402, F401  (registers the tasks on the app)

app.steps["worker"].add("workers.health:WorkerHeartbeat")  # heartbeat for /metrics (workers/health.py)

__all__ = ["app"]
