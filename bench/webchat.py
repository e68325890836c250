"""Web chat live latency: visitor message -> agent websocket, agent reply -> visitor websocket, idle sockets held.

    .venv/bin/python bench/webchat.py [--visitors 50] [--messages 1000] [--replies 1000] [--idle 2000]
                                      [--interval 5.0] [--via rest|ws] [--rounds 3] [--workers 1] [--concurrency 2]

Everything runs on this machine over loopback: one uvicorn process (HTTP + websockets), Celery worker(s) started
with inbox.cli.worker_command(), PostgreSQL database `switchboard_bench` and Redis db 12 (like bench/ingest.py).
Each round reseeds the database (14 language queues, 42 online agents, a webchat channel, one manager) and starts
its own web process and workers, which are always stopped at the end of the round.

1. N visitors each create a session (POST /api/webchat/v1/<key>/sessions), open /ws/webchat/ (auth frame), and
   send messages (REST POST /api/webchat/v1/messages, or the websocket "message" frame with --via ws), one every
   `interval` seconds on average (uniform 0.5x-1.5x jitter), in 14 languages. A manager (sees everything) listens
   on /ws/agent/ with its session cookie. Latency = send start -> arrival of the "conversation.created" /
   "message.created" event for that message on the agent's socket (events are timestamped on arrival and mapped
   to messages through the database after the phase).
2. The manager replies to the N conversations (POST /api/agent/conversations/<id>/reply, session + CSRF), one
   reply per conversation every `interval` seconds on average; latency = POST start -> the visitor's socket
   receiving the {"type": "message"} event with that reply.
3. K more visitors (sessions made with the service directly, not over HTTP, so a per-IP session limit does not
   get in the way) open idle authenticated sockets; reports how many are held, the web process RSS before and
   after, then runs (1) again with them connected.

Also prints where the time goes, from the rows' timestamps (same clock). (1): send -> event row (HTTP), event
row -> message row (commit, enqueue, worker pickup, claim, lookups), -> event processed, -> agent socket (commit,
publish). (2): POST -> reply row, -> delivery claimed by the worker, -> visitor socket (send, publish).

--write-docs also writes the tables into docs/benchmarks.md (bench/_report.py): the section `webchat`, or
`webchat-ws` for a run with --via ws.
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
import importlib.util
import json
import os
import random
import re
import resource
import shlex
import signal
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _report  # bench/_report.py: percentile, spread, machine facts and docs/benchmarks.md sections
import ingest  # bench/ingest.py: database, seeding and worker helpers (sets DATABASE_URL / REDIS_URL defaults)

# bench/telegram.py (free_port, start_web) by path: `import telegram` would find the python-telegram-bot package.
_spec = importlib.util.spec_from_file_location("bench_telegram", Path(_BENCH) / "telegram.py")
assert _spec is not None and _spec.loader is not None
telegram = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(telegram)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PASSWORD = "bench-password-1"
MANAGER = "bench-manager"
REPLY_MARK = re.compile(r"#r([0-9a-f]{32})")


def log(message: str) -> None:
    print(f"[webchat] {message}", file=sys.stderr, flush=True)


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # inherited by the web process we start
    return wanted


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return _report.percentile(values, q)


# --- Database side (synchronous; from the event loop through asyncio.to_thread) ----------------------------
def seed() -> tuple[str, str]:
    from inbox.agents.services import agent_upsert
    from inbox.routing.models import AgentProfile
    from inbox.routing.selectors import clear_cache

    account = ingest.reset_and_seed()
    # Every simulated visitor comes from 127.0.0.1, so the per-IP limits (meant for one network) are lifted on the
    # bench channel; the per-visitor limit stays as configured, and the limiter runs on every post either way.
    account.settings = {  # type: ignore[attr-defined]
        "rate_limits": {"messages_per_minute_per_ip": 1_000_000, "sessions_per_minute_per_ip": 1_000_000}
    }
    account.save(update_fields=["settings"])  # type: ignore[attr-defined]
    agent_upsert(username=MANAGER, password=PASSWORD, role=AgentProfile.Role.MANAGER)
    clear_cache()
    return str(account.public_id), str(account.pk)  # type: ignore[attr-defined]


def idle_visitors(account_pk: str, count: int) -> list[str]:
    from inbox.conversations.models import ChannelAccount
    from inbox.webchat.services import visitor_create

    account = ChannelAccount.objects.get(pk=account_pk)
    tokens = []
    started = last = time.perf_counter()
    for n in range(count):
        tokens.append(visitor_create(account=account)[1])
        if time.perf_counter() - last >= 10:
            log(f"  {n + 1}/{count} idle visitor sessions made, {time.perf_counter() - started:.0f} s")
            last = time.perf_counter()
    return tokens


def closing(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run fn in a worker thread's own database connection and close it afterwards (CONN_MAX_AGE=0 style)."""

    def run(*args: Any) -> Any:
        from django.db import connection

        try:
            return fn(*args)
        finally:
            connection.close()

    return run


@closing
def conversations_of(handles: list[str]) -> dict[str, int]:
    from inbox.conversations.models import Conversation

    rows = Conversation.objects.filter(identity__handle__in=handles).values_list("identity__handle", "pk")
    return {str(h): pk for h, pk in rows}


@closing
def inbound_rows(message_ids: list[int]) -> dict[int, dict[str, Any]]:
    """message id -> client_id and the stage timestamps (epoch seconds) of its inbound event. (The message's
    created_at is the event's receipt time, and the claim time is cleared when the event is done: between receipt
    and done there is no stored boundary, so pickup and ingest are one stage.)"""
    from inbox.conversations.models import Message

    rows = Message.objects.filter(pk__in=message_ids, direction=Message.Direction.INBOUND).values_list(
        "pk",
        "external_id",
        "inbound_event__received_at",
        "inbound_event__processed_at",
    )
    out = {}
    for pk, external_id, received, processed in rows:
        out[pk] = {
            "client_id": external_id.partition(":")[2],
            "received": received.timestamp() if received else None,
            "processed": processed.timestamp() if processed else None,
        }
    return out


@closing
def outbound_rows(account_pk: str) -> dict[str, dict[str, Any]]:
    """reply marker -> the reply's stage timestamps (epoch seconds)."""
    from inbox.conversations.models import Message

    rows = Message.objects.filter(account_id=int(account_pk), direction=Message.Direction.OUTBOUND).values_list(
        "text", "created_at", "delivery__claimed_at", "delivery__sent_at"
    )
    out = {}
    for text, created, claimed, sent in rows:
        found = REPLY_MARK.search(text)
        if found:
            out[found.group(1)] = {
                "created": created.timestamp(),
                "claimed": claimed.timestamp() if claimed else None,
                "sent": sent.timestamp() if sent else None,
            }
    return out


# --- Clients -----------------------------------------------------------------------------------------------
@dataclass
class Visitor:
    uuid: str
    token: str
    lang: str
    ws: Any = None
    conversation: int | None = None
    events: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)  # (perf, wall, event)
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Sent:
    perf: float
    wall: float
    done_perf: float = 0.0  # the 202 / ack


@dataclass
class Phase:
    latencies: list[float]
    lost: int
    stages: dict[str, list[float]]
    limited: int = 0


class Bench:
    def __init__(self, args: argparse.Namespace, base: str, public_key: str, account_pk: str, texts: Any) -> None:
        self.args = args
        self.base = base
        self.ws_base = base.replace("http://", "ws://")
        self.public_key = public_key
        self.account_pk = account_pk
        self.texts = texts
        self.rng = random.Random(1)
        self.agent_events: list[tuple[float, float, dict[str, Any]]] = []
        self.limited = 0
        self.resent = 0  # POSTs resent after a connection error, over the whole round
        self.tasks: set[asyncio.Task[None]] = set()  # the socket readers (a reference keeps them alive)

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def ticker(self, label: str, progress: Callable[[], str]) -> None:
        """A progress line on stderr every 10 s while a phase runs (cancelled at its end)."""
        started = time.perf_counter()
        while True:
            await asyncio.sleep(10)
            log(f"  {label} {progress()}, {time.perf_counter() - started:.0f} s")

    async def reader(self, ws: Any, sink: list[tuple[float, float, dict[str, Any]]], acks: dict | None = None) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in ws:
                perf, wall = time.perf_counter(), time.time()
                event = json.loads(raw)
                if acks is not None and event.get("type") in ("ack", "error") and event.get("client_id"):
                    acks[event["client_id"]] = {"perf": perf, **event}
                    continue
                sink.append((perf, wall, event))
        except ConnectionClosed:
            pass

    async def login(self, http: Any) -> tuple[str, str]:
        await http.get("/api/agent/session")
        signed = await http.post(
            "/api/agent/session",
            json={"username": MANAGER, "password": PASSWORD},
            headers={"X-CSRFToken": http.cookies["csrftoken"]},
        )
        if signed.status_code != 200:
            raise SystemExit(f"manager login refused: {signed.status_code} {signed.text}")
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        return cookie, http.cookies["csrftoken"]

    async def open_visitor(self, http: Any, lang: str) -> Visitor:
        from websockets.asyncio.client import connect

        made = await http.post(f"/api/webchat/v1/{self.public_key}/sessions", json={})
        if made.status_code != 201:
            raise SystemExit(f"session refused: {made.status_code} {made.text}")
        body = made.json()
        visitor = Visitor(uuid=body["visitor"], token=body["token"], lang=lang)
        visitor.ws = await connect(f"{self.ws_base}/ws/webchat/", open_timeout=30, ping_interval=None)
        await visitor.ws.send(json.dumps({"type": "auth", "token": visitor.token}))
        ready = json.loads(await asyncio.wait_for(visitor.ws.recv(), 30))
        if ready.get("type") != "ready":
            raise SystemExit(f"visitor socket not ready: {ready}")
        self.spawn(self.reader(visitor.ws, visitor.events, visitor.acks))
        return visitor

    async def post(self, http: Any, url: str, **kwargs: Any) -> Any:
        """POST, resent once on a connection error (the server closing a keep-alive connection as the request goes
        out); a visitor's message is idempotent by client_id, and a resent reply is matched by its marker."""
        import httpx

        try:
            return await http.post(url, **kwargs)
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            self.resent += 1
            return await http.post(url, **kwargs)

    async def send_one(self, http: Any, visitor: Visitor, text: str, sent: dict[str, Sent]) -> None:
        client_id = str(uuid.uuid4())
        record = Sent(time.perf_counter(), time.time())
        sent[client_id] = record
        if self.args.via == "ws":
            await visitor.ws.send(json.dumps({"type": "message", "client_id": client_id, "text": text}))
            return  # the ack is read by the visitor's reader task
        while True:
            answer = await self.post(
                http,
                "/api/webchat/v1/messages",
                json={"client_id": client_id, "text": text},
                headers={"Authorization": f"Bearer {visitor.token}"},
            )
            if answer.status_code == 429:  # rate limited: resend after the pause, as the widget does
                self.limited += 1
                await asyncio.sleep(float(answer.json().get("retry_after", 1)))
                continue
            if answer.status_code not in (200, 202):
                raise SystemExit(f"message refused: {answer.status_code} {answer.text}")
            record.done_perf = time.perf_counter()
            return

    async def visitor_messages(self, http: Any, visitors: list[Visitor], total: int) -> Phase:
        """Phase 1: every visitor sends its share of `total` messages, paced; events are mapped afterwards."""
        self.agent_events.clear()
        self.limited = 0
        sent: dict[str, Sent] = {}
        interval = self.args.interval

        async def one(visitor: Visitor, count: int, rng: random.Random) -> None:
            await asyncio.sleep(rng.uniform(0, interval))
            for _ in range(count):
                started = time.perf_counter()
                texts = self.texts[visitor.lang]
                await self.send_one(http, visitor, texts[rng.randrange(len(texts))], sent)
                await asyncio.sleep(max(0.0, rng.uniform(0.5, 1.5) * interval - (time.perf_counter() - started)))

        share = [total // len(visitors) + (i < total % len(visitors)) for i in range(len(visitors))]
        tick = asyncio.create_task(
            self.ticker("(1)", lambda: f"{len(sent)}/{total} sent, {len(self.agent_events)} agent socket events")
        )
        try:
            await asyncio.gather(
                *(one(v, c, random.Random(self.rng.random())) for v, c in zip(visitors, share, strict=True))
            )
            kinds = ("conversation.created", "message.created")
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline:
                if sum(1 for _, _, e in self.agent_events if e.get("type") in kinds) >= total:
                    break
                await asyncio.sleep(0.05)
        finally:
            tick.cancel()
        events = [(p, w, e) for p, w, e in self.agent_events if e.get("type") in kinds]
        rows = await asyncio.to_thread(inbound_rows, [int(e["message"]) for _, _, e in events])
        latencies = []
        stages: dict[str, list[float]] = {k: [] for k in ("http", "worker", "publish")}
        seen = set()
        for perf, wall, event in events:
            row = rows.get(int(event["message"]))
            if row is None or row["client_id"] not in sent or row["client_id"] in seen:
                continue
            seen.add(row["client_id"])
            start = sent[row["client_id"]]
            latencies.append((perf - start.perf) * 1000)
            if row["received"] and row["processed"]:  # the event's claimed_at is cleared when it is done
                stages["http"].append((row["received"] - start.wall) * 1000)
                stages["worker"].append((row["processed"] - row["received"]) * 1000)
                stages["publish"].append((wall - row["processed"]) * 1000)
        refused = [a for v in visitors for a in v.acks.values() if a.get("type") == "error" and a["client_id"] in sent]
        if refused:
            log(f"  {len(refused)} websocket messages answered with an error frame, e.g. {refused[0]}")
        for v in visitors:
            v.acks.clear()
        return Phase(latencies, total - len(latencies), stages, self.limited)

    async def agent_replies(self, http: Any, csrf: str, visitors: list[Visitor], total: int) -> Phase:
        """Phase 2: the manager replies to each visitor's conversation, paced; the visitor's socket times it."""
        sent: dict[str, Sent] = {}
        for v in visitors:
            v.events.clear()
        interval = self.args.interval

        async def one(visitor: Visitor, count: int, rng: random.Random) -> None:
            await asyncio.sleep(rng.uniform(0, interval))
            for _ in range(count):
                started = time.perf_counter()
                mark = uuid.uuid4().hex
                sent[mark] = Sent(time.perf_counter(), time.time())
                answer = await self.post(
                    http,
                    f"/api/agent/conversations/{visitor.conversation}/reply",
                    json={"text": f"Gracias, lo revisamos ahora mismo. #r{mark}"},
                    headers={"X-CSRFToken": csrf},
                )
                if answer.status_code != 201:
                    raise SystemExit(f"reply refused: {answer.status_code} {answer.text}")
                sent[mark].done_perf = time.perf_counter()
                await asyncio.sleep(max(0.0, rng.uniform(0.5, 1.5) * interval - (time.perf_counter() - started)))

        def arrivals() -> dict[str, tuple[float, float]]:
            found = {}
            for v in visitors:
                for perf, wall, event in v.events:
                    if event.get("type") != "message":
                        continue
                    nested = event.get("message")  # {"message": {...}} per the contract; flat {"text"} before it
                    text = nested.get("text", "") if isinstance(nested, dict) else event.get("text", "")
                    mark = REPLY_MARK.search(str(text))
                    if mark and mark.group(1) not in found:
                        found[mark.group(1)] = (perf, wall)
            return found

        share = [total // len(visitors) + (i < total % len(visitors)) for i in range(len(visitors))]
        tick = asyncio.create_task(
            self.ticker("(2)", lambda: f"{len(sent)}/{total} replies posted, {len(arrivals())} arrived")
        )
        try:
            await asyncio.gather(
                *(one(v, c, random.Random(self.rng.random())) for v, c in zip(visitors, share, strict=True))
            )
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline and len(arrivals()) < total:
                await asyncio.sleep(0.1)
        finally:
            tick.cancel()
        found = arrivals()
        rows = await asyncio.to_thread(outbound_rows, self.account_pk)
        latencies = []
        stages: dict[str, list[float]] = {k: [] for k in ("http", "pickup", "send+publish")}
        for mark, (perf, wall) in found.items():
            if mark not in sent:
                continue
            latencies.append((perf - sent[mark].perf) * 1000)
            row = rows.get(mark)
            if row and row["claimed"]:  # sent_at is written after the publish, so it is not a stage boundary
                stages["http"].append((row["created"] - sent[mark].wall) * 1000)
                stages["pickup"].append((row["claimed"] - row["created"]) * 1000)
                stages["send+publish"].append((wall - row["claimed"]) * 1000)
        return Phase(latencies, total - len(latencies), stages)

    async def open_idle(self, tokens: list[str]) -> list[Any]:
        from websockets.asyncio.client import connect

        gate = asyncio.Semaphore(64)
        held: list[Any] = []
        failures: dict[str, int] = {}

        async def one(token: str) -> None:
            async with gate:
                try:
                    ws = await connect(f"{self.ws_base}/ws/webchat/", open_timeout=60, ping_interval=None)
                    await ws.send(json.dumps({"type": "auth", "token": token}))
                    ready = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if ready.get("type") != "ready":
                        raise RuntimeError(str(ready))
                    held.append(ws)
                except Exception as exc:  # counted and reported: the point is how many are held
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

        tick = asyncio.create_task(self.ticker("(3)", lambda: f"{len(held)}/{len(tokens)} idle sockets open"))
        try:
            await asyncio.gather(*(one(t) for t in tokens))
        finally:
            tick.cancel()
        if failures:
            log(f"  idle sockets not opened: {failures}")
        return held

    async def run(self, web_pid: int, idle_tokens: list[str]) -> dict[str, Any]:
        import httpx
        import psutil
        from websockets.asyncio.client import connect
        from websockets.protocol import State

        args = self.args
        result: dict[str, Any] = {}
        limits = httpx.Limits(max_connections=args.visitors + 20, max_keepalive_connections=args.visitors + 20)
        async with (
            httpx.AsyncClient(base_url=self.base, timeout=60, limits=limits) as visitor_http,
            httpx.AsyncClient(base_url=self.base, timeout=60, limits=limits) as agent_http,
        ):
            cookie, csrf = await self.login(agent_http)
            agent_ws = await connect(
                f"{self.ws_base}/ws/agent/", additional_headers={"Cookie": cookie}, open_timeout=30, ping_interval=None
            )
            self.spawn(self.reader(agent_ws, self.agent_events))
            langs = list(self.texts)
            visitors = [await self.open_visitor(visitor_http, langs[i % len(langs)]) for i in range(args.visitors)]
            log(f"  (1) {args.messages} visitor messages via {args.via} from {args.visitors} visitors")
            result["to_agent"] = await self.visitor_messages(visitor_http, visitors, args.messages)
            conv = await asyncio.to_thread(conversations_of, [v.uuid for v in visitors])
            for v in visitors:
                v.conversation = conv.get(v.uuid)
            missing = [v for v in visitors if v.conversation is None]
            if missing:
                raise SystemExit(f"{len(missing)} visitors have no conversation after phase 1")
            log(f"  (2) {args.replies} agent replies")
            result["to_visitor"] = await self.agent_replies(agent_http, csrf, visitors, args.replies)
            if idle_tokens:
                proc = psutil.Process(web_pid)
                result["rss_before"] = proc.memory_info().rss
                log(f"  (3) opening {len(idle_tokens)} idle visitor sockets")
                started = time.perf_counter()
                idle = await self.open_idle(idle_tokens)
                result["idle_open_s"] = time.perf_counter() - started
                await asyncio.sleep(2)
                result["rss_after"] = proc.memory_info().rss
                result["held"] = sum(1 for ws in idle if ws.state is State.OPEN)
                log(f"  (3) {result['held']} held; {args.messages} visitor messages with them connected")
                result["to_agent_idle"] = await self.visitor_messages(visitor_http, visitors, args.messages)
                result["held_after"] = sum(1 for ws in idle if ws.state is State.OPEN)
                await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)
            result["resent"] = self.resent
            await asyncio.gather(*(v.ws.close() for v in visitors), return_exceptions=True)
            await agent_ws.close()
        return result


def round_once(args: argparse.Namespace, base: str, web_pid: int, texts: Any) -> dict[str, Any]:
    from django.db import connection

    public_key, account_pk = seed()
    tokens = idle_visitors(account_pk, args.idle) if args.idle else []
    connection.close()
    procs = ingest.start_workers(args.workers, args.concurrency)
    try:
        workers = [p for proc in procs for p in ingest.process_tree(proc.pid)]
        load_before = os.getloadavg()[0]
        cpu_before = (sum(os.times()[:2]), ingest.cpu_seconds([web_pid]), ingest.cpu_seconds(workers))
        started = time.perf_counter()
        result = asyncio.run(Bench(args, base, public_key, account_pk, texts).run(web_pid, tokens))
        elapsed = time.perf_counter() - started
        cpu_after = (sum(os.times()[:2]), ingest.cpu_seconds([web_pid]), ingest.cpu_seconds(workers))
        # Share of one core used over the round by the bench's own client, the web process and the workers, and
        # the 1-minute load average (anything else running on the machine shows there).
        result["cpu"] = [(a - b) / elapsed for a, b in zip(cpu_after, cpu_before, strict=True)]
        result["load"] = (load_before, os.getloadavg()[0])
        return result
    finally:
        ingest.stop_workers(procs)  # always: a stray worker would consume the next round's queue


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    return _report.spread([v for v in values if v == v], fmt)  # NaN (a phase without samples) left out


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    print(
        f"visitors {args.visitors} (one message per {args.interval:g} s each, via {args.via}), "
        f"{args.messages} messages and {args.replies} replies per round, idle sockets {args.idle}, "
        f"rounds {len(results)}, workers {args.workers} x {args.concurrency}"
    )
    print("median over rounds (min-max), milliseconds")
    print(f"{'measure':<40} {'p50':>14} {'p90':>14} {'p99':>14} {'max':>14} {'lost':>6}")
    rows = [("visitor message -> agent event", "to_agent"), ("agent reply -> visitor event", "to_visitor")]
    if args.idle:
        rows.append((f"visitor msg -> agent, {args.idle} idle open", "to_agent_idle"))
    for label, key in rows:
        phases = [r[key] for r in results]
        cells = [spread([pct(p.latencies, q) for p in phases]) for q in (0.5, 0.9, 0.99, 1.0)]
        lost = sum(p.lost for p in phases)
        print(f"{label:<40} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14} {cells[3]:>14} {lost:>6}")
    limited = sum(r["to_agent"].limited + r.get("to_agent_idle", Phase([], 0, {})).limited for r in results)
    if limited:
        print(f"rate-limited (429) visitor posts, resent after retry_after: {limited}")
    resent = sum(r["resent"] for r in results)
    if resent:
        print(f"POSTs resent after a connection error (keep-alive close race): {resent}")
    if args.idle:
        held = [r["held"] for r in results]
        held_after = [r["held_after"] for r in results]
        mib = 2**20
        opened = spread([r["idle_open_s"] for r in results], "{:.1f}")
        per_socket = [(r["rss_after"] - r["rss_before"]) / max(1, r["held"]) / 1024 for r in results]
        print(
            f"{'idle websockets held':<40} {spread(held)} of {args.idle}; still open after (1): {spread(held_after)};"
            f" opened in {opened} s"
        )
        print(
            f"{'web process RSS MiB':<40} before {spread([r['rss_before'] / mib for r in results])}"
            f"  after {spread([r['rss_after'] / mib for r in results])}  per socket {spread(per_socket, '{:.1f}')} KiB"
        )
    cores = [spread([r["cpu"][i] * 100 for r in results]) for i in range(3)]
    print(f"{'CPU over the round, % of one core':<40} client {cores[0]}  web {cores[1]}  workers {cores[2]}")
    loads = ", ".join(f"{a:.1f}->{b:.1f}" for a, b in (r["load"] for r in results))
    print(f"{'1-min load average, start->end':<40} {loads}  ({os.cpu_count()} CPUs)")
    print("where the time goes, p50 / p99 ms (median over rounds; wall clock, from the rows' timestamps)")
    for label, key, names in (
        ("message -> agent", "to_agent", ("http", "worker", "publish")),
        ("reply -> visitor", "to_visitor", ("http", "pickup", "send+publish")),
        ("message -> agent, idle open", "to_agent_idle", ("http", "worker", "publish")),
    ):
        if key not in results[0]:
            continue
        parts = []
        for name in names:
            p50 = statistics.median(pct(r[key].stages[name], 0.5) for r in results)
            p99 = statistics.median(pct(r[key].stages[name], 0.99) for r in results)
            parts.append(f"{name} {p50:.1f} / {p99:.1f}")
        print(f"  {label:<28} " + ";  ".join(parts))


def write_docs(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """The measured part of docs/benchmarks.md's web chat section (bench/_report.py): `webchat` for the REST send
    path (the default), `webchat-ws` for --via ws."""
    rest = args.via == "rest"
    rounds = f"{len(results)} round{'s' if len(results) != 1 else ''}"
    extra = [
        f"**Services:** {telegram.services()} on the same machine; per round a fresh uvicorn process (HTTP + "
        f"websockets) and {args.workers} Celery worker{'s' if args.workers != 1 else ''} x {args.concurrency} "
        "prefork children.",
        f"**Run:** {args.visitors} visitors, one message per {args.interval:g} s each on average, via "
        f"{'REST' if rest else 'the websocket'}; {args.messages:,} messages and {args.replies:,} replies per round"
        + (f", then {args.idle:,} idle visitor sockets and {args.messages:,} messages again" if args.idle else "")
        + f"; {rounds}.",
        "**1-min load average, start -> end of each round:** "
        + ", ".join(f"{a:.1f} -> {b:.1f}" for a, b in (r["load"] for r in results))
        + f" ({os.cpu_count()} CPUs).",
    ]
    limited = sum(r["to_agent"].limited + r.get("to_agent_idle", Phase([], 0, {})).limited for r in results)
    if limited:
        extra.append(f"Rate-limited (429) visitor posts, resent after retry_after: {limited}.")
    resent = sum(r["resent"] for r in results)
    if resent:
        extra.append(f"POSTs resent after a connection error (keep-alive close race): {resent}.")
    head = _report.header(f".venv/bin/python bench/webchat.py {shlex.join(sys.argv[1:])}".strip(), extra)

    rows = [
        ("visitor message -> agent's websocket event", "to_agent"),
        ("agent reply -> visitor's websocket event", "to_visitor"),
    ]
    if args.idle:
        rows.append((f"visitor message -> agent, with {args.idle:,} idle visitor sockets open", "to_agent_idle"))
    latency = []
    for label, key in rows:
        phases = [r[key] for r in results]
        cells = [spread([pct(p.latencies, q) for p in phases]) for q in (0.5, 0.9, 0.99, 1.0)]
        latency.append((label, *cells, sum(p.lost for p in phases)))
    path = "REST path (default)" if rest else "websocket send path (`--via ws`)"
    latency_table = _report.table(
        [f"{path}, milliseconds, median over {rounds} (min-max)", "p50", "p90", "p99", "max", "lost"], latency
    )

    cores = [spread([r["cpu"][i] * 100 for r in results]) for i in range(3)]
    resources = []
    if args.idle:
        mib = 2**20
        per_socket = [(r["rss_after"] - r["rss_before"]) / max(1, r["held"]) / 1024 for r in results]
        resources += [
            (
                "idle authenticated visitor websockets held (one web process)",
                f"{spread([r['held'] for r in results], '{:,.0f}')} of {args.idle:,}; still open after (1): "
                f"{spread([r['held_after'] for r in results], '{:,.0f}')}; opened in "
                f"{spread([r['idle_open_s'] for r in results], '{:.1f}')} s, 64 at a time",
            ),
            (
                "web process RSS",
                f"{spread([r['rss_before'] / mib for r in results])} MiB before, "
                f"{spread([r['rss_after'] / mib for r in results])} MiB with {args.idle:,} sockets: "
                f"{spread(per_socket, '{:.1f}')} KiB per socket",
            ),
        ]
    resources.append(
        ("CPU over a round (% of one core)", f"web {cores[1]}, workers {cores[2]}, benchmark clients {cores[0]}")
    )
    resource_table = _report.table(["concurrent visitors" if args.idle else "resources", "result"], resources)

    def stages(key: str, names: tuple[str, ...]) -> list[str]:
        cells = []
        for name in names:
            p50 = statistics.median(pct(r[key].stages[name], 0.5) for r in results)
            p99 = statistics.median(pct(r[key].stages[name], 0.99) for r in results)
            cells.append(f"{p50:.1f} / {p99:.1f}")
        return cells

    inbound = ("http", "worker", "publish")
    label = "REST" if rest else "websocket frame"
    to_agent = [(label, *stages("to_agent", inbound))]
    if args.idle:
        to_agent.append((f"{label}, {args.idle:,} idle sockets open", *stages("to_agent_idle", inbound)))
    to_visitor = [
        ("REST (default run)" if rest else "`--via ws` run", *stages("to_visitor", ("http", "pickup", "send+publish")))
    ]
    body = [
        head,
        latency_table,
        resource_table,
        "Where the time goes (p50 / p99 ms, median over the rounds, from the rows' timestamps, same clock):",
        _report.table(
            [
                "visitor message -> agent",
                "HTTP: send -> event row",
                "worker: commit, enqueue, pickup, claim, ingest -> event done",
                "commit + publish -> agent socket",
            ],
            to_agent,
        ),
        _report.table(
            [
                "agent reply -> visitor",
                "HTTP: POST -> message row",
                "worker pickup (delivery claimed)",
                "send + publish -> visitor socket",
            ],
            to_visitor,
        ),
    ]
    _report.write_section(
        "webchat" if rest else "webchat-ws",
        "\n\n".join(body),
        title="Web chat live latency (issue 6; goal: p99 under 100 ms)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=50, help="concurrent visitors sending messages")
    parser.add_argument("--messages", type=int, default=1000, help="visitor messages per round (and again in 3)")
    parser.add_argument("--replies", type=int, default=1000, help="agent replies per round")
    parser.add_argument("--idle", type=int, default=2000, help="idle visitor websockets for (3); 0 skips it")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="mean seconds between one visitor's messages (and replies)"
    )
    parser.add_argument("--via", choices=["rest", "ws"], default="rest", help="how visitors send messages")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork children per worker")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop our processes
    nofile = raise_open_files()
    if args.idle + args.visitors + 200 > nofile:
        raise SystemExit(f"open-file limit {nofile} is too low for {args.idle} idle sockets")
    texts = ingest.load_texts()
    ingest.ensure_database()
    import django

    django.setup()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    results = []
    for n in range(args.rounds):
        log(f"round {n + 1}/{args.rounds}")
        port = telegram.free_port()
        web = telegram.start_web(port)  # a fresh web process per round: its RSS and sockets start from zero
        try:
            result = round_once(args, f"http://127.0.0.1:{port}", web.pid, texts)
        finally:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=30)
        for key in ("to_agent", "to_visitor", "to_agent_idle"):
            if key in result:
                p = result[key]
                log(
                    f"  {key}: p50 {pct(p.latencies, 0.5):.0f}  p99 {pct(p.latencies, 0.99):.0f}  "
                    f"max {pct(p.latencies, 1.0):.0f} ms  (n={len(p.latencies)}, lost {p.lost})"
                )
        results.append(result)
    report(args, results)
    if args.write_docs:
        write_docs(args, results)


if __name__ == "__main__":
    main()
