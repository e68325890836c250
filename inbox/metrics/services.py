"""Writes of the metrics app, all run by the beat every minute (``workers/tasks.py: metrics_snapshot`` ->
``metrics_refresh``):

* ``snapshot_take``: the hourly snapshots that keep what timestamps cannot tell later (who waited when); each run
  rewrites the rows of the current hour, so a finished hour's rows hold the state at its end;
* ``hours_seal``: the finished hours' conversation events (``MetricHour``), from which the dashboard merges long
  ranges instead of reading every conversation again (``inbox/metrics/hours.py``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from inbox.metrics.expressions import HOUR, floor_to
from inbox.metrics.hours import DAY, hour_contents, rollup, within
from inbox.metrics.models import MetricHour, MetricSnapshot
from inbox.metrics.selectors import hour_of, snapshot_figures

logger = logging.getLogger(__name__)

# The advisory lock (class, object) between the sealing beat (exclusive) and the trigger on conversations (shared):
# the same numbers are in migration 0002_metrichour.
HOUR_LOCK = (1396853576, 0)
# How far back the beat keeps finished hours stored: the longest range the dashboard accepts (views.MAX_RANGE) and a
# day. Older hours stay valid (the trigger still guards them) but are not written any more.
SEAL_HORIZON = timedelta(days=367)
# An hour is sealed no sooner than this after its end (and only once every transaction begun before its end is over).
SEAL_GRACE = timedelta(minutes=1)
# Hours written per beat run at most (newest first), and per transaction: a first run on a year of data catches up in
# about an hour of beats, the last 30 days within its first five minutes; the lock is held one chunk at a time.
SEAL_PER_RUN = 7 * 24
SEAL_CHUNK = 24


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


def _settled() -> datetime | None:
    """The database's clock minus the grace, or the start of its oldest other transaction when earlier: every hour
    that ended by then can be sealed (no transaction that began before its end is still running). Read from the
    database, whose clock the trigger uses too. None when the lock is held elsewhere (another beat sealing, or a
    transaction changing a stored hour right now): try again at the next beat."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", HOUR_LOCK)
        if not cursor.fetchone()[0]:
            return None
        # Client backends only: autovacuum and other workers run long transactions that never write conversations.
        cursor.execute(
            """
            SELECT now(), (SELECT min(xact_start) FROM pg_stat_activity
                            WHERE datname = current_database() AND backend_type = 'client backend'
                              AND pid <> pg_backend_pid() AND xact_start IS NOT NULL)
            """
        )
        db_now, oldest = cursor.fetchone()
    settled: datetime = db_now - SEAL_GRACE
    return min(settled, oldest) if oldest is not None else settled


def hours_seal(*, start: datetime | None = None, end: datetime | None = None, limit: int = SEAL_PER_RUN) -> int:
    """Store the finished hours of ``[start, end)`` that have no ``MetricHour`` row yet (default: the last
    ``SEAL_HORIZON``), newest first, at most ``limit`` hours, and roll every whole UTC day whose 24 hours are stored
    into a day row; returns how many rows were written. PostgreSQL only (elsewhere no trigger would keep them
    right): 0.

    An hour is written only once nothing can change it any more without a trigger seeing it: it ended before the
    database's clock minus ``SEAL_GRACE``, and before the oldest transaction still running elsewhere began (a
    transaction begun in the hour may yet commit a change to it, which the trigger leaves alone as "current"). Each
    chunk of hours is one transaction holding the exclusive side of ``HOUR_LOCK``: a change to a stored hour (whose
    trigger takes the shared side) waits for the chunk, then deletes what it wrote; a chunk waits for nothing (it
    tries the lock and leaves the hours to the next beat). Idempotent: rows are upserts on (bucket, hours).
    """
    if connection.vendor != "postgresql":
        return 0
    written = hours_written = 0
    while hours_written < limit:
        with transaction.atomic():
            settled = _settled()
            if settled is None:
                break
            last = hour_of(settled)  # the hours before it ended by ``settled``
            if end is not None:
                last = min(last, hour_of(end))
            first = hour_of(start) if start is not None else last - SEAL_HORIZON
            if first >= last:
                break
            stored = set(
                MetricHour.objects.filter(hours=1, bucket__gte=first, bucket__lt=last).values_list("bucket", flat=True)
            )
            missing: list[datetime] = []
            at = last - HOUR
            while at >= first and len(missing) < min(SEAL_CHUNK, limit - hours_written):
                if at not in stored:
                    missing.append(at)
                at -= HOUR
            taken_at = timezone.now()
            rows = [
                MetricHour(bucket=bucket, hours=1, data=data, taken_at=taken_at)
                for run_start, run_end in _runs(missing)
                for bucket, data in hour_contents(start=run_start, end=run_end).items()
            ]
            _upsert(rows)
            days = _days_rolled_up(first, last, stored | set(missing), taken_at)
            hours_written += len(rows)
            written += len(rows) + days
            if not rows:
                break
    return written


def _upsert(rows: list[MetricHour]) -> None:
    MetricHour.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["bucket", "hours"], update_fields=["data", "taken_at"]
    )


def _days_rolled_up(first: datetime, last: datetime, hours: set[datetime], taken_at: datetime) -> int:
    """Day rows for the whole UTC days in [first, last) whose 24 hours are stored and that have none (a day row is
    made from hour rows only, under the lock: they are right, so it is)."""
    days = {bucket for bucket in hours if bucket == floor_to(bucket, 86400)}
    complete = [day for day in days if all(day + i * HOUR in hours for i in range(24)) and day + DAY <= last]
    if not complete:
        return 0
    done = set(MetricHour.objects.filter(hours=24, bucket__in=complete).values_list("bucket", flat=True))
    todo = sorted(day for day in complete if day not in done and day >= first)
    if not todo:
        return 0
    by_day: dict[datetime, list[bytes]] = defaultdict(list)
    spans = [(day, day + DAY) for day in todo]
    for bucket, data in MetricHour.objects.filter(Q(hours=1) & within("bucket", spans)).values_list("bucket", "data"):
        by_day[floor_to(bucket, 86400)].append(data)
    rows = [
        MetricHour(bucket=day, hours=24, data=rollup(by_day[day]), taken_at=taken_at)
        for day in todo
        if len(by_day[day]) == 24
    ]
    _upsert(rows)
    return len(rows)


def _runs(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Consecutive hours as [start, end) spans: one query each (scattered hours must not make one span of a year)."""
    runs: list[tuple[datetime, datetime]] = []
    for at in sorted(hours):
        if runs and runs[-1][1] == at:
            runs[-1] = (runs[-1][0], at + HOUR)
        else:
            runs.append((at, at + HOUR))
    return runs


def metrics_refresh() -> int:
    """The beat's minute: this hour's snapshot rows, the finished hours not stored yet, and the all-time part of
    /metrics for the hours before this one in Redis, before a scrape needs it (inbox/metrics/prometheus.py).
    Returns the snapshot rows written."""
    from inbox.metrics.prometheus import metrics_prepare

    count = snapshot_take()
    try:
        hours_seal()
    except Exception:  # the snapshots and /metrics must not wait for it; the dashboard reads unsealed hours live
        logger.exception("metrics: sealing the finished hours failed")
    metrics_prepare()
    return count
