"""The managers' figures, per language queue and per channel account, over a chosen time range.

Everything is computed from stored timestamps by a few GROUP BY queries; no conversation row of a long range is
loaded into Python. Two ways, chosen per range (the figures are the same either way; tests compare them):

- **Stored hours** (``inbox.metrics.hours``): the whole hours inside the range that the beat has sealed into
  ``MetricHour`` rows (their arrivals, and their first response and resolution times, exactly), plus the rest of the
  range (its partial first and last hour, any hour not sealed) read live, merged in Python. Used when at most
  ``hours.LIVE_LIMIT`` of the range is not stored: the dashboard's 24 hours, 7 and 30 days on a running system, and
  any range of a few hours. ``overview()`` then makes eight queries: the queues, the stored hours, the live events,
  the "now" figures by (queue, account) pair, the agents, the channel accounts, the deliveries, and the trend's
  snapshots.
- **Live SQL**: otherwise (a fresh install, the beat stopped for long), the figures per queue and per account each in
  one statement over the conversations the range touches (on PostgreSQL the percentiles too, ``percentile_cont(...)
  WITHIN GROUP``), with indexes on ``created_at``, ``first_response_at`` and ``resolved_at``; ``overview()`` makes
  ten queries (the trend's arrivals and first responses are two more).

Neither depends on the number of queues, channels or conversations for its number of queries. In the live SQL each
group of figures is one statement, a consistent view of the database even while conversations change under it; with
stored hours the live parts are three statements, so a change committed between them (milliseconds) can show in one
and not yet in another until the next refresh.

On SQLite (the embedded demo database) percentiles are taken in Python from the durations, one extra query per
figure group: fine at demo size; no hours are stored there (no trigger keeps them right), so only short ranges take
the stored-hours path, with everything live. That, and the SQL of :class:`SecondsBetween`, are the only vendor
branches.

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
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import (
    Avg,
    Count,
    DateTimeField,
    F,
    Min,
    Q,
    Value,
)
from django.db.models.functions import Coalesce, Floor
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from inbox.conversations.models import ChannelAccount, Conversation, OutboundDelivery
from inbox.metrics import hours
from inbox.metrics.erlang import agents_for_service_level
from inbox.metrics.expressions import (
    HOUR,
    PercentileCont,
    SecondsBetween,
    floor_to,
    hour_of,
    percentile,
    percentile_of_sorted,
)
from inbox.metrics.models import MetricSnapshot
from inbox.metrics.types import ChannelMetrics, Overview, QueueMetrics, TimeRange, TrendPoint
from inbox.routing.models import AgentProfile, AgentQueue

__all__ = [
    "HOUR",
    "PercentileCont",
    "SecondsBetween",
    "channel_metrics",
    "hour_of",
    "overview",
    "percentile",
    "queue_metrics",
    "snapshot_figures",
    "trend",
]

range_ = range  # the builtin: the selectors' keyword argument ``range`` shadows it inside them
SERVICE_LEVEL = 0.8
_OPEN = Conversation.Status.OPEN
_LOADED = [Conversation.Status.OPEN, Conversation.Status.PENDING]
_UNRESOLVED = list(Conversation.UNRESOLVED)
_RESOLVED = Conversation.Status.RESOLVED


def _percentiles_in_sql() -> bool:
    return connection.vendor == "postgresql"


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
    def unanswered(self) -> Q:
        """Arrived in the range and still owing a first response."""
        return self.arrived & self.q(first_response_at__isnull=True, status__in=_UNRESOLVED)

    @property
    def unresolved(self) -> Q:
        return self.arrived & self.q(status__in=_UNRESOLVED)

    @property
    def first_response_seconds(self) -> SecondsBetween:
        return SecondsBetween(F(self.f("first_response_at")), F(self.f("created_at")))

    @property
    def resolution_seconds(self) -> SecondsBetween:
        return SecondsBetween(F(self.f("resolved_at")), F(self.f("created_at")))

    @property
    def age_seconds(self) -> SecondsBetween:
        return SecondsBetween(Value(self.now, output_field=DateTimeField()), F(self.f("created_at")))

    @property
    def late_unanswered(self) -> Q:
        """Still owing a first response, and older than the queue's target for it."""
        target = F(self.f("queue__first_response_sla_seconds"))
        return cast(Q, self.unanswered & GreaterThan(self.age_seconds, target))

    @property
    def late_unresolved(self) -> Q:
        target = F(self.f("queue__resolution_sla_seconds"))
        return cast(Q, self.unresolved & GreaterThan(self.age_seconds, target))


def _now_figures(c: _Conditions) -> dict[str, Any]:
    """The figures about the present, whatever the range's past: waiting, open, assigned."""
    return {
        "waiting_now": Count(c.pk, filter=c.waiting),
        "oldest_waiting_since": Min(c.f("waiting_since"), filter=c.waiting),
        "open": Count(c.pk, filter=c.loaded),
        "assigned": Count(c.pk, filter=c.loaded & c.q(assignee__isnull=False)),
    }


def _conversation_figures(c: _Conditions, *, sla: bool) -> dict[str, Any]:
    """Aggregates over conversations, as keyword arguments for ``annotate()`` / ``aggregate()`` on a
    Conversation queryset filtered by ``c.relevant``. With ``sla``, the breaches against each row's queue targets.
    """
    figures: dict[str, Any] = {
        **_now_figures(c),
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
        figures |= {
            "first_response_breaches": Count(
                c.pk,
                filter=(c.answered & GreaterThan(c.first_response_seconds, first_target)) | c.late_unanswered,
            ),
            "resolution_breaches": Count(
                c.pk,
                filter=(c.resolved & GreaterThan(c.resolution_seconds, resolution_target)) | c.late_unresolved,
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


# --- A range's conversation figures: stored hours + live, or live SQL -----------------------------------------
Targets = dict[Any, tuple[int, int]]  # queue id -> (first response, resolution) targets in seconds


def _from_samples(
    samples: hours.Samples | None, present: dict[str, Any] | None, targets: tuple[int, int] | None
) -> dict[str, Any]:
    """One figure row from merged samples and the "now" figures (``present``) of the same group."""
    row = dict(_NO_FIGURES)
    if present:
        row.update(present)
    if samples is None:
        return row
    first, resolution = sorted(samples.first), sorted(samples.resolution)
    row.update(
        arrivals=samples.arrivals,
        first_responses=len(first),
        resolutions=len(resolution),
        first_response_p50=percentile_of_sorted(first, 0.5),
        first_response_p90=percentile_of_sorted(first, 0.9),
        resolution_p50=percentile_of_sorted(resolution, 0.5),
        resolution_p90=percentile_of_sorted(resolution, 0.9),
        handle_time_seconds=samples.handle_sum / samples.handled if samples.handled else None,
    )
    if targets is not None:
        first_target, resolution_target = targets
        # Slower than the target: what ``date_part(...) > target`` counts in SQL.
        row["first_response_breaches"] += len(first) - bisect_right(first, first_target)
        row["resolution_breaches"] += len(resolution) - bisect_right(resolution, resolution_target)
    return row


class _RangeFigures:
    """The conversation figures of one range, by queue and by channel account (and over all conversations), computed
    once for all of them: from the stored hours and the live rest when ``hours.merged`` allows it, else by the live
    SQL. The trend's arrivals and first responses come along with the stored hours when ``bucket_seconds`` is whole
    hours."""

    def __init__(self, range: TimeRange, now: datetime, *, bucket_seconds: int | None = None) -> None:
        self.conditions = _Conditions("", range, now)
        self.merged = hours.merged(range, bucket_seconds=bucket_seconds)
        self._present: list[dict[str, Any]] | None = None

    def _present_rows(self) -> list[dict[str, Any]]:
        """One query: the "now" figures and the still-unanswered breaches by (queue, account) pair."""
        if self._present is None:
            c = self.conditions
            self._present = list(
                Conversation.objects.filter(c.loaded | c.unresolved)
                .order_by()
                .values("queue_id", "account_id")
                .annotate(
                    **_now_figures(c),
                    first_response_breaches=Count(c.pk, filter=c.late_unanswered),
                    resolution_breaches=Count(c.pk, filter=c.late_unresolved),
                )
            )
        return self._present

    def _present_by(self, key: str | None) -> dict[Any, dict[str, Any]]:
        out: dict[Any, dict[str, Any]] = {}
        for row in self._present_rows():
            group = row[key] if key else None
            mine = out.get(group)
            if mine is None:
                out[group] = {k: v for k, v in row.items() if k not in ("queue_id", "account_id")}
                continue
            for name in ("waiting_now", "open", "assigned", "first_response_breaches", "resolution_breaches"):
                mine[name] += row[name]
            since = row["oldest_waiting_since"]
            if since is not None and (mine["oldest_waiting_since"] is None or since < mine["oldest_waiting_since"]):
                mine["oldest_waiting_since"] = since
        return out

    def _merge(self, key: str, samples: dict[Any, hours.Samples], targets: Targets | None) -> dict[Any, dict[str, Any]]:
        present = self._present_by(key)
        return {
            group: _from_samples(samples.get(group), present.get(group), targets.get(group) if targets else None)
            for group in samples.keys() | present.keys()
        }

    def by_queue(self, targets: Targets) -> dict[Any, dict[str, Any]]:
        if self.merged is None:
            return _figures_by("queue_id", self.conditions, sla=True)
        return self._merge("queue_id", self.merged.queues, targets)

    def by_account(self) -> dict[Any, dict[str, Any]]:
        if self.merged is None:
            return _figures_by("account_id", self.conditions, sla=False)
        rows = self._merge("account_id", self.merged.accounts, None)
        for row in rows.values():  # not figures of channels (no targets there), as the live SQL leaves them
            row.update(first_response_breaches=0, resolution_breaches=0, handle_time_seconds=None)
        return rows

    def total(self) -> dict[str, Any]:
        if self.merged is None:
            return _figures_by(None, self.conditions, sla=False)[None]
        every = hours.Samples()
        for s in self.merged.queues.values():
            every.add(s.arrivals, s.first, s.resolution, s.handled, s.handle_sum)
        row = _from_samples(every, self._present_by(None).get(None), None)
        row.update(first_response_breaches=0, resolution_breaches=0, handle_time_seconds=None)
        return row


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
    """One grouped query: every active agent's queues, presence, capacity and open + pending load.

    The load is counted once per agent (``GROUP BY assignee``, an index-only scan of the partial index
    ``conv_loaded_assignee`` on PostgreSQL) and joined to the agent's queues, rather than one subquery per
    (agent, queue) row. Written in SQL: the ORM cannot join a grouped subquery.
    """
    quote = connection.ops.quote_name
    through = AgentProfile.queues.through._meta
    profile = AgentProfile._meta
    user = get_user_model()._meta
    conversation = Conversation._meta
    queue_col = quote(through.get_field("agentqueue").column)
    profile_col = quote(through.get_field("agentprofile").column)
    user_col = quote(profile.get_field("user").column)
    assignee_col = quote(conversation.get_field("assignee").column)
    sql = f"""
        SELECT t.{queue_col}, p.{quote(profile.pk.column)}, p.{quote(profile.get_field("presence").column)},
               p.{quote(profile.get_field("capacity").column)}, COALESCE(l.n, 0)
          FROM {quote(through.db_table)} t
          JOIN {quote(profile.db_table)} p ON p.{quote(profile.pk.column)} = t.{profile_col}
          JOIN {quote(user.db_table)} u ON u.{quote(user.pk.column)} = p.{user_col}
          LEFT JOIN (
                SELECT {assignee_col} AS assignee, COUNT(*) AS n
                  FROM {quote(conversation.db_table)}
                 WHERE {quote(conversation.get_field("status").column)} IN (%s, %s) AND {assignee_col} IS NOT NULL
                 GROUP BY {assignee_col}
               ) l ON l.assignee = p.{user_col}
         WHERE u.{quote(user.get_field("is_active").column)} = %s
    """  # noqa: S608 - every name is the models' own, quoted; the values are parameters
    staff: dict[int, _Staff] = defaultdict(_Staff)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*_LOADED, True])
        for queue_id, profile_id, presence, capacity, load in cursor.fetchall():
            s = staff[queue_id]
            s.capacities.append(capacity)
            if presence == AgentProfile.Presence.ONLINE:
                s.online.add(profile_id)
                s.load += load
                s.capacity += capacity
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
def _queue_rows(figures: _RangeFigures) -> list[dict[str, Any]]:
    queues = list(
        AgentQueue.objects.values(
            "id", "language", "name", "is_fallback", "is_active", "first_response_sla_seconds",
            "resolution_sla_seconds",
        ).order_by("is_fallback", "name", "id")
    )  # fmt: skip
    targets = {q["id"]: (q["first_response_sla_seconds"], q["resolution_sla_seconds"]) for q in queues}
    by_queue = figures.by_queue(targets)
    return [{**_NO_FIGURES, **by_queue.get(queue["id"], {}), **queue} for queue in queues]


def _queue_metrics(
    range: TimeRange, now: datetime, figures: _RangeFigures
) -> tuple[list[QueueMetrics], dict[int, _Staff]]:
    rows = _queue_rows(figures)
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
    """Per language queue (the fallback last): the figures defined in the module docstring. Four or five
    queries."""
    now = now or timezone.now()
    return _queue_metrics(range, now, _RangeFigures(range, now))[0]


# --- Channels ----------------------------------------------------------------------------------------------
def _deliveries(range: TimeRange, now: datetime, merged: hours.Merged | None) -> dict[int, dict[str, int]]:
    """One statement, four grouped parts (UNION ALL), each an index-only scan of its partial index on PostgreSQL
    (migration conversations 0010): sent (``delivery_sent_account``), failed in the range by last attempt
    (``delivery_failed_at``), waiting for a retry (``delivery_retry_wait_account``), queued behind a rate limit. With
    stored hours (``merged``) the replies sent come from them, and only the live intervals are counted here."""
    S = OutboundDelivery.State
    deliveries = OutboundDelivery.objects.order_by()
    sent = (
        hours.sent_filter(merged.live)
        if merged is not None
        else Q(state=S.SENT, sent_at__gte=range.start, sent_at__lt=range.end)
    )
    parts = [
        ("sent", deliveries.filter(sent)),
        (
            "failed",
            deliveries.alias(failed_at=Coalesce("claimed_at", "created_at")).filter(
                state=S.FAILED, failed_at__gte=range.start, failed_at__lt=range.end
            ),
        ),
        ("retrying", deliveries.filter(state=S.RETRY_WAIT)),
        ("retrying", deliveries.filter(state=S.QUEUED, next_attempt_at__gt=now)),
    ]
    # COUNT(*), not COUNT(id): the id is not in the indexes, and reading it would visit every row.
    counted = [
        rows.values("account_id").annotate(kind=Value(kind), n=Count("*")).values_list("account_id", "kind", "n")
        for kind, rows in parts
    ]
    result: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if merged is not None:
        for account_id, n in merged.sent.items():
            result[account_id]["sent"] += n
    for account_id, kind, n in counted[0].union(*counted[1:], all=True):
        result[account_id][kind] += n
    return result


def _channel_metrics(range: TimeRange, now: datetime, figures: _RangeFigures) -> list[ChannelMetrics]:
    by_account = figures.by_account()
    accounts = ChannelAccount.objects.values("id", "kind", "name", "is_active").order_by("kind", "name", "id")
    rows = [{**_NO_FIGURES, **by_account.get(account["id"], {}), **account} for account in accounts]
    deliveries = _deliveries(range, now, figures.merged)
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


def channel_metrics(*, range: TimeRange, now: datetime | None = None) -> list[ChannelMetrics]:
    """Per channel account: conversation figures and deliveries. Four or five queries."""
    now = now or timezone.now()
    return _channel_metrics(range, now, _RangeFigures(range, now))


def queues_and_channels(
    *, range: TimeRange, now: datetime | None = None
) -> tuple[list[QueueMetrics], list[ChannelMetrics]]:
    """``queue_metrics`` and ``channel_metrics`` of the same range, the conversations read once for both."""
    now = now or timezone.now()
    figures = _RangeFigures(range, now)
    return _queue_metrics(range, now, figures)[0], _channel_metrics(range, now, figures)


# --- Trend -------------------------------------------------------------------------------------------------
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
    merged: hours.Merged | None = None,
) -> list[TrendPoint]:
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    step = timedelta(seconds=bucket_seconds)
    origin = floor_to(range.start, bucket_seconds)
    count = max(1, math.ceil((range.end - origin) / step))
    stop = origin + count * step

    arrivals: dict[tuple[int, int], int]
    first_p50: dict[tuple[int, int], float | None]
    if merged is not None and merged.cells is not None:
        # From the stored hours and the live rest (hours.merged, asked for these buckets).
        arrivals = {key: cell.arrivals for key, cell in merged.cells.items() if cell.arrivals}
        first_p50 = {key: percentile(cell.first, 0.5) for key, cell in merged.cells.items() if cell.first}
    else:
        arrivals, first_p50 = _trend_live(range, origin, step)

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


def _trend_live(
    range: TimeRange, origin: datetime, step: timedelta
) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], float | None]]:
    """Two queries: arrivals and the median first response per (queue, bucket index), from the conversations."""
    origin_value = Value(origin, output_field=DateTimeField())
    bucket_seconds = step.total_seconds()

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
    return arrivals, first_p50


def trend(*, range: TimeRange, bucket_seconds: int = 3600, now: datetime | None = None) -> list[TrendPoint]:
    """Per bucket and language queue: arrivals, median first response, customers waiting at the bucket's end.

    Active queues always; an inactive one when it has arrivals or first responses in the range. Four or five
    queries.
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
    merged = hours.merged(range, bucket_seconds=bucket_seconds)
    return _trend(queues=queues, range=range, bucket_seconds=bucket_seconds, now=now, live_waiting=live, merged=merged)


# --- Overview ----------------------------------------------------------------------------------------------
def overview(*, range: TimeRange, now: datetime | None = None, bucket_seconds: int = 3600) -> Overview:
    """Everything the dashboard shows, in eight queries (stored hours) or ten (live SQL): see the module docstring."""
    now = now or timezone.now()
    figures = _RangeFigures(range, now, bucket_seconds=bucket_seconds)
    queues, _staff = _queue_metrics(range, now, figures)
    channels = _channel_metrics(range, now, figures)
    points = _trend(
        queues=[_TrendQueue(q.queue_id, q.language, always=True) for q in queues],
        range=range,
        bucket_seconds=bucket_seconds,
        now=now,
        live_waiting={q.queue_id: q.waiting_now for q in queues},
        merged=figures.merged,
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
    figures = _RangeFigures(hour, now)
    queues, staff = _queue_metrics(hour, now, figures)
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
    total = figures.total()
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
