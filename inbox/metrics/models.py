"""Hourly snapshots of the queue figures that cannot be recomputed from timestamps later.

How many customers waited at 14:00 yesterday is gone once their ``waiting_since`` is cleared: the beat task
(``metrics_snapshot``, every minute) keeps it here. Written only by ``services.snapshot_take``.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class MetricSnapshot(models.Model):
    """One language queue (or all of them: ``queue`` null) in one hour.

    ``waiting``, ``open``, ``assigned`` and ``agents_online`` are the live values when the row was last written:
    the beat rewrites the current hour's row every minute, so a past hour's row holds the state at that hour's
    end. The other figures are computed from timestamps over the hour ``[bucket, bucket + 1 h)``.
    """

    queue = models.ForeignKey(
        "routing.AgentQueue", on_delete=models.CASCADE, null=True, blank=True, related_name="metric_snapshots"
    )
    bucket = models.DateTimeField(help_text="start of the hour (UTC)")
    waiting = models.PositiveIntegerField(default=0)
    open = models.PositiveIntegerField(default=0)
    assigned = models.PositiveIntegerField(default=0)
    agents_online = models.PositiveIntegerField(default=0)
    arrivals = models.PositiveIntegerField(default=0)
    first_responses = models.PositiveIntegerField(default=0)
    first_response_p50 = models.FloatField(null=True, blank=True)
    first_response_p90 = models.FloatField(null=True, blank=True)
    resolutions = models.PositiveIntegerField(default=0)
    taken_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Two partial indexes rather than one UNIQUE(queue, bucket): NULLs are distinct in a plain unique
            # index, so the "all queues" row needs its own (works on PostgreSQL and SQLite alike).
            models.UniqueConstraint(
                fields=["queue", "bucket"], condition=Q(queue__isnull=False), name="snapshot_one_per_queue_hour"
            ),
            models.UniqueConstraint(fields=["bucket"], condition=Q(queue__isnull=True), name="snapshot_one_total_hour"),
        ]
        indexes = [models.Index(fields=["bucket"], name="snapshot_bucket")]

    def __str__(self) -> str:
        return f"snapshot {self.queue_id or 'all'} at {self.bucket:%Y-%m-%d %H:00}"


class MetricHour(models.Model):
    """The conversation events and replies sent of a finished span of time, complete and exact: one UTC hour
    (``hours`` 1), or a whole UTC day rolled up from its 24 stored hours (``hours`` 24). A range's figures over many
    hours are merged from these rows (``inbox/metrics/hours.py``) instead of read again from every conversation.

    ``data`` (``hours.encode``): per (queue, channel account) pair with anything in the span, the arrivals
    (``created_at`` in the span), every first response time of the first responses in the span and every resolution
    time of the resolutions in the span (still resolved), sorted, and the handling times' count and sum; per account
    the replies sent (``sent_at`` in the span). Percentiles and SLA breaches over any set of spans then come out
    exactly as ``percentile_cont`` and ``COUNT(*) FILTER`` give them live.

    Written by ``services.hours_seal`` (the beat) only once nothing can still change the span, and deleted by
    PostgreSQL triggers on conversations and deliveries (migration 0002) whenever a change reaches back into it (a
    reopened conversation, a corrected language, an import): a row that exists is right. Spans without a row are read
    live.
    """

    bucket = models.DateTimeField(help_text="start of the span (UTC)")
    hours = models.PositiveSmallIntegerField(default=1, help_text="1: an hour; 24: a UTC day")
    data = models.BinaryField()
    taken_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "hours"], name="metric_hour_one_per_span")]

    def __str__(self) -> str:
        return f"stored {self.hours} h at {self.bucket:%Y-%m-%d %H:00}"
