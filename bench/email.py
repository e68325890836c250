"""E-mail intake from a real Dovecot: cold backfill rate and arrival -> conversation latency with IDLE.

    .venv/bin/python bench/email.py [--mails 1000] [--latency-samples 60] [--repeat 3]

1. Backfill: N mails are APPENDed to a private Dovecot (tests/fakes/dovecot.py); the mailbox sync that
   `listen_mail` runs fetches them all from a zero cursor (BODY.PEEK, batches of 200, events + cursor committed
   together) while real Celery workers ingest them. Reports mails/s fetched and mails/s through the whole pipeline
   (fetched, parsed, stored, language-detected, routed).
2. Latency: the real `manage.py listen_mail` process idles on the mailbox; one mail at a time is APPENDed and the
   clock runs until its Message row exists in PostgreSQL. Reports p50 / p90 / p99.

Uses the `switchboard_bench` database and Redis db 12 (like bench/ingest.py), and its own Dovecot on loopback.
--write-docs also writes the tables into docs/benchmarks.md, section `email` (bench/_report.py).
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
import shlex
import signal
import statistics
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _report  # bench/_report.py: percentile, machine facts and docs/benchmarks.md sections
import ingest  # bench/ingest.py: database, seeding and worker helpers

SUPPORT = "support@example.test"
PASSWORD = "bench-password"


def log(message: str) -> None:
    print(f"[email] {message}", file=sys.stderr, flush=True)


def make_mail(sender: str, text: str) -> bytes:
    from connectors.email.smtp import SMTP_POLICY

    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = "Help with my account"
    msg["Message-ID"] = make_msgid(domain="customer.test")
    msg.set_content(text)
    return bytes(msg)


def percentile(values: list[float], q: float) -> float:
    return _report.percentile(values, q)


def email_account(dovecot: object) -> object:
    from inbox.conversations.models import ChannelAccount

    return ChannelAccount.objects.create(
        kind="email",
        name="bench mailbox",
        settings={
            "address": SUPPORT,
            "domain": "example.test",
            "imap_host": dovecot.host,  # type: ignore[attr-defined]
            "imap_port": dovecot.port,  # type: ignore[attr-defined]
            "imap_security": "none",
        },
        secrets={"imap_password": PASSWORD},
    )


def empty_inbox(dovecot: object) -> None:
    with dovecot.client(SUPPORT) as client:  # type: ignore[attr-defined]
        uids = client.search("ALL")
        if uids:
            client.delete_messages(uids)
            client.expunge()


def backfill(dovecot: object, n_mails: int, texts: dict[str, list[str]], seed: int) -> dict[str, float]:
    from inbox.conversations.mail import mailbox_reader_for, mailbox_sync
    from inbox.conversations.models import InboundEvent, Message

    ingest.reset_and_seed()
    empty_inbox(dovecot)
    account = email_account(dovecot)
    rng = random.Random(seed)
    log(f"delivering {n_mails} mails to Dovecot")
    last = time.perf_counter()
    for n in range(n_mails):
        lang = rng.choice(ingest.LANGUAGES)
        dovecot.deliver(
            SUPPORT, make_mail(f"c{rng.randrange(n_mails // 3 or 1)}@customer.test", rng.choice(texts[lang]))
        )  # type: ignore[attr-defined]
        if time.perf_counter() - last >= 10:
            log(f"  {n + 1}/{n_mails} mails delivered")
            last = time.perf_counter()
    procs = ingest.start_workers(1, 2)
    try:
        reader = mailbox_reader_for(account)
        reader.connect()
        started = time.perf_counter()
        fetched = mailbox_sync(account=account, mailbox_reader=reader, batch=200)
        fetch_seconds = time.perf_counter() - started
        reader.close()
        log(f"  {fetched} mails fetched in {fetch_seconds:.1f} s; waiting for the workers to store them")
        last = time.perf_counter()
        while (stored := Message.objects.filter(account=account).count()) < fetched:
            if InboundEvent.objects.filter(account=account, state="failed").exists():
                raise SystemExit("a mail was quarantined during the benchmark")
            if time.perf_counter() - started > 600:
                raise SystemExit("backfill did not finish in 10 minutes")
            if time.perf_counter() - last >= 5:
                log(f"  {stored}/{fetched} stored, {time.perf_counter() - started:.0f} s")
                last = time.perf_counter()
            time.sleep(0.1)
        total_seconds = time.perf_counter() - started
    finally:
        ingest.stop_workers(procs)
    if fetched != n_mails:
        raise SystemExit(f"fetched {fetched} of {n_mails}")
    return {"fetch_rate": fetched / fetch_seconds, "pipeline_rate": fetched / total_seconds}


def idle_latency(dovecot: object, samples: int, texts: dict[str, list[str]]) -> list[float]:
    from inbox.conversations.models import Message

    ingest.reset_and_seed()
    empty_inbox(dovecot)
    account = email_account(dovecot)
    procs = ingest.start_workers(1, 2)
    listener = subprocess.Popen(
        [sys.executable, "manage.py", "listen_mail", "--account", str(account.pk)],  # type: ignore[attr-defined]
        cwd=ROOT,
        env=dict(os.environ),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latencies: list[float] = []
    try:
        time.sleep(3)  # connect, empty backfill, enter IDLE
        for n in range(samples):
            raw = make_mail(f"latency{n}@customer.test", random.choice(texts["en"]))
            dovecot.deliver(SUPPORT, raw)  # type: ignore[attr-defined]
            started = time.perf_counter()
            while not Message.objects.filter(
                account=account, sender_identity__handle=f"latency{n}@customer.test"
            ).exists():
                if time.perf_counter() - started > 30:
                    raise SystemExit(f"mail {n} did not arrive within 30 s")
                time.sleep(0.005)
            latencies.append(time.perf_counter() - started)
            if (n + 1) % 10 == 0:
                log(f"  {n + 1}/{samples} latency samples, last {latencies[-1] * 1000:.0f} ms")
            time.sleep(0.2)
    finally:
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(timeout=30)
        ingest.stop_workers(procs)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    texts = ingest.load_texts()
    ingest.ensure_database()
    import django

    django.setup()
    from tests.fakes.dovecot import Dovecot, ensure_dovecot

    binary = ensure_dovecot()
    if not binary:
        raise SystemExit("dovecot is not installed (apt-get install dovecot-imapd)")
    with Dovecot({SUPPORT: PASSWORD}) as dovecot:
        runs = []
        for n in range(args.repeat):
            log(f"backfill run {n + 1}/{args.repeat}")
            runs.append(backfill(dovecot, args.mails, texts, seed=n))
            log(f"  fetched {runs[-1]['fetch_rate']:.0f} mails/s, pipeline {runs[-1]['pipeline_rate']:.0f} mails/s")
        log("IDLE latency")
        latencies = idle_latency(dovecot, args.latency_samples, texts)
    fetch = [r["fetch_rate"] for r in runs]
    pipe = [r["pipeline_rate"] for r in runs]
    print(f"mails per backfill        {args.mails}")
    print(
        f"IMAP fetch (mails/s)      median {statistics.median(fetch):.0f}  min {min(fetch):.0f}  max {max(fetch):.0f}"
    )
    print(f"whole pipeline (mails/s)  median {statistics.median(pipe):.0f}  min {min(pipe):.0f}  max {max(pipe):.0f}")
    ms = [x * 1000 for x in latencies]
    print(
        f"IDLE arrival -> message   p50 {percentile(ms, 0.5):.0f} ms  p90 {percentile(ms, 0.9):.0f} ms  "
        f"p99 {percentile(ms, 0.99):.0f} ms  (n={len(ms)})"
    )
    if args.write_docs:
        write_docs(args, runs, ms, binary)


def services() -> str:
    """'PostgreSQL 15.10 and Redis 7.0.15' (the ones this run used)."""
    import redis
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("show server_version")
        pg = cur.fetchone()[0].split()[0]
    return f"PostgreSQL {pg} and Redis {redis.Redis.from_url(settings.REDIS_URL).info()['redis_version']}"  # type: ignore[index]


def write_docs(args: argparse.Namespace, runs: list[dict[str, float]], ms: list[float], dovecot: str) -> None:
    """The measured part of docs/benchmarks.md's e-mail section (bench/_report.py)."""
    found = subprocess.run([dovecot, "--version"], capture_output=True, text=True, check=False).stdout.split()
    head = _report.header(
        f".venv/bin/python bench/email.py {shlex.join(sys.argv[1:])}".strip(),
        [
            f"**Services:** {services()} on the same machine; Dovecot {found[0] if found else '?'} on loopback, "
            "started by the benchmark.",
            f"**Runs:** {args.mails:,} mails per backfill, {len(runs)} backfill run{'s' if len(runs) != 1 else ''}; "
            f"{len(ms)} latency samples.",
        ],
    )

    def row(label: str, values: list[float]) -> tuple[str, ...]:
        cells = [f"{v:,.0f}" for v in (statistics.median(values), min(values), max(values))]
        return (label, *(cells if len(values) > 1 else [cells[0], "", ""]))

    rates = _report.table(
        ["measure", "median", "min", "max"],
        [
            row("IMAP backfill, mails/s fetched and recorded", [r["fetch_rate"] for r in runs]),
            row("whole pipeline, mails/s (fetched, stored, routed)", [r["pipeline_rate"] for r in runs]),
        ],
    )
    latency = _report.table(
        ["IDLE arrival -> stored, routed message", "p50", "p90", "p99", "n"],
        [("milliseconds", *(f"{percentile(ms, q):,.0f}" for q in (0.5, 0.9, 0.99)), len(ms))],
    )
    _report.write_section("email", "\n\n".join([head, rates, latency]), title="E-mail intake from Dovecot (issue 3)")


if __name__ == "__main__":
    main()
