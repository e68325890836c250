"""The Celery application and the one way services hand work to the workers.

The app object lives here, in ``inbox``, so that services can enqueue by task *name* without importing
``workers`` (dependencies run workers -> inbox -> connectors); ``workers/`` registers the task bodies on it.

Every enqueue happens after the surrounding transaction commits (``transaction.on_commit``), as Zulip's
``queue_event_on_commit`` does: a task never runs before the rows it names are visible, and a rolled-back
transaction enqueues nothing. The price is that a crash between commit and enqueue loses the broker message;
that loss is made harmless by the beat sweeper (``inbox/conversations/services/sweep.py: sweep_stuck_work``), which
re-enqueues any event or delivery that waited too long — the database is the source of truth.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from django.db import transaction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")

app = Celery("switchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")

logger = logging.getLogger(__name__)

# Task names: the contract between services (which enqueue) and workers/tasks.py (which run them).
PROCESS_INBOUND = "switchboard.ingest.process_inbound"
SEND_DELIVERY = "switchboard.outbound.send_delivery"
FETCH_FILES = "switchboard.ingest.fetch_files"
ASSIGN_WAITING = "switchboard.routing.assign_waiting"
SWEEP = "switchboard.maintenance.sweep"
METRICS_SNAPSHOT = "switchboard.maintenance.metrics_snapshot"


def enqueue(name: str, *args: Any, countdown: float | None = None) -> None:
    """Send the task now. Use only outside a transaction; inside one, use :func:`enqueue_on_commit`."""
    try:
        app.send_task(name, args=args, countdown=countdown)
    except Exception:
        # The row is committed; the sweeper will pick it up. Say so rather than failing the caller.
        logger.exception("enqueue of %s%r failed; the sweeper will retry it", name, args)


def enqueue_on_commit(name: str, *args: Any, countdown: float | None = None) -> None:
    transaction.on_commit(lambda: enqueue(name, *args, countdown=countdown))
