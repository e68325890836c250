"""Telegram webhook intake: updates/s accepted by the web server, and update -> routed conversation latency.

    .venv/bin/python bench/telegram.py [--updates 2000] [--clients 8] [--latency-samples 60] [--repeat 3]

The real ASGI web server (uvicorn, one process) receives Telegram updates on the bot's webhook URL, with the
secret header, from N concurrent clients on loopback; each update is stored (UNIQUE(bot, update_id)) before the
200. Latency: one update at a time is posted while a Celery worker (2 children) runs, and the clock runs until its
conversation exists with a queue. Uses the `switchboard_bench` database and Redis db 12, like bench/ingest.py.
--write-docs also writes the tables into docs/benchmarks.md, section `telegram` (bench/_report.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds email.py, which would shadow the standard library's `email` package for every script run
# from here (the script's folder comes first on sys.path): move it to the end.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)] + [_BENCH]

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.request

import _report  # bench/_report.py: percentile, machine facts and docs/benchmarks.md sections
import ingest  # bench/ingest.py: database, seeding and worker helpers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET = "bench-webhook-secret"
TOKEN = "123456789:AAbenchbenchbenchbenchbenchbenchbench"


def log(message: str) -> None:
    print(f"[telegram] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def update(update_id: int, chat_id: int, text: str) -> dict[str, object]:
    user = {"id": chat_id, "is_bot": False, "first_name": "Ada", "language_code": "es"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": user,
            "chat": {"id": chat_id, "type": "private", "first_name": "Ada"},
            "date": int(time.time()),
            "text": text,
        },
    }


def post(url: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def start_web(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "inbox.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if time.monotonic() > deadline:
            raise SystemExit("uvicorn did not start")
        time.sleep(0.1)


def account() -> object:
    from inbox.conversations.models import ChannelAccount

    return ChannelAccount.objects.create(
        kind="telegram",
        name="bench bot",
        settings={"mode": "webhook", "api_base": "http://127.0.0.1:9"},  # never called: intake only
        secrets={"bot_token": TOKEN, "webhook_secret": SECRET},
    )


def accept_rate(url: str, n_updates: int, clients: int, texts: list[str]) -> float:
    counter = iter(range(n_updates))
    lock = threading.Lock()
    errors: list[int] = []
    last = [time.perf_counter()]  # the last progress line

    def client() -> None:
        while True:
            with lock:
                n = next(counter, None)
                if n is not None and time.perf_counter() - last[0] >= 10:
                    log(f"  {n}/{n_updates} updates posted, {time.perf_counter() - started:.0f} s")
                    last[0] = time.perf_counter()
            if n is None:
                return
            status = post(url, update(10_000 + n, 100_000 + n % 500, texts[n % len(texts)]))
            if status != 200:
                errors.append(status)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} updates refused: {errors[:5]}")
    return n_updates / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--latency-samples", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    texts = ingest.load_texts()["es"]
    ingest.ensure_database()
    import django

    django.setup()
    from inbox.conversations.models import Conversation, InboundEvent

    port = free_port()
    web = start_web(port)
    try:
        rates = []
        for n in range(args.repeat):
            ingest.reset_and_seed()
            bot = account()
            url = f"http://127.0.0.1:{port}/api/channels/{bot.public_id}/telegram"  # type: ignore[attr-defined]
            rate = accept_rate(url, args.updates, args.clients, texts)
            stored = InboundEvent.objects.filter(account=bot).count()
            if stored != args.updates:
                raise SystemExit(f"{stored} events stored for {args.updates} updates")
            rates.append(rate)
            log(f"run {n + 1}/{args.repeat}: {rate:.0f} updates/s accepted and stored")
        ingest.reset_and_seed()
        bot = account()
        url = f"http://127.0.0.1:{port}/api/channels/{bot.public_id}/telegram"  # type: ignore[attr-defined]
        procs = ingest.start_workers(1, 2)
        latencies = []
        try:
            log(f"latency: {args.latency_samples} updates, one at a time")
            last = time.perf_counter()
            for n in range(args.latency_samples):
                if time.perf_counter() - last >= 10:
                    log(f"  {n}/{args.latency_samples} latency samples, last {latencies[-1]:.0f} ms")
                    last = time.perf_counter()
                chat = 900_000 + n
                started = time.perf_counter()
                post(url, update(50_000 + n, chat, texts[n % len(texts)]))
                while not Conversation.objects.filter(
                    account=bot, identity__handle=str(chat), queue__isnull=False
                ).exists():
                    if time.perf_counter() - started > 30:
                        raise SystemExit(f"update {n} not routed within 30 s")
                    time.sleep(0.002)
                latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(0.05)
        finally:
            ingest.stop_workers(procs)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return _report.percentile(ordered, q)

    print(f"updates per run            {args.updates} from {args.clients} concurrent clients")
    print(
        f"webhook accepted+stored/s  median {statistics.median(rates):.0f}  min {min(rates):.0f}  max {max(rates):.0f}"
    )
    print(f"update -> routed (ms)      p50 {pct(0.5):.0f}  p90 {pct(0.9):.0f}  p99 {pct(0.99):.0f}  (n={len(ordered)})")
    if args.write_docs:
        write_docs(args, rates, ordered)


def services() -> str:
    """'PostgreSQL 15.10 and Redis 7.0.15' (the ones this run used)."""
    import redis
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("show server_version")
        pg = cur.fetchone()[0].split()[0]
    return f"PostgreSQL {pg} and Redis {redis.Redis.from_url(settings.REDIS_URL).info()['redis_version']}"  # type: ignore[index]


def write_docs(args: argparse.Namespace, rates: list[float], latencies: list[float]) -> None:
    """The measured part of docs/benchmarks.md's Telegram section (bench/_report.py)."""
    from importlib.metadata import version

    head = _report.header(
        f".venv/bin/python bench/telegram.py {shlex.join(sys.argv[1:])}".strip(),
        [
            f"**Services:** {services()} on the same machine; one uvicorn {version('uvicorn')} process.",
            f"**Runs:** {args.updates:,} updates per run from {args.clients} concurrent clients, {len(rates)} "
            f"run{'s' if len(rates) != 1 else ''}; {len(latencies)} latency samples with one worker (2 children).",
        ],
    )
    cells = [f"{v:,.0f}" for v in (statistics.median(rates), min(rates), max(rates))]
    accepted = _report.table(
        ["measure", "median", "min", "max"],
        [
            (
                "webhook updates accepted and stored per second (one web process)",
                *(cells if len(rates) > 1 else [cells[0], "", ""]),
            )
        ],
    )
    latency = _report.table(
        ["update -> routed conversation", "p50", "p90", "p99", "n"],
        [("milliseconds", *(f"{_report.percentile(latencies, q):,.0f}" for q in (0.5, 0.9, 0.99)), len(latencies))],
    )
    _report.write_section("telegram", "\n\n".join([head, accepted, latency]), title="Telegram webhook intake (issue 4)")


if __name__ == "__main__":
    main()
