"""Sustained ingest: raw events -> stored, language-detected, routed messages, through PostgreSQL, Redis and
real Celery worker processes on this machine.

    .venv/bin/python bench/ingest.py [--events 20000] [--workers 1] [--concurrency 2] [--repeat 3]

Events are recorded the way a poller records them (chunks of 1,000 in one transaction, enqueued after commit in
batches of SWITCHBOARD_INGEST_BATCH); the clock runs from the first insert until every event is processed.
Texts are real sentences in 14 languages read from ../shared/data/langid (not copied into the project), spread
over many contacts, so conversations, identities and assignment are all exercised. Prints messages/s, messages
per task, CPU per message (worker processes, from /proc), and the median and spread over the repeats.

Needs PostgreSQL and Redis (DATABASE_URL / REDIS_URL, defaults below); uses its own database
`switchboard_bench` and Redis db 12, and drops nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds email.py, which would shadow the standard library's `email` package for every script run
# from here (the script's folder comes first on sys.path): move it to the end.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)] + [_BENCH]

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANGID = ROOT.parent / "shared" / "data" / "langid" / "sentences"
LANGUAGES = ["en", "es", "zh", "ru", "de", "fr", "pt", "it", "ar", "tr", "ja", "ko", "uk", "vi"]
BENCH_DB = "switchboard_bench"

os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
os.environ.setdefault("SWITCHBOARD_ROUTING_CACHE_SECONDS", "5")
sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    print(f"[ingest] {message}", file=sys.stderr, flush=True)


def ensure_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'create database "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)


def load_texts() -> dict[str, list[str]]:
    if not LANGID.is_dir():
        raise SystemExit(f"{LANGID} is absent: this benchmark reads its texts from ../shared/data/langid")
    return {
        lang: [line for line in (LANGID / f"{lang}.txt").read_text().splitlines() if line.strip()] for lang in LANGUAGES
    }


def reset_and_seed() -> object:
    import redis
    from django.conf import settings
    from django.db import connection

    from inbox.agents.services import agent_upsert
    from inbox.conversations.models import ChannelAccount
    from inbox.routing.models import AgentProfile, AgentQueue
    from inbox.routing.services import queue_ensure_fallback

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    with connection.cursor() as cursor:
        cursor.execute(
            "truncate conversations_auditevent, conversations_outbounddelivery, conversations_attachment, "
            "conversations_message, conversations_inboundevent, conversations_conversation, "
            "webchat_visitor, conversations_contactidentity, conversations_contact, conversations_channelaccount, "
            "routing_agentprofile_queues, routing_agentprofile, routing_agentqueue, auth_user cascade"
        )
    for lang in LANGUAGES:
        AgentQueue.objects.create(language=lang, name=lang)
    queue_ensure_fallback()
    for lang in LANGUAGES:
        for n in range(3):
            agent_upsert(
                username=f"{lang}-{n}",
                password="bench-password-1",
                languages=[lang],
                presence=AgentProfile.Presence.ONLINE,
                capacity=20,
            )
    return ChannelAccount.objects.create(kind="webchat", name="bench")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        # utime, stime, cutime, cstime (fields 14-17 of proc(5), here offset by the two we split off)
        total += sum(int(x) for x in fields[11:15]) / tick
    return total


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            pids += process_tree(int(child))
    return pids


def start_workers(count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
    from inbox.cli import worker_command

    procs = []
    for n in range(count):
        procs.append(
            subprocess.Popen(
                worker_command(concurrency=concurrency, name=f"bench{n}@%h", loglevel="WARNING", quiet=True),
                cwd=ROOT,
                env=dict(os.environ),
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    time.sleep(6)  # boot + language model warm-up
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_once(n_events: int, texts: dict[str, list[str]], workers: int, concurrency: int, seed: int) -> dict[str, float]:
    from django.conf import settings

    account = reset_and_seed()
    rng = random.Random(seed)
    contacts = max(1, n_events // 4)  # about four messages per conversation
    events = []
    for n in range(n_events):
        visitor = f"v{rng.randrange(contacts)}"
        lang = rng.choice(LANGUAGES)
        events.append((f"{visitor}:{n}", {"visitor": visitor, "client_id": str(n), "text": rng.choice(texts[lang])}))
    procs = start_workers(workers, concurrency)
    try:
        return _measure(n_events, events, account, procs, settings.SWITCHBOARD_INGEST_BATCH)
    finally:
        stop_workers(procs)  # always: a stray worker would consume the next run's queue with stale code


def _measure(n_events: int, events: list, account: object, procs: list, per_task: int) -> dict[str, float]:  # type: ignore[type-arg]
    from inbox.conversations.models import InboundEvent, Message
    from inbox.conversations.services import inbound_events_record

    pids = [p for proc in procs for p in process_tree(proc.pid)]
    cpu_before = cpu_seconds(pids)
    started = time.perf_counter()
    for start in range(0, n_events, 1000):
        inbound_events_record(account=account, events=events[start : start + 1000])  # type: ignore[arg-type]
    recorded = time.perf_counter() - started
    last_report = 0.0
    while True:
        pending = InboundEvent.objects.filter(state=InboundEvent.State.PENDING).count()
        elapsed = time.perf_counter() - started
        if pending == 0:
            break
        if elapsed - last_report >= 2:
            log(f"  {n_events - pending:>7}/{n_events} processed, {elapsed:5.1f} s")
            last_report = elapsed
        if elapsed > 1200:
            raise SystemExit("gave up after 20 minutes")
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    pids = [p for proc in procs for p in process_tree(proc.pid)]
    cpu = cpu_seconds(pids) - cpu_before
    failed = InboundEvent.objects.filter(state=InboundEvent.State.FAILED).count()
    messages = Message.objects.count()
    if failed or messages != n_events:
        raise SystemExit(f"wrong result: {messages} messages for {n_events} events, {failed} failed")
    return {
        "elapsed": elapsed,
        "rate": n_events / elapsed,
        "record_rate": n_events / recorded,
        "cpu_per_msg_us": cpu / n_events * 1e6,
        "per_task": float(per_task),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each with --concurrency children)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop our workers
    texts = load_texts()
    ensure_database()
    import django

    django.setup()
    results = []
    for n in range(args.repeat):
        log(f"run {n + 1}/{args.repeat}: {args.events} events, {args.workers} worker(s) x {args.concurrency}")
        result = run_once(args.events, texts, args.workers, args.concurrency, seed=n)
        log(f"  {result['rate']:.0f} messages/s, {result['cpu_per_msg_us']:.0f} µs worker CPU per message")
        results.append(result)
    rates = [r["rate"] for r in results]
    cpu = [r["cpu_per_msg_us"] for r in results]
    print(f"events per run        {args.events}")
    print(f"workers               {args.workers} x {args.concurrency} (prefork)")
    print(f"messages per task     {results[0]['per_task']:.0f}")
    print(f"messages/s            median {statistics.median(rates):.0f}  min {min(rates):.0f}  max {max(rates):.0f}")
    print(f"recording events/s    median {statistics.median(r['record_rate'] for r in results):.0f}")
    print(f"worker CPU/message    median {statistics.median(cpu):.0f} µs  min {min(cpu):.0f}  max {max(cpu):.0f}")


if __name__ == "__main__":
    main()
