"""Memory per process: what each process kind of a running Switchboard holds, idle and after real work.

    .venv/bin/python bench/memory.py [--messages 140] [--web-rounds 20] [--repeat 1] [--concurrency 2]
                                     [--no-split] [--debug] [--write-docs]

1. `make run`'s process tree, started exactly as `make run` starts it (`python -m inbox.cli run`, with DATABASE_URL
   = PostgreSQL `switchboard_bench` and REDIS_URL = Redis db 12 set, so no embedded Redis; DEBUG=0 as deployed, or
   --debug for `make run`'s own DEBUG=1 default): the supervisor, the web process (uvicorn), the Celery worker (queues
   ingest, routing, outbound; its main process and each prefork pool child), beat, the mail listener (IMAP IDLE on a
   private Dovecot, tests/fakes/dovecot.py), the Telegram poller (getUpdates on tests/fakes/telegram_server.py) and
   the X poller (tests/fakes/x_server.py); one loopback account per channel, replies go out to those fakes and to
   tests/fakes/smtp_server.py.
   Measured once everything is up ("idle"), then again after the work: the web process serves `--web-rounds` rounds
   of the agent's pages and API (inbox list, conversation pages, dashboard, contacts) and of the widget (widget.js,
   demo page, config, visitor sessions, websockets, messages); `--messages` customer messages per channel (Telegram,
   X DMs, e-mail, web chat) in 14 languages come in through the listeners and the web process, so the worker's
   ingest loads and uses the language models (lingua + fastText); agents reply on every channel, so the outbound
   connectors (python-telegram-bot, tweepy, smtplib) run too.
2. Unless --no-split: the deploy layout with one worker per queue family (deploy/README.md, "one -Q per host"):
   inbox.cli.worker_command() with -Q ingest,routing and another with -Q outbound, measured idle and after the same
   kind of work (events recorded and replies made with the services directly).

RSS from /proc/<pid>/smaps_rollup (Rss), PSS (Pss: shared pages divided among the processes sharing them), USS
(Private_Clean + Private_Dirty: what ending that process alone would give back). The sum of RSS counts pages shared
by the worker's main process and its pool children (the language models, loaded before the fork) several times;
the sum of PSS is what the whole install takes. Every process started is stopped at the end (also on Ctrl-C).
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
import contextlib
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _report  # bench/_report.py
import outbound  # bench/outbound.py (sets the DATABASE_URL / REDIS_URL defaults): database, seed, accounts, fakes
import webchat  # bench/webchat.py: manager login, visitors

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SUPPORT = outbound.SUPPORT
IMAP_PASSWORD = "bench-imap-password"
MIB = 2**20


def log(message: str) -> None:
    print(f"[memory] {message}", file=sys.stderr, flush=True)


# --- Reading memory -------------------------------------------------------------------------------------------------
@dataclass
class Mem:
    rss: float
    pss: float | None
    uss: float | None


def memory(pid: int) -> Mem | None:
    """Bytes from /proc/<pid>/smaps_rollup; RSS alone from /proc/<pid>/status when smaps is not readable."""
    try:
        fields = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, value = line.partition(":")
            fields[name.strip()] = int(value.split()[0]) * 1024
        return Mem(fields["Rss"], fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"])
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return Mem(int(line.split()[1]) * 1024, None, None)
    except OSError:
        pass
    return None


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


KINDS: list[tuple[str, Callable[[str], bool]]] = [
    ("web (uvicorn)", lambda c: "uvicorn" in c),
    ("worker", lambda c: "celery" in c and " worker " in c),
    ("beat", lambda c: "celery" in c and " beat " in c),
    ("mail listener (IMAP IDLE)", lambda c: "listen_mail" in c),
    ("Telegram poller", lambda c: "listen_telegram" in c),
    ("X poller", lambda c: "listen_x" in c),
    ("supervisor (inbox.cli run)", lambda c: "inbox.cli" in c),
]


def processes(root_pids: dict[str, int]) -> dict[str, int]:
    """label -> pid for every process below the given roots; a worker's pool children get their own labels."""
    found: dict[str, int] = {}

    def visit(pid: int, label: str | None) -> None:
        line = cmdline(pid)
        kind = label or next((name for name, match in KINDS if match(line)), None)
        if kind is None:
            return  # a set-up step (migrate, seed_demo) that has not exited yet
        if kind.startswith("worker") or kind.endswith("worker"):
            found[f"{kind}: main process"] = pid
            for n, child in enumerate(sorted(children(pid)), 1):
                found[f"{kind}: pool child {n}"] = child
            return
        found[kind] = pid
        for child in children(pid):
            visit(child, None)

    for label, pid in root_pids.items():
        visit(pid, label)
    return found


def snapshot(pids: dict[str, int]) -> dict[str, Mem]:
    out = {}
    for label, pid in pids.items():
        mem = memory(pid)
        if mem is not None:
            out[label] = mem
    return out


# --- Process control ------------------------------------------------------------------------------------------------
class Tree:
    """Processes we started plus every descendant seen (by pid and start time), so nothing survives stop()."""

    def __init__(self, logdir: Path, env: dict[str, str]) -> None:
        self.logdir = logdir
        self.env = env
        self.roots: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.seen: dict[int, str] = {}

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
            )
        self.roots.append((name, proc))
        self.remember()
        return proc

    def log_text(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def remember(self) -> None:
        def visit(pid: int) -> None:
            self.seen.setdefault(pid, start_time(pid))
            for child in children(pid):
                visit(child)

        for _, proc in self.roots:
            if proc.poll() is None:
                visit(proc.pid)

    def wait_for(self, name: str, text: str, timeout: float) -> None:
        proc = dict(self.roots)[name]
        deadline = time.monotonic() + timeout
        while text not in self.log_text(name):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_text(name).splitlines()[-30:])
                raise SystemExit(f"{name}: no {text!r} within {timeout:.0f} s; log {self.logdir / name}.log:\n{tail}")
            time.sleep(0.2)
        self.remember()

    def stop(self) -> None:
        self.remember()
        for _, proc in reversed(self.roots):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the supervisor stops its own children (inbox/cli.py)
        for name, proc in self.roots:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in 60 s: killing its process group")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        deadline = time.monotonic() + 20
        while True:
            left = [pid for pid, started in self.seen.items() if started and start_time(pid) == started]
            if not left:
                break
            if time.monotonic() > deadline:
                for pid in left:  # the same process (pid and start time), still there: ours to end
                    log(f"killing left-over pid {pid}: {cmdline(pid)[:100]}")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
            time.sleep(0.2)
        self.roots.clear()
        self.seen.clear()


# --- Work -----------------------------------------------------------------------------------------------------------
def make_accounts(tg: Any, xs: Any, smtp: Any, dovecot: Any) -> dict[str, int]:
    from inbox.conversations.models import ChannelAccount

    accounts = outbound.make_accounts(tg, xs, smtp)
    x = ChannelAccount.objects.get(pk=accounts["x-dm"])
    x.settings = {**x.settings, "min_poll_interval": 2}  # poll often: the messages come in during the run
    x.save(update_fields=["settings"])
    email = ChannelAccount.objects.get(pk=accounts["email"])
    email.settings = {
        **email.settings,
        "imap_host": dovecot.host,
        "imap_port": dovecot.port,
        "imap_security": "none",
        "imap_username": SUPPORT,
    }
    email.secrets = {"imap_password": IMAP_PASSWORD}
    email.save(update_fields=["settings", "secrets"])
    return {"telegram": accounts["telegram"], "x": accounts["x-dm"], "email": accounts["email"]}


@webchat.closing
def inbound_count(account_pk: int) -> int:
    from inbox.conversations.models import Message

    return Message.objects.filter(account_id=account_pk, direction=Message.Direction.INBOUND).count()


@webchat.closing
def conversation_ids(account_pk: int, limit: int) -> list[int]:
    from inbox.conversations.models import Conversation

    return list(Conversation.objects.filter(account_id=account_pk).order_by("pk").values_list("pk", flat=True)[:limit])


@webchat.closing
def sent_count(account_pks: list[int]) -> tuple[int, int]:
    from inbox.conversations.models import OutboundDelivery

    rows = OutboundDelivery.objects.filter(account_id__in=account_pks)
    return rows.filter(state=OutboundDelivery.State.SENT).count(), rows.count()


@webchat.closing
def sent_of(message_ids: list[int]) -> int:
    from inbox.conversations.models import OutboundDelivery

    return OutboundDelivery.objects.filter(message_id__in=message_ids, state=OutboundDelivery.State.SENT).count()


def wait(predicate: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def text_of(texts: dict[str, list[str]], i: int) -> tuple[str, str]:
    lang = outbound.LANGUAGES[i % len(outbound.LANGUAGES)]
    return lang, texts[lang][(i // len(outbound.LANGUAGES)) % len(texts[lang])]


def feed_channels(fakes: dict[str, Any], texts: dict[str, list[str]], count: int) -> None:
    """Customer messages in 14 languages where the listeners find them: getUpdates, X DMs, the IMAP mailbox."""
    tg, xs, dovecot = fakes["telegram"], fakes["x"], fakes["dovecot"]
    for i in range(count):
        lang, text = text_of(texts, i)
        tg.queue_message(text, chat_id=900_000 + i, language_code=lang)
        user = xs.add_user(username=f"mem_customer{i}_{uuid.uuid4().hex[:6]}", name=f"Customer {i}")
        xs.add_dm(sender_id=user["id"], text=text)
        dovecot.deliver(SUPPORT, outbound.make_mail(f"m{i}@customer.test", text))


class Web:
    """The web process's warm-up: an agent's pages and API, and the widget's, over HTTP and websockets."""

    def __init__(self, base: str, public_key: str, webchat_pk: int) -> None:
        self.base = base
        self.chat = webchat.Bench(argparse.Namespace(via="rest", interval=1.0), base, public_key, str(webchat_pk), {})
        self.public_key = public_key

    async def rounds(self, n: int, texts: dict[str, list[str]], messages: int, accounts: dict[str, int]) -> None:
        import httpx
        from websockets.asyncio.client import connect

        async with (
            httpx.AsyncClient(base_url=self.base, timeout=60) as agent,
            httpx.AsyncClient(base_url=self.base, timeout=60) as visitor_http,
        ):
            cookie, csrf = await self.chat.login(agent)
            agent_ws = await connect(
                f"{self.chat.ws_base}/ws/agent/", additional_headers={"Cookie": cookie}, open_timeout=30
            )
            self.chat.spawn(self.chat.reader(agent_ws, []))  # an agent's browser reads its live events
            visitors = []
            for i in range(messages):  # web chat customers: sessions, sockets, one message each
                lang, text = text_of(texts, i)
                visitor = await self.chat.open_visitor(visitor_http, lang)
                await self.chat.send_one(visitor_http, visitor, text, {})
                visitors.append(visitor)
            conversations = await asyncio.to_thread(webchat.closing(lambda: list(_all_conversations()[:20])))
            bad: dict[str, int] = {}
            for r in range(n):
                pages = ["/inbox/", "/api/agent/conversations", "/dashboard/", "/api/metrics", "/contacts/"]
                pages += [f"/inbox/c/{c}/" for c in conversations[r % len(conversations) :: 7][:3]]
                pages += [f"/api/agent/conversations/{c}" for c in conversations[r % len(conversations) :: 5][:3]]
                pages += ["/widget.js", "/demo/", f"/api/webchat/v1/{self.public_key}/config", "/healthz"]
                for page in pages:
                    answer = await (visitor_http if page in ("/widget.js", "/demo/") else agent).get(page)
                    if answer.status_code != 200:
                        bad[f"{page.split('?')[0]} {answer.status_code}"] = answer.status_code
                lang, text = text_of(texts, r)
                visitor = visitors[r % len(visitors)]
                await self.chat.send_one(visitor_http, visitor, f"{text} ({r})", {})
            if bad:
                log(f"  warm-up pages not answered 200: {sorted(bad)}")
            for channel, account in accounts.items():  # agents reply on every channel (distinct chats)
                for conversation in await asyncio.to_thread(conversation_ids, account, 5):
                    answer = await self.chat.post(
                        agent,
                        f"/api/agent/conversations/{conversation}/reply",
                        json={"text": f"Thanks, we are on it ({channel})."},
                        headers={"X-CSRFToken": csrf},
                    )
                    if answer.status_code != 201:
                        raise SystemExit(f"reply refused on {channel}: {answer.status_code} {answer.text[:200]}")
            await asyncio.gather(*(v.ws.close() for v in visitors), return_exceptions=True)
            await agent_ws.close()


def _all_conversations() -> Any:
    from inbox.conversations.models import Conversation

    return Conversation.objects.order_by("-pk").values_list("pk", flat=True)


def make_run_phase(
    args: argparse.Namespace, texts: dict[str, list[str]], fakes: dict[str, Any], logdir: Path, env: dict[str, str]
) -> tuple[dict[str, Mem], dict[str, Mem], dict[str, Any]]:
    from django.db import connection

    public_key, webchat_pk = outbound.reset_and_seed()
    accounts = make_accounts(fakes["telegram"], fakes["x"], fakes["smtp"], fakes["dovecot"])
    connection.close()
    port = outbound.free_port()
    tree = Tree(logdir, env)
    ours = [*accounts.values(), int(webchat_pk)]
    try:
        tree.start(
            "make-run", [PY, "-m", "inbox.cli", "run", "--port", str(port), "--concurrency", str(args.concurrency)]
        )
        tree.wait_for("make-run", "[switchboard] ready:", 180)
        tree.wait_for("make-run", " ready.", 120)  # the Celery worker
        time.sleep(args.settle)
        pids = processes({"supervisor (inbox.cli run)": tree.roots[0][1].pid})
        log(f"  make run is up: {len(pids)} processes (load {_report.load()})")
        idle = snapshot(pids)
        started = time.perf_counter()
        feed_channels(fakes, texts, args.messages)
        web = Web(f"http://127.0.0.1:{port}", public_key, int(webchat_pk))
        asyncio.run(web.rounds(args.web_rounds, texts, args.messages, {}))
        for name in ("telegram", "x", "email"):
            wait(lambda pk=accounts[name]: inbound_count(pk) >= args.messages, f"{args.messages} {name} messages")
        wait(lambda: inbound_count(int(webchat_pk)) >= args.messages, "the web chat messages")
        log(f"  {args.messages} messages per channel ingested in {time.perf_counter() - started:.0f} s")
        reply_accounts = {**accounts, "webchat": int(webchat_pk)}
        asyncio.run(web.rounds(2, texts, 1, reply_accounts))  # replies on every channel, pages again with data
        wait(lambda: sent_count(list(reply_accounts.values()))[0] >= 5 * len(reply_accounts), "the replies sent")
        time.sleep(args.settle)
        pids = processes({"supervisor (inbox.cli run)": tree.roots[0][1].pid})
        warm = snapshot(pids)
        log(f"  measured after the work (load {_report.load()})")
        loaded = [
            line.split("language models loaded for", 1)[1].strip()
            for line in tree.log_text("make-run").splitlines()
            if "language models loaded for" in line
        ]
        info = {"languages": loaded[-1] if loaded else "?", "pids": pids, "accounts": ours}
    except (SystemExit, Exception) as exc:
        if not outbound.still_ours(ours):
            raise outbound.Clobbered(str(exc)) from exc
        raise
    finally:
        tree.stop()
    if not outbound.still_ours(ours):
        raise outbound.Clobbered("the seeded rows are gone at the end of the run")
    return idle, warm, info


def split_phase(
    args: argparse.Namespace, texts: dict[str, list[str]], logdir: Path, env: dict[str, str], ours: list[int]
) -> tuple[dict[str, Mem], dict[str, Mem]]:
    """Workers per queue family (deploy/README.md): -Q ingest,routing and -Q outbound, on the data left by phase 1."""
    from django.contrib.auth.models import User
    from django.db import connection

    from inbox.cli import worker_command
    from inbox.conversations.models import ChannelAccount, Conversation
    from inbox.conversations.services import inbound_events_record, reply_create

    tree = Tree(logdir, env)
    try:
        roots = {}
        for label, queues in (("ingest,routing worker", "ingest,routing"), ("outbound worker", "outbound")):
            command = worker_command(concurrency=args.concurrency, name=f"memory-{queues.split(',')[0]}@%h")
            command[command.index("-Q") + 1] = queues
            roots[label] = tree.start(label.split()[0].replace(",", "-"), command).pid
        for label in roots:
            tree.wait_for(label.split()[0].replace(",", "-"), " ready.", 120)
        time.sleep(args.settle)
        pids = processes(roots)
        idle = snapshot(pids)
        webchat_account = ChannelAccount.objects.get(kind="webchat", name="bench")
        events = []
        for i in range(args.messages):
            _, text = text_of(texts, i + 3)
            visitor = f"split-{i % 40}"
            events.append(
                (f"{visitor}:{uuid.uuid4()}", {"visitor": visitor, "client_id": str(uuid.uuid4()), "text": text})
            )
        before = inbound_count(webchat_account.pk)
        inbound_events_record(account=webchat_account, events=events)
        wait(lambda: inbound_count(webchat_account.pk) >= before + args.messages, "the split worker's ingest")
        manager = User.objects.get(username=webchat.MANAGER)
        replies = []
        for kind in ("telegram", "x", "email", "webchat"):
            for conversation in Conversation.objects.filter(account__kind=kind).order_by("-pk")[:5]:
                replies.append(
                    reply_create(conversation=conversation, author=manager, text=f"One more thing ({kind}).")
                )
        made = len(replies)
        wait(lambda: sent_of([m.pk for m in replies]) >= made, "the split worker's replies")
        connection.close()
        time.sleep(args.settle)
        pids = processes(roots)
        warm = snapshot(pids)
        log(f"  split workers measured after {args.messages} messages and {made} replies (load {_report.load()})")
    except (SystemExit, Exception) as exc:
        if not outbound.still_ours(ours):
            raise outbound.Clobbered(str(exc)) from exc
        raise
    finally:
        tree.stop()
    if not outbound.still_ours(ours):
        raise outbound.Clobbered("the seeded rows are gone at the end of the run")
    return idle, warm


# --- Report ---------------------------------------------------------------------------------------------------------
def mib(values: list[float | None]) -> str:
    vals = [v / MIB for v in values if v is not None]
    return _report.spread(vals, "{:.1f}") if vals else "-"


def table(runs: list[tuple[dict[str, Mem], dict[str, Mem]]], order: list[str]) -> str:
    rows = []
    for label in order:
        idle = [r[0][label].rss for r in runs if label in r[0]]
        warm = [r[1][label] for r in runs if label in r[1]]
        rows.append(
            [
                label,
                mib(list(idle)),
                f"**{mib([m.rss for m in warm])}**",
                mib([m.pss for m in warm]),
                mib([m.uss for m in warm]),
            ]
        )

    def total(pick: Callable[[Mem], float | None], which: int) -> str:
        sums = []
        for run in runs:
            values = [pick(m) for m in run[which].values()]
            if values and all(v is not None for v in values):
                sums.append(sum(v for v in values if v is not None))
        return mib(list(sums))

    rows.append(
        [
            "**total**",
            total(lambda m: m.rss, 0),
            total(lambda m: m.rss, 1),
            f"**{total(lambda m: m.pss, 1)}**",
            total(lambda m: m.uss, 1),
        ]
    )
    return _report.table(["process", "RSS idle", "RSS after work", "PSS after work", "USS after work"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=140, help="customer messages per channel (14 languages)")
    parser.add_argument("--web-rounds", type=int, default=20, help="rounds of agent pages + widget requests")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool children (make run: 2)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of quiet before each measurement")
    parser.add_argument("--no-split", action="store_true", help="skip the one-worker-per-queue-family layout")
    parser.add_argument("--debug", action="store_true", help="DEBUG=1, `make run`'s default (else DEBUG=0, deployed)")
    parser.add_argument("--wait", type=float, default=1800, help="seconds to wait for the bench database to be free")
    parser.add_argument("--max-load", type=float, default=0, help="wait for a 1-min load below this before a run")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop our processes
    texts = outbound.load_texts()
    outbound.wait_until_free(args.wait, log)
    outbound.ensure_database()
    import logging

    import django

    django.setup()
    from django.conf import settings

    from tests.fakes.dovecot import Dovecot, ensure_dovecot
    from tests.fakes.smtp_server import SmtpServer
    from tests.fakes.telegram_server import TelegramServer
    from tests.fakes.x_server import XServer

    for noisy in ("httpx", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not ensure_dovecot():
        raise SystemExit("dovecot is not installed (apt-get install dovecot-imapd)")
    made_run: list[tuple[dict[str, Mem], dict[str, Mem]]] = []
    split: list[tuple[dict[str, Mem], dict[str, Mem]]] = []
    languages = "?"
    with tempfile.TemporaryDirectory(prefix="sb-memory-") as tmp:
        # The children share this process's SECRET_KEY (channel secrets are encrypted with a key derived from it)
        # but keep beat's schedule file and media in a temporary var dir.
        env = dict(os.environ, PYTHONUNBUFFERED="1", SECRET_KEY=settings.SECRET_KEY, SWITCHBOARD_VAR_DIR=tmp)
        if not args.debug:
            env["DEBUG"] = "0"  # else inbox/cli.py sets DEBUG=1 as for `make run`
        else:
            env.pop("DEBUG", None)
        for n in range(args.repeat):
            for attempt in range(1, 6):
                outbound.wait_for_quiet(args.max_load, args.wait, log)
                logdir = Path(tmp) / f"run{n + 1}-{attempt}"
                logdir.mkdir()
                log(f"run {n + 1}/{args.repeat}: make run's processes (load {_report.load()})")
                try:
                    with (
                        TelegramServer() as tg,
                        XServer() as xs,
                        SmtpServer() as smtp,
                        Dovecot({SUPPORT: IMAP_PASSWORD}) as dovecot,
                    ):
                        fakes = {"telegram": tg, "x": xs, "smtp": smtp, "dovecot": dovecot}
                        idle, warm, info = make_run_phase(args, texts, fakes, logdir, env)
                        split_run = None
                        if not args.no_split:
                            log(f"run {n + 1}/{args.repeat}: one worker per queue family (load {_report.load()})")
                            split_run = split_phase(args, texts, logdir, env, info["accounts"])
                except outbound.Clobbered as exc:
                    if attempt == 5:
                        raise SystemExit(f"gave up: {exc}") from None
                    log(f"  another benchmark reseeded the bench database during this run ({exc}): run again")
                    outbound.wait_until_free(args.wait, log)
                    continue
                made_run.append((idle, warm))
                languages = info["languages"]
                if split_run is not None:
                    split.append(split_run)
                break
    order = [label for label, _ in sorted(made_run[0][1].items(), key=lambda item: _order(item[0]))]
    main_table = table(made_run, order)
    print(f"make run's processes, MiB, median over {len(made_run)} runs (min-max); language models: {languages}")
    print(main_table)
    split_table = ""
    if split:
        split_order = sorted(split[0][1], key=_order)
        split_table = table(split, split_order)
        print("one worker per queue family (deploy), MiB")
        print(split_table)
    print(f"load average now {_report.load()} ({os.cpu_count()} CPUs)")
    if args.write_docs:
        command = outbound.command_line("bench/memory.py")
        parts = [
            _report.header(
                command,
                [
                    f"`python -m inbox.cli run --concurrency {args.concurrency}` (what `make run` starts) on "
                    f"{outbound.where()}, DEBUG={'1' if args.debug else '0'}; "
                    "loopback fakes for Telegram, X and SMTP, a private Dovecot for IMAP; median over "
                    f"{len(made_run)} run(s) (min-max).",
                    f"Work between the two measurements: {args.messages} customer messages per channel (Telegram, X, "
                    f"e-mail, web chat) in 14 languages, {args.web_rounds} rounds of the agent's pages and API and of "
                    "the widget, 5 agent replies per channel. Language models loaded by the worker: "
                    f"{languages}.",
                    "RSS and PSS / USS from /proc/<pid>/smaps_rollup (USS = Private_Clean + Private_Dirty). The "
                    "worker's pool children share the pages their main process loaded before forking (the language "
                    "models), which RSS counts in each of them; the PSS total is what the install takes (library "
                    "pages are also shared with any other process of this venv on the machine, so PSS can move a "
                    "little with what else runs; USS does not).",
                ],
            ),
            "`make run`'s processes, MiB:",
            main_table,
        ]
        if split:
            parts += [
                "Deploy layout with one worker per queue family (`inbox.cli.worker_command()` with `-Q ingest,routing` "
                f"and with `-Q outbound`, {args.concurrency} children each), after {args.messages} more messages and "
                "20 replies, MiB:",
                split_table,
            ]
        _report.write_section("memory", "\n\n".join(parts), title="Memory per process (issue 9)")


def _order(label: str) -> tuple[int, str]:
    ranks = ["supervisor", "web", "worker", "ingest", "outbound", "beat", "mail", "Telegram", "X"]
    return next((i for i, r in enumerate(ranks) if label.startswith(r)), len(ranks)), label


if __name__ == "__main__":
    main()
