"""Agent reply -> provider: how long from an agent's "send" until the channel's provider has the reply, per channel.

    .venv/bin/python bench/outbound.py [--replies 200] [--rate 10] [--conversations 50] [--repeat 3]
                                       [--channels telegram,x-dm,x-public,email,webchat] [--concurrency 2]
                                       [--debug] [--write-docs]

Everything runs on this machine over loopback, on PostgreSQL `switchboard_bench` and Redis db 12 (DATABASE_URL and
REDIS_URL choose others; the database is created and migrated when missing):

* the web process and one Celery worker started with the command lines `make run` uses (inbox/cli.py: uvicorn
  inbox.asgi:application with --timeout-graceful-shutdown 10; inbox.cli.worker_command(), queues ingest, routing
  and outbound, prefork with --concurrency children, INFO logging), both with DEBUG=0 as deployed (--debug: DEBUG=1,
  the `make run` default);
* the providers: tests/fakes/telegram_server.py (python-telegram-bot inside our connector talks to it),
  tests/fakes/x_server.py (tweepy), tests/fakes/smtp_server.py (aiosmtpd; our smtplib sender) in this process, and
  the web chat visitor's own websocket.

Each run reseeds the database and starts its own processes (always stopped at the end, also on Ctrl-C / errors).
It opens `--conversations` conversations per channel through the real intake (Telegram getUpdates and X polling
with the listeners' --once mode, e-mails recorded as the IMAP listener records them, web chat visitors over HTTP),
waits until the worker has ingested and routed them, then, one channel at a time, a manager signed in over HTTP
(session cookie + CSRF) replies `--replies` times, round-robin over the conversations, at `--rate` replies/s on a
fixed schedule (open loop: a slow answer does not delay the next reply), with POST /api/agent/conversations/<id>/reply.

The clock starts when the POST is sent and stops when the provider has the reply: the fake Telegram server read a
sendMessage request, the fake X server read the POST /2/dm_conversations/with/:id/messages (DM) or POST /2/tweets
(public reply), the SMTP server read the end of the message's DATA, the visitor's websocket received the
{"type": "message"} event. Replies are matched by a marker in their text. Stage split from the rows' timestamps
(same clock): POST -> message row (HTTP, session, reply service), -> delivery claimed by the worker (commit, enqueue,
broker, worker pickup), -> provider received (load, connector, provider client, network). bench/webchat.py measures
the web chat path with a different load model (many visitors, visitor traffic at the same time); its helpers
(manager login, visitor sessions and sockets, reply markers, outbound rows) are used here.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds email.py, which would shadow the standard library's `email` package for every script run
# from here (the script's folder comes first on sys.path): move it to the end.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)] + [_BENCH]

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "switchboard_bench"
os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
sys.path.insert(0, str(ROOT))

import _report  # bench/_report.py
import webchat  # bench/webchat.py: manager login, visitors, reply markers, outbound rows

PY = sys.executable
LANGID = ROOT.parent / "shared" / "data" / "langid" / "sentences"
LANGUAGES = ["en", "es", "zh", "ru", "de", "fr", "pt", "it", "ar", "tr", "ja", "ko", "uk", "vi"]
CHANNELS = ("telegram", "x-dm", "x-public", "email", "webchat")
MEASURED_AT = {
    "telegram": "fake Bot API read sendMessage",
    "x-dm": "fake X read POST /2/dm_conversations/with/:id/messages",
    "x-public": "fake X read POST /2/tweets (reply to the mention)",
    "email": "SMTP server read the end of DATA",
    "webchat": "visitor's websocket got the message event",
}
STAGES = ("POST -> row", "row -> claimed", "claimed -> provider")
SUPPORT = "support@example.test"
REPLY = "Thanks for waiting, we are checking it right now and will write again shortly. #r{mark}"


def log(message: str) -> None:
    print(f"[outbound] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Database, texts, seed -------------------------------------------------------------------------------------------
def ensure_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)


def load_texts() -> dict[str, list[str]]:
    """Real sentences in 14 languages from ../shared/data/langid (read at run time, never copied here)."""
    if not LANGID.is_dir():
        raise SystemExit(f"{LANGID} is absent: this benchmark reads its texts from ../shared/data/langid")
    return {lang: [t for t in (LANGID / f"{lang}.txt").read_text().splitlines() if t.strip()] for lang in LANGUAGES}


def reset_and_seed() -> tuple[str, str]:
    """Empty Redis db and tables; 14 language queues, 3 online agents each, a manager, a web chat channel (its
    per-IP limits lifted: every simulated visitor comes from 127.0.0.1). -> (widget key, web chat account id)."""
    import redis
    from django.conf import settings
    from django.db import connection

    from inbox.agents.services import agent_upsert
    from inbox.conversations.models import ChannelAccount
    from inbox.routing.models import AgentProfile, AgentQueue
    from inbox.routing.selectors import clear_cache
    from inbox.routing.services import queue_ensure_fallback

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    keep = ("django_migrations", "django_content_type", "auth_permission")
    with connection.cursor() as cursor:
        cursor.execute("select tablename from pg_tables where schemaname = 'public'")
        tables = [t for (t,) in cursor.fetchall() if t not in keep]
        cursor.execute("truncate " + ", ".join(f'"{t}"' for t in tables) + " cascade")
    for lang in LANGUAGES:
        AgentQueue.objects.create(language=lang, name=lang)
    queue_ensure_fallback()
    for lang in LANGUAGES:
        for n in range(3):
            agent_upsert(
                username=f"{lang}-{n}",
                password=webchat.PASSWORD,
                languages=[lang],
                presence=AgentProfile.Presence.ONLINE,
                capacity=20,
            )
    agent_upsert(username=webchat.MANAGER, password=webchat.PASSWORD, role=AgentProfile.Role.MANAGER)
    account = ChannelAccount.objects.create(
        kind="webchat",
        name="bench",
        settings={"rate_limits": {"messages_per_minute_per_ip": 1_000_000, "sessions_per_minute_per_ip": 1_000_000}},
    )
    clear_cache()
    return str(account.public_id), str(account.pk)


def make_mail(sender: str, text: str) -> bytes:
    """A customer's mail as a mail client writes it (ids never RFC 2047-encoded)."""
    from email.message import EmailMessage
    from email.utils import make_msgid

    from connectors.email.smtp import SMTP_POLICY

    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = "Help with my account"
    msg["Message-ID"] = make_msgid(domain="customer.test")
    msg.set_content(text)
    return bytes(msg)


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pids += process_tree(int(child))
    except OSError:
        pass
    return pids


def where() -> str:
    """The database and Redis db in use."""
    database, redis_db = os.environ["DATABASE_URL"].rsplit("/", 1)[1], os.environ["REDIS_URL"].rsplit("/", 1)[1]
    return f"PostgreSQL `{database}`, Redis db {redis_db}"


def command_line(script: str) -> str:
    """How this run was started, for the docs: the database / Redis settings when not the defaults, no --write-docs."""
    env = [
        f"{name}={os.environ[name]}"
        for name, default in (("DATABASE_URL", f"/{BENCH_DB}"), ("REDIS_URL", "/12"))
        if not os.environ[name].endswith(default)
    ]
    return " ".join([*env, ".venv/bin/python", script, *(a for a in sys.argv[1:] if a != "--write-docs")])


def wait_for_quiet(max_load: float, timeout: float, say: Callable[[str], None] = log) -> None:
    """Before a run: wait (up to timeout) until the 1-minute load average is below max_load (0: do not wait)."""
    if max_load <= 0:
        return
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] >= max_load:
        if time.monotonic() > deadline:
            say(f"load still {_report.load()} after {timeout:.0f} s: running anyway")
            return
        say(f"load {_report.load()} >= {max_load:g}: waiting for a quieter machine")
        time.sleep(15)


def wait_until_free(timeout: float, say: Callable[[str], None] = log) -> None:
    """Other benchmarks (bench/helpdesk.py, bench/webchat.py...) reseed the same database and Redis db: wait while
    anyone else is connected to either, rather than truncate their tables under them."""
    import psycopg
    import redis

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    broker = redis.Redis.from_url(os.environ["REDIS_URL"])
    db = broker.connection_pool.connection_kwargs.get("db", 0)
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(admin, autocommit=True) as conn:
            row = conn.execute(
                "select count(*) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()", (name,)
            ).fetchone()
            sessions = int(row[0]) if row else 0
        clients = sum(1 for c in broker.client_list() if int(c.get("db", -1)) == db) - 1  # minus this one
        if sessions == 0 and clients <= 0:
            broker.close()
            return
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{name} / Redis db {db} still in use by someone else after {timeout:.0f} s: not reseeding"
            )
        say(
            f"{name} has {sessions} other sessions, Redis db {db} {clients} other clients: waiting "
            f"(load {_report.load()})"
        )
        time.sleep(10)


class Clobbered(Exception):
    """Someone else reseeded the bench database or flushed the Redis db during the run (another benchmark)."""


@webchat.closing
def still_ours(account_pks: list[int]) -> bool:
    """The rows this run seeded are still there (another benchmark's reseed truncates them)."""
    from django.contrib.auth.models import User

    from inbox.conversations.models import ChannelAccount

    return User.objects.filter(username=webchat.MANAGER).exists() and ChannelAccount.objects.filter(
        pk__in=account_pks
    ).count() == len(set(account_pks))


@webchat.closing
def inbound_pending() -> int:
    from inbox.conversations.models import InboundEvent

    return InboundEvent.objects.filter(state=InboundEvent.State.PENDING).count()


# --- Processes ------------------------------------------------------------------------------------------------------
class Processes:
    """The processes this script starts, each leading its own process group; stop() ends them all."""

    def __init__(self, logdir: Path, debug: bool) -> None:
        self.logdir = logdir
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", DEBUG="1" if debug else "0")
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        path = self.logdir / f"{name}.log"
        with open(path, "ab") as out:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append((name, proc, path))
        return proc

    def web(self, port: int) -> subprocess.Popen[bytes]:
        # The command line of inbox/cli.py's "web (uvicorn, HTTP + websockets)" process.
        command = [PY, "-m", "uvicorn", "inbox.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
        proc = self.start("web", [*command, "--timeout-graceful-shutdown", "10"])
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return proc
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"uvicorn did not start; see {self.logdir / 'web.log'}")
            time.sleep(0.1)

    def worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        from inbox.cli import worker_command

        proc = self.start("worker", worker_command(concurrency=concurrency, name=f"outbound-bench-{os.getpid()}@%h"))
        path = self.logdir / "worker.log"
        deadline = time.monotonic() + 90
        while b" ready." not in path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Celery worker did not become ready; see {path}")
            time.sleep(0.2)
        return proc

    def pids(self) -> list[int]:
        return [p for _, proc, _ in self.procs for p in process_tree(proc.pid)]

    def stop(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc, _ in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in 30 s: killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


# --- Set-up (synchronous, in this process) --------------------------------------------------------------------------
def make_accounts(tg: Any, xs: Any, smtp: Any) -> dict[str, int]:
    from inbox.conversations.models import ChannelAccount

    telegram = ChannelAccount.objects.create(
        kind="telegram",
        name="bench bot",
        settings={"api_base": tg.api_base, "mode": "polling"},
        secrets={"bot_token": tg.token},
    )
    x = ChannelAccount.objects.create(
        kind="x",
        name="bench X",
        settings={"api_base": xs.url, "mode": "polling", "user_id": xs.me["id"], "initial_backfill_pages": 10},
        secrets=xs.credentials(),
    )
    email = ChannelAccount.objects.create(
        kind="email",
        name="bench mailbox",
        settings={
            "address": SUPPORT,
            "display_name": "Bench Support",
            "domain": "example.test",
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "smtp_security": "none",
        },
    )
    return {"telegram": telegram.pk, "x-dm": x.pk, "x-public": x.pk, "email": email.pk}


def open_conversations(
    channels: list[str], accounts: dict[str, int], tg: Any, xs: Any, count: int, texts: dict[str, list[str]]
) -> None:
    """Customers write first, through each channel's real intake; the worker ingests and routes them."""
    from django.core.management import call_command

    from inbox.conversations.mail import mail_payload
    from inbox.conversations.models import ChannelAccount
    from inbox.conversations.services import inbound_events_record

    langs = LANGUAGES

    def text(i: int) -> str:
        options = texts[langs[i % len(langs)]]
        return options[i % len(options)]

    if "telegram" in channels:
        for i in range(count):
            tg.queue_message(text(i), chat_id=700_000 + i, language_code=langs[i % len(langs)])
        for _ in range(count // 100 + 3):  # 100 updates a call; the last call confirms them
            call_command("listen_telegram", "--once", "--account", str(accounts["telegram"]), stdout=StringIO())
            if not tg.pending_updates():
                break
    if "x-dm" in channels or "x-public" in channels:
        for i in range(count):
            if "x-dm" in channels:
                user = xs.add_user(username=f"dm_customer{i}", name=f"DM customer {i}")
                xs.add_dm(sender_id=user["id"], text=text(i))
            if "x-public" in channels:
                user = xs.add_user(username=f"pub_customer{i}", name=f"Public customer {i}")
                lang = langs[(i + 1) % len(langs)]
                xs.add_mention(author_id=user["id"], text=f"@{xs.me['username']} {text(i + 1)}", lang=lang)
        call_command("listen_x", "--once", "--account", str(accounts["x-dm"]), stdout=StringIO())
    if "email" in channels:
        account = ChannelAccount.objects.get(pk=accounts["email"])
        raws = [make_mail(f"c{i}@customer.test", text(i)) for i in range(count)]
        # As the IMAP listener records them (inbox/conversations/mail.py): "<uidvalidity>:<uid>" and the raw bytes.
        events = [
            (f"1:{uid}", mail_payload(raw, uid=uid, uidvalidity=1, folder="INBOX")) for uid, raw in enumerate(raws, 1)
        ]
        inbound_events_record(account=account, events=events)


def conversations(channel: str, account_pk: int) -> list[int]:
    from inbox.conversations.models import Conversation

    found = Conversation.objects.filter(account_id=account_pk)
    if channel == "x-dm":
        found = found.filter(thread_key="dm")
    elif channel == "x-public":
        found = found.filter(thread_key="public")
    return list(found.order_by("pk").values_list("pk", flat=True))


@webchat.closing
def undelivered(account_pk: int) -> dict[str, Any]:
    from inbox.conversations.models import OutboundDelivery

    rows = OutboundDelivery.objects.filter(account_id=account_pk).exclude(state=OutboundDelivery.State.SENT)
    states: dict[str, Any] = {}
    for state, error in rows.values_list("state", "last_error"):
        states.setdefault(state, [0, error])[0] += 1
    return states


# --- Arrivals at the providers: marker -> time.time() of the first receipt ------------------------------------------
def first_arrivals(items: list[tuple[float, str]]) -> dict[str, float]:
    found: dict[str, float] = {}
    for at, text in sorted(items):
        for mark in webchat.REPLY_MARK.findall(text):
            found.setdefault(mark, at)
    return found


def telegram_arrivals(tg: Any) -> dict[str, float]:
    return first_arrivals([(c.at, str(c.params.get("text") or "")) for c in tg.calls_of("sendMessage")])


def x_arrivals(xs: Any, public: bool) -> dict[str, float]:
    with xs._lock:  # the fake appends from its request threads
        requests = list(xs.requests)
    items = []
    for r in requests:
        path = r["path"]
        if r["method"] != "POST":
            continue
        if (public and path == "/2/tweets") or (not public and path.startswith("/2/dm_conversations/")):
            items.append((float(r["at"]), r["body"].decode("utf-8", "replace")))
    return first_arrivals(items)


_PARSED: dict[int, tuple[float, str]] = {}  # id(ReceivedMessage) -> (received_at, text): each mail parsed once


def email_arrivals(smtp: Any) -> dict[str, float]:
    with smtp.lock:
        received = list(smtp.messages)
    for m in received:
        if id(m) not in _PARSED:
            body = m.message.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else m.raw.decode("ascii", "replace")
            _PARSED[id(m)] = (m.received_at, text)
    return first_arrivals([_PARSED[id(m)] for m in received])


def webchat_arrivals(visitors: list[Any]) -> dict[str, float]:
    items = []
    for v in visitors:
        for _perf, wall, event in list(v.events):
            if event.get("type") == "message":
                nested = event.get("message")
                items.append((wall, str(nested.get("text", "") if isinstance(nested, dict) else event.get("text", ""))))
    return first_arrivals(items)


# --- The measured part ----------------------------------------------------------------------------------------------
@dataclass
class Sent:
    wall: float
    perf: float
    answered_ms: float = 0.0


@dataclass
class ChannelRun:
    latencies: list[float]
    lost: int
    stages: dict[str, list[float]] = field(default_factory=dict)
    answered: list[float] = field(default_factory=list)  # POST round trip, ms
    load: tuple[float, float] = (0.0, 0.0)


class Driver:
    def __init__(self, args: argparse.Namespace, base: str, fakes: dict[str, Any], accounts: dict[str, int]) -> None:
        self.args = args
        self.base = base
        self.fakes = fakes
        self.accounts = accounts
        self.chat = webchat.Bench(
            argparse.Namespace(via="rest", interval=1.0), base, fakes["webchat_key"], str(accounts["webchat"]), {}
        )
        self.visitors: list[Any] = []

    async def run(self, channels: list[str], texts: dict[str, list[str]]) -> dict[str, ChannelRun]:
        import httpx

        args = self.args
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        results: dict[str, ChannelRun] = {}
        async with (
            httpx.AsyncClient(base_url=self.base, timeout=60, limits=limits) as agent_http,
            httpx.AsyncClient(base_url=self.base, timeout=60, limits=limits) as visitor_http,
        ):
            _, csrf = await self.chat.login(agent_http)
            if "webchat" in channels:
                langs = LANGUAGES
                for i in range(args.conversations):
                    visitor = await self.chat.open_visitor(visitor_http, langs[i % len(langs)])
                    options = texts[visitor.lang]
                    await self.chat.send_one(visitor_http, visitor, options[i % len(options)], {})
                    self.visitors.append(visitor)
            targets: dict[str, list[int]] = {}
            deadline = time.monotonic() + 120
            for channel in channels:
                while True:
                    if channel == "webchat":
                        found = await asyncio.to_thread(webchat.conversations_of, [v.uuid for v in self.visitors])
                        targets[channel] = [found[v.uuid] for v in self.visitors if v.uuid in found]
                    else:
                        targets[channel] = await asyncio.to_thread(
                            webchat.closing(conversations), channel, self.accounts[channel]
                        )
                    if len(targets[channel]) >= args.conversations:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{channel}: {len(targets[channel])} of {args.conversations} conversations")
                    await asyncio.sleep(0.2)
            while await asyncio.to_thread(inbound_pending):  # the intake's tail must not overlap the first replies
                if time.monotonic() > deadline:
                    raise SystemExit("inbound events still pending after 120 s")
                await asyncio.sleep(0.2)
            log(f"  {args.conversations} conversations per channel ingested and routed (load {_report.load()})")
            for channel in channels:
                await asyncio.sleep(2)  # let the previous channel's tail settle
                results[channel] = await self.replies(agent_http, csrf, channel, targets[channel])
                r = results[channel]
                log(
                    f"  {channel:<9} p50 {_report.percentile(r.latencies, 0.5):6.1f}  "
                    f"p99 {_report.percentile(r.latencies, 0.99):6.1f}  max {max(r.latencies):6.1f} ms  "
                    f"(n={len(r.latencies)}, lost {r.lost}; load {_report.load()})"
                    if r.latencies
                    else f"  {channel}: nothing arrived (lost {r.lost})"
                )
            await asyncio.gather(*(v.ws.close() for v in self.visitors), return_exceptions=True)
        return results

    def arrivals(self, channel: str) -> dict[str, float]:
        if channel == "telegram":
            return telegram_arrivals(self.fakes["telegram"])
        if channel in ("x-dm", "x-public"):
            return x_arrivals(self.fakes["x"], public=channel == "x-public")
        if channel == "email":
            return email_arrivals(self.fakes["smtp"])
        return webchat_arrivals(self.visitors)

    async def replies(self, http: Any, csrf: str, channel: str, targets: list[int]) -> ChannelRun:
        args = self.args
        sent: dict[str, Sent] = {}
        load_before = os.getloadavg()[0]

        async def one(conversation: int) -> None:
            mark = uuid.uuid4().hex
            record = sent[mark] = Sent(time.time(), time.perf_counter())
            answer = await self.chat.post(
                http,
                f"/api/agent/conversations/{conversation}/reply",
                json={"text": REPLY.format(mark=mark)},
                headers={"X-CSRFToken": csrf},
            )
            record.answered_ms = (time.perf_counter() - record.perf) * 1000
            if answer.status_code in (401, 403, 404) and not await asyncio.to_thread(
                still_ours, list(self.accounts.values())
            ):
                raise Clobbered(f"{channel}: reply answered {answer.status_code} and the seeded rows are gone")
            if answer.status_code != 201:
                raise SystemExit(f"{channel}: reply refused: {answer.status_code} {answer.text[:300]}")

        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(args.replies):
            delay = start + i / args.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(targets[i % len(targets)])))
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + 60
        while True:
            found = self.arrivals(channel)
            if sum(1 for mark in sent if mark in found) >= len(sent) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        rows = await asyncio.to_thread(webchat.outbound_rows, str(self.accounts[channel]))
        run = ChannelRun([], 0, {s: [] for s in STAGES}, [s.answered_ms for s in sent.values()])
        for mark, record in sent.items():
            at = found.get(mark)
            if at is None:
                run.lost += 1
                continue
            run.latencies.append((at - record.wall) * 1000)
            row = rows.get(mark)
            if row and row["claimed"]:
                run.stages["POST -> row"].append((row["created"] - record.wall) * 1000)
                run.stages["row -> claimed"].append((row["claimed"] - row["created"]) * 1000)
                run.stages["claimed -> provider"].append((at - row["claimed"]) * 1000)
        if run.lost and not await asyncio.to_thread(still_ours, list(self.accounts.values())):
            raise Clobbered(f"{channel}: {run.lost} replies lost and the seeded rows are gone")
        if run.lost:
            log(
                f"  {channel}: {run.lost} replies never reached the provider; "
                f"not sent: {await asyncio.to_thread(undelivered, self.accounts[channel])}"
            )
        run.load = (load_before, os.getloadavg()[0])
        return run


def run_once(args: argparse.Namespace, texts: dict[str, list[str]], logdir: Path) -> dict[str, ChannelRun]:
    from django.db import connection

    from tests.fakes.smtp_server import SmtpServer
    from tests.fakes.telegram_server import TelegramServer
    from tests.fakes.x_server import XServer

    channels = args.channels
    _PARSED.clear()
    procs = Processes(logdir, args.debug)
    with TelegramServer() as tg, XServer() as xs, SmtpServer() as smtp:
        public_key, webchat_pk = reset_and_seed()
        accounts = {**make_accounts(tg, xs, smtp), "webchat": int(webchat_pk)}
        connection.close()
        try:
            port = free_port()
            procs.web(port)
            procs.worker(args.concurrency)
            log(
                f"  web (pid {procs.procs[0][1].pid}) and worker (pids {procs.pids()[1:]}) ready; opening conversations"
            )
            open_conversations(channels, accounts, tg, xs, args.conversations, texts)
            connection.close()
            fakes = {"telegram": tg, "x": xs, "smtp": smtp, "webchat_key": public_key}
            driver = Driver(args, f"http://127.0.0.1:{port}", fakes, accounts)
            result = asyncio.run(driver.run(channels, texts))
            if not still_ours(list(accounts.values())):
                raise Clobbered("the seeded rows are gone at the end of the run")
            return result
        finally:
            procs.stop()  # always: a stray worker would consume the next run's queue


# --- Report ---------------------------------------------------------------------------------------------------------
def spread(values: list[float]) -> str:
    return _report.spread([v for v in values if v == v], "{:.1f}")


def pct(values: list[float], q: float) -> float:
    return _report.percentile(values, q) if values else float("nan")


def report(args: argparse.Namespace, runs: list[dict[str, ChannelRun]]) -> tuple[str, str]:
    headers = ["channel", "clock stops when", "p50 ms", "p90 ms", "p99 ms", "max ms", "replies arrived"]
    rows = []
    for channel in args.channels:
        per_run = [r[channel] for r in runs]
        arrived = sum(len(r.latencies) for r in per_run)
        rows.append(
            [
                f"**{channel}**",
                MEASURED_AT[channel],
                *(spread([pct(r.latencies, q) for r in per_run]) for q in (0.5, 0.9, 0.99, 1.0)),
                f"{arrived} of {arrived + sum(r.lost for r in per_run)}",
            ]
        )
    latency = _report.table(headers, rows)
    stage_rows = []
    for channel in args.channels:
        per_run = [r[channel] for r in runs]
        cells = []
        for name in STAGES:
            p50 = statistics.median(pct(r.stages[name], 0.5) for r in per_run)
            p99 = statistics.median(pct(r.stages[name], 0.99) for r in per_run)
            cells.append(f"{p50:.1f} / {p99:.1f}")
        answered = [pct(r.answered, 0.5) for r in per_run]
        stage_rows.append([channel, *cells, f"{statistics.median(answered):.1f}"])
    stages = _report.table(["channel", *(f"{s}, p50 / p99 ms" for s in STAGES), "POST answered, p50 ms"], stage_rows)
    return latency, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=200, help="agent replies per channel per run")
    parser.add_argument("--rate", type=float, default=10.0, help="replies per second (fixed schedule)")
    parser.add_argument("--conversations", type=int, default=50, help="conversations per channel, replied round-robin")
    parser.add_argument("--repeat", type=int, default=3, help="runs (each with fresh processes and data)")
    parser.add_argument("--channels", default=",".join(CHANNELS), help=f"comma-separated, of {', '.join(CHANNELS)}")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool children (make run: 2)")
    parser.add_argument("--debug", action="store_true", help="DEBUG=1 in the web and worker, as `make run` sets it")
    parser.add_argument("--wait", type=float, default=1800, help="seconds to wait for the bench database to be free")
    parser.add_argument("--max-load", type=float, default=0, help="wait for a 1-min load below this before a run")
    parser.add_argument("--logs", help="keep the web and worker logs in this folder (default: deleted)")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()
    args.channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    unknown = set(args.channels) - set(CHANNELS)
    if unknown:
        parser.error(f"unknown channels: {', '.join(sorted(unknown))}")
    if args.conversations / args.rate < 1.0 and "telegram" in args.channels:
        log("note: under 1 s between replies to one Telegram chat: its 1 message/s/chat pacing will show")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop our processes
    texts = load_texts()
    wait_until_free(args.wait)
    ensure_database()
    import logging

    import django

    django.setup()
    for noisy in ("httpx", "mail.log"):  # every request / SMTP command at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    runs = []
    with tempfile.TemporaryDirectory(prefix="sb-outbound-") as tmp:
        for n in range(args.repeat):
            logdir = Path(args.logs or tmp) / f"run{n + 1}"
            logdir.mkdir(parents=True, exist_ok=True)
            log(
                f"run {n + 1}/{args.repeat}: {args.replies} replies per channel at {args.rate:g}/s "
                f"(load {_report.load()})"
            )
            for attempt in range(1, 6):
                wait_for_quiet(args.max_load, args.wait)
                try:
                    runs.append(run_once(args, texts, logdir))
                    break
                except Clobbered as exc:
                    if attempt == 5:
                        raise SystemExit(f"gave up: {exc}") from None
                    log(f"  another benchmark reseeded the bench database during this run ({exc}): run again")
                    wait_until_free(args.wait)
    latency, stages = report(args, runs)
    loads = ", ".join(
        f"{min(r.load[0] for r in run.values()):.1f}-{max(r.load[1] for r in run.values()):.1f}" for run in runs
    )
    summary = (
        f"{args.replies} replies per channel and run at {args.rate:g}/s over {args.conversations} conversations, "
        f"{len(runs)} runs; worker 1 x {args.concurrency} (prefork), DEBUG={'1' if args.debug else '0'}; {where()}"
    )
    print(summary)
    print("median over runs (min-max)")
    print(latency)
    print("where the time goes (median over runs of each run's p50 / p99)")
    print(stages)
    print(f"1-min load average during each run: {loads}; now {_report.load()} ({os.cpu_count()} CPUs)")
    if args.write_docs:
        command = command_line("bench/outbound.py")
        markdown = "\n\n".join(
            [
                _report.header(
                    command,
                    [
                        f"{summary}.",
                        "Reply made as an agent makes it: POST /api/agent/conversations/<id>/reply to the real uvicorn "
                        "web process, signed in as a manager (session cookie + CSRF); sent by a real Celery worker "
                        "started with `inbox.cli.worker_command()` (queues ingest, routing, outbound) as `make run` "
                        "does; providers are the fakes in tests/fakes/ (real python-telegram-bot, tweepy and smtplib "
                        "clients) and the visitor's websocket, all on loopback.",
                        f"1-min load average during each run: {loads}.",
                    ],
                ),
                "Latency from the POST being sent until the provider has the reply (median over runs, min-max):",
                latency,
                "Where the time goes, from the rows' timestamps (same clock): POST -> the reply's message row, -> its "
                "delivery claimed by the worker, -> the provider has it. Median over runs of each run's p50 / p99:",
                stages,
            ]
        )
        _report.write_section("outbound", markdown, title="Agent reply -> provider latency (issue 9)")


if __name__ == "__main__":
    main()
