"""Manager metrics at scale: the dashboard, the JSON API, the CSV export and Prometheus /metrics with 50,000
conversations and 1,000,000 messages in PostgreSQL (the data set of bench/inbox.py).

    .venv/bin/python bench/metrics.py [--database-url postgres://.../switchboard_bench_inbox] [--requests 200]
                                      [--rounds 3]

1. The data set: bench/inbox.py's seed (it is made first when missing: `bench/inbox.py --seed-only`), migrated to
   the current schema. As the beat would have done, the hourly snapshots of the last 24 hours are taken, the finished
   hours and days of the last 31 days are stored (``MetricHour``, what the dashboard merges long ranges from; dropped
   and stored again each run, so its time is a first backfill's) and the /metrics hour cache is prepared (all timed
   and printed: they run in a worker, once a minute).
2. Measuring, in this process with django.test.Client (middleware, session, queries, template: everything but the
   network) after a warm-up, as the manager: the dashboard over 1 hour, 24 hours, 7 and 30 days; the JSON API over
   24 hours; the CSV export over 7 days; /metrics with its token. p50 / p95 / p99 over --requests requests per page
   and round; the table shows the median over --rounds rounds and the min-max of p95, and the SQL queries per page.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)] + [_BENCH]

import argparse
import os
import statistics
import subprocess
import time
from datetime import timedelta

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "switchboard_bench_inbox"
TOKEN = "bench-metrics-token"
MANAGER = "bench-manager"  # made by bench/inbox.py's seed


def log(message: str) -> None:
    print(f"[bench/metrics] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()

    log("checking the data set (bench/inbox.py --seed-only makes it when missing)")
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parent / "inbox.py"), "--seed-only", "--database-url",
         args.database_url],
        check=True,
    )  # fmt: skip
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/5")
    os.environ["SWITCHBOARD_METRICS_TOKEN"] = TOKEN
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, reset_queries
    from django.test import Client
    from django.utils import timezone

    from inbox.conversations.models import Conversation, Message
    from inbox.metrics.models import MetricHour
    from inbox.metrics.prometheus import history_forget, metrics_prepare
    from inbox.metrics.services import hours_seal, snapshot_take

    call_command("migrate", verbosity=0)
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["*"]
    messages, conversations = Message.objects.count(), Conversation.objects.count()
    log(f"{conversations:,} conversations, {messages:,} messages")

    now = timezone.now()
    started = time.perf_counter()
    for hours_ago in range(24, -1, -1):
        snapshot_take(at=now - timedelta(hours=hours_ago))
    snapshots = time.perf_counter() - started
    # The finished hours the beat seals (SEAL_PER_RUN a minute), from nothing (what an earlier run stored is dropped
    # first, so the time is a first backfill's); then the last hour again alone: a beat's steady state.
    MetricHour.objects.all().delete()
    started = time.perf_counter()
    sealed = 0
    while written := hours_seal(start=now - timedelta(days=31)):
        sealed += written
    seal_all = time.perf_counter() - started
    newest = MetricHour.objects.order_by("-bucket").first()
    seal_one = 0.0
    if newest is not None:
        newest.delete()
        started = time.perf_counter()
        hours_seal(start=newest.bucket)
        seal_one = time.perf_counter() - started
    stored = MetricHour.objects.filter(bucket__gte=now - timedelta(days=31)).count()
    log(
        f"beat work: {sealed} finished hours and days stored in {seal_all:.2f} s ({stored} rows for the last 31 "
        f"days); one hour again {seal_one * 1000:.0f} ms"
    )
    history_forget()
    started = time.perf_counter()
    metrics_prepare()
    prepare = time.perf_counter() - started
    log(f"beat work: 25 hourly snapshots in {snapshots:.2f} s; /metrics hour cache prepared in {prepare * 1000:.0f} ms")

    manager = get_user_model().objects.get(username=MANAGER)
    client = Client()
    client.force_login(manager)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        ("dashboard, last 1 h", "/dashboard/?range=1h", {}),
        ("dashboard, last 24 h", "/dashboard/?range=24h", {}),
        ("dashboard, last 7 d", "/dashboard/?range=7d", {}),
        ("dashboard, last 30 d", "/dashboard/?range=30d", {}),
        ("dashboard live refresh (24 h)", "/dashboard/?range=24h&partial=body", {}),
        ("JSON API, 24 h", "/api/metrics?range=24h", {}),
        ("CSV export, 7 d", "/dashboard/export.csv?range=7d", {}),
        ("Prometheus /metrics", "/metrics", auth),
    ]
    results: dict[str, dict[str, list[float]]] = {name: {"p50": [], "p95": [], "p99": []} for name, _, _ in cases}
    queries: dict[str, int] = {}
    settings.DEBUG = True  # count queries once per page
    for name, url, headers in cases:
        reset_queries()
        response = client.get(url, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        queries[name] = len(connection.queries)
    settings.DEBUG = False
    for rnd in range(args.rounds):
        for name, url, headers in cases:
            for _ in range(5):
                client.get(url, headers=headers)
            times = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                response = client.get(url, headers=headers)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, (url, response.status_code)
            for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                results[name][key].append(pct(times, q))
            log(f"round {rnd + 1}/{args.rounds} {name}: p95 {pct(times, 0.95):.1f} ms")

    load = os.getloadavg()
    if args.write_docs:
        write_docs(args, cases, results, queries, conversations, messages)
    print(f"\nManager metrics with {conversations:,} conversations and {messages:,} messages")
    print(f"{args.requests} requests per page and round, {args.rounds} rounds; load average {load[0]:.2f}\n")
    print("| page | p50 ms | p95 ms (min-max of rounds) | p99 ms | SQL queries |")
    print("|---|---|---|---|---|")
    for name, _, _ in cases:
        r = results[name]
        p95 = r["p95"]
        print(
            f"| {name} | {statistics.median(r['p50']):.1f} | {statistics.median(p95):.1f} "
            f"({min(p95):.1f}-{max(p95):.1f}) | {statistics.median(r['p99']):.1f} | {queries[name]} |"
        )
    print(
        f"\nbeat: 25 hourly snapshots {snapshots:.2f} s; {sealed} finished hours and days stored {seal_all:.2f} s "
        f"(one hour again {seal_one * 1000:.0f} ms); /metrics hour cache {prepare * 1000:.0f} ms"
    )


def write_docs(
    args: argparse.Namespace,
    cases: list[tuple[str, str, dict[str, str]]],
    results: dict[str, dict[str, list[float]]],
    queries: dict[str, int],
    conversations: int,
    messages: int,
) -> None:
    """The measured table of docs/benchmarks.md's manager-metrics section (bench/_report.py)."""
    import _report

    rows = []
    for name, _, _ in cases:
        r = results[name]
        rows.append(
            (
                name,
                f"{statistics.median(r['p50']):.1f}",
                f"**{statistics.median(r['p95']):.1f}**"
                + (f" ({min(r['p95']):.1f}-{max(r['p95']):.1f})" if len(r["p95"]) > 1 else ""),
                f"{statistics.median(r['p99']):.1f}",
                queries[name],
            )
        )
    worst = max(statistics.median(results[name]["p95"]) for name, _, _ in cases)
    body = "\n\n".join(
        [
            _report.header(
                f".venv/bin/python bench/metrics.py --requests {args.requests} --rounds {args.rounds} --write-docs",
                [f"**Data:** {conversations:,} conversations, {messages:,} messages (bench/inbox.py's data set)."],
            ),
            _report.table(["page", "p50 ms", "p95 ms (min-max of rounds)", "p99 ms", "SQL queries"], rows),
            f"Worst p95 **{worst:.1f} ms**: {'under' if worst < 200 else 'over'} the 200 ms goal.",
        ]
    )
    _report.write_section("metrics", body, title="Manager metrics at 1,000,000 messages")


if __name__ == "__main__":
    main()
