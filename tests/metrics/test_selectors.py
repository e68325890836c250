"""The managers' figures on constructed data with known answers (PostgreSQL: the percentiles are percentile_cont).

Rows are written directly with exact timestamps (``created_at`` is auto_now_add: set by update()), except where
the behaviour under test is a service's (reopen, language correction, presence).
"""

from __future__ import annotations

import itertools
import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from inbox.conversations.models import (
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    Message,
    OutboundDelivery,
)
from inbox.conversations.services import conversation_set_language, conversation_set_status
from inbox.metrics import selectors
from inbox.metrics.erlang import agents_for_service_level
from inbox.metrics.models import MetricSnapshot
from inbox.metrics.selectors import channel_metrics, overview, percentile, queue_metrics, trend
from inbox.metrics.services import hours_seal, snapshot_take
from inbox.metrics.types import QueueMetrics, TimeRange
from inbox.routing.models import AgentQueue
from inbox.routing.selectors import clear_cache
from inbox.routing.services import agent_set_presence
from inbox.taskqueue import METRICS_SNAPSHOT

NOW = datetime(2025, 3, 10, 12, 30, tzinfo=UTC)
DAY = TimeRange(NOW - timedelta(hours=24), NOW)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
_handles = itertools.count()


def conv(
    demo: Any,
    language: str = "es",
    *,
    created: datetime,
    status: str = Conversation.Status.OPEN,
    waiting_since: datetime | None = None,
    first_response_at: datetime | None = None,
    resolved_at: datetime | None = None,
    assignee: Any = None,
    account: ChannelAccount | None = None,
) -> Conversation:
    account = account or demo.webchat
    queue = demo.fallback if language == "" else demo.queues[language]
    handle = f"visitor-{next(_handles)}"
    contact = Contact.objects.create(name=handle)
    identity = ContactIdentity.objects.create(contact=contact, kind=account.kind, handle=handle)
    c = Conversation.objects.create(
        account=account,
        contact=contact,
        identity=identity,
        language=language,
        queue=queue,
        status=status,
        assignee=assignee,
        waiting_since=waiting_since,
        first_response_at=first_response_at,
        resolved_at=resolved_at,
    )
    Conversation.objects.filter(pk=c.pk).update(created_at=created)
    c.refresh_from_db()
    return c


def by_language(range: TimeRange = DAY, now: datetime = NOW) -> dict[str, QueueMetrics]:
    return {q.language: q for q in queue_metrics(range=range, now=now)}


# --- Percentiles and empty ranges ------------------------------------------------------------------------------
def test_first_response_percentiles_of_ten_known_times(demo) -> None:
    # First responses of 1..10 minutes: percentile_cont gives p50 = 5.5 min and p90 = 9.1 min.
    for i in range(1, 11):
        created = NOW - 10 * HOUR + i * MIN
        conv(demo, created=created, first_response_at=created + i * MIN)
    es = by_language()["es"]
    assert es.first_responses == 10
    assert es.first_response_p50 == pytest.approx(330.0)
    assert es.first_response_p90 == pytest.approx(546.0)
    assert es.arrivals == 10
    assert es.arrivals_per_hour == pytest.approx(10 / 24)
    # The Python fallback (SQLite) computes the same interpolation.
    values = [60.0 * i for i in range(1, 11)]
    assert percentile(values, 0.5) == pytest.approx(330.0) and percentile(values, 0.9) == pytest.approx(546.0)
    assert percentile([], 0.5) is None and percentile([7.0], 0.9) == 7.0


def test_resolution_percentiles_and_handle_time(demo) -> None:
    created = NOW - 20 * HOUR
    for minutes in (30, 60, 90, 120):
        conv(
            demo,
            created=created,
            first_response_at=created + 10 * MIN,
            resolved_at=created + minutes * MIN,
            status=Conversation.Status.RESOLVED,
        )
    es = by_language()["es"]
    assert es.resolutions == 4
    assert es.resolution_p50 == pytest.approx(75 * 60.0)
    assert es.resolution_p90 == pytest.approx((90 + 0.7 * 30) * 60.0)
    # Handle time: resolved - first response = 20, 50, 80, 110 minutes -> mean 65 minutes.
    assert es.handle_time_seconds == pytest.approx(65 * 60.0)


def test_an_empty_range_has_no_percentiles_and_zero_counts(demo) -> None:
    conv(demo, created=NOW - 2 * HOUR, first_response_at=NOW - HOUR, waiting_since=NOW - 30 * MIN)
    long_ago = TimeRange(NOW - timedelta(days=30), NOW - timedelta(days=29))
    queues = by_language(long_ago)
    assert set(queues) == {*demo.queues, ""}
    es, de = queues["es"], queues["de"]
    for q in (es, de):
        assert (q.arrivals, q.first_responses, q.resolutions) == (0, 0, 0)
        assert q.arrivals_per_hour == 0.0
        assert q.first_response_p50 is q.first_response_p90 is q.resolution_p50 is q.resolution_p90 is None
        assert q.handle_time_seconds is None and q.agents_needed is None
        assert (q.first_response_breaches, q.resolution_breaches) == (0, 0)
    # "Now" figures do not depend on the range.
    assert (es.waiting_now, es.open, es.oldest_wait_seconds) == (1, 1, 1800.0)
    assert (de.waiting_now, de.open, de.oldest_wait_seconds) == (0, 0, None)
    [web] = channel_metrics(range=long_ago, now=NOW)
    assert (web.arrivals, web.replies_sent, web.deliveries_failed, web.first_response_p50) == (0, 0, 0, None)


# --- Now: waiting, open, assigned ------------------------------------------------------------------------------
def test_waiting_open_assigned_and_oldest_wait(demo) -> None:
    t = NOW - 2 * HOUR
    conv(demo, created=t, waiting_since=NOW - 30 * MIN, assignee=demo.agent_es)
    conv(demo, created=t, waiting_since=NOW - 10 * MIN)
    conv(demo, created=t, first_response_at=t + MIN)  # open, answered: nobody waits
    conv(demo, created=t, status=Conversation.Status.PENDING, assignee=demo.agent_es)  # waits on the customer
    conv(demo, created=t, status=Conversation.Status.SNOOZED, waiting_since=t, assignee=demo.agent_es)
    conv(demo, created=t, status=Conversation.Status.RESOLVED, waiting_since=t, resolved_at=t + HOUR)
    conv(demo, "en", created=t, waiting_since=NOW - 5 * MIN)
    queues = by_language()
    es = queues["es"]
    assert es.waiting_now == 2
    assert es.oldest_wait_seconds == 1800.0
    assert es.open == 4
    assert es.assigned == 2
    assert (queues["en"].waiting_now, queues["en"].open, queues["en"].oldest_wait_seconds) == (1, 1, 300.0)


def test_arrivals_count_the_half_open_range(demo) -> None:
    span = TimeRange(NOW - 3 * HOUR, NOW)
    conv(demo, created=span.start)  # counted: the range includes its start
    for minutes in (10, 50, 100, 150, 179):
        conv(demo, created=span.start + minutes * MIN)
    conv(demo, created=span.end)  # not counted: the range excludes its end
    conv(demo, created=span.start - MIN)
    es = by_language(span)["es"]
    assert es.arrivals == 6
    assert es.arrivals_per_hour == pytest.approx(2.0)


# --- Edge cases ------------------------------------------------------------------------------------------------
def test_reopened_conversation_counts_its_first_response_once_and_its_final_resolution(demo) -> None:
    created = NOW - 10 * HOUR
    c = conv(demo, created=created, first_response_at=created + 5 * MIN, assignee=demo.agent_es)
    Conversation.objects.filter(pk=c.pk).update(status=Conversation.Status.RESOLVED, resolved_at=created + HOUR)
    es = by_language()["es"]
    assert (es.resolutions, es.resolution_p50, es.first_responses) == (1, 3600.0, 1)

    # Reopened (the real action): resolved_at is cleared, so it is not a resolution any more.
    c = conversation_set_status(conversation=c, status=Conversation.Status.OPEN, actor=demo.agent_es)
    assert c.resolved_at is None
    es = by_language()["es"]
    assert (es.resolutions, es.resolution_p50, es.first_responses, es.first_response_p50) == (0, None, 1, 300.0)
    assert es.open == 1

    # Resolved again (the real action stamps now; the test fixes the time): counted once, with its final time.
    conversation_set_status(conversation=c, status=Conversation.Status.RESOLVED, actor=demo.agent_es)
    Conversation.objects.filter(pk=c.pk).update(resolved_at=created + 3 * HOUR)
    es = by_language()["es"]
    assert (es.resolutions, es.resolution_p50, es.resolution_p90) == (1, 3 * 3600.0, 3 * 3600.0)
    assert (es.first_responses, es.first_response_p50, es.open, es.arrivals) == (1, 300.0, 0, 1)


def test_a_language_corrected_mid_conversation_counts_in_the_new_queue(demo) -> None:
    created = NOW - 5 * HOUR
    c = conv(demo, "en", created=created, first_response_at=created + 20 * MIN, waiting_since=NOW - 15 * MIN)
    before = by_language()
    assert (before["en"].arrivals, before["en"].first_responses, before["en"].waiting_now) == (1, 1, 1)
    assert before["en"].first_response_breaches == 1  # 20 min > 15 min

    conversation_set_language(conversation=c, language="es", actor=demo.agent_es)
    after = by_language()
    en, es = after["en"], after["es"]
    assert (en.arrivals, en.first_responses, en.waiting_now, en.open, en.first_response_breaches) == (0, 0, 0, 0, 0)
    assert en.first_response_p50 is None
    assert (es.arrivals, es.first_responses, es.waiting_now, es.open) == (1, 1, 1, 1)
    assert es.first_response_p50 == 1200.0 and es.first_response_breaches == 1
    assert es.oldest_wait_seconds == 900.0


def test_an_agent_going_offline_leaves_online_and_capacity_but_not_assigned(demo) -> None:
    t = NOW - HOUR
    conv(demo, created=t, assignee=demo.agent_es)
    conv(demo, created=t, assignee=demo.agent_es, waiting_since=t)
    conv(demo, created=t, assignee=demo.agent_es, status=Conversation.Status.RESOLVED, resolved_at=t + MIN)
    conv(demo, "en", created=t, assignee=demo.agent_es, status=Conversation.Status.PENDING)  # another queue's
    queues = by_language()
    es, en, ru = queues["es"], queues["en"], queues["ru"]
    # ana serves es, capacity 3; her load counts all her open + pending work (the en one too).
    assert (es.agents_online, es.capacity, es.load) == (1, 3, 3)
    assert (es.open, es.assigned) == (2, 2)
    assert (en.agents_online, en.capacity, en.load, en.open, en.assigned) == (1, 3, 0, 1, 1)  # ben, free
    assert (ru.agents_online, ru.capacity, ru.load) == (0, 0, 0)  # oleg is offline

    agent_set_presence(user=demo.agent_es, presence="offline")
    es = by_language()["es"]
    assert (es.agents_online, es.capacity, es.load) == (0, 0, 0)
    assert (es.open, es.assigned, es.waiting_now) == (2, 2, 1)


def test_inactive_agents_and_agents_of_other_queues_are_not_online_here(demo) -> None:
    demo.agent_en.is_active = False
    demo.agent_en.save(update_fields=["is_active"])
    queues = by_language()
    assert (queues["en"].agents_online, queues["en"].capacity) == (0, 0)
    assert sum(q.agents_online for q in queues.values()) == 1  # ana in es


# --- SLA breaches ----------------------------------------------------------------------------------------------
def test_sla_breaches_answered_late_and_still_unanswered(demo) -> None:
    AgentQueue.objects.filter(pk=demo.queues["es"].pk).update(
        first_response_sla_seconds=600, resolution_sla_seconds=3600
    )
    resolved = Conversation.Status.RESOLVED
    t = NOW - 5 * HOUR
    conv(demo, created=t, first_response_at=t + 5 * MIN, resolved_at=t + 30 * MIN, status=resolved)  # in time
    conv(demo, created=t, first_response_at=t + 20 * MIN, resolved_at=t + 2 * HOUR, status=resolved)  # both late
    conv(demo, created=t, first_response_at=t + 10 * MIN)  # exactly on the target: not a breach; open 5 h: breach
    conv(demo, created=NOW - 20 * MIN, waiting_since=NOW - 20 * MIN)  # unanswered 20 min: first-response breach
    conv(demo, created=NOW - 5 * MIN, waiting_since=NOW - 5 * MIN)  # unanswered 5 min: none yet
    conv(demo, created=NOW - 3 * HOUR, waiting_since=NOW - 3 * HOUR)  # unanswered 3 h: both
    # Resolved after 2 h without a reply: no first-response breach (nobody waits), a resolution breach.
    conv(demo, created=NOW - 3 * HOUR, resolved_at=NOW - HOUR, status=resolved)
    conv(demo, created=NOW - 30 * HOUR, waiting_since=NOW - 30 * HOUR)  # created before the range: not counted
    # Snoozed, unanswered for 2 h: still owes a first response.
    conv(demo, created=NOW - 2 * HOUR, status=Conversation.Status.SNOOZED)
    es = by_language()["es"]
    assert es.first_response_target_seconds == 600 and es.resolution_target_seconds == 3600
    assert es.first_response_breaches == 4  # 20 min late, unanswered 20 min, unanswered 3 h, snoozed 2 h
    assert es.resolution_breaches == 5  # resolved in 2 h, open 5 h, unanswered 3 h, resolved in 2 h, snoozed 2 h


def test_breaches_use_each_queues_own_targets(demo) -> None:
    AgentQueue.objects.filter(pk=demo.queues["en"].pk).update(first_response_sla_seconds=3600)
    for language in ("es", "en"):
        conv(demo, language, created=NOW - 4 * HOUR, first_response_at=NOW - 3 * HOUR - 30 * MIN)  # 30 min
    queues = by_language()
    assert queues["es"].first_response_breaches == 1  # default target 15 min
    assert queues["en"].first_response_breaches == 0  # 1 h


# --- Staffing --------------------------------------------------------------------------------------------------
def test_agents_needed_divides_erlang_slots_by_mean_capacity(demo) -> None:
    span = TimeRange(NOW - 2 * HOUR, NOW)
    resolved = Conversation.Status.RESOLVED
    for language in ("es", "de"):
        for start, handle in ((10, 20), (20, 40)):
            created = span.start + start * MIN
            conv(
                demo,
                language,
                created=created,
                first_response_at=created + 5 * MIN,
                resolved_at=created + (5 + handle) * MIN,
                status=resolved,
            )
        for start in (30, 40):
            conv(demo, language, created=span.start + start * MIN)
    slots = agents_for_service_level(
        arrivals_per_hour=2.0, handle_seconds=1800.0, target_seconds=900, service_level=0.8
    )
    assert slots
    queues = by_language(span)
    es, de = queues["es"], queues["de"]
    assert es.arrivals_per_hour == de.arrivals_per_hour == pytest.approx(2.0)
    assert es.handle_time_seconds == de.handle_time_seconds == pytest.approx(1800.0)
    assert es.agents_needed == math.ceil(slots / 3)  # ana: capacity 3
    assert de.agents_needed == math.ceil(slots / 5)  # nobody serves de: the default capacity
    assert es.service_level_target == 0.8
    # Without resolutions there is no handle time, so no advice.
    assert queues["en"].agents_needed is None and queues["en"].handle_time_seconds is None


# --- Channels --------------------------------------------------------------------------------------------------
def delivery(
    account: ChannelAccount, conversation: Conversation, state: str, *, created: datetime, **fields: Any
) -> OutboundDelivery:
    message = Message.objects.create(
        account=account, conversation=conversation, direction=Message.Direction.OUTBOUND, text="hi"
    )
    d = OutboundDelivery.objects.create(message=message, account=account, state=state, **fields)
    OutboundDelivery.objects.filter(pk=d.pk).update(created_at=created)
    return d


def test_channel_figures_and_deliveries(demo) -> None:
    mail = ChannelAccount.objects.create(kind="email", name="Support mail")
    t = NOW - 5 * HOUR
    web_a = conv(demo, created=t, first_response_at=t + 2 * MIN, waiting_since=NOW - 40 * MIN)
    conv(demo, "en", created=t, first_response_at=t + 4 * MIN, assignee=demo.agent_en)
    mail_a = conv(demo, "es", account=mail, created=t, first_response_at=t + 30 * MIN)
    conv(demo, "", account=mail, created=t, waiting_since=t)
    conv(demo, "", account=mail, created=NOW - 30 * HOUR, status="resolved", resolved_at=t)  # resolved in range

    S = OutboundDelivery.State
    for _ in range(3):
        delivery(demo.webchat, web_a, S.SENT, created=t, sent_at=t + MIN)
    delivery(demo.webchat, web_a, S.SENT, created=NOW - 30 * HOUR, sent_at=NOW - 30 * HOUR)  # before the range
    delivery(demo.webchat, web_a, S.FAILED, created=NOW - 30 * HOUR, claimed_at=t)  # last attempt in range
    delivery(demo.webchat, web_a, S.FAILED, created=t, claimed_at=t + MIN)
    delivery(demo.webchat, web_a, S.FAILED, created=t)  # never attempted: its creation counts
    delivery(demo.webchat, web_a, S.FAILED, created=NOW - 30 * HOUR, claimed_at=NOW - 29 * HOUR)  # before
    delivery(demo.webchat, web_a, S.RETRY_WAIT, created=t, next_attempt_at=NOW + MIN)
    delivery(demo.webchat, web_a, S.QUEUED, created=t, next_attempt_at=NOW + 10 * MIN)  # rate limited
    delivery(demo.webchat, web_a, S.QUEUED, created=t, next_attempt_at=NOW - MIN)  # due: not "retrying"
    delivery(demo.webchat, web_a, S.UNCERTAIN, created=t, claimed_at=t)  # the agent decides: not failed
    delivery(mail, mail_a, S.SENT, created=t, sent_at=NOW - MIN)
    delivery(mail, mail_a, S.SENT, created=t, sent_at=NOW)  # the range excludes its end

    channels = {c.name: c for c in channel_metrics(range=DAY, now=NOW)}
    assert list(channels) == ["Support mail", "Website"]  # by kind, then name
    web, email = channels["Website"], channels["Support mail"]
    assert (web.account_id, web.kind) == (demo.webchat.pk, "webchat")
    assert (web.replies_sent, web.deliveries_failed, web.deliveries_retrying) == (3, 3, 2)
    assert (email.replies_sent, email.deliveries_failed, email.deliveries_retrying) == (1, 0, 0)
    assert (web.arrivals, web.open, web.assigned, web.waiting_now, web.oldest_wait_seconds) == (2, 2, 1, 1, 2400.0)
    assert (web.first_responses, web.first_response_p50, web.first_response_p90) == (2, 180.0, pytest.approx(228.0))
    assert web.arrivals_per_hour == pytest.approx(2 / 24)
    assert (email.arrivals, email.open, email.waiting_now, email.oldest_wait_seconds) == (2, 2, 1, 5 * 3600.0)
    assert (email.first_responses, email.first_response_p50) == (1, 1800.0)
    assert (email.resolutions, email.resolution_p50) == (1, 25 * 3600.0)


# --- Trend and snapshots ---------------------------------------------------------------------------------------
def test_trend_per_hour_from_timestamps_snapshots_and_live(demo) -> None:
    span = TimeRange(datetime(2025, 3, 10, 9, 0, tzinfo=UTC), NOW)  # 09:00 .. 12:30: buckets 9, 10, 11, 12
    h9, h10, h11, h12 = (span.start + i * HOUR for i in range(4))
    conv(demo, created=h9, first_response_at=h9 + 2 * MIN)
    conv(demo, created=h9 + 59 * MIN, first_response_at=h10 + 4 * MIN)  # arrives at 9, answered at 10
    conv(demo, created=h10 + 30 * MIN, first_response_at=h10 + 36 * MIN)
    conv(demo, created=h12 + 10 * MIN, waiting_since=h12 + 10 * MIN)  # waits now
    conv(demo, created=h12 + 20 * MIN, waiting_since=h12 + 20 * MIN)
    conv(demo, "en", created=h11 + 5 * MIN)
    conv(demo, created=span.start - MIN)  # before the range
    MetricSnapshot.objects.create(queue=demo.queues["es"], bucket=h9, waiting=4, taken_at=h10 - MIN)
    MetricSnapshot.objects.create(queue=demo.queues["es"], bucket=h10, waiting=2, taken_at=h11 - MIN)
    MetricSnapshot.objects.create(queue=None, bucket=h10, waiting=9, taken_at=h11 - MIN)  # the total: not a queue

    points = trend(range=span, bucket_seconds=3600, now=NOW)
    assert len(points) == 4 * 15
    es = [p for p in points if p.language == "es"]
    assert [p.at for p in es] == [h9, h10, h11, h12]
    assert [p.arrivals for p in es] == [2, 1, 0, 2]
    assert [p.first_response_p50 for p in es] == [120.0, pytest.approx((300 + 360) / 2), None, None]
    assert [p.waiting for p in es] == [4, 2, 0, 2]  # snapshots, none for 11:00, live now
    en = [p for p in points if p.language == "en"]
    assert [p.arrivals for p in en] == [0, 0, 1, 0] and [p.waiting for p in en] == [0, 0, 0, 0]

    # Two-hour buckets are aligned to the epoch (08:00, 10:00, 12:00); waiting is the state at the bucket's end.
    wide = trend(range=span, bucket_seconds=7200, now=NOW)
    es = [p for p in wide if p.language == "es"]
    assert [p.at for p in es] == [h9 - HOUR, h11 - HOUR, h11 + HOUR]
    assert [p.arrivals for p in es] == [2, 1, 2]
    assert [p.first_response_p50 for p in es] == [120.0, pytest.approx(330.0), None]
    assert [p.waiting for p in es] == [4, 0, 2]


def test_snapshot_take_writes_one_row_per_queue_and_hour_and_is_idempotent(demo) -> None:
    t = NOW - 20 * MIN  # in the hour 12:00
    conv(demo, created=t, waiting_since=t)
    conv(demo, created=t - 5 * MIN, first_response_at=t, assignee=demo.agent_es)
    conv(demo, created=t - HOUR, first_response_at=t + 5 * MIN, status="resolved", resolved_at=t + 10 * MIN)
    conv(demo, "en", created=t, status=Conversation.Status.PENDING)
    conv(demo, created=NOW - 3 * HOUR)  # arrived in another hour

    assert snapshot_take(at=NOW) == 16  # 15 queues + all
    assert snapshot_take(at=NOW) == 16
    hour = datetime(2025, 3, 10, 12, tzinfo=UTC)
    assert MetricSnapshot.objects.count() == 16
    es = MetricSnapshot.objects.get(queue=demo.queues["es"], bucket=hour)
    assert (es.waiting, es.open, es.assigned, es.agents_online) == (1, 3, 1, 1)
    assert (es.arrivals, es.first_responses, es.resolutions) == (2, 2, 1)
    assert (es.first_response_p50, es.first_response_p90) == (pytest.approx(0.5 * (300 + 3900)), pytest.approx(3540))
    total = MetricSnapshot.objects.get(queue=None, bucket=hour)
    assert (total.waiting, total.open, total.assigned, total.agents_online) == (1, 4, 1, 2)
    assert (total.arrivals, total.first_responses, total.resolutions) == (3, 2, 1)
    assert total.first_response_p50 == pytest.approx(2100.0)

    # A later run in the same hour updates the same rows.
    Conversation.objects.filter(queue=demo.queues["es"], waiting_since__isnull=False).update(waiting_since=None)
    snapshot_take(at=NOW + 10 * MIN)
    assert MetricSnapshot.objects.count() == 16
    assert MetricSnapshot.objects.get(queue=demo.queues["es"], bucket=hour).waiting == 0
    assert MetricSnapshot.objects.get(queue=None, bucket=hour).waiting == 0
    # The next hour gets its own rows, and the trend reads the finished hour's end state.
    snapshot_take(at=NOW + HOUR)
    assert MetricSnapshot.objects.count() == 32


def test_the_beat_runs_the_snapshot_task_every_minute(demo) -> None:
    from workers.tasks import metrics_snapshot

    [entry] = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == METRICS_SNAPSHOT]
    assert entry["schedule"] == 60.0
    assert metrics_snapshot() == 16
    assert MetricSnapshot.objects.count() == 16
    assert MetricSnapshot.objects.filter(queue=None).count() == 1


@pytest.mark.django_db(transaction=True)
def test_snapshot_take_from_concurrent_beats_leaves_one_row_per_queue_and_hour() -> None:
    from tests.factories import make_demo

    demo = make_demo()
    conv(demo, created=NOW - 10 * MIN, waiting_since=NOW - 10 * MIN)
    queues = AgentQueue.objects.count()
    errors: list[BaseException] = []
    hours = [NOW - i * HOUR for i in range(3)]
    for at in hours:
        barrier = threading.Barrier(4)

        def run(at: datetime = at, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                snapshot_take(at=at)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert MetricSnapshot.objects.count() == 3 * (queues + 1)
    assert MetricSnapshot.objects.filter(queue=None).count() == 3
    es = MetricSnapshot.objects.filter(queue=demo.queues["es"]).order_by("bucket")
    assert [s.waiting for s in es] == [1, 1, 1]
    clear_cache()


# --- Overview --------------------------------------------------------------------------------------------------
def make_activity(demo: Any, extra_queues: int, conversations: int) -> None:
    for n in range(extra_queues):
        AgentQueue.objects.create(language=f"x{n}", name=f"Extra {n}")
    accounts = [demo.webchat, *(ChannelAccount.objects.create(kind="email", name=f"Mail {n}") for n in range(3))]
    languages = ["es", "en", "de", ""]
    for n in range(conversations):
        created = NOW - (n + 1) * 7 * MIN
        c = conv(
            demo,
            languages[n % 4],
            account=accounts[n % len(accounts)],
            created=created,
            first_response_at=created + (n % 9 + 1) * MIN,
            status="resolved" if n % 3 == 0 else "open",
            resolved_at=created + HOUR if n % 3 == 0 else None,
            waiting_since=None if n % 3 == 0 else NOW - n * MIN,
        )
        delivery(c.account, c, OutboundDelivery.State.SENT, created=created, sent_at=created + MIN)
    MetricSnapshot.objects.create(queue=demo.queues["es"], bucket=NOW - 3 * HOUR, waiting=3, taken_at=NOW)


@pytest.mark.parametrize("stored", [False, True], ids=["live SQL", "stored hours"])
@pytest.mark.parametrize("extra_queues, conversations", [(0, 0), (6, 40)])
def test_overview_query_count_does_not_grow(
    demo, django_assert_num_queries, extra_queues, conversations, stored
) -> None:
    make_activity(demo, extra_queues, conversations)
    if stored:  # the hours of the day, as the beat seals them (tests/metrics/test_hours.py)
        assert hours_seal(start=DAY.start, end=DAY.end) == 24  # 12:00 yesterday .. 11:00 today
    # Live SQL: queues, figures per queue, agents, accounts, figures per account, deliveries, the trend's arrivals,
    # first responses and snapshots, and the look for stored hours. Stored hours: those, queues, the live rest,
    # the "now" figures, agents, accounts, deliveries, snapshots.
    with django_assert_num_queries(8 if stored else 10):
        data = overview(range=DAY, now=NOW)
    assert len(data.queues) == 15 + extra_queues
    assert len(data.trend) == 25 * (15 + extra_queues)  # 12:00 yesterday .. 12:00 today


def test_overview_is_the_sum_of_its_parts(demo) -> None:
    make_activity(demo, 2, 24)
    data = overview(range=DAY, now=NOW, bucket_seconds=3600)
    assert data.range == DAY and data.generated_at == NOW and data.bucket_seconds == 3600
    assert data.queues == queue_metrics(range=DAY, now=NOW)
    assert data.channels == channel_metrics(range=DAY, now=NOW)
    assert data.trend == trend(range=DAY, bucket_seconds=3600, now=NOW)
    assert sum(q.arrivals for q in data.queues) == sum(c.arrivals for c in data.channels) == 24
    assert sum(p.arrivals for p in data.trend) == 24
    assert [q.language for q in data.queues][-1] == ""  # the fallback last
    assert sum(c.replies_sent for c in data.channels) == 24


def test_the_python_percentiles_of_sqlite_agree_with_postgresql(demo, monkeypatch) -> None:
    """The embedded database's code path (percentiles from the durations in Python), run here on PostgreSQL."""
    make_activity(demo, 1, 30)
    for hours in (1, 2):
        snapshot_take(at=NOW - hours * HOUR)
    in_sql = (
        queue_metrics(range=DAY, now=NOW),
        channel_metrics(range=DAY, now=NOW),
        trend(range=DAY, bucket_seconds=7200, now=NOW),
        selectors.snapshot_figures(bucket=NOW - HOUR, now=NOW),
    )
    monkeypatch.setattr(selectors, "_percentiles_in_sql", lambda: False)
    in_python = (
        queue_metrics(range=DAY, now=NOW),
        channel_metrics(range=DAY, now=NOW),
        trend(range=DAY, bucket_seconds=7200, now=NOW),
        selectors.snapshot_figures(bucket=NOW - HOUR, now=NOW),
    )
    for sql_rows, py_rows in zip(in_sql, in_python, strict=True):
        assert len(sql_rows) == len(py_rows)
        for a, b in zip(sql_rows, py_rows, strict=True):
            da, db = vars(a), vars(b)
            assert da.keys() == db.keys()
            for key in da:
                assert db[key] == (pytest.approx(da[key]) if isinstance(da[key], float) else da[key]), key
    assert any(q.first_response_p50 for q in in_python[0])
