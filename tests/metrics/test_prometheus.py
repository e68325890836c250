"""GET /metrics: token, exact figures on constructed rows, the broker's queues, worker heartbeats, Redis down.

Real PostgreSQL, real Redis (the test database number), a real Celery worker process for the heartbeats.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from inbox.conversations.models import (
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    Message,
    OutboundDelivery,
)
from inbox.metrics.prometheus import BUCKETS, WORKERS_KEY, history_forget, metrics_prepare
from inbox.routing.models import AgentQueue
from inbox.routing.selectors import clear_cache
from tests.conftest import ROOT, WorkerProcess, wait_for, worker_env

TOKEN = "s3cret-metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _token(settings: Any) -> None:
    settings.SWITCHBOARD_METRICS_TOKEN = TOKEN
    # Each test writes its own past: the hour cache of another test's rows must not answer for it.
    history_forget()


def scrape(client: Client) -> Samples:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample_name, labels in samples if sample_name == name]


def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


# --- the token ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_off_without_a_token(client: Client, settings: Any) -> None:
    settings.SWITCHBOARD_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.django_db
def test_bearer_token_required(client: Client) -> None:
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN.encode() not in missing.content
    for header in (f"Basic {TOKEN}", "Bearer", "Bearer  ", TOKEN):
        response = client.get("/metrics", headers={"Authorization": header})
        assert response.status_code == 401, header
    for wrong in ("wrong", TOKEN[:-1], TOKEN + "x", "ünïcode"):
        assert client.get("/metrics", headers={"Authorization": f"Bearer {wrong}"}).status_code == 403, wrong
    assert client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    ok = client.get("/metrics", headers=AUTH)
    assert ok.status_code == 200
    assert ok["Content-Type"] == CONTENT_TYPE_LATEST
    assert ok["Cache-Control"] == "no-store"
    assert client.post("/metrics", headers=AUTH).status_code == 405


# --- figures from the database ---------------------------------------------------------------------------------


class Rows:
    """Conversations and deliveries with known timestamps (the intake's auto_now_add set afterwards)."""

    def __init__(self, account: ChannelAccount) -> None:
        self.account = account
        self.contact = Contact.objects.create(name="Customer")
        self.identity = ContactIdentity.objects.create(contact=self.contact, kind=account.kind, handle="visitor-1")
        self.n = 0
        self.now = timezone.now()

    def conversation(
        self,
        queue: AgentQueue | None,
        *,
        account: ChannelAccount | None = None,
        age: float = 3 * 86400,
        first_response: float | None = None,
        resolution: float | None = None,
        waiting: float | None = None,
        status: str = Conversation.Status.OPEN,
        assignee: Any = None,
    ) -> Conversation:
        self.n += 1
        created = self.now - timedelta(seconds=age)
        conversation = Conversation.objects.create(
            account=account or self.account,
            contact=self.contact,
            identity=self.identity,
            thread_key=f"thread-{self.n}",
            queue=queue,
            language=queue.language if queue else "",
            status=Conversation.Status.RESOLVED if resolution is not None else status,
            assignee=assignee,
        )
        Conversation.objects.filter(pk=conversation.pk).update(
            created_at=created,
            first_response_at=created + timedelta(seconds=first_response) if first_response is not None else None,
            resolved_at=created + timedelta(seconds=resolution) if resolution is not None else None,
            waiting_since=self.now - timedelta(seconds=waiting) if waiting is not None else None,
        )
        return conversation

    def delivery(self, account: ChannelAccount, state: str) -> OutboundDelivery:
        conversation = self.conversation(None, account=account, status=Conversation.Status.RESOLVED, resolution=60)
        message = Message.objects.create(
            account=account, conversation=conversation, direction=Message.Direction.OUTBOUND, text="hi"
        )
        next_attempt = self.now + timedelta(minutes=5) if state == OutboundDelivery.State.RETRY_WAIT else None
        return OutboundDelivery.objects.create(
            message=message, account=account, state=state, next_attempt_at=next_attempt
        )


def buckets(samples: Samples, name: str, queue: str) -> list[float]:
    bounds = [str(float(bound)) for bound in BUCKETS] + ["+Inf"]
    return [value(samples, f"{name}_bucket", queue=queue, le=bound) for bound in bounds]


def test_histograms_per_queue(client: Client, demo: Any) -> None:
    rows = Rows(demo.webchat)
    es, en = demo.queues["es"], demo.queues["en"]
    # First responses in es: 30 s, 2 min, 400 s, 2 h, 2 days; one never answered (left out).
    for seconds in (30, 120, 400, 7200, 2 * 86400):
        rows.conversation(es, first_response=seconds)
    rows.conversation(es)
    # Bounds are inclusive (le): exactly 60 s is in the 60 s bucket.
    rows.conversation(en, first_response=60, resolution=600)
    rows.conversation(en, first_response=3600, resolution=5 * 3600)
    rows.conversation(None, first_response=10)  # not routed yet: in no queue's histogram

    samples = scrape(client)
    assert buckets(samples, "switchboard_first_response_seconds", "es") == [1, 2, 3, 3, 3, 4, 4, 5]
    assert value(samples, "switchboard_first_response_seconds_count", queue="es") == 5
    assert value(samples, "switchboard_first_response_seconds_sum", queue="es") == 30 + 120 + 400 + 7200 + 172800
    assert buckets(samples, "switchboard_first_response_seconds", "en") == [1, 1, 1, 1, 2, 2, 2, 2]
    assert value(samples, "switchboard_first_response_seconds_sum", queue="en") == 3660
    assert buckets(samples, "switchboard_resolution_seconds", "en") == [0, 0, 1, 1, 1, 1, 2, 2]
    assert value(samples, "switchboard_resolution_seconds_sum", queue="en") == 600 + 5 * 3600
    assert value(samples, "switchboard_resolution_seconds_count", queue="es") == 0
    # Every queue has its series, the fallback one under "fallback", zeros included.
    assert buckets(samples, "switchboard_first_response_seconds", "fallback") == [0] * 8
    queues = {labels["queue"] for labels in series(samples, "switchboard_first_response_seconds_count")}
    assert queues == {*demo.queues, "fallback"}


def test_delivery_counters_per_channel(client: Client, demo: Any) -> None:
    mail = ChannelAccount.objects.create(kind="email", name="support@example.com")
    ChannelAccount.objects.create(kind="telegram", name="Bot")  # no deliveries: zeros
    rows = Rows(demo.webchat)
    State = OutboundDelivery.State
    for state in (State.SENT, State.SENT, State.FAILED, State.QUEUED, State.RETRY_WAIT, State.UNCERTAIN):
        rows.delivery(demo.webchat, state)
    for state in (State.SENT, State.FAILED, State.FAILED, State.RETRY_WAIT, State.RETRY_WAIT):
        rows.delivery(mail, state)

    samples = scrape(client)
    webchat = {"channel": "webchat", "account": "Website"}
    email = {"channel": "email", "account": "support@example.com"}
    telegram = {"channel": "telegram", "account": "Bot"}
    assert value(samples, "switchboard_replies_sent_total", **webchat) == 2
    assert value(samples, "switchboard_deliveries_failed_total", **webchat) == 1
    assert value(samples, "switchboard_replies_sent_total", **email) == 1
    assert value(samples, "switchboard_deliveries_failed_total", **email) == 2
    assert value(samples, "switchboard_replies_sent_total", **telegram) == 0
    assert value(samples, "switchboard_deliveries_failed_total", **telegram) == 0
    assert value(samples, "switchboard_channel_deliveries_retrying", **webchat) == 1
    assert value(samples, "switchboard_channel_deliveries_retrying", **email) == 2


def test_same_name_twice_stays_two_series(client: Client, demo: Any) -> None:
    first = ChannelAccount.objects.create(kind="email", name="Support")
    second = ChannelAccount.objects.create(kind="email", name="Support")
    samples = scrape(client)  # scrape() fails on a duplicate series
    accounts = {labels["account"] for labels in series(samples, "switchboard_replies_sent_total")}
    assert {f"Support #{first.pk}", f"Support #{second.pk}"} <= accounts


def test_queue_gauges(client: Client, demo: Any) -> None:
    rows = Rows(demo.webchat)
    es = demo.queues["es"]
    rows.conversation(es, waiting=600, age=700)
    rows.conversation(es, waiting=60, age=100, assignee=demo.agent_es)
    rows.conversation(es, status=Conversation.Status.PENDING, first_response=30)
    rows.conversation(es, first_response=30, resolution=90)  # resolved: not open
    rows.conversation(demo.fallback, waiting=30, age=30)

    samples = scrape(client)
    assert value(samples, "switchboard_queue_waiting", queue="es") == 2
    assert value(samples, "switchboard_queue_oldest_wait_seconds", queue="es") == pytest.approx(600, abs=30)
    assert value(samples, "switchboard_queue_open_conversations", queue="es") == 3
    assert value(samples, "switchboard_queue_assigned_conversations", queue="es") == 1
    assert value(samples, "switchboard_queue_agents_online", queue="es") == 1
    assert value(samples, "switchboard_queue_agent_load", queue="es") == 1
    assert value(samples, "switchboard_queue_agent_capacity", queue="es") == 3
    assert value(samples, "switchboard_queue_agents_online", queue="ru") == 0  # oleg is offline
    assert value(samples, "switchboard_queue_waiting", queue="fallback") == 1
    assert value(samples, "switchboard_queue_waiting", queue="de") == 0
    assert value(samples, "switchboard_queue_oldest_wait_seconds", queue="de") == 0
    webchat = {"channel": "webchat", "account": "Website"}
    assert value(samples, "switchboard_channel_waiting", **webchat) == 3
    assert value(samples, "switchboard_channel_open_conversations", **webchat) == 4


def test_query_count_does_not_grow_with_queues(client: Client, demo: Any) -> None:
    rows = Rows(demo.webchat)
    rows.conversation(demo.queues["es"], first_response=30, waiting=10)
    rows.delivery(demo.webchat, OutboundDelivery.State.SENT)
    client.get("/metrics", headers=AUTH)  # warm caches (routing's queue table, content types)
    with CaptureQueriesContext(connection) as few:
        scrape(client)

    for i in range(30):
        queue = AgentQueue.objects.create(language=f"x{i}", name=f"X{i}")
        account = ChannelAccount.objects.create(kind="email", name=f"mailbox {i}")
        rows.conversation(queue, account=account, first_response=i * 100, waiting=i)
        rows.delivery(account, OutboundDelivery.State.FAILED)
    clear_cache()
    history_forget()  # the rows above are in past hours: recompute the cached part
    client.get("/metrics", headers=AUTH)
    with CaptureQueriesContext(connection) as many:
        samples = scrape(client)
    assert value(samples, "switchboard_first_response_seconds_count", queue="x29") == 1
    assert len(many.captured_queries) == len(few.captured_queries)


def test_query_count_is_small(client: Client, demo: Any, django_assert_max_num_queries: Any) -> None:
    client.get("/metrics", headers=AUTH)  # computes and caches the hours before this one
    with django_assert_max_num_queries(12):
        scrape(client)


def test_the_past_hours_are_read_once_from_the_cache_and_the_current_hour_live(client: Client, demo: Any) -> None:
    """All-time totals = the hours before this one (cached in Redis, prepared by the beat) + this hour (live)."""
    rows = Rows(demo.webchat)
    rows.conversation(demo.queues["es"], first_response=30)
    metrics_prepare()
    before = value(scrape(client), "switchboard_first_response_seconds_count", queue="es")
    # A first response in this hour shows at once...
    now = timezone.now()
    fresh = rows.conversation(demo.queues["es"])
    Conversation.objects.filter(pk=fresh.pk).update(created_at=now - timedelta(seconds=5), first_response_at=now)
    assert value(scrape(client), "switchboard_first_response_seconds_count", queue="es") == before + 1
    # ...while a row written into a past hour after the cache was made waits for the next hour (or a forget).
    old = rows.conversation(demo.queues["es"], first_response=45)
    assert value(scrape(client), "switchboard_first_response_seconds_count", queue="es") == before + 1
    history_forget()
    assert value(scrape(client), "switchboard_first_response_seconds_count", queue="es") == before + 2
    assert old.pk


# --- the broker --------------------------------------------------------------------------------------------------


@pytest.fixture
def isolated_queues(settings: Any) -> Iterator[redis.Redis]:
    """Celery queue names of this test only: a running worker never takes (or chokes on) what the test pushes."""
    settings.CELERY_TASK_DEFAULT_QUEUE = "prom-test-default"
    settings.CELERY_TASK_ROUTES = {"switchboard.ingest.*": {"queue": "prom-test-ingest"}}
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "unacked_key": "prom-test-un",
    }
    client = broker()
    keys = ["prom-test-default", "prom-test-ingest", "prom-test-ingest\x06\x163", "prom-test-un"]
    client.delete(*keys)
    yield client
    client.delete(*keys)


@pytest.mark.django_db
def test_celery_queue_lengths(client: Client, isolated_queues: redis.Redis) -> None:
    isolated_queues.rpush("prom-test-ingest", "a", "b", "c")
    isolated_queues.rpush("prom-test-ingest\x06\x163", "d", "e")  # kombu's list for priority 3 of the same queue
    isolated_queues.hset("prom-test-un", mapping={"tag-1": "x", "tag-2": "y"})

    samples = scrape(client)
    assert value(samples, "switchboard_broker_up") == 1
    assert value(samples, "switchboard_celery_queue_length", queue="prom-test-ingest") == 5
    assert value(samples, "switchboard_celery_queue_length", queue="prom-test-default") == 0
    assert value(samples, "switchboard_celery_unacked_tasks") == 2

    isolated_queues.lpop("prom-test-ingest")
    isolated_queues.hdel("prom-test-un", "tag-1")
    samples = scrape(client)
    assert value(samples, "switchboard_celery_queue_length", queue="prom-test-ingest") == 4
    assert value(samples, "switchboard_celery_unacked_tasks") == 1


def test_the_configured_celery_queues_are_listed(client: Client, db: None) -> None:
    samples = scrape(client)
    queues = {labels["queue"] for labels in series(samples, "switchboard_celery_queue_length")}
    assert queues == {"ingest", "routing", "outbound"}


@pytest.mark.django_db
def test_stale_and_forgotten_workers(client: Client) -> None:
    client_redis = broker()
    now = time.time()
    client_redis.hset(WORKERS_KEY, mapping={"quiet@host": now - 60, "gone@host": now - 7200, "fresh@host": now - 5})
    try:
        samples = scrape(client)
        assert value(samples, "switchboard_worker_up", worker="quiet@host") == 0
        assert value(samples, "switchboard_worker_last_heartbeat_seconds", worker="quiet@host") == pytest.approx(
            now - 60
        )
        assert value(samples, "switchboard_worker_up", worker="fresh@host") == 1
        assert {"worker": "gone@host"} not in series(samples, "switchboard_worker_up")
        assert not client_redis.hexists(WORKERS_KEY, "gone@host")  # dropped when read
    finally:
        client_redis.hdel(WORKERS_KEY, "quiet@host", "gone@host", "fresh@host")


def test_redis_down_still_answers(client: Client, demo: Any, settings: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens once the socket is closed
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port}/0"
    Rows(demo.webchat).conversation(demo.queues["en"], first_response=100)

    started = time.monotonic()
    samples = scrape(client)
    assert time.monotonic() - started < 5
    assert value(samples, "switchboard_broker_up") == 0
    assert value(samples, "switchboard_first_response_seconds_count", queue="en") == 1
    assert value(samples, "switchboard_queue_agents_online", queue="en") == 1
    assert series(samples, "switchboard_celery_queue_length") == []
    assert series(samples, "switchboard_worker_up") == []


# --- worker heartbeats from real worker processes ----------------------------------------------------------------


def test_the_running_worker_is_up(client: Client, db: None, celery_worker: WorkerProcess) -> None:
    prefix = f"test-{os.getpid()}@"

    def worker_up() -> str | None:
        samples = scrape(client)
        for labels in series(samples, "switchboard_worker_up"):
            if labels["worker"].startswith(prefix) and value(samples, "switchboard_worker_up", **labels) == 1:
                beat = value(samples, "switchboard_worker_last_heartbeat_seconds", **labels)
                assert time.time() - 15 < beat <= time.time() + 1  # beats every 10 s
                return labels["worker"]
        return None

    worker = wait_for(worker_up, timeout=30, interval=0.5, what="the test worker's heartbeat in /metrics")

    # It keeps beating on the worker's timer (prefork pool, the main process's event loop), not only at start.
    first = value(scrape(client), "switchboard_worker_last_heartbeat_seconds", worker=worker)
    wait_for(
        lambda: value(scrape(client), "switchboard_worker_last_heartbeat_seconds", worker=worker) > first,
        timeout=25,
        interval=1,
        what="the next heartbeat",
    )


def test_a_stopped_worker_removes_its_heartbeat(tmp_path: Path, db: None) -> None:
    """Its own short-lived worker (solo pool, a queue nobody sends to): SIGTERM, warm shutdown, entry gone."""
    name = f"prom-health-{os.getpid()}@{socket.gethostname()}"
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "prom-health-test", "-c", "1"]
    command += ["--pool", "solo", "-n", name, "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        client_redis = broker()
        try:
            wait_for(
                lambda: client_redis.hexists(WORKERS_KEY, name) or proc.poll() is not None,
                timeout=60,
                interval=0.2,
                what="the worker's first heartbeat",
            )
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() - float(client_redis.hget(WORKERS_KEY, name) or 0) < 15
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            assert not client_redis.hexists(WORKERS_KEY, name), log_path.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            client_redis.hdel(WORKERS_KEY, name)
