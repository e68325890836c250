"""Finished hours, stored: a range's conversation figures and replies sent from ``MetricHour`` rows plus the live rest.

A range of days holds thousands of conversations and tens of thousands of replies, and reading them all at every
dashboard refresh (two ``percentile_cont`` over each conversation, by queue and by channel) is what made 7 and 30
days slow. Arrivals, first responses, resolutions and replies sent of a finished hour do not change unless a row is
changed after the fact, so the beat stores them (``services.hours_seal``), exactly: per (queue, channel account)
pair the arrivals, every first response and resolution time (sorted) and the handling times' count and sum; per
account the replies sent. A whole UTC day whose 24 hours are stored is rolled up into one day row. A range then reads

* the stored rows of the whole days and hours inside it (one query: about 30 day rows and up to 46 hour rows for 30
  days),
* the rest live (:func:`events`: the partial hours at its ends, and any hour not stored),

and merges them in Python: percentiles by the same interpolation as ``percentile_cont``
(``expressions.percentile_of_sorted``), SLA breaches by counting the sorted times above the queue's target, so the
figures are the same as the live queries', not an approximation. When more than ``LIVE_LIMIT`` of a range is not
stored (a fresh install, the beat stopped for a while) :func:`merged` answers None and the caller uses the live SQL.

Correctness rests on two rules, kept by the database (migration 0002) and ``services.hours_seal``:

* a row exists only for a span that nothing could still change when it was written: an hour is sealed once every
  transaction that began before the hour's end has finished; a day is rolled up from its 24 stored hours;
* any later change that alters a stored hour's figures (a reopened conversation, a corrected language, an import of
  old rows, a delete, a reply whose provider time is in a past hour) deletes that hour's row and its day's row in the
  same transaction (triggers), so the span is read live until the beat seals it again. Answering or resolving now a
  conversation that arrived in a stored hour alters nothing stored and deletes nothing.

"Now" figures (waiting, open, assigned; conversations still unanswered past a target; deliveries retrying) and the
failed deliveries (a small partial index) are never stored: they are read live, in one grouped query each
(``selectors``).

Row format (``encode``): float64 little-endian values: ``[1 (format), pairs, accounts,`` then per pair ``queue (-1:
none), account, arrivals, first responses, resolutions, handled, handling seconds``, then per account ``account,
replies sent``, then the samples pair after pair: its first response times, then its resolution times ``]``. Binary
rather than JSON: decoding 700 JSON documents of numbers cost more than all the queries of a 30-day overview.
"""

from __future__ import annotations

import sys
from array import array
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, F, Q
from django.db.models.functions import Trunc

from inbox.conversations.models import Conversation, OutboundDelivery
from inbox.metrics.expressions import EPOCH, HOUR, SecondsBetween, floor_to, hour_of
from inbox.metrics.models import MetricHour
from inbox.metrics.types import TimeRange

# At most this much of a range is read live from the conversations when the rest comes from stored hours; above it
# the live SQL (percentiles in the database) is faster than bringing every conversation's times to Python.
LIVE_LIMIT = timedelta(hours=6)
DAY = timedelta(days=1)
_RESOLVED = Conversation.Status.RESOLVED
_SENT = OutboundDelivery.State.SENT
_BIG_ENDIAN = sys.byteorder == "big"
_FORMAT = 1.0
_PAIR = 7
range_ = range  # the builtin: the ``range`` arguments below shadow it

Interval = tuple[datetime, datetime]
# queue_id, account_id, status, created_at, first_response_at, resolved_at, first response seconds, resolution
# seconds, handling seconds (resolved - first response)
Event = tuple[
    int | None, int, str, datetime, datetime | None, datetime | None, float | None, float | None, float | None
]


@dataclass
class Samples:
    """Arrivals, first response and resolution times, and handling times of some conversations."""

    arrivals: int = 0
    first: list[float] = field(default_factory=list)
    resolution: list[float] = field(default_factory=list)
    handled: int = 0
    handle_sum: float = 0.0

    def add(
        self, arrivals: int, first: Iterable[float], resolution: Iterable[float], handled: int, handle_sum: float
    ) -> None:
        self.arrivals += arrivals
        self.first.extend(first)
        self.resolution.extend(resolution)
        self.handled += handled
        self.handle_sum += handle_sum

    def resolved(self, seconds: float | None, handle: float | None) -> None:
        assert seconds is not None  # resolved_at is set: the query selected the row for it
        self.resolution.append(seconds)
        if handle is not None:
            self.handled += 1
            self.handle_sum += handle


@dataclass
class Span:
    """What one stored row holds: samples per (queue, account) pair, replies sent per account."""

    pairs: defaultdict[tuple[int | None, int], Samples] = field(default_factory=lambda: defaultdict(Samples))
    sent: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))


# --- Reading the live rows ------------------------------------------------------------------------------------
def within(field_name: str, intervals: Sequence[Interval]) -> Q:
    condition = Q()
    for start, end in intervals:
        condition |= Q(**{f"{field_name}__gte": start, f"{field_name}__lt": end})
    return condition


def events(intervals: Sequence[Interval]) -> list[Event]:
    """One query: the conversations created, first answered, or resolved (and still resolved) in the intervals, with
    their times in seconds computed by the same SQL as the live figures (so the numbers are identical)."""
    if not intervals:
        return []
    rows = (
        Conversation.objects.filter(
            within("created_at", intervals)
            | within("first_response_at", intervals)
            | (within("resolved_at", intervals) & Q(status=_RESOLVED))
        )
        .order_by()
        .values_list(
            "queue_id",
            "account_id",
            "status",
            "created_at",
            "first_response_at",
            "resolved_at",
            SecondsBetween(F("first_response_at"), F("created_at")),
            SecondsBetween(F("resolved_at"), F("created_at")),
            SecondsBetween(F("resolved_at"), F("first_response_at")),
        )
    )
    return list(rows)  # type: ignore[arg-type]


def sent_filter(intervals: Sequence[Interval]) -> Q:
    """Deliveries sent with ``sent_at`` in the intervals (an empty list: none)."""
    if not intervals:
        return Q(pk__in=[])
    return Q(state=_SENT) & within("sent_at", intervals)


def _inside(at: datetime | None, intervals: Sequence[Interval]) -> bool:
    return at is not None and any(start <= at < end for start, end in intervals)


# --- Encoding -----------------------------------------------------------------------------------------------
def encode(span: Span) -> bytes:
    """``MetricHour.data`` for one span (format in the module docstring)."""
    pairs = sorted(span.pairs.items(), key=lambda item: (item[0][0] or 0, item[0][1]))
    sent = sorted((account, n) for account, n in span.sent.items() if n)
    values = array("d", [_FORMAT, len(pairs), len(sent)])
    samples = array("d")
    for (queue_id, account_id), s in pairs:
        first, resolution = sorted(s.first), sorted(s.resolution)
        values.extend((queue_id if queue_id is not None else -1, account_id, s.arrivals))
        values.extend((len(first), len(resolution), s.handled, s.handle_sum))
        samples.extend(first)
        samples.extend(resolution)
    for account_id, n in sent:
        values.extend((account_id, n))
    values.extend(samples)
    if _BIG_ENDIAN:
        values.byteswap()
    return values.tobytes()


def _values(data: bytes | memoryview) -> array[float]:
    values = array("d")
    values.frombytes(data)
    if _BIG_ENDIAN:
        values.byteswap()
    if not values or values[0] != _FORMAT:
        raise ValueError("not a MetricHour row of this format")
    return values


def decode(
    data: bytes | memoryview,
) -> tuple[list[tuple[int | None, int, int, array[float], array[float], int, float]], list[tuple[int, int]]]:
    """A stored row: its pairs (queue, account, arrivals, first response times, resolution times, handled,
    handling seconds summed) and its replies sent (account, count)."""
    values = _values(data)
    n_pairs, n_sent = int(values[1]), int(values[2])
    header = values[3 : 3 + _PAIR * n_pairs].tolist()
    at = 3 + _PAIR * n_pairs
    sent = [(int(values[at + 2 * i]), int(values[at + 2 * i + 1])) for i in range(n_sent)]
    at += 2 * n_sent
    pairs = []
    for i in range(0, len(header), _PAIR):
        queue, account, arrivals, n_first, n_resolution, handled, handle_sum = header[i : i + _PAIR]
        n_first, n_resolution = int(n_first), int(n_resolution)
        first = values[at : at + n_first]
        at += n_first
        resolution = values[at : at + n_resolution]
        at += n_resolution
        queue_id = int(queue) if queue >= 0 else None
        pairs.append((queue_id, int(account), int(arrivals), first, resolution, int(handled), handle_sum))
    return pairs, sent


def rollup(rows: Iterable[bytes | memoryview]) -> bytes:
    """One row for several stored spans (a day from its 24 hours)."""
    span = Span()
    for data in rows:
        pairs, sent = decode(data)
        for queue_id, account_id, arrivals, first, resolution, handled, handle_sum in pairs:
            span.pairs[(queue_id, account_id)].add(arrivals, first, resolution, handled, handle_sum)
        for account_id, n in sent:
            span.sent[account_id] += n
    return encode(span)


def hour_contents(*, start: datetime, end: datetime) -> dict[datetime, bytes]:
    """What ``MetricHour`` holds for each hour in ``[start, end)`` (whole UTC hours), from the conversations and
    deliveries as they are now; two queries for all of them."""
    if start != hour_of(start) or end != hour_of(end):
        raise ValueError("whole hours only")
    spans: dict[datetime, Span] = {}
    at = start
    while at < end:
        spans[at] = Span()
        at += HOUR
    interval = [(start, end)]
    for queue_id, account_id, status, created, first_at, resolved_at, first_s, res_s, handle_s in events(interval):
        pair = (queue_id, account_id)
        if _inside(created, interval):
            spans[hour_of(created)].pairs[pair].arrivals += 1
        if first_at is not None and _inside(first_at, interval):
            assert first_s is not None
            spans[hour_of(first_at)].pairs[pair].first.append(first_s)
        if status == _RESOLVED and resolved_at is not None and _inside(resolved_at, interval):
            spans[hour_of(resolved_at)].pairs[pair].resolved(res_s, handle_s)
    sent = (
        OutboundDelivery.objects.filter(sent_filter(interval))
        .order_by()
        .values_list(Trunc("sent_at", "hour", tzinfo=EPOCH.tzinfo), "account_id")
        .annotate(n=Count("*"))
    )
    for hour, account_id, n in sent:
        spans[hour].sent[account_id] += n
    return {bucket: encode(span) for bucket, span in spans.items()}


# --- A range from stored spans and the live rest ----------------------------------------------------------------
def whole_spans(range: TimeRange, seconds: int) -> tuple[datetime, datetime]:
    """[first, last): the whole epoch-aligned spans of ``seconds`` inside the range (first >= last: none)."""
    first = floor_to(range.start, seconds)
    if first < range.start:
        first += timedelta(seconds=seconds)
    return first, floor_to(range.end, seconds)


def live_intervals(range: TimeRange, stored: Iterable[datetime]) -> list[Interval]:
    """The parts of the range not covered by the stored hours (sorted, each inside the range)."""
    live: list[Interval] = []
    cursor = range.start
    for bucket in sorted(stored):
        if bucket > cursor:
            live.append((cursor, bucket))
        cursor = max(cursor, bucket + HOUR)
    if cursor < range.end:
        live.append((cursor, range.end))
    return live


@dataclass
class Merged:
    """A range's arrivals, first responses and resolutions: by queue (None: not routed), by channel account, and
    for the trend by (queue, bucket index) when asked for; the replies sent per account in the stored spans
    (``sent``) and the intervals read live (``live``: the caller counts the replies sent there)."""

    queues: defaultdict[int | None, Samples] = field(default_factory=lambda: defaultdict(Samples))
    accounts: defaultdict[int, Samples] = field(default_factory=lambda: defaultdict(Samples))
    cells: defaultdict[tuple[int, int], Samples] | None = None
    sent: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    live: list[Interval] = field(default_factory=list)
    stored_hours: int = 0


def _stored(range: TimeRange, *, days: bool) -> dict[datetime, tuple[int, bytes]]:
    """The stored rows to use for the range: whole days (when ``days``) and the whole hours outside them; an hour of
    a whole day without its day row (deleted by a change, not rolled up again yet) too. One query, two when a day
    row is missing."""
    first_hour, last_hour = whole_spans(range, 3600)
    if first_hour >= last_hour:
        return {}
    first_day, last_day = whole_spans(range, 86400) if days else (first_hour, first_hour)
    if first_day >= last_day:
        first_day = last_day = first_hour
    wanted = Q(hours=1, bucket__gte=first_hour, bucket__lt=first_day) | Q(
        hours=1, bucket__gte=last_day, bucket__lt=last_hour
    )
    if first_day < last_day:
        wanted |= Q(hours=24, bucket__gte=first_day, bucket__lt=last_day)
    rows = {bucket: (hours, data) for bucket, hours, data in _rows(wanted)}
    missing_days = []
    at = first_day
    while at < last_day:
        if at not in rows:
            missing_days.append((at, at + DAY))
        at += DAY
    if missing_days:
        for bucket, hours, data in _rows(Q(hours=1) & within("bucket", missing_days)):
            rows[bucket] = (hours, data)
    return rows


def _rows(condition: Q) -> list[tuple[datetime, int, bytes]]:
    return list(MetricHour.objects.filter(condition).values_list("bucket", "hours", "data"))


def merged(range: TimeRange, *, bucket_seconds: int | None = None) -> Merged | None:
    """The range from its stored spans and the rest live: two queries (three when a day row is missing). None when
    more than ``LIVE_LIMIT`` of it is not stored. With ``bucket_seconds`` (whole hours, aligned to the epoch like the
    trend's buckets) also the trend's cells; day rows are used then only for buckets of whole days."""
    trend = bucket_seconds is not None and bucket_seconds > 0 and bucket_seconds % 3600 == 0
    stored = _stored(range, days=not trend or (bucket_seconds or 0) % 86400 == 0)
    covered = [bucket + i * HOUR for bucket, (hours, _) in stored.items() for i in range_(hours)]
    live = live_intervals(range, covered)
    if sum((end - start for start, end in live), timedelta()) > LIVE_LIMIT:
        return None
    step = timedelta(seconds=bucket_seconds or 3600)
    origin = floor_to(range.start, bucket_seconds or 3600)
    m = Merged(cells=defaultdict(Samples) if trend else None, live=live, stored_hours=len(covered))
    queues, accounts, cells, sent_total = m.queues, m.accounts, m.cells, m.sent

    for bucket, (_, data) in stored.items():
        index = (bucket - origin) // step
        pairs, sent = decode(data)
        for queue_id, account_id, arrivals, first, resolution, handled, handle_sum in pairs:
            queue = queues[queue_id]
            queue.arrivals += arrivals
            queue.first += first
            queue.resolution += resolution
            queue.handled += handled
            queue.handle_sum += handle_sum
            account = accounts[account_id]
            account.arrivals += arrivals
            account.first += first
            account.resolution += resolution
            if cells is not None and queue_id is not None and (arrivals or first):
                cell = cells[(queue_id, index)]
                cell.arrivals += arrivals
                cell.first += first
        for account_id, n in sent:
            sent_total[account_id] += n

    for queue_id, account_id, status, created, first_at, resolved_at, first_sec, res_sec, handle_s in events(live):
        queue, account = queues[queue_id], accounts[account_id]
        if _inside(created, live):
            queue.arrivals += 1
            account.arrivals += 1
            if cells is not None and queue_id is not None:
                cells[(queue_id, (created - origin) // step)].arrivals += 1
        if first_at is not None and _inside(first_at, live):
            assert first_sec is not None
            queue.first.append(first_sec)
            account.first.append(first_sec)
            if cells is not None and queue_id is not None:
                cells[(queue_id, (first_at - origin) // step)].first.append(first_sec)
        if status == _RESOLVED and _inside(resolved_at, live):
            queue.resolved(res_sec, handle_s)
            account.resolved(res_sec, None)
    return m
