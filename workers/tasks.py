"""Thin tasks: load by id, call one service, decide about retry."""

from __future__ import annotations

import gc
import logging

from celery.signals import worker_init
from django.db import DatabaseError, InterfaceError

from connectors.base import TransientError
from inbox.conversations import services
from inbox.metrics import services as metrics
from inbox.routing import services as routing
from inbox.taskqueue import (
    ASSIGN_WAITING,
    FETCH_FILES,
    METRICS_SNAPSHOT,
    PROCESS_INBOUND,
    SEND_DELIVERY,
    SWEEP,
    app,
)
from workers.base import SwitchboardTask

logger = logging.getLogger(__name__)

# Only a lost database connection is worth a broker retry; everything else is recorded in the rows.
RETRY_ON = (DatabaseError, InterfaceError)


@worker_init.connect
def _freeze_startup_objects(**_: object) -> None:
    """After the start-up (Django, the language models: workers/app.py warms them first), before the pool forks.

    An ingest batch allocates enough objects to trigger full garbage collections, and each one walked the ~150,000
    objects every process has from its start-up (~10 % of the CPU of an ingest worker here). Frozen, they are
    never scanned again, and the children stop touching the shared pages' object headers (copy-on-write). See
    https://docs.python.org/3/library/gc.html#gc.freeze.
    """
    gc.collect()
    gc.freeze()


@app.task(name=PROCESS_INBOUND, base=SwitchboardTask, bind=True, autoretry_for=RETRY_ON, retry_backoff=True)
def process_inbound(self: SwitchboardTask, event_ids: list[int]) -> dict[str, int]:
    report = services.inbound_events_process(event_ids=event_ids)
    return {
        "done": report.done,
        "failed": report.failed,
        "retry": report.retry,
        "skipped": report.skipped,
        "per_message": sum(report.per_message.values()),
    }


@app.task(name=SEND_DELIVERY, base=SwitchboardTask, bind=True, autoretry_for=RETRY_ON, retry_backoff=True)
def send_delivery(self: SwitchboardTask, delivery_id: int) -> str:
    return services.delivery_attempt(delivery_id=delivery_id)


@app.task(
    name=FETCH_FILES,
    base=SwitchboardTask,
    bind=True,
    autoretry_for=(*RETRY_ON, TransientError),
    retry_backoff=True,
    max_retries=5,
)
def fetch_files(self: SwitchboardTask, message_id: int) -> int:
    return services.message_files_fetch(message_id=message_id)


@app.task(name=ASSIGN_WAITING, base=SwitchboardTask, bind=True, autoretry_for=RETRY_ON, retry_backoff=True)
def assign_waiting(self: SwitchboardTask, queue_id: int) -> int:
    return routing.assign_waiting(queue_id=queue_id)


@app.task(name=SWEEP, base=SwitchboardTask, bind=True)
def sweep(self: SwitchboardTask) -> dict[str, int]:
    report = services.sweep_stuck_work()
    return {"events": report.events, "deliveries": report.deliveries, "uncertain": report.uncertain}


@app.task(name=METRICS_SNAPSHOT, base=SwitchboardTask, bind=True, autoretry_for=RETRY_ON, retry_backoff=True)
def metrics_snapshot(self: SwitchboardTask) -> int:
    return metrics.metrics_refresh()
