"""Stored hours (``MetricHour``, inbox/metrics/hours.py): a range merged from sealed hours and days plus the live rest
gives exactly the live SQL's figures (``percentile_cont`` and all), and the triggers keep stored hours right when a
conversation or a delivery changes after the fact.

The reference is the live SQL path (forced with ``LIVE_LIMIT = 0`` while nothing is stored), on the same constructed
data: hour boundaries, reopened and re-resolved conversations, a corrected language, conversations in no queue,
deliveries sent in several hours (one at a provider's time in the past), failed and retrying.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import fields, is_dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection

from inbox.conversations.models import ChannelAccount, Conversation, OutboundDelivery
from inbox.conversations.services import conversation_set_language, conversation_set_status
from inbox.metrics import hours
from inbox.metrics.expressions import percentile, percentile_of_sorted
from inbox.metrics.models import MetricHour
from inbox.metrics.selectors import channel_metrics, overview, queue_metrics, queues_and_channels, trend
from inbox.metrics.services import HOUR_LOCK, _settled, hours_seal
from inbox.metrics.types import TimeRange
from inbox.routing.selectors import clear_cache
from tests.metrics.test_selectors import DAY, HOUR, MIN, NOW, conv, delivery

RESOLVED = Conversation.Status.RESOLVED
SEC = timedelta(seconds=1)
US = timedelta(microseconds=1)
H12 = datetime(2025, 3, 10, 12, tzinfo=NOW.tzinfo)  # the hour NOW (12:30) is in

RANGES = {
    "2.5 h across two boundaries": (TimeRange(H12 - 2 * HOUR - 15 * MIN, NOW), 3600),
    "24 h": (DAY, 3600),
    "3 days, by day": (TimeRange(NOW - timedelta(days=3), NOW), 86400),
    "7 days, by day": (TimeRange(NOW - timedelta(days=7), NOW), 86400),
    "whole hours only": (TimeRange(H12 - 5 * HOUR, H12), 3600),
}


# --- constructed data ------------------------------------------------------------------------------------------
def make_history(demo: Any) -> dict[str, Any]:
    """About 150 conversations over the last 4 days in 4 queues (and none), 2 channels, with deliveries."""
    mail = ChannelAccount.objects.create(kind="email", name="Support mail")
    accounts = [demo.webchat, mail]
    languages = ["es", "en", "de", ""]
    made: dict[str, Any] = {"mail": mail}
    S = OutboundDelivery.State
    for n in range(150):
        created = NOW - timedelta(hours=96) + n * 37 * MIN + (n % 7) * SEC + (n % 5) * US
        kind = n % 6
        first = created + ((n % 11) + 1) * 4 * MIN + (n % 3) * US if kind != 5 else None
        if first is not None and first >= NOW:
            first = None
        resolved = first + ((n % 13) + 1) * 10 * MIN if kind in (0, 1, 2) and first else None
        if resolved is not None and resolved >= NOW:
            resolved = None
        c = conv(
            demo,
            languages[n % 4],
            account=accounts[n % 2],
            created=created,
            first_response_at=first,
            status=RESOLVED if resolved else Conversation.Status.PENDING if kind == 4 else "open",
            resolved_at=resolved,
            waiting_since=created if kind == 5 else None,
            assignee=demo.agent_es if n % 4 == 1 else None,
        )
        if kind == 3 and first is not None:
            delivery(c.account, c, S.SENT, created=first, sent_at=first)
        if n % 10 == 4:
            delivery(c.account, c, S.FAILED, created=created, claimed_at=created + 2 * MIN)
        if n % 25 == 7:
            delivery(c.account, c, S.RETRY_WAIT, created=created, next_attempt_at=NOW + MIN)
    # The hour boundary: created in the last microsecond of 09:00, answered at 10:00:00 sharp, resolved at 11:00:00.
    edge = H12 - 2 * HOUR - US
    made["edge"] = conv(
        demo, "es", created=edge, first_response_at=H12 - 2 * HOUR, resolved_at=H12 - HOUR, status=RESOLVED
    )
    delivery(demo.webchat, made["edge"], S.SENT, created=edge, sent_at=H12 - 2 * HOUR)
    # Not routed to any queue: counts in its channel only.
    loose = conv(demo, "en", created=NOW - 30 * HOUR, first_response_at=NOW - 29 * HOUR)
    Conversation.objects.filter(pk=loose.pk).update(queue=None)
    # Resolved yesterday, to be reopened; answered in a past hour, to have its language corrected.
    made["resolved"] = conv(
        demo,
        "de",
        created=NOW - 26 * HOUR,
        first_response_at=NOW - 25 * HOUR,
        resolved_at=NOW - 20 * HOUR,
        status=RESOLVED,
        assignee=demo.agent_es,
    )
    made["corrected"] = conv(demo, "en", created=NOW - 50 * HOUR, first_response_at=NOW - 49 * HOUR)
    return made


# --- comparing ----------------------------------------------------------------------------------------------
def same(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 relative (the same values, interpolated in Python instead of PostgreSQL)."""
    if is_dataclass(a):
        assert type(a) is type(b), path
        for f in fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-9), path
    else:
        assert a == b, path


def live_sql(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every range's figures by the live SQL path (nothing stored, no live part allowed)."""
    assert not MetricHour.objects.exists()
    with monkeypatch.context() as m:
        m.setattr(hours, "LIVE_LIMIT", timedelta(0))
        return {name: figures(span, bucket) for name, (span, bucket) in RANGES.items()}


def figures(span: TimeRange, bucket: int) -> tuple[Any, ...]:
    data = overview(range=span, now=NOW, bucket_seconds=bucket)
    return (
        data.queues,
        data.channels,
        data.trend,
        queue_metrics(range=span, now=NOW),
        channel_metrics(range=span, now=NOW),
        trend(range=span, bucket_seconds=bucket, now=NOW),
    )


def seal() -> int:
    """Every hour of the last 8 days (Mar 2 12:00 .. Mar 10 12:00) and the whole days among them."""
    return hours_seal(start=NOW - timedelta(days=8), end=NOW, limit=1000)


def stored_path(span: TimeRange, bucket: int) -> hours.Merged:
    merged = hours.merged(span, bucket_seconds=bucket)
    assert merged is not None and merged.stored_hours > 0
    return merged


# --- the tests -------------------------------------------------------------------------------------------------
def test_stored_hours_and_days_give_the_live_figures(demo, monkeypatch) -> None:
    make_history(demo)
    reference = live_sql(monkeypatch)
    assert any(q.first_response_p90 for q in reference["7 days, by day"][0])

    assert seal() == 8 * 24 + 7  # every hour of the 8 days, and the whole days Mar 3 .. Mar 9
    assert MetricHour.objects.filter(hours=24).count() == 7
    for name, (span, bucket) in RANGES.items():
        merged = stored_path(span, bucket)
        assert sum((end - start for start, end in merged.live), timedelta()) <= hours.LIVE_LIMIT, name
        same(reference[name], figures(span, bucket), name)
    assert not stored_path(*RANGES["whole hours only"]).live  # nothing read live at all
    # The 7 days, by day, are six day rows and the hours at both ends.
    assert stored_path(*RANGES["7 days, by day"]).stored_hours == 6 * 24 + 11 + 12

    # Sealing again writes nothing; the same rows give the same figures.
    assert seal() == 0
    same(reference["24 h"], figures(*RANGES["24 h"]), "again")


def test_the_hour_boundary_counts_each_event_in_its_own_hour(demo) -> None:
    made = make_history(demo)
    seal()
    edge = made["edge"]
    nine, ten, eleven = H12 - 3 * HOUR, H12 - 2 * HOUR, H12 - HOUR

    def pair_of(bucket: datetime) -> tuple[Any, ...]:
        row = MetricHour.objects.get(hours=1, bucket=bucket)
        pairs, _ = hours.decode(row.data)
        return next(p for p in pairs if (p[0], p[1]) == (edge.queue_id, edge.account_id))

    assert pair_of(nine)[2] >= 1  # arrived at 09:59:59.999999
    assert 1e-6 in list(pair_of(ten)[3])  # first response at 10:00:00, a microsecond later
    assert 3600.000001 in list(pair_of(eleven)[4])  # resolved at 11:00:00
    # A range starting on the boundary counts the answer and the resolution, not the arrival; all from stored rows.
    span = TimeRange(ten, eleven + HOUR)
    assert stored_path(span, 3600).live == []
    es = next(q for q in queue_metrics(range=span, now=NOW) if q.language == "es")
    arrivals = Conversation.objects.filter(queue=edge.queue, created_at__gte=ten, created_at__lt=eleven + HOUR)
    assert es.arrivals == arrivals.count()
    assert es.first_responses >= 1 and es.resolutions >= 1


def test_a_reopened_conversation_leaves_its_stored_hour_until_sealed_again(demo, monkeypatch) -> None:
    made = make_history(demo)
    c = made["resolved"]
    seal()
    resolved_hour = NOW - 20 * HOUR - 30 * MIN  # 16:00 yesterday
    resolved_day = datetime(2025, 3, 9, tzinfo=NOW.tzinfo)
    assert MetricHour.objects.filter(hours=1, bucket=resolved_hour).exists()
    assert MetricHour.objects.filter(hours=24, bucket=resolved_day).exists()

    # Reopened (the real action): the trigger deletes the hour and the day of its resolution, and of its other
    # timestamps; the figures are the live ones at once.
    c = conversation_set_status(conversation=c, status="open", actor=demo.agent_es)
    assert not MetricHour.objects.filter(hours=1, bucket=resolved_hour).exists()
    assert not MetricHour.objects.filter(hours=24, bucket=resolved_day).exists()
    for name in ("24 h", "3 days, by day"):
        span, bucket = RANGES[name]
        with_hole = figures(span, bucket)
        MetricHour.objects.all().delete()
        with monkeypatch.context() as m:
            m.setattr(hours, "LIVE_LIMIT", timedelta(0))
            same(figures(span, bucket), with_hole, name)
        seal()
        same(figures(span, bucket), with_hole, f"{name} resealed")
    de = next(q for q in queue_metrics(range=DAY, now=NOW) if q.language == "de")
    assert de.open >= 1

    # Resolved again (at a fixed past time): counted once, with its final time, stored or live.
    conversation_set_status(conversation=c, status=RESOLVED, actor=demo.agent_es)
    Conversation.objects.filter(pk=c.pk).update(resolved_at=NOW - 2 * HOUR)
    seal()
    stored = figures(*RANGES["24 h"])
    MetricHour.objects.all().delete()
    with monkeypatch.context() as m:
        m.setattr(hours, "LIVE_LIMIT", timedelta(0))
        same(figures(*RANGES["24 h"]), stored, "resolved again")


def test_a_corrected_language_moves_the_stored_figures(demo, monkeypatch) -> None:
    made = make_history(demo)
    seal()
    before = {q.language: q for q in queue_metrics(range=RANGES["3 days, by day"][0], now=NOW)}
    conversation_set_language(conversation=made["corrected"], language="ru", actor=demo.agent_es)
    after = {q.language: q for q in queue_metrics(range=RANGES["3 days, by day"][0], now=NOW)}
    assert after["ru"].first_responses == before["ru"].first_responses + 1
    assert after["en"].first_responses == before["en"].first_responses - 1
    stored = figures(*RANGES["3 days, by day"])
    MetricHour.objects.all().delete()
    with monkeypatch.context() as m:
        m.setattr(hours, "LIVE_LIMIT", timedelta(0))
        same(figures(*RANGES["3 days, by day"]), stored, "corrected")


def test_deliveries_sent_in_a_past_hour_and_deleted_rows_forget_their_hours(demo) -> None:
    made = make_history(demo)
    seal()
    rows = MetricHour.objects.count()
    web = {c.account_id: c for c in channel_metrics(range=DAY, now=NOW)}[demo.webchat.pk]
    # A reply whose provider time lies in a stored hour (the delivery is written now, its sent_at in the past).
    late = delivery(demo.webchat, made["edge"], OutboundDelivery.State.SENDING, created=NOW - 3 * HOUR)
    assert MetricHour.objects.count() == rows  # its creation time is in a stored hour, but nothing counts it yet
    OutboundDelivery.objects.filter(pk=late.pk).update(state="sent", sent_at=NOW - 5 * HOUR)
    assert not MetricHour.objects.filter(hours=1, bucket=H12 - 5 * HOUR).exists()
    assert {c.account_id: c for c in channel_metrics(range=DAY, now=NOW)}[demo.webchat.pk].replies_sent == (
        web.replies_sent + 1
    )
    # A deleted conversation (its messages and deliveries with it) leaves its hours too.
    seal()
    Conversation.objects.filter(pk=made["corrected"].pk).delete()
    assert not MetricHour.objects.filter(hours=1, bucket=H12 - 50 * HOUR).exists()


def test_changes_in_the_current_hour_leave_stored_rows_alone(demo) -> None:
    make_history(demo)
    seal()
    rows = set(MetricHour.objects.values_list("id", flat=True))
    now = datetime.now(tz=NOW.tzinfo)  # the database's present: the hour no stored row can contain
    c = conv(demo, "es", created=now)
    Conversation.objects.filter(pk=c.pk).update(first_response_at=now, status=RESOLVED, resolved_at=now)
    # Answering and resolving now a conversation that arrived in a stored hour changes nothing stored (its arrival
    # stays where it was); so does a reply sent now.
    old = Conversation.objects.filter(first_response_at__isnull=True, created_at__lt=NOW - 5 * HOUR).first()
    assert old is not None
    Conversation.objects.filter(pk=old.pk).update(first_response_at=now, waiting_since=None)
    conversation_set_status(conversation=old, status=RESOLVED, actor=demo.agent_es)
    sending = delivery(demo.webchat, old, OutboundDelivery.State.SENDING, created=NOW - 30 * HOUR)
    OutboundDelivery.objects.filter(pk=sending.pk).update(state="sent", sent_at=now)
    assert set(MetricHour.objects.values_list("id", flat=True)) == rows
    # Reopening it now does: its resolution is gone, but it was in the present hour, not stored; the arrival stays.
    conversation_set_status(conversation=old, status="open", actor=demo.agent_es)
    assert set(MetricHour.objects.values_list("id", flat=True)) == rows
    # Its first response moved into a stored hour (a correction): that hour and its day are forgotten, no other.
    stored = {(bucket, hours) for bucket, hours in MetricHour.objects.values_list("bucket", "hours")}
    Conversation.objects.filter(pk=old.pk).update(first_response_at=NOW - 30 * HOUR)  # 06:30 on Mar 9
    left = {(bucket, hours) for bucket, hours in MetricHour.objects.values_list("bucket", "hours")}
    assert stored - left == {(H12 - 30 * HOUR, 1), (datetime(2025, 3, 9, tzinfo=NOW.tzinfo), 24)}


def _dsn() -> str:
    settings = connection.settings_dict
    return f"host={settings['HOST'] or '127.0.0.1'} port={settings['PORT'] or 5432} dbname={settings['NAME']}"


def test_sealing_waits_for_older_transactions_and_for_the_lock(demo) -> None:
    with psycopg.connect(_dsn(), user=connection.settings_dict["USER"]) as other:
        # A change to a stored hour holds the shared side of the lock: the seal leaves the hours to the next beat.
        other.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", HOUR_LOCK)
        make_history(demo)
        assert hours_seal(start=NOW - 3 * HOUR, end=NOW) == 0
        other.rollback()
        # Another transaction that began at ``started``: no hour ending after that is sealed while it runs.
        row = other.execute("SELECT now()").fetchone()
        assert row is not None
        started = row[0]
        settled = _settled()
        assert settled is not None and settled <= started
        other.rollback()
    assert hours_seal(start=NOW - 3 * HOUR, end=NOW) == 3


@pytest.mark.django_db(transaction=True)
def test_a_change_waits_for_a_seal_in_progress_then_forgets_what_it_stored() -> None:
    from tests.factories import make_demo

    demo = make_demo()
    c = conv(
        demo, "es", created=NOW - 5 * HOUR, first_response_at=NOW - 4 * HOUR, resolved_at=H12 - HOUR, status=RESOLVED
    )
    done = threading.Event()

    def reopen() -> None:
        try:
            conversation_set_status(conversation=c, status="open", actor=demo.agent_es)
            done.set()
        finally:
            connection.close()

    with psycopg.connect(_dsn(), user=connection.settings_dict["USER"]) as beat:
        # The beat, mid-seal: it holds the lock and has written the hour of the resolution, not committed yet.
        beat.execute("SELECT pg_advisory_xact_lock(%s, %s)", HOUR_LOCK)
        beat.execute(
            "INSERT INTO metrics_metrichour (bucket, hours, data, taken_at) VALUES (%s, 1, %s, now())",
            [H12 - HOUR, hours.encode(hours.Span())],
        )
        thread = threading.Thread(target=reopen)
        thread.start()
        assert not done.wait(0.5)  # the reopening waits for the seal...
        beat.commit()
    thread.join(10)
    assert done.is_set()
    # ...and then forgets what the seal stored: the hour is read live until sealed again.
    assert not MetricHour.objects.filter(bucket=H12 - HOUR).exists()
    clear_cache()


def test_a_range_mostly_not_stored_uses_the_live_sql(demo) -> None:
    make_history(demo)
    hours_seal(start=NOW - 10 * HOUR, end=NOW)
    assert hours.merged(DAY) is None  # 14 of its hours are not stored: over LIVE_LIMIT
    assert hours.merged(TimeRange(NOW - 10 * HOUR, NOW)) is not None
    assert hours.merged(TimeRange(NOW - 5 * HOUR, NOW)) is not None  # a few hours: live in Python, nothing stored


def test_the_prometheus_gauges_read_the_conversations_once(demo, django_assert_max_num_queries) -> None:
    make_history(demo)
    queues, channels = queues_and_channels(range=TimeRange(NOW - HOUR, NOW), now=NOW)
    assert queues == queue_metrics(range=TimeRange(NOW - HOUR, NOW), now=NOW)
    assert channels == channel_metrics(range=TimeRange(NOW - HOUR, NOW), now=NOW)
    with django_assert_max_num_queries(8):
        queues_and_channels(range=TimeRange(NOW - HOUR, NOW), now=NOW)


# --- encoding and percentiles -------------------------------------------------------------------------------------
def test_encode_decode_and_rollup() -> None:
    a, b = hours.Span(), hours.Span()
    a.pairs[(3, 1)].add(2, [30.5, 10.25], [100.0], 1, 40.0)
    a.pairs[(None, 2)].add(1, [], [7.0, 5.0], 0, 0.0)
    a.sent[1] += 4
    b.pairs[(3, 1)].add(1, [20.0], [], 0, 0.0)
    b.sent[1] += 1
    b.sent[2] += 2
    pairs, sent = hours.decode(hours.encode(a))
    assert [(q, acc, n, list(f), list(r), h, s) for q, acc, n, f, r, h, s in pairs] == [
        (None, 2, 1, [], [5.0, 7.0], 0, 0.0),
        (3, 1, 2, [10.25, 30.5], [100.0], 1, 40.0),
    ]
    assert sent == [(1, 4)]
    pairs, sent = hours.decode(hours.rollup([hours.encode(a), hours.encode(b)]))
    assert [(q, acc, n, list(f)) for q, acc, n, f, _, _, _ in pairs] == [
        (None, 2, 1, []),
        (3, 1, 3, [10.25, 20.0, 30.5]),
    ]
    assert sent == [(1, 5), (2, 2)]
    with pytest.raises(ValueError):
        hours.decode(b"\x00" * 8)


def test_percentiles_merged_from_parts_equal_percentile_cont(db) -> None:
    values = [((i * 7919) % 1000) / 7 + i * 1e-6 for i in range(101)]
    parts = [sorted(values[i : i + 17]) for i in range(0, 101, 17)]
    merged = sorted(itertools.chain.from_iterable(parts))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v), percentile_cont(0.9) WITHIN GROUP (ORDER BY v)"
            " FROM unnest(%s::float8[]) AS v",
            [values],
        )
        p50, p90 = cursor.fetchone()
    assert percentile_of_sorted(merged, 0.5) == p50 and percentile_of_sorted(merged, 0.9) == p90
    assert percentile(values, 0.9) == p90
