"""The figures managers read: one shape for the dashboard, the JSON API, the CSV export and Prometheus.

Times are seconds; a percentile is None when nothing in the range has that measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return max((self.end - self.start) / timedelta(hours=1), 1e-9)


@dataclass
class QueueMetrics:
    """One language queue (the fallback queue has language "")."""

    queue_id: int
    language: str
    name: str
    first_response_target_seconds: int
    resolution_target_seconds: int
    # Now (whatever the range):
    waiting_now: int = 0  # open conversations whose customer waits for an answer (waiting_since set)
    oldest_wait_seconds: float | None = None
    open: int = 0  # status open or pending
    assigned: int = 0  # of those, with an assignee
    agents_online: int = 0  # online agents serving this queue
    load: int = 0  # open + pending conversations assigned to those online agents
    capacity: int = 0  # sum of their capacities
    # Over the range:
    arrivals: int = 0  # conversations created in the range (in the queue they are in now)
    arrivals_per_hour: float = 0.0
    first_response_p50: float | None = None  # first agent reply - conversation created, first replies in the range
    first_response_p90: float | None = None
    first_responses: int = 0
    resolution_p50: float | None = None  # resolved_at - created_at, conversations resolved in the range
    resolution_p90: float | None = None
    resolutions: int = 0
    first_response_breaches: int = 0  # answered later than the target, or still unanswered past it
    resolution_breaches: int = 0
    handle_time_seconds: float | None = None  # mean agent handling time per conversation (Erlang C input)
    agents_needed: int | None = None  # Erlang C: agents to meet the first-response target (staffing advice)
    service_level_target: float = 0.8  # share of customers answered within the first-response target


@dataclass
class ChannelMetrics:
    """One channel account."""

    account_id: int
    kind: str
    name: str
    waiting_now: int = 0
    oldest_wait_seconds: float | None = None
    open: int = 0
    assigned: int = 0
    arrivals: int = 0
    arrivals_per_hour: float = 0.0
    first_response_p50: float | None = None
    first_response_p90: float | None = None
    first_responses: int = 0
    resolution_p50: float | None = None
    resolution_p90: float | None = None
    resolutions: int = 0
    replies_sent: int = 0  # deliveries sent in the range
    deliveries_failed: int = 0  # deliveries failed in the range (given up)
    deliveries_retrying: int = 0  # now: waiting for a retry or a provider's rate limit


@dataclass
class TrendPoint:
    at: datetime  # start of the bucket
    language: str
    arrivals: int
    first_response_p50: float | None
    waiting: int  # customers waiting at the end of the bucket (from snapshots; None-less: 0 when unknown)


@dataclass
class Overview:
    range: TimeRange
    generated_at: datetime
    queues: list[QueueMetrics] = field(default_factory=list)
    channels: list[ChannelMetrics] = field(default_factory=list)
    trend: list[TrendPoint] = field(default_factory=list)
    bucket_seconds: int = 3600
