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


@worker_init.connect
def _warm_up(**_: object) -> None:
    """Load the language models in the parent before the pool forks, so children share their pages."""
    from inbox.routing import langid
    from inbox.routing.selectors import configured_languages

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
