"""Writes of the metrics app: the hourly snapshots that keep what timestamps cannot tell later (who waited when).

The beat runs ``snapshot_take`` every minute (``workers/tasks.py: metrics_snapshot``); each run rewrites the rows of
the current hour, so a finished hour's rows hold the state at its end.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from django.utils import timezone

from inbox.metrics.models import MetricSnapshot
from inbox.metrics.selectors import hour_of, snapshot_figures


def snapshot_take(*, at: datetime | None = None) -> int:
    """Write or update the snapshot rows (one per queue, one for all) of the hour containing ``at``; returns
    how many rows were written.

    Idempotent: every row is an ``update_or_create`` on (queue, hour), backed by the unique constraints, so two
    beats at once, or a redelivered task, leave exactly one row per queue and hour, holding the latest figures
    (the loser of an INSERT race gets the IntegrityError inside ``get_or_create``'s savepoint and updates the
    winner's row instead). Each row is its own short transaction: a concurrent run never waits on more than
    one row lock, and no two runs can deadlock.
    """
    taken_at = timezone.now()
    at = at or taken_at
    bucket = hour_of(at)
    figures = snapshot_figures(bucket=bucket, now=at)
    for row in figures:
        values = asdict(row)
        queue_id = values.pop("queue_id")
        MetricSnapshot.objects.update_or_create(
            queue_id=queue_id, bucket=bucket, defaults={**values, "taken_at": taken_at}
        )
    return len(figures)


def metrics_refresh() -> int:
    """The beat's minute: this hour's snapshot rows, and the all-time part of /metrics for the hours before this
    one in Redis, before a scrape needs it (inbox/metrics/prometheus.py). Returns the snapshot rows written."""
    from inbox.metrics.prometheus import metrics_prepare

    count = snapshot_take()
    metrics_prepare()
    return count
