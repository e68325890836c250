"""The managers' figures, per language queue and per channel account, over a chosen time range.

Everything is computed from stored timestamps by a few GROUP BY queries (on PostgreSQL the percentiles too,
``percentile_cont(...) WITHIN GROUP``); no conversation row is loaded into Python there. ``overview()`` makes nine
queries whatever the number of queues, channels or conversations: the queues, the conversation figures per queue,
the agents, the channel accounts, the conversation figures per account, the deliveries per account, and for the
trend the arrivals, the first responses and the snapshots per bucket. The conversation queries read only the rows
some figure counts (open or pending now, or created / answered / resolved in the range), so with indexes on
``created_at``, ``first_response_at`` and ``resolved_at`` (and ``OutboundDelivery.sent_at``) a short range costs
little whatever the table's size. Each group of figures is one statement, so it is a consistent view of the
database even while conversations change under it.

On SQLite (the embedded demo database) percentiles are taken in Python from the durations, one extra query per
figure group: fine at demo size. That, and the SQL of :class:`SecondsBetween`, are the only vendor branches.

Definitions (the dashboard explains these):

- **Where a conversation counts.** In the language queue it is in *now* (a language corrected mid-conversation
  moves all its figures, past ones included, to the corrected queue) and in its channel account. Conversations
  not routed to any queue yet count in their channel only.
- **Waiting now**: status open and ``waiting_since`` set (the customer's last message is unanswered; an agent's
  reply clears it). **Oldest wait**: now - the earliest ``waiting_since`` among those; None when nobody waits.
- **Open**: status open or pending (snoozed and resolved are not). **Assigned**: of those, the ones with an
  assignee. These count whatever the assignee's presence: an agent going offline leaves their conversations
  open and assigned.
- **Arrivals**: conversations created in ``[start, end)``; **per hour** = arrivals / the range's hours.
- **First response time**: ``first_response_at - created_at`` for conversations whose first agent reply
  (``first_response_at``) lies in the range; median (p50) and p90 by linear interpolation (``percentile_cont``).
  ``first_response_at`` is set once, so a reopened conversation keeps its first response and counts once.
- **Resolution time**: ``resolved_at - created_at`` for conversations resolved now whose ``resolved_at`` lies in
  the range. Reopening clears ``resolved_at``: a reopened conversation does not count until it is resolved again,
  and then once, with its final resolution time (still measured from creation).
- **SLA breaches**, against the queue's targets: first responses in the range slower than
  ``first_response_sla_seconds``, plus conversations created in the range, still unanswered and unresolved, older
  than the target at ``now``. Resolution likewise: resolutions in the range slower than ``resolution_sla_seconds``,
  plus conversations created in the range, not resolved, older than that target at ``now``.
- **Agents online**: active users whose presence is online and who serve the queue. **Capacity**: the sum of their
  capacities. **Load**: the open + pending conversations assigned to them, in any queue — capacity is per agent,
  not per queue, and assignment (``routing.selectors.agents_with_capacity``) compares it with all of an agent's
  open work, so ``capacity - load`` is the free room the router sees. An agent serving two queues counts in both.
  Going offline removes the agent from online, load and capacity at once.
- **Channels**: replies sent = deliveries in state sent whose ``sent_at`` is in the range; failed = deliveries
  given up (state failed) whose last attempt (``claimed_at``; ``created_at`` when never attempted) is in the range
  ("uncertain" deliveries wait for an agent's decision and are not counted as failed); retrying = now in
  ``retry_wait``, or queued with ``next_attempt_at`` in the future (a provider's rate limit).
- **Staffing** (Erlang C, ``inbox.metrics.erlang``): handle time = mean ``resolved_at - first_response_at`` over the
  range's resolutions (None when none). The Erlang result counts conversation slots (one customer per server);
  an agent works several chats at once, so agents needed = ceil(slots / mean capacity of the queue's agents,
  online or not; the default capacity when the queue has none). None without arrivals or without a handle time.
- **Trend**: buckets of ``bucket_seconds`` aligned to the epoch (UTC hours / days) covering the range; per queue
  and bucket the arrivals, the median first response of the first responses in the bucket (both counting only
  what lies in the range, so the first and last buckets may be partial and the buckets add up to the range's
  figures), and the customers
  waiting at the bucket's end: for past buckets from the hourly snapshot of the hour that ends the bucket
  (``MetricSnapshot``, written every minute by the beat), live for the current bucket, 0 when unknown.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    DateTimeField,
    F,
    FloatField,
    Func,
    Min,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, Floor
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from inbox.conversations.models import ChannelAccount, Conversation, OutboundDelivery
from inbox.metrics.erlang import agents_for_service_level
from inbox.metrics.models import MetricSnapshot
from inbox.metrics.types import ChannelMetrics, Overview, QueueMetrics, TimeRange, TrendPoint
from inbox.routing.models import AgentProfile, AgentQueue

HOUR = timedelta(hours=1)
range_ = range  # the builtin: the selectors' keyword argument ``range`` shadows it inside them
SERVICE_LEVEL = 0.8
_OPEN = Conversation.Status.OPEN
_LOADED = [Conversation.Status.OPEN, Conversation.Status.PENDING]
_UNRESOLVED = list(Conversation.UNRESOLVED)
_RESOLVED = Conversation.Status.RESOLVED


# --- SQL building blocks -------------------------------------------------------------------------------------
class SecondsBetween(Func):
    """``later - earlier`` in seconds, as a float. PostgreSQL by default; SQLite below."""

    arity = 2
    output_field = FloatField()
    # date_part, not EXTRACT: since PostgreSQL 14 EXTRACT returns numeric, and that arithmetic, once per row in a
    # FILTER or ORDER BY, made the 30-day overview twice as slow; date_part still returns double precision.
    template = "date_part('epoch', %(expressions)s)"
    arg_joiner = " - "

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # julianday() is a float of days (~40 µs resolution today): rounded to the millisecond so that an instant
        # exactly on a bucket boundary lands in the right bucket.
        return self.as_sql(
            compiler,
            connection,
            template="ROUND((julianday(%(expressions)s)) * 86400.0, 3)",
            arg_joiner=") - julianday(",
        )


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`` (linear interpolation)."""

    function = "percentile_cont"
    name = "PercentileCont"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, *, fraction: float, filter: Q | None = None) -> None:
        # The fraction is written into the SQL: a float we pass, never user input.
        super().__init__(expression, filter=filter, fraction=repr(float(fraction)))


def _percentiles_in_sql() -> bool:
    return connection.vendor == "postgresql"


def percentile(values: list[float], fraction: float) -> float | None:
    """What ``percentile_cont`` computes: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _seconds(later: datetime | None, earlier: datetime) -> float:
    assert later is not None  # the queries filter on it
    return (later - earlier).total_seconds()


@dataclass(frozen=True)
class _Conditions:
    """The row conditions of the figures, relative to the model the query starts from (``prefix``)."""

    prefix: str
    range: TimeRange
    now: datetime

    def f(self, name: str) -> str:
        return self.prefix + name

    def q(self, **lookups: Any) -> Q:
        return Q(**{self.prefix + key: value for key, value in lookups.items()})

    @property
    def pk(self) -> str:
        return self.f("id")

    @property
    def waiting(self) -> Q:
        return self.q(status=_OPEN, waiting_since__isnull=False)

    @property
    def loaded(self) -> Q:
        return self.q(status__in=_LOADED)

    @property
    def arrived(self) -> Q:
        return self.q(created_at__gte=self.range.start, created_at__lt=self.range.end)

    @property
    def answered(self) -> Q:
        return self.q(first_response_at__gte=self.range.start, first_response_at__lt=self.range.end)

    @property
    def resolved(self) -> Q:
        return self.q(status=_RESOLVED, resolved_at__gte=self.range.start, resolved_at__lt=self.range.end)

    @property
    def relevant(self) -> Q:
        """Every row some figure counts: the rest of the table can be skipped (by its indexes, where they exist)."""
        return self.loaded | self.arrived | self.answered | self.resolved

    @property
    def first_response_seconds(self) -> SecondsBetween:
        return SecondsBetween(F(self.f("first_response_at")), F(self.f("created_at")))

    @property
    def resolution_seconds(self) -> SecondsBetween:
        return SecondsBetween(F(self.f("resolved_at")), F(self.f("created_at")))

    @property
    def age_seconds(self) -> SecondsBetween:
        return SecondsBetween(Value(self.now, output_field=DateTimeField()), F(self.f("created_at")))


def _conversation_figures(c: _Conditions, *, sla: bool) -> dict[str, Any]:
    """Aggregates over conversations, as keyword arguments for ``annotate()`` / ``aggregate()`` on a
    Conversation queryset filtered by ``c.relevant``. With ``sla``, the breaches against each row's queue targets.
    """
    figures: dict[str, Any] = {
        "waiting_now": Count(c.pk, filter=c.waiting),
        "oldest_waiting_since": Min(c.f("waiting_since"), filter=c.waiting),
        "open": Count(c.pk, filter=c.loaded),
        "assigned": Count(c.pk, filter=c.loaded & c.q(assignee__isnull=False)),
        "arrivals": Count(c.pk, filter=c.arrived),
        "first_responses": Count(c.pk, filter=c.answered),
        "resolutions": Count(c.pk, filter=c.resolved),
    }
    if _percentiles_in_sql():
        figures |= {
            "first_response_p50": PercentileCont(c.first_response_seconds, fraction=0.5, filter=c.answered),
            "first_response_p90": PercentileCont(c.first_response_seconds, fraction=0.9, filter=c.answered),
            "resolution_p50": PercentileCont(c.resolution_seconds, fraction=0.5, filter=c.resolved),
            "resolution_p90": PercentileCont(c.resolution_seconds, fraction=0.9, filter=c.resolved),
        }
    if sla:
        first_target = F(c.f("queue__first_response_sla_seconds"))
        resolution_target = F(c.f("queue__resolution_sla_seconds"))
        unanswered = c.arrived & c.q(first_response_at__isnull=True, status__in=_UNRESOLVED)
        unresolved = c.arrived & c.q(status__in=_UNRESOLVED)
        figures |= {
            "first_response_breaches": Count(
                c.pk,
                filter=(c.answered & GreaterThan(c.first_response_seconds, first_target))
                | (unanswered & GreaterThan(c.age_seconds, first_target)),
            ),
            "resolution_breaches": Count(
                c.pk,
                filter=(c.resolved & GreaterThan(c.resolution_seconds, resolution_target))
                | (unresolved & GreaterThan(c.age_seconds, resolution_target)),
            ),
            "handle_time_seconds": Avg(
                SecondsBetween(F(c.f("resolved_at")), F(c.f("first_response_at"))),
                filter=c.resolved & c.q(first_response_at__isnull=False),
            ),
        }
    return figures


def _python_percentiles(key: str | None, c: _Conditions) -> dict[Any, dict[str, float | None]]:
    """Not PostgreSQL: the percentiles per ``key`` (None: over all rows) from the durations, in Python."""
    durations: dict[tuple[Any, str], list[float]] = defaultdict(list)
    for family, condition, end in (
        ("first_response", c.answered, "first_response_at"),
        ("resolution", c.resolved, "resolved_at"),
    ):
        for group, created, at in Conversation.objects.filter(condition).values_list(key or "pk", "created_at", end):
            durations[(group if key else None, family)].append(_seconds(at, created))
    result: dict[Any, dict[str, float | None]] = defaultdict(dict)
    for (group, family), values in durations.items():
        result[group][f"{family}_p50"] = percentile(values, 0.5)
        result[group][f"{family}_p90"] = percentile(values, 0.9)
    return result


_NO_FIGURES: dict[str, Any] = {
    "waiting_now": 0,
    "oldest_waiting_since": None,
    "open": 0,
    "assigned": 0,
    "arrivals": 0,
    "first_responses": 0,
    "resolutions": 0,
    "first_response_p50": None,
    "first_response_p90": None,
    "resolution_p50": None,
    "resolution_p90": None,
    "first_response_breaches": 0,
    "resolution_breaches": 0,
    "handle_time_seconds": None,
}


def _figures_by(key: str | None, c: _Conditions, *, sla: bool) -> dict[Any, dict[str, Any]]:
    """One GROUP BY query over the relevant conversations: key value -> figures (key None: one row, all)."""
    figures = _conversation_figures(c, sla=sla)
    relevant = Conversation.objects.filter(c.relevant).order_by()
    if key is None:
        rows = {None: relevant.aggregate(**figures)}
    else:
        rows = {row[key]: row for row in relevant.values(key).annotate(**figures)}
    if not _percentiles_in_sql():
        for group, percentiles in _python_percentiles(key, c).items():
            if group in rows:
                rows[group].update(percentiles)
    return {group: {**_NO_FIGURES, **row} for group, row in rows.items()}


def _oldest_wait(oldest_waiting_since: datetime | None, now: datetime) -> float | None:
    if oldest_waiting_since is None:
        return None
    return max(0.0, (now - oldest_waiting_since).total_seconds())


def _anything(row: dict[str, Any]) -> bool:
    return bool(row["open"] or row["arrivals"] or row["first_responses"] or row["resolutions"] or row["waiting_now"])


# --- Agents ------------------------------------------------------------------------------------------------
@dataclass
class _Staff:
    online: set[int] = field(default_factory=set)  # profile ids
    load: int = 0
    capacity: int = 0
    capacities: list[int] = field(default_factory=list)  # every active agent serving the queue, online or not


def _staff_by_queue() -> dict[int, _Staff]:
    """One query: every active agent's queues, presence, capacity and open + pending load."""
    load = (
        Conversation.objects.filter(assignee_id=OuterRef("agentprofile__user_id"), status__in=_LOADED)
        .order_by()
        .values("assignee_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    through = AgentProfile.queues.through
    rows = through.objects.filter(agentprofile__user__is_active=True).values(
        "agentqueue_id",
        "agentprofile_id",
        "agentprofile__presence",
        "agentprofile__capacity",
        load=Coalesce(Subquery(load), 0),
    )
    staff: dict[int, _Staff] = defaultdict(_Staff)
    for row in rows:
        s = staff[row["agentqueue_id"]]
        s.capacities.append(row["agentprofile__capacity"])
        if row["agentprofile__presence"] == AgentProfile.Presence.ONLINE:
            s.online.add(row["agentprofile_id"])
            s.load += row["load"]
            s.capacity += row["agentprofile__capacity"]
    return staff


def _agents_needed(
    *, arrivals_per_hour: float, handle_seconds: float | None, target: int, staff: _Staff | None
) -> int | None:
    if not arrivals_per_hour or not handle_seconds:
        return None
    slots = agents_for_service_level(
        arrivals_per_hour=arrivals_per_hour,
        handle_seconds=handle_seconds,
        target_seconds=target,
        service_level=SERVICE_LEVEL,
    )
    if slots is None:
        return None
    if staff and staff.capacities:
        mean_capacity = sum(staff.capacities) / len(staff.capacities)
    else:
        mean_capacity = float(AgentProfile._meta.get_field("capacity").default)
    return math.ceil(slots / max(mean_capacity, 1.0))


# --- Queues ------------------------------------------------------------------------------------------------
def _queue_rows(range: TimeRange, now: datetime) -> list[dict[str, Any]]:
    figures = _figures_by("queue_id", _Conditions("", range, now), sla=True)
    queues = AgentQueue.objects.values(
        "id", "language", "name", "is_fallback", "is_active", "first_response_sla_seconds", "resolution_sla_seconds"
    ).order_by("is_fallback", "name", "id")
    return [{**_NO_FIGURES, **figures.get(queue["id"], {}), **queue} for queue in queues]


def _queue_metrics(range: TimeRange, now: datetime) -> tuple[list[QueueMetrics], dict[int, _Staff]]:
    rows = _queue_rows(range, now)
    staff = _staff_by_queue()
    result = []
    for row in rows:
        s = staff.get(row["id"])
        if not (row["is_active"] or _anything(row) or (s and s.online)):
            continue
        per_hour = row["arrivals"] / range.hours
        result.append(
            QueueMetrics(
                queue_id=row["id"],
                language=row["language"],
                name=row["name"],
                first_response_target_seconds=row["first_response_sla_seconds"],
                resolution_target_seconds=row["resolution_sla_seconds"],
                waiting_now=row["waiting_now"],
                oldest_wait_seconds=_oldest_wait(row["oldest_waiting_since"], now),
                open=row["open"],
                assigned=row["assigned"],
                agents_online=len(s.online) if s else 0,
                load=s.load if s else 0,
                capacity=s.capacity if s else 0,
                arrivals=row["arrivals"],
                arrivals_per_hour=per_hour,
                first_response_p50=row["first_response_p50"],
                first_response_p90=row["first_response_p90"],
                first_responses=row["first_responses"],
                resolution_p50=row["resolution_p50"],
                resolution_p90=row["resolution_p90"],
                resolutions=row["resolutions"],
                first_response_breaches=row["first_response_breaches"],
                resolution_breaches=row["resolution_breaches"],
                handle_time_seconds=row["handle_time_seconds"],
                agents_needed=_agents_needed(
                    arrivals_per_hour=per_hour,
                    handle_seconds=row["handle_time_seconds"],
                    target=row["first_response_sla_seconds"],
                    staff=s,
                ),
                service_level_target=SERVICE_LEVEL,
            )
        )
    return result, staff


def queue_metrics(*, range: TimeRange, now: datetime | None = None) -> list[QueueMetrics]:
    """Per language queue (the fallback last): the figures defined in the module docstring. Three queries."""
    return _queue_metrics(range, now or timezone.now())[0]


# --- Channels ----------------------------------------------------------------------------------------------
def channel_metrics(*, range: TimeRange, now: datetime | None = None) -> list[ChannelMetrics]:
    """Per channel account: conversation figures and deliveries. Three queries."""
    now = now or timezone.now()
    figures = _figures_by("account_id", _Conditions("", range, now), sla=False)
    accounts = ChannelAccount.objects.values("id", "kind", "name", "is_active").order_by("kind", "name", "id")
    rows = [{**_NO_FIGURES, **figures.get(account["id"], {}), **account} for account in accounts]

    sent = Q(state=OutboundDelivery.State.SENT, sent_at__gte=range.start, sent_at__lt=range.end)
    failed = Q(state=OutboundDelivery.State.FAILED, failed_at__gte=range.start, failed_at__lt=range.end)
    retrying = Q(state=OutboundDelivery.State.RETRY_WAIT) | Q(
        state=OutboundDelivery.State.QUEUED, next_attempt_at__gt=now
    )
    deliveries = {
        row["account_id"]: row
        for row in OutboundDelivery.objects.annotate(failed_at=Coalesce("claimed_at", "created_at"))
        .filter(sent | failed | retrying)
        .values("account_id")
        .annotate(
            sent=Count("id", filter=sent), failed=Count("id", filter=failed), retrying=Count("id", filter=retrying)
        )
        .order_by()
    }
    result = []
    for row in rows:
        d = deliveries.get(row["id"], {})
        if not (row["is_active"] or _anything(row) or d):
            continue
        result.append(
            ChannelMetrics(
                account_id=row["id"],
                kind=row["kind"],
                name=row["name"],
                waiting_now=row["waiting_now"],
                oldest_wait_seconds=_oldest_wait(row["oldest_waiting_since"], now),
                open=row["open"],
                assigned=row["assigned"],
                arrivals=row["arrivals"],
                arrivals_per_hour=row["arrivals"] / range.hours,
                first_response_p50=row["first_response_p50"],
                first_response_p90=row["first_response_p90"],
                first_responses=row["first_responses"],
                resolution_p50=row["resolution_p50"],
                resolution_p90=row["resolution_p90"],
                resolutions=row["resolutions"],
                replies_sent=d.get("sent", 0),
                deliveries_failed=d.get("failed", 0),
                deliveries_retrying=d.get("retrying", 0),
            )
        )
    return result


# --- Trend -------------------------------------------------------------------------------------------------
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _floor(at: datetime, seconds: int) -> datetime:
    """The start of the ``seconds``-long bucket (aligned to the Unix epoch) that contains ``at``."""
    elapsed = (at - _EPOCH) // timedelta(microseconds=1)
    step = seconds * 1_000_000
    return _EPOCH + timedelta(microseconds=elapsed - elapsed % step)


def hour_of(at: datetime) -> datetime:
    """The snapshot bucket (UTC hour) that contains ``at``."""
    return _floor(at, 3600)


@dataclass(frozen=True)
class _TrendQueue:
    queue_id: int
    language: str
    always: bool  # listed even without figures in the range


def _trend(
    *,
    queues: list[_TrendQueue],
    range: TimeRange,
    bucket_seconds: int,
    now: datetime,
    live_waiting: dict[int, int],
) -> list[TrendPoint]:
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    step = timedelta(seconds=bucket_seconds)
    origin = _floor(range.start, bucket_seconds)
    count = max(1, math.ceil((range.end - origin) / step))
    stop = origin + count * step
    origin_value = Value(origin, output_field=DateTimeField())

    def index(field: str) -> Floor:
        return Floor(SecondsBetween(F(field), origin_value) / Value(float(bucket_seconds)))

    arrivals = {
        (q, int(i)): n
        for q, i, n in Conversation.objects.filter(
            created_at__gte=range.start, created_at__lt=range.end, queue__isnull=False
        )
        .annotate(bucket=index("created_at"))
        .values("queue_id", "bucket")
        .annotate(n=Count("id"))
        .values_list("queue_id", "bucket", "n")
        .order_by()
    }
    answered = Conversation.objects.filter(
        first_response_at__gte=range.start, first_response_at__lt=range.end, queue__isnull=False
    )
    first_p50: dict[tuple[int, int], float | None]
    if _percentiles_in_sql():
        first_p50 = {
            (q, int(i)): p50
            for q, i, p50 in answered.annotate(bucket=index("first_response_at"))
            .values("queue_id", "bucket")
            .annotate(p50=PercentileCont(SecondsBetween(F("first_response_at"), F("created_at")), fraction=0.5))
            .values_list("queue_id", "bucket", "p50")
            .order_by()
        }
    else:
        durations: dict[tuple[int, int], list[float]] = defaultdict(list)
        for q, created, first in answered.values_list("queue_id", "created_at", "first_response_at"):
            durations[(q, (first - origin) // step if first else -1)].append(_seconds(first, created))
        first_p50 = {k: percentile(v, 0.5) for k, v in durations.items()}

    # Waiting at a past bucket's end: the snapshot of the hour that contains the bucket's last instant (the beat
    # rewrites an hour's row every minute, so its last write is that hour's end state).
    snapshots = {
        (q, bucket): waiting
        for q, bucket, waiting in MetricSnapshot.objects.filter(
            queue__isnull=False, bucket__gte=hour_of(origin), bucket__lt=stop
        ).values_list("queue_id", "bucket", "waiting")
    }
    with_figures = {q for q, _ in arrivals} | {q for q, _ in first_p50}
    listed = [(q.queue_id, q.language) for q in queues if q.always or q.queue_id in with_figures]
    points = []
    for i in range_(count):
        at = origin + i * step
        end = at + step
        for queue_id, language in listed:
            if at <= now < end:
                waiting = live_waiting.get(queue_id, 0)
            elif end <= now:
                waiting = snapshots.get((queue_id, hour_of(end - timedelta(microseconds=1))), 0)
            else:
                waiting = 0  # the future
            points.append(
                TrendPoint(
                    at=at,
                    language=language,
                    arrivals=arrivals.get((queue_id, i), 0),
                    first_response_p50=first_p50.get((queue_id, i)),
                    waiting=waiting,
                )
            )
    return points


def trend(*, range: TimeRange, bucket_seconds: int = 3600, now: datetime | None = None) -> list[TrendPoint]:
    """Per bucket and language queue: arrivals, median first response, customers waiting at the bucket's end.

    Active queues always; an inactive one when it has arrivals or first responses in the range. Four queries.
    """
    now = now or timezone.now()
    queues = [
        _TrendQueue(queue_id, language, always=is_active)
        for queue_id, language, is_active in AgentQueue.objects.order_by("is_fallback", "name", "id").values_list(
            "id", "language", "is_active"
        )
    ]
    live = dict(
        Conversation.objects.filter(status=_OPEN, waiting_since__isnull=False, queue__isnull=False)
        .values("queue_id")
        .annotate(n=Count("id"))
        .values_list("queue_id", "n")
        .order_by()
    )
    return _trend(queues=queues, range=range, bucket_seconds=bucket_seconds, now=now, live_waiting=live)


# --- Overview ----------------------------------------------------------------------------------------------
def overview(*, range: TimeRange, now: datetime | None = None, bucket_seconds: int = 3600) -> Overview:
    """Everything the dashboard shows, in nine queries (see the module docstring)."""
    now = now or timezone.now()
    queues, _staff = _queue_metrics(range, now)
    channels = channel_metrics(range=range, now=now)
    points = _trend(
        queues=[_TrendQueue(q.queue_id, q.language, always=True) for q in queues],
        range=range,
        bucket_seconds=bucket_seconds,
        now=now,
        live_waiting={q.queue_id: q.waiting_now for q in queues},
    )
    return Overview(
        range=range, generated_at=now, queues=queues, channels=channels, trend=points, bucket_seconds=bucket_seconds
    )


# --- Snapshots ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotFigures:
    """One row of ``MetricSnapshot``: queue None = all queues (and conversations in none)."""

    queue_id: int | None
    waiting: int
    open: int
    assigned: int
    agents_online: int
    arrivals: int
    first_responses: int
    first_response_p50: float | None
    first_response_p90: float | None
    resolutions: int


def snapshot_figures(*, bucket: datetime, now: datetime) -> list[SnapshotFigures]:
    """The figures of the hour starting at ``bucket``: live counts as of ``now``, the rest over the hour."""
    hour = TimeRange(bucket, bucket + HOUR)
    queues, staff = _queue_metrics(hour, now)
    rows = [
        SnapshotFigures(
            queue_id=q.queue_id,
            waiting=q.waiting_now,
            open=q.open,
            assigned=q.assigned,
            agents_online=q.agents_online,
            arrivals=q.arrivals,
            first_responses=q.first_responses,
            first_response_p50=q.first_response_p50,
            first_response_p90=q.first_response_p90,
            resolutions=q.resolutions,
        )
        for q in queues
    ]
    total = _figures_by(None, _Conditions("", hour, now), sla=False)[None]
    online = set().union(*(s.online for s in staff.values())) if staff else set()
    rows.append(
        SnapshotFigures(
            queue_id=None,
            waiting=total["waiting_now"],
            open=total["open"],
            assigned=total["assigned"],
            agents_online=len(online),
            arrivals=total["arrivals"],
            first_responses=total["first_responses"],
            first_response_p50=total["first_response_p50"],
            first_response_p90=total["first_response_p90"],
            resolutions=total["resolutions"],
        )
    )
    return rows
