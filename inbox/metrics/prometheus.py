"""Prometheus exposition: ``GET /metrics`` with a bearer token.

Off unless ``SWITCHBOARD_METRICS_TOKEN`` is set (404 then, so an unconfigured install exposes nothing). A scrape
asks ``Authorization: Bearer <token>``: no or another scheme → 401 with ``WWW-Authenticate``, a wrong token → 403.

Everything is computed at scrape time by one custom collector on a private registry (never the process-global
default registry: the web process's own Python metrics are not ours to publish, and a collector there would run on
every import-time registry walk):

* per language queue (label ``queue``: the language, ``fallback`` for the fallback queue), from
  :func:`inbox.metrics.selectors.queues_and_channels` over the last hour: waiting customers, oldest wait, open /
  assigned conversations, online agents with their load and capacity, agents needed (Erlang C);
* per channel account (labels ``channel``: its kind, ``account``: its name), from
  the same call: waiting, open, deliveries waiting for a retry (the conversations are read once for both);
* first-response and resolution time per queue as real histograms over all conversations ever, so that they only
  grow and ``histogram_quantile(rate(...[5m]))`` works: one aggregate query for both (``COUNT(*) FILTER (WHERE d <=
  bucket)`` per bucket, grouped by queue) — never a row per conversation;
* replies sent and deliveries failed per channel account, all-time counters (one aggregate query);
* the broker: Redis reachable, the Celery queues' lengths and unacknowledged tasks, and the workers' heartbeats
  that ``workers/health.py`` writes. When Redis is down this part says ``switchboard_broker_up 0`` and the rest still
  answers: a broken broker must be visible in the metrics, not turn them into a 500.

The number of SQL queries does not depend on the number of queues, accounts or conversations.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import redis
from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from inbox.conversations.models import ChannelAccount, Conversation, OutboundDelivery
from inbox.metrics.selectors import queues_and_channels
from inbox.metrics.types import ChannelMetrics, QueueMetrics, TimeRange
from inbox.routing.models import AgentQueue

logger = logging.getLogger(__name__)

PREFIX = "switchboard_"
# Histogram buckets (seconds) for first-response and resolution times: 1 min, 5 min, 15 min, 30 min, 1 h, 4 h, 24 h
# (and +Inf). Fixed on purpose: changing them breaks rate() over the change.
BUCKETS: tuple[int, ...] = (60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
# The "over the range" figures behind the gauges (agents needed: Erlang C on the last hour's arrivals).
GAUGE_WINDOW = timedelta(hours=1)

# Worker heartbeats: workers/health.py writes ``hostname -> unix time`` into this hash every
# HEARTBEAT_INTERVAL_SECONDS; a worker is up while its last beat is younger than WORKER_UP_WITHIN_SECONDS (three
# beats), and an entry older than WORKER_FORGET_AFTER_SECONDS (a worker that died without saying goodbye) is dropped
# when read, so a renamed or scaled-down worker does not stay a 0 forever.
WORKERS_KEY = "switchboard:workers"
HEARTBEAT_INTERVAL_SECONDS = 10.0
WORKER_UP_WITHIN_SECONDS = 30.0
WORKER_FORGET_AFTER_SECONDS = 3600.0
# A scrape waits this long for Redis at most (Prometheus' default scrape timeout is 10 s).
REDIS_TIMEOUT_SECONDS = 1.0

# kombu's Redis transport keeps a task with priority n in "<queue>\x06\x16<step>" for the steps above 0
# (kombu/transport/redis.py: Channel.sep, PRIORITY_STEPS, _q_for_pri); the queue's length is the sum.
_KOMBU_PRIORITY_SEP = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


def broker_client() -> redis.Redis:
    """The Celery broker's Redis, with short timeouts: a scrape or a heartbeat never hangs on it."""
    return redis.Redis.from_url(
        settings.CELERY_BROKER_URL,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )


def celery_queue_names() -> list[str]:
    """The queues the tasks are routed to (settings.CELERY_TASK_ROUTES and the default queue)."""
    names = {settings.CELERY_TASK_DEFAULT_QUEUE}
    names.update(route["queue"] for route in settings.CELERY_TASK_ROUTES.values() if route.get("queue"))
    return sorted(names)


def _unacked_key() -> str:
    options: dict[str, Any] = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    return str(options.get("unacked_key", "unacked"))


# --- figures -------------------------------------------------------------------------------------------------


@dataclass
class Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))  # cumulative, "le" each bound
    count: int = 0
    sum_seconds: float = 0.0


@dataclass
class BrokerFigures:
    queue_lengths: dict[str, int]
    unacked: int
    workers: dict[str, float]  # hostname -> unix time of its last heartbeat


def _duration(end: str) -> ExpressionWrapper:
    return ExpressionWrapper(F(end) - F("created_at"), output_field=DurationField())


def _bucket_aggregates(prefix: str, condition: Q) -> dict[str, Any]:
    """``COUNT(*) FILTER (WHERE <prefix>_d <= bound)`` per bucket, the count and the sum, for one measure."""
    duration = F(f"{prefix}_d")
    aggregates: dict[str, Any] = {
        f"{prefix}_le_{bound}": Count("pk", filter=condition & Q(**{f"{prefix}_d__lte": timedelta(seconds=bound)}))
        for bound in BUCKETS
    }
    aggregates[f"{prefix}_count"] = Count("pk", filter=condition)
    aggregates[f"{prefix}_sum"] = Sum(duration, filter=condition)
    return aggregates


Histograms = dict[int, Histogram]


def conversation_histograms(
    *, start: datetime | None = None, end: datetime | None = None
) -> tuple[Histograms, Histograms]:
    """First-response and resolution time histograms per queue id, in one query, for the first responses and
    resolutions whose time is in [start, end) (None: unbounded).

    First response: first agent reply - created; resolution: resolved - created (conversations resolved now).
    Conversations not routed to a queue yet are left out.
    """
    first = Q(first_response_at__isnull=False)
    resolved = Q(resolved_at__isnull=False)
    if start is not None:
        first &= Q(first_response_at__gte=start)
        resolved &= Q(resolved_at__gte=start)
    if end is not None:
        first &= Q(first_response_at__lt=end)
        resolved &= Q(resolved_at__lt=end)
    rows = (
        Conversation.objects.filter(queue__isnull=False)
        .filter(first | resolved)
        .alias(fr_d=_duration("first_response_at"), res_d=_duration("resolved_at"))
        .order_by()
        .values("queue_id")
        .annotate(**_bucket_aggregates("fr", first), **_bucket_aggregates("res", resolved))
    )
    first_response: Histograms = {}
    resolution: Histograms = {}
    for row in rows:
        for prefix, target in (("fr", first_response), ("res", resolution)):
            total: timedelta | None = row[f"{prefix}_sum"]
            target[row["queue_id"]] = Histogram(
                buckets=[row[f"{prefix}_le_{bound}"] for bound in BUCKETS],
                count=row[f"{prefix}_count"],
                sum_seconds=total.total_seconds() if total is not None else 0.0,
            )
    return first_response, resolution


def replies_sent(*, start: datetime | None = None, end: datetime | None = None) -> dict[int, int]:
    """Deliveries sent per channel account id, with sent_at in [start, end)."""
    rows = OutboundDelivery.objects.filter(state=OutboundDelivery.State.SENT)
    if start is not None:
        rows = rows.filter(sent_at__gte=start)
    if end is not None:  # a sent delivery without its time (none should exist) counts with the past
        rows = rows.filter(Q(sent_at__lt=end) | Q(sent_at__isnull=True))
    # COUNT(*): an index-only scan of delivery_sent_account (COUNT(id) would read every row).
    return dict(rows.order_by().values_list("account_id").annotate(n=Count("*")).values_list("account_id", "n"))


def deliveries_failed() -> dict[int, int]:
    """Deliveries given up on, per account: an index-only scan of the (account, state) index (``COUNT(*)``: the id
    is not in it)."""
    rows = OutboundDelivery.objects.filter(state=OutboundDelivery.State.FAILED).order_by().values_list("account_id")
    return dict(rows.annotate(n=Count("*")).values_list("account_id", "n"))


# --- The all-time totals, without reading every row at every scrape ---------------------------------------------
# The all-time histograms and the sent counter are the part before the current hour — computed once an hour and
# kept in Redis (the beat's metrics task prepares it each minute, so no scrape waits for it) — plus the current
# hour, read live through the time indexes. Redis lost or flushed: the next scrape or beat computes it again. A
# conversation reopened after its hour keeps counting until the hour turns (Prometheus sees a small reset then).
HISTORY_KEY = "switchboard:metrics:history:{hour}"
HISTORY_TTL_SECONDS = 2 * 3600


@dataclass
class History:
    first_response: Histograms
    resolution: Histograms
    sent: dict[int, int]

    def to_json(self) -> str:
        def hists(h: Histograms) -> dict[str, Any]:
            return {str(k): [v.buckets, v.count, v.sum_seconds] for k, v in h.items()}

        return json.dumps(
            {"fr": hists(self.first_response), "res": hists(self.resolution), "sent": self.sent}, sort_keys=True
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> History:
        data = json.loads(raw)

        def hists(h: dict[str, Any]) -> Histograms:
            return {int(k): Histogram(buckets=list(v[0]), count=v[1], sum_seconds=v[2]) for k, v in h.items()}

        return cls(hists(data["fr"]), hists(data["res"]), {int(k): v for k, v in data["sent"].items()})

    def plus(self, other: History) -> History:
        def add(a: Histograms, b: Histograms) -> Histograms:
            out = {k: Histogram(list(v.buckets), v.count, v.sum_seconds) for k, v in a.items()}
            for k, v in b.items():
                mine = out.setdefault(k, Histogram())
                mine.buckets = [x + y for x, y in zip(mine.buckets, v.buckets, strict=True)]
                mine.count += v.count
                mine.sum_seconds += v.sum_seconds
            return out

        sent = dict(Counter(self.sent) + Counter(other.sent))
        return History(add(self.first_response, other.first_response), add(self.resolution, other.resolution), sent)


def _history(*, start: datetime | None, end: datetime | None) -> History:
    first_response, resolution = conversation_histograms(start=start, end=end)
    return History(first_response, resolution, replies_sent(start=start, end=end))


def history_before(hour: datetime) -> History:
    """Everything before ``hour`` (a whole hour), from Redis when another scrape or the beat computed it."""
    key = HISTORY_KEY.format(hour=hour.strftime("%Y%m%dT%H"))
    client = broker_client()
    try:
        cached = client.get(key)
        if cached:
            return History.from_json(cast(bytes, cached))
    except redis.RedisError:
        logger.warning("metrics history cache unreachable; computing it", exc_info=True)
    history = _history(start=None, end=hour)
    with contextlib.suppress(redis.RedisError):  # logged above; the figures are right either way
        client.set(key, history.to_json(), ex=HISTORY_TTL_SECONDS)
    return history


def history_forget() -> None:
    """Drop the cached hours (after an import of old data, or between tests that rewrite the past)."""
    client = broker_client()
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=HISTORY_KEY.format(hour="*")))
        if keys:
            client.delete(*keys)


def all_time_history(now: datetime | None = None) -> History:
    hour = (now or timezone.now()).replace(minute=0, second=0, microsecond=0)
    return history_before(hour).plus(_history(start=hour, end=None))


def metrics_prepare(now: datetime | None = None) -> None:
    """Called by the beat every minute: the current hour's history is in Redis before any scrape needs it."""
    history_before((now or timezone.now()).replace(minute=0, second=0, microsecond=0))


def broker_figures(*, now: float | None = None) -> BrokerFigures | None:
    """Queue lengths, unacknowledged tasks and worker heartbeats from the broker in one round trip; None when Redis
    cannot be reached. Heartbeats older than WORKER_FORGET_AFTER_SECONDS are deleted on the way."""
    now = time.time() if now is None else now
    queues = celery_queue_names()
    client: redis.Redis | None = None
    try:
        client = broker_client()
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for step in _KOMBU_PRIORITY_STEPS:
                pipe.llen(f"{queue}{_KOMBU_PRIORITY_SEP}{step}" if step else queue)
        pipe.hlen(_unacked_key())
        pipe.hgetall(WORKERS_KEY)
        results = pipe.execute()
        steps = len(_KOMBU_PRIORITY_STEPS)
        lengths = {queue: sum(results[i * steps : (i + 1) * steps]) for i, queue in enumerate(queues)}
        unacked, raw_workers = results[-2], results[-1]
        workers: dict[str, float] = {}
        forget: list[Any] = []  # raw names: deleted byte for byte
        for name, value in raw_workers.items():
            try:
                beat = float(value)
            except ValueError:
                beat = 0.0
            if now - beat > WORKER_FORGET_AFTER_SECONDS:
                forget.append(name)
            else:
                workers[name.decode("utf-8", "replace")] = beat
        if forget:
            client.hdel(WORKERS_KEY, *forget)
        return BrokerFigures(queue_lengths=lengths, unacked=int(unacked), workers=workers)
    except (redis.RedisError, OSError, ValueError) as exc:  # ValueError: a broker URL redis-py cannot parse
        logger.warning("metrics: the broker (Redis) is unreachable: %s", exc)
        return None
    finally:
        if client is not None:
            client.close()


# --- labels --------------------------------------------------------------------------------------------------


def _unique(labels: dict[int, tuple[str, ...]]) -> dict[int, tuple[str, ...]]:
    """Two rows with the same label values would be duplicate series (Prometheus rejects the whole scrape):
    those get their id appended to the last label."""
    seen = Counter(labels.values())
    return {pk: value if seen[value] == 1 else (*value[:-1], f"{value[-1]} #{pk}") for pk, value in labels.items()}


def queue_labels() -> dict[int, tuple[str]]:
    labels: dict[int, tuple[str, ...]] = {
        # Languages are unique among the non-fallback queues; one without a language (not meant to exist) gets its id.
        queue["id"]: ("fallback" if queue["is_fallback"] else queue["language"] or f"queue-{queue['id']}",)
        for queue in AgentQueue.objects.order_by("id").values("id", "language", "is_fallback")
    }
    return _unique(labels)  # type: ignore[return-value]


def account_labels() -> dict[int, tuple[str, str]]:
    labels: dict[int, tuple[str, ...]] = {
        account["id"]: (account["kind"], account["name"])
        for account in ChannelAccount.objects.order_by("id").values("id", "kind", "name")
    }
    return _unique(labels)  # type: ignore[return-value]


# --- the collector -------------------------------------------------------------------------------------------


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=labels)


class SwitchboardCollector(Collector):
    """Reads everything at scrape time; holds no state between scrapes."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        history = all_time_history(now)
        queues, channels = queues_and_channels(range=TimeRange(start=now - GAUGE_WINDOW, end=now), now=now)
        yield from self.collect_queues(queues, history)
        yield from self.collect_channels(channels, history)
        yield from self.collect_broker()

    def collect_queues(self, queues: list[QueueMetrics], history: History) -> Iterable[Metric]:
        labels = queue_labels()
        waiting = _gauge("queue_waiting", "Customers waiting for an answer now.", ["queue"])
        oldest = _gauge(
            "queue_oldest_wait_seconds", "The longest wait of a waiting customer (0: nobody waits).", ["queue"]
        )
        open_ = _gauge("queue_open_conversations", "Open or pending conversations.", ["queue"])
        assigned = _gauge("queue_assigned_conversations", "Open or pending conversations with an assignee.", ["queue"])
        online = _gauge("queue_agents_online", "Online agents serving the queue.", ["queue"])
        load = _gauge("queue_agent_load", "Open and pending conversations assigned to its online agents.", ["queue"])
        capacity = _gauge("queue_agent_capacity", "Sum of its online agents' capacities.", ["queue"])
        needed = _gauge(
            "queue_agents_needed",
            "Agents needed to meet the first-response target at the last hour's arrival rate (Erlang C).",
            ["queue"],
        )
        for queue in queues:
            queue_label = list(labels.get(queue.queue_id, (queue.language or "fallback",)))
            waiting.add_metric(queue_label, queue.waiting_now)
            oldest.add_metric(queue_label, queue.oldest_wait_seconds or 0.0)
            open_.add_metric(queue_label, queue.open)
            assigned.add_metric(queue_label, queue.assigned)
            online.add_metric(queue_label, queue.agents_online)
            load.add_metric(queue_label, queue.load)
            capacity.add_metric(queue_label, queue.capacity)
            if queue.agents_needed is not None:
                needed.add_metric(queue_label, queue.agents_needed)
        yield from (waiting, oldest, open_, assigned, online, load, capacity, needed)

        first_response, resolution = history.first_response, history.resolution
        for name, documentation, figures in (
            ("first_response_seconds", "Time from a conversation's start to the first agent reply.", first_response),
            ("resolution_seconds", "Time from a conversation's start to its resolution.", resolution),
        ):
            family = HistogramMetricFamily(PREFIX + name, documentation, labels=["queue"])
            # Every queue gets its series, zeros included: a queue's first conversation is then a rise from 0.
            for queue_id, label in sorted(labels.items(), key=lambda item: item[1]):
                histogram = figures.get(queue_id, Histogram())
                buckets = [(str(float(bound)), count) for bound, count in zip(BUCKETS, histogram.buckets, strict=True)]
                buckets.append(("+Inf", histogram.count))
                family.add_metric(list(label), buckets, histogram.sum_seconds)
            yield family

    def collect_channels(self, channels: list[ChannelMetrics], history: History) -> Iterable[Metric]:
        labels = account_labels()
        names = ["channel", "account"]
        waiting = _gauge("channel_waiting", "Customers waiting for an answer now.", names)
        open_ = _gauge("channel_open_conversations", "Open or pending conversations.", names)
        retrying = _gauge(
            "channel_deliveries_retrying", "Replies waiting for a retry or for the provider's rate limit.", names
        )
        for channel in channels:
            account_label = list(labels.get(channel.account_id, (channel.kind, channel.name)))
            waiting.add_metric(account_label, channel.waiting_now)
            open_.add_metric(account_label, channel.open)
            retrying.add_metric(account_label, channel.deliveries_retrying)
        yield from (waiting, open_, retrying)

        sent_totals, failed_totals = history.sent, deliveries_failed()
        sent = CounterMetricFamily(PREFIX + "replies_sent", "Replies delivered to the provider.", labels=names)
        failed = CounterMetricFamily(
            PREFIX + "deliveries_failed", "Replies given up on (dead-lettered) after their attempts.", labels=names
        )
        for account_id, label in sorted(labels.items(), key=lambda item: item[1]):
            sent.add_metric(list(label), sent_totals.get(account_id, 0))
            failed.add_metric(list(label), failed_totals.get(account_id, 0))
        yield from (sent, failed)

    def collect_broker(self) -> Iterable[Metric]:
        now = time.time()
        figures = broker_figures(now=now)
        yield GaugeMetricFamily(
            PREFIX + "broker_up",
            "1 when the Celery broker (Redis) answered this scrape.",
            value=int(figures is not None),
        )
        if figures is None:
            return
        lengths = _gauge("celery_queue_length", "Tasks waiting in the Celery queue.", ["queue"])
        for queue, length in figures.queue_lengths.items():
            lengths.add_metric([queue], length)
        yield lengths
        yield GaugeMetricFamily(
            PREFIX + "celery_unacked_tasks",
            "Tasks taken by a worker and not yet acknowledged (running, or lost with their worker until redelivered).",
            value=figures.unacked,
        )
        up = _gauge(
            "worker_up",
            f"1 when the worker's last heartbeat is under {WORKER_UP_WITHIN_SECONDS:.0f} s old.",
            ["worker"],
        )
        last = _gauge("worker_last_heartbeat_seconds", "Unix time of the worker's last heartbeat.", ["worker"])
        for worker, beat in sorted(figures.workers.items()):
            up.add_metric([worker], int(now - beat < WORKER_UP_WITHIN_SECONDS))
            last.add_metric([worker], beat)
        yield from (up, last)


_registry = CollectorRegistry(auto_describe=False)
_registry.register(SwitchboardCollector())


def metrics_text() -> bytes:
    return generate_latest(_registry)


# --- the view ------------------------------------------------------------------------------------------------


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics for Prometheus (``authorization: {type: Bearer, credentials: <token>}`` in the scrape config)."""
    expected: str = settings.SWITCHBOARD_METRICS_TOKEN
    if not expected:
        raise Http404("metrics are off (SWITCHBOARD_METRICS_TOKEN is not set)")
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        response = HttpResponse("a bearer token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="switchboard-metrics"'
        return response
    # Constant time: the comparison does not tell how many leading characters were right.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return HttpResponse("wrong token\n", status=403, content_type="text/plain")
    response = HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
