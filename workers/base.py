"""The base class every Switchboard task uses: the reliability settings in one place, with their reasons."""

from __future__ import annotations

from typing import Any

from celery import Task
from django.db import close_old_connections


class SwitchboardTask(Task):  # type: ignore[misc]
    # Acknowledge after the task ran, and give the message back if the worker process died: with the
    # database claim/lease in the services, a redelivered task is harmless, a lost one is not.
    acks_late = True
    reject_on_worker_lost = True
    # Below the broker's visibility timeout (1 h), or Redis would hand a running task to a second worker.
    soft_time_limit = 120
    time_limit = 180
    # Broker-level retries are for broker/database hiccups only; business retries live in the database.
    max_retries = 3
    default_retry_delay = 5
    ignore_result = True

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        close_old_connections()

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        close_old_connections()
