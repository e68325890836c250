"""Sustained ingest: raw events -> stored, language-detected, routed messages, through PostgreSQL, Redis and
real Celery worker processes on this machine.

    .venv/bin/python bench/ingest.py [--events 100000] [--history 100000] [--workers 1] [--concurrency 2]
                                     [--batch 1000] [--repeat 3] [--profile-events 20000] [--cprofile]
                                     [--mix webchat=35,telegram=30,email=20,x=15] [--write-docs]

Mixed channels, in the shapes the connectors normalise: web chat posts (as inbox/webchat stores them), Telegram
Updates (message / edited_message, from the nutgram fixtures), e-mails (raw RFC 5322 bytes with the trace headers
of real mails from ruby-mail's fixtures, stored as listen_mail stores a fetched mail) and X events (v2 DM events
and mentions, built with connectors.x.normalize as the poller stores them). The samples and the texts (real
sentences, word pairs and single words in 14 languages, lingua's test data) are read at run time from
../shared/data, never copied into the project. About four messages per sender; half of the senders are known
(see below); a few special cases: Telegram edits, e-mail replies, automatic mail, mails fetched twice, events
delivered twice.

The database has a history: a seed database (`<name>_seed`) is built once per invocation — migrated, 15 queues
and 42 online agents, the four channel accounts, half of the run's senders known (contact, identity, a resolved
conversation, one in three also an open one) with --history old messages and their done events — and ANALYZEd;
each run starts from a copy of it (CREATE DATABASE ... TEMPLATE). Each channel's events are then recorded the way
its poller records them: chunks of --record-chunk events, one transaction each (INSERT ... ON CONFLICT DO NOTHING
RETURNING), enqueued after the commit in tasks of --batch events (SWITCHBOARD_INGEST_BATCH). The clock runs from
the first insert until no event is pending; every run checks that each distinct message is stored exactly once,
that no event failed and that no thread has two open conversations. Reported: messages/s (median and min-max over
--repeat runs), messages per task, worker CPU per message (the worker processes, from /proc), PostgreSQL CPU per
message (the workers' backends, from /proc; the bench keeps one connection per worker child for that), the
recorder's CPU, and the load average. A separate in-process run of --profile-events of the same events (one batch
at a time, a CPU timer around each step and a wall timer around every SQL statement; --cprofile adds a cProfile run)
says where the time goes. Progress goes to stderr, the results to stdout, and with --write-docs into
docs/benchmarks.md (bench/_report.py: the "ingest" section).

Needs PostgreSQL and Redis; uses its own databases `switchboard_bench_ingest` and `switchboard_bench_ingest_seed`
(--database-url) and Redis db 11 (--redis-url) — other benchmarks use `switchboard_bench` and db 12, sometimes at
the same time — and drops nothing else. bench/helpdesk.py uses this module's helpers (ensure_database,
reset_and_seed, start_workers ...): keep their behaviour.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds email.py, which would shadow the standard library's `email` package for every script run
# from here (the script's folder comes first on sys.path): move it to the end.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)] + [_BENCH]

import argparse
import copy
import cProfile
import json
import os
import pstats
import random
import re
import signal
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
LANGID = SHARED / "langid"
TELEGRAM_UPDATES = SHARED / "telegram" / "nutgram" / "Updates"
X_SAMPLES = SHARED / "twitter" / "tweepy" / "decoded_responses" / "dm_and_mentions"
MAILS = SHARED / "email" / "ruby-mail" / "plain_emails"
LANGUAGES = ["en", "es", "zh", "ru", "de", "fr", "pt", "it", "ar", "tr", "ja", "ko", "uk", "vi"]
BENCH_DB = "switchboard_bench_ingest"
X_ME = "4000"  # our X account's user id
SUPPORT = "support@bench.example"

# The other benchmarks that import this module (email, telegram, webchat, helpdesk) share these defaults: the
# database `switchboard_bench` and Redis db 12. This script's own main() sets its databases from its options.
SHARED_BENCH_DB = "switchboard_bench"
os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{SHARED_BENCH_DB}")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
os.environ.setdefault("SWITCHBOARD_ROUTING_CACHE_SECONDS", "5")
sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    print(f"[ingest] {message}", file=sys.stderr, flush=True)


# --- The workload -------------------------------------------------------------------------------------------------
@dataclass
class Texts:
    sentences: dict[str, list[str]]
    pairs: dict[str, list[str]]
    words: dict[str, list[str]]

    def chat(self, rng: random.Random, language: str) -> str:
        """A chat message: mostly a sentence, sometimes a couple of words or one (the detector's slow path)."""
        roll = rng.random()
        pool = self.sentences if roll < 0.7 else self.pairs if roll < 0.9 else self.words
        return rng.choice(pool[language])

    def mail(self, rng: random.Random, language: str) -> str:
        return " ".join(rng.choice(self.sentences[language]) for _ in range(rng.randint(1, 3)))


def load_texts() -> Texts:
    def read(kind: str) -> dict[str, list[str]]:
        folder = LANGID / kind
        return {
            lang: [line for line in (folder / f"{lang}.txt").read_text().splitlines() if line.strip()]
            for lang in LANGUAGES
        }

    if not LANGID.is_dir():
        raise SystemExit(f"{LANGID} is absent: this benchmark reads its texts from ../shared/data/langid")
    return Texts(read("sentences"), read("word-pairs"), read("single-words"))


@dataclass
class Samples:
    """Payload shapes from the real recordings under ../shared/data (read at run time)."""

    telegram_message: dict[str, Any]
    telegram_edit: dict[str, Any]
    x_dm_event: dict[str, Any]
    x_mention: dict[str, Any]
    mail_headers: list[list[bytes]]  # trace headers (Received, X-Mailer ...) of real mails, one list per mail


_REPLACED = re.compile(
    rb"(?i)^(from|to|cc|subject|date|message-id|in-reply-to|references|content-[a-z-]+|mime-version|sender|"
    rb"return-path|reply-to|auto-submitted|precedence|list-id)\s*:"
)


def load_samples() -> Samples:
    for path in (TELEGRAM_UPDATES, X_SAMPLES, MAILS):
        if not path.is_dir():
            raise SystemExit(f"{path} is absent: this benchmark reads its payload shapes from ../shared/data")
    dms = json.loads((X_SAMPLES / "test_manage_and_lookup_direct_messages.json").read_text())
    dm_event = next(e for entry in dms for e in (entry["response"].get("data") or []) if isinstance(e, dict))
    mentions = json.loads((X_SAMPLES / "test_client_get_users_mentions.json").read_text())
    mention = mentions[0]["response"]["data"][0]
    headers = []
    for name in ("basic_email.eml", "raw_email_simple.eml", "raw_email5.eml", "raw_email_reply.eml"):
        raw = (MAILS / name).read_bytes().replace(b"\r\n", b"\n")
        block = raw.split(b"\n\n", 1)[0].split(b"\n")
        fields: list[bytes] = []
        for line in block:
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += b"\r\n" + line
            elif not line.startswith(b"From "):
                fields.append(line)
        headers.append([f for f in fields if not _REPLACED.match(f)])
    return Samples(
        telegram_message=json.loads((TELEGRAM_UPDATES / "message.json").read_text()),
        telegram_edit=json.loads((TELEGRAM_UPDATES / "edited_message.json").read_text()),
        x_dm_event=dm_event,
        x_mention=mention,
        mail_headers=headers,
    )


@dataclass
class Event:
    channel: str
    external_id: str
    payload: dict[str, Any]
    message_key: str | None  # the message it carries (None: an event seen before)


@dataclass
class Workload:
    events: list[Event]
    expected_messages: int
    kinds: Counter[str] = field(default_factory=Counter)


MIX = {"webchat": 0.35, "telegram": 0.30, "email": 0.20, "x": 0.15}  # --mix changes it
DEFAULT_MIX = "webchat=35,telegram=30,email=20,x=15"


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        kind, _, share = part.partition("=")
        if kind.strip() not in MIX:
            raise SystemExit(f"--mix: unknown channel {kind!r} (web chat, telegram, email, x)")
        mix[kind.strip()] = float(share)
    total = sum(mix.values())
    return {kind: mix.get(kind, 0.0) / total for kind in MIX}


def sender_counts(n_events: int) -> dict[str, int]:
    """Senders per channel: about four messages each. The first half of them have a history (see seed_history)."""
    return {kind: max(2, int(n_events * share) // 4) for kind, share in MIX.items() if share > 0}


# The sender handles, as each channel's connector reports them (the SQL of seed_history writes the same ones).
def webchat_handle(n: int) -> str:
    return f"bench-visitor-{n:06d}"


def telegram_chat(n: int) -> int:
    return 700_000_000 + n


def mail_address(n: int) -> str:
    return f"customer{n}@customer{n % 97}.example"


def x_user(n: int) -> str:
    return str(900_000_000 + n)


class Generator:
    """A deterministic stream of mixed-channel events: about four messages per sender, each sender writing in one
    language (one message in ten in another), a few special cases (Telegram edits, e-mail replies, automatic
    mail, re-fetched mails, webhook retries) in the proportions below."""

    def __init__(self, rng: random.Random, texts: Texts, samples: Samples, n_events: int) -> None:
        self.rng, self.texts, self.samples = rng, texts, samples
        self.n = n_events
        self.senders = sender_counts(n_events)
        self.language: dict[tuple[str, int], str] = {}
        self.telegram_sent: dict[int, list[tuple[int, str]]] = {}
        self.mail_sent: dict[int, list[tuple[str, bytes]]] = {}
        self.counter = 0
        self.uid = 0
        self.recorded: list[Event] = []

    def lang(self, kind: str, sender: int) -> str:
        key = (kind, sender)
        if key not in self.language:
            self.language[key] = self.rng.choice(LANGUAGES)
        return self.language[key] if self.rng.random() < 0.9 else self.rng.choice(LANGUAGES)

    def build(self) -> Workload:
        kinds: Counter[str] = Counter()
        channels = [c for c in MIX if MIX[c] > 0]
        weights = [MIX[c] for c in channels]
        events: list[Event] = []
        while len(events) < self.n:
            channel = self.rng.choices(channels, weights)[0]
            self.counter += 1
            if self.recorded and self.rng.random() < 0.005:
                # A provider delivering an event twice (a webhook retried): stored once, by its event id.
                again = self.rng.choice(self.recorded[-200:])
                events.append(Event(again.channel, again.external_id, again.payload, None))
                kinds["event delivered twice"] += 1
                continue
            event = getattr(self, channel)(kinds)
            events.append(event)
            self.recorded.append(event)
        messages = {e.message_key for e in events if e.message_key is not None}
        return Workload(events, len(messages), kinds)

    # Web chat: what inbox/webchat/services.py stores for a visitor's post.
    def webchat(self, kinds: Counter[str]) -> Event:
        sender = self.rng.randrange(self.senders["webchat"])
        client_id = f"c{self.counter:08d}-0000-4000-8000-000000000000"
        visitor = webchat_handle(sender)
        payload = {
            "visitor": visitor,
            "client_id": client_id,
            "text": self.texts.chat(self.rng, self.lang("webchat", sender)),
            "accept_language": "en-US,en;q=0.9" if self.rng.random() < 0.5 else "",
            "name": "",
            "email": "",
            "sent_at": datetime.now(UTC).isoformat(),
        }
        kinds["webchat post"] += 1
        key = f"webchat:{visitor}:{client_id}"
        return Event("webchat", f"{visitor}:{client_id}", payload, key)

    # Telegram: nutgram's message.json / edited_message.json with our ids and texts.
    def telegram(self, kinds: Counter[str]) -> Event:
        sender = self.rng.randrange(self.senders["telegram"])
        chat_id = telegram_chat(sender)
        language = self.lang("telegram", sender)
        sent = self.telegram_sent.setdefault(sender, [])
        if sent and self.rng.random() < 0.02:
            message_id, _ = self.rng.choice(sent)
            update = copy.deepcopy(self.samples.telegram_edit)
            inner = update["edited_message"]
            inner.pop("reply_to_message", None)
            inner["edit_date"] = inner.get("date", 0) + 60
            kinds["telegram edit"] += 1
        else:
            message_id = len(sent) + 1
            update = copy.deepcopy(self.samples.telegram_message)
            inner = update["message"]
            kinds["telegram message"] += 1
        text = self.texts.chat(self.rng, language)
        sent.append((message_id, text))
        update["update_id"] = 10_000_000 + self.counter
        inner["message_id"] = message_id
        inner["date"] = 1_763_000_000 + self.counter
        inner["text"] = text
        for who in (inner["from"], inner["chat"]):
            who["id"] = chat_id
            who["first_name"] = f"Customer {sender}"
            who["username"] = f"customer{sender}"
        inner["from"]["language_code"] = language
        return Event("telegram", str(update["update_id"]), update, f"telegram:{chat_id}:{message_id}")

    # E-mail: raw bytes with a real mail's trace headers, stored as listen_mail stores a fetched mail.
    def email(self, kinds: Counter[str]) -> Event:
        from inbox.conversations.mail import mail_payload

        sender = self.rng.randrange(self.senders["email"])
        sent = self.mail_sent.setdefault(sender, [])
        self.uid += 1
        if sent and self.rng.random() < 0.01:
            message_id, raw = self.rng.choice(sent)  # re-fetched (a second folder, a UIDVALIDITY change)
            kinds["e-mail fetched again"] += 1
        else:
            language = self.lang("email", sender)
            message_id = f"bench.{self.counter}.{sender}@customer{sender % 97}.example"
            headers: dict[str, str] = {}
            if sent and self.rng.random() < 0.3:
                replied = sent[-1][0]
                headers = {"In-Reply-To": f"<{replied}>", "References": f"<{replied}>"}
                kinds["e-mail reply (In-Reply-To)"] += 1
            elif self.rng.random() < 0.02:
                headers = {"Auto-Submitted": "auto-replied"}
                kinds["e-mail automatic (RFC 3834)"] += 1
            else:
                kinds["e-mail new thread"] += 1
            raw = self.mail_bytes(sender, message_id, self.texts.mail(self.rng, language), language, headers)
            sent.append((message_id, raw))
        payload = mail_payload(raw, uid=self.uid, uidvalidity=1, folder="INBOX")
        return Event("email", f"1:{self.uid}", payload, f"email:{message_id}")

    def mail_bytes(self, sender: int, message_id: str, text: str, language: str, extra: dict[str, str]) -> bytes:
        from email.message import EmailMessage
        from email.utils import format_datetime

        from connectors.email.smtp import SMTP_POLICY

        msg = EmailMessage(policy=SMTP_POLICY)
        address = mail_address(sender)
        msg["From"] = f"Customer {sender} <{address}>"
        msg["To"] = SUPPORT
        msg["Subject"] = f"Question {sender}"
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = f"<{message_id}>"
        msg["Return-Path"] = f"<{address}>"
        if self.rng.random() < 0.3:
            msg["Content-Language"] = language
        for name, value in extra.items():
            msg[name] = value
        msg.set_content(text)
        if self.rng.random() < 0.3:  # a client that sends HTML too: sanitised with nh3 on the way in
            msg.add_alternative(f"<html><body><p>{text}</p><script>alert(1)</script></body></html>", subtype="html")
        trace = b"\r\n".join(self.rng.choice(self.samples.mail_headers))
        return trace + b"\r\n" + bytes(msg)

    # X: v2 DM events and mentions, stored as the poller stores them (connectors.x.normalize).
    def x(self, kinds: Counter[str]) -> Event:
        from connectors.x.normalize import dm_event_item, mention_item

        sender = self.rng.randrange(self.senders["x"])
        user_id = x_user(sender)
        users = {"users": [{"id": user_id, "name": f"Customer {sender}", "username": f"customer{sender}"}]}
        text = self.texts.chat(self.rng, self.lang("x", sender))
        item_id = str(1_900_000_000_000_000_000 + self.counter)
        if self.rng.random() < 0.7:
            event = dict(self.samples.x_dm_event)
            event.update(
                id=item_id,
                text=text,
                sender_id=user_id,
                dm_conversation_id=f"{user_id}-{X_ME}",
                created_at="2026-11-20T10:00:00.000Z",
            )
            kinds["X DM"] += 1
            return Event("x", f"dm:{item_id}", dm_event_item(event, users, X_ME), f"x:dm:{item_id}")
        tweet = dict(self.samples.x_mention)
        tweet.update(
            id=item_id,
            edit_history_tweet_ids=[item_id],
            text=f"@support {text}",
            author_id=user_id,
            conversation_id=item_id,
            created_at="2026-11-20T10:00:00.000Z",
        )
        kinds["X mention"] += 1
        return Event("x", f"tweet:{item_id}", mention_item(tweet, users, X_ME), f"x:tweet:{item_id}")


# --- Database, workers, measurement ---------------------------------------------------------------------------------
def _admin() -> Any:
    import psycopg

    return psycopg.connect(os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres", autocommit=True)


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def prepare_seed(texts: Texts, n_events: int, history: int) -> str:
    """Build the seed database once per invocation: migrated, queues and agents, the four channel accounts and a
    history (seed_history), ANALYZEd. Every run starts from a copy of it (CREATE DATABASE ... TEMPLATE), so each
    run meets the same tables, of a realistic size and with planner statistics, as a production inbox would."""
    from django.db import connections

    run_url = os.environ["DATABASE_URL"]
    seed = _database(run_url) + "_seed"
    connections.close_all()
    with _admin() as conn:
        for name in (seed, _database(run_url)):
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (name,))
            conn.execute(f'drop database if exists "{name}"')
        conn.execute(f'create database "{seed}"')
    env = {**os.environ, "DATABASE_URL": run_url.rsplit("/", 1)[0] + "/" + seed}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True, env=env)
    connections["default"].settings_dict["NAME"] = seed
    try:
        reset_and_seed()
        seed_channels()
        seed_history(texts, n_events, history)
    finally:
        connections.close_all()
        connections["default"].settings_dict["NAME"] = _database(run_url)
    return seed


def ensure_database() -> None:
    """Create DATABASE_URL's database when missing and migrate it. (bench/helpdesk.py uses this module's helpers.)"""
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = _database(url)
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)


def reset_and_seed() -> Any:
    """Empty the database and the Redis db, then queues for the 14 languages and the fallback, 42 online agents (3 a
    language, capacity 20) and a web chat channel (returned). (bench/helpdesk.py uses it too.)"""
    import redis
    from django.conf import settings
    from django.db import connection

    from inbox.agents.services import agent_upsert
    from inbox.conversations.models import ChannelAccount
    from inbox.routing.models import AgentProfile, AgentQueue
    from inbox.routing.selectors import clear_cache
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
    clear_cache()
    return ChannelAccount.objects.create(kind="webchat", name="Website")


def seed_channels() -> None:
    """The other three channel accounts (normalisation needs no network: nothing here is ever sent)."""
    from inbox.conversations.models import ChannelAccount

    ChannelAccount.objects.create(  # type: ignore[misc]  # secrets: an EncryptedJSONField
        kind="telegram",
        name="Bot",
        settings={"mode": "webhook"},
        secrets={"bot_token": "1:bench"},
    )
    ChannelAccount.objects.create(kind="email", name="Mailbox", settings={"address": SUPPORT})
    ChannelAccount.objects.create(kind="x", name="X", settings={"mode": "webhook", "user_id": X_ME})


def fresh_database(seed: str) -> dict[str, Any]:
    """A copy of the seed database under the run's name; returns its channel accounts by kind."""
    import redis
    from django.conf import settings
    from django.db import connections

    from inbox.conversations.models import ChannelAccount
    from inbox.routing.selectors import clear_cache

    connections.close_all()
    name = _database(os.environ["DATABASE_URL"])
    with _admin() as conn:
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (name,))
        conn.execute(f'drop database if exists "{name}"')
        conn.execute(f'create database "{name}" template "{seed}"')
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    clear_cache()
    return {account.kind: account for account in ChannelAccount.objects.all()}


def seed_history(texts: Texts, n_events: int, history: int) -> None:
    """What an inbox that has been running for a while holds: the first half of each channel's senders are known
    (contact, identity, a resolved conversation; one in three also an open, waiting one), and about ``history``
    old messages with their done events spread over those conversations. Set-based SQL, then ANALYZE."""
    from django.db import connection, transaction

    from inbox.conversations.models import ChannelAccount
    from inbox.routing.models import AgentQueue

    accounts = {a.kind: a.pk for a in ChannelAccount.objects.all()}
    queues = dict(AgentQueue.objects.exclude(language="").values_list("language", "id"))
    languages = sorted(queues)
    known = {kind: count // 2 for kind, count in sender_counts(n_events).items()}
    handle = {
        "webchat": "'bench-visitor-' || lpad(g::text, 6, '0')",
        "telegram": "(700000000 + g)::text",
        "email": "'customer' || g || '@customer' || mod(g, 97) || '.example'",
        "x": "(900000000 + g)::text",
    }
    thread = {
        "webchat": "''",
        "telegram": "''",
        "email": "'hist.' || %s || '.' || g || '@customer.example'",
        "x": "'dm'",
    }
    pool = [t for lang in LANGUAGES for t in texts.sentences[lang][:40]]
    conversations_estimate = sum(n + n // 3 for n in known.values())
    per_conversation = max(1, round(history / max(1, conversations_estimate)))
    old = "now() - interval '30 days'"
    with transaction.atomic(), connection.cursor() as cursor:  # foreign keys are checked at the commit
        for kind, n in known.items():
            # Identities first, each with a contact id drawn from the contacts' sequence; then those contacts.
            cursor.execute(
                "insert into conversations_contactidentity (contact_id, kind, handle, display_name, created_at) "
                f"select nextval(pg_get_serial_sequence('conversations_contact', 'id')), %s, {handle[kind]}, "
                f"'Customer ' || g, {old} from generate_series(0, %s - 1) g",
                [kind, n],
            )
        cursor.execute(
            "insert into conversations_contact (id, name, email, created_at) "
            "select contact_id, display_name, '', created_at from conversations_contactidentity"
        )
        for kind, n in known.items():
            for status, every in (("resolved", 1), ("open", 3)):
                thread_key = thread[kind].replace("%s", f"'{status}'")
                cursor.execute(
                    "insert into conversations_conversation (account_id, contact_id, identity_id, thread_key, "
                    "subject, language, queue_id, status, priority, created_at, waiting_since, last_message_at, "
                    "resolved_at) "
                    f"select %s, i.contact_id, i.id, {thread_key}, '', (%s::text[])[1 + g %% %s], "
                    f"(%s::bigint[])[1 + g %% %s], %s, 0, {old}, "
                    f"case when %s = 'open' then now() - interval '1 hour' end, now() - interval '1 hour', "
                    f"case when %s = 'resolved' then now() - interval '20 days' end "
                    f"from generate_series(0, %s - 1) g "
                    f"join conversations_contactidentity i on i.kind = %s and i.handle = {handle[kind]} "
                    "where g %% %s = 0",
                    [
                        accounts[kind],
                        "{" + ",".join(languages) + "}",
                        len(languages),
                        "{" + ",".join(str(queues[lang]) for lang in languages) + "}",
                        len(languages),
                        status,
                        status,
                        status,
                        n,
                        kind,
                        every,
                    ],
                )
        cursor.execute(
            "insert into conversations_inboundevent (account_id, external_id, payload, state, attempts, error, "
            "received_at, processed_at) "
            f"select c.account_id, 'hist:' || c.id || ':' || k, '{{}}'::jsonb, 'done', 1, '', {old}, {old} "
            "from conversations_conversation c cross join generate_series(1, %s) k",
            [per_conversation],
        )
        literal = "{" + ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in pool) + "}"
        cursor.execute(
            "insert into conversations_message (uuid, account_id, conversation_id, direction, sender_identity_id, "
            "text, html, language, language_confidence, external_id, metadata, inbound_event_id, created_at) "
            "select gen_random_uuid(), e.account_id, c.id, 'in', c.identity_id, "
            "(%s::text[])[1 + (c.id * 7 + e.id) %% %s], '', c.language, 0.99, e.external_id, '{}'::jsonb, e.id, "
            "e.received_at from conversations_inboundevent e "
            "join conversations_conversation c on c.id = split_part(e.external_id, ':', 2)::bigint",
            [literal, len(pool)],
        )
    with connection.cursor() as cursor:
        cursor.execute("analyze")
        cursor.execute(
            "select (select count(*) from conversations_conversation), (select count(*) from conversations_message)"
        )
        conversations, messages = cursor.fetchone()
    log(
        f"seed: {sum(known.values()):,} known senders, {conversations:,} conversations and {messages:,} messages "
        "of history"
    )


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # utime, stime, cutime, cstime (fields 14-17 of proc(5), here offset by the two we split off)
        total += sum(int(x) for x in fields[11:15]) / tick
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat), every process of every user."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            pids += process_tree(int(child))
    return pids


def backend_pids() -> list[int]:
    """The PostgreSQL backends serving this benchmark's database (the workers' persistent connections)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


def start_workers(count: int, concurrency: int, log_dir: Path | None = None) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes of ``concurrency`` children each; returns once every one says "ready."
    (logs in ``log_dir``, by default a fresh folder under var/bench/)."""
    from inbox.cli import worker_command

    if log_dir is None:
        log_dir = ROOT / "var" / "bench" / f"workers-{os.getpid()}-{time.monotonic_ns()}"
        log_dir.mkdir(parents=True, exist_ok=True)

    procs = []
    logs = []
    env = dict(os.environ)
    # One database connection per worker child for the whole run, so its backend's CPU can be read from /proc
    # (production closes it after every task: a few milliseconds per batch of hundreds of messages).
    env["DB_CONN_MAX_AGE"] = "600"
    for n in range(count):
        path = log_dir / f"worker{n}.log"
        logs.append(path)
        procs.append(
            subprocess.Popen(
                worker_command(concurrency=concurrency, name=f"bench{n}@%h", loglevel="INFO", quiet=True),
                cwd=ROOT,
                env=env,
                start_new_session=True,
                stdout=path.open("w"),
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 90
    while not all("ready." in p.read_text() for p in logs):
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
            raise SystemExit("the workers did not start: see " + ", ".join(str(p) for p in logs))
        time.sleep(0.2)
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
            proc.wait()


def record_all(accounts: dict[str, Any], workload: Workload, chunk: int, batch: int) -> int:
    """Record the stream as each channel's poller would: per channel, a transaction per chunk. Returns the number of
    tasks enqueued."""
    from inbox.conversations.services import inbound_events_record

    buffers: dict[str, list[tuple[str, dict[str, Any]]]] = {kind: [] for kind in accounts}
    tasks = 0

    def flush(kind: str) -> None:
        nonlocal tasks
        new = inbound_events_record(account=accounts[kind], events=buffers[kind])
        tasks += -(-len(new) // batch)
        buffers[kind] = []

    for event in workload.events:
        buffers[event.channel].append((event.external_id, event.payload))
        if len(buffers[event.channel]) >= chunk:
            flush(event.channel)
    for kind in accounts:
        if buffers[kind]:
            flush(kind)
    return tasks


def verify(workload: Workload, before: int) -> None:
    from django.db.models import Count

    from inbox.conversations.models import Conversation, InboundEvent, Message

    failed = list(InboundEvent.objects.filter(state=InboundEvent.State.FAILED).values_list("error", flat=True)[:3])
    messages = Message.objects.count() - before
    if failed or messages != workload.expected_messages:
        raise SystemExit(f"wrong result: {messages} messages, {workload.expected_messages} expected; failed: {failed}")
    twice = (
        Conversation.objects.filter(status__in=Conversation.UNRESOLVED)
        .values("account", "identity", "thread_key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    if twice:
        raise SystemExit(f"wrong result: {twice} threads with more than one open conversation")


def run_once(
    args: argparse.Namespace, texts: Texts, samples: Samples, seed: int, log_dir: Path, database: str
) -> dict[str, Any]:
    from inbox.conversations.models import InboundEvent, Message

    accounts = fresh_database(database)
    before = Message.objects.count()
    workload = Generator(random.Random(seed), texts, samples, args.events).build()
    log(f"  {len(workload.events)} events, {workload.expected_messages} distinct messages")
    procs = start_workers(args.workers, args.concurrency, log_dir)
    try:
        pids = [p for proc in procs for p in process_tree(proc.pid)]
        worker_cpu = cpu_seconds(pids)
        own_cpu = cpu_seconds([os.getpid()])
        busy = machine_busy()
        started = time.perf_counter()
        tasks = record_all(accounts, workload, args.record_chunk, args.batch)
        recorded = time.perf_counter() - started
        last = 0.0
        backends: dict[int, float] = {}
        progress = (-1, time.perf_counter())
        while True:
            pending = InboundEvent.objects.filter(state=InboundEvent.State.PENDING).count()
            elapsed = time.perf_counter() - started
            if pending != progress[0]:
                progress = (pending, time.perf_counter())
            elif time.perf_counter() - progress[1] > 120:
                raise SystemExit(f"no progress for 2 minutes with {pending} events pending: see the logs in {log_dir}")
            for pid in backend_pids():  # the workers' backends (persistent connections), read while alive
                backends[pid] = cpu_seconds([pid])
            if pending == 0:
                break
            if elapsed - last >= 5:
                log(f"  {Message.objects.count():>7} messages stored, {pending:>7} events pending, {elapsed:5.1f} s")
                last = elapsed
            if elapsed > 1800:
                raise SystemExit("gave up after 30 minutes")
            time.sleep(0.25)
        elapsed = time.perf_counter() - started
        for pid in backend_pids():
            backends[pid] = cpu_seconds([pid])
        pids = [p for proc in procs for p in process_tree(proc.pid)]
        worker_cpu = cpu_seconds(pids) - worker_cpu
        own_cpu = cpu_seconds([os.getpid()]) - own_cpu
        busy_end = machine_busy()
    finally:
        stop_workers(procs)  # always: a stray worker would consume the next run's queue with stale code
    verify(workload, before)
    messages = workload.expected_messages
    machine = (busy_end[0] - busy[0]) / max(1e-9, busy_end[1] - busy[1])
    return {
        "elapsed": elapsed,
        "rate": messages / elapsed,
        "record_rate": len(workload.events) / recorded,
        "messages": messages,
        "events": len(workload.events),
        "per_task": messages / max(1, tasks),
        "worker_cpu_us": worker_cpu / messages * 1e6,
        "pg_cpu_us": sum(backends.values()) / messages * 1e6,
        "recorder_cpu_us": own_cpu / messages * 1e6,
        "machine_busy": machine * 100,
        "load": float(Path("/proc/loadavg").read_text().split()[0]),
        "kinds": dict(workload.kinds),  # type: ignore[dict-item]
    }


# --- Where the time goes ------------------------------------------------------------------------------------------
_STATEMENT = re.compile(r"^\s*(SELECT|INSERT INTO|UPDATE|DELETE FROM|SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK)\s*\"?(\w*)")


def statement_kind(sql: str) -> str:
    match = _STATEMENT.match(sql)
    if match is None:
        return sql.split(None, 1)[0].upper() if sql.strip() else "?"
    verb, table = match.groups()
    if verb in ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK"):
        return "savepoint"
    if verb == "SELECT" and " FOR UPDATE" in sql:
        verb = "SELECT … FOR UPDATE"
    if verb == "SELECT" and "FROM unnest" in sql:
        table = re.search(r"JOIN (\w+)", sql).group(1) if "JOIN" in sql else table  # type: ignore[union-attr]
    if verb == "SELECT" and not table:
        found = re.search(r'FROM "?(\w+)', sql)
        table = found.group(1) if found else ""
    if verb == "INSERT INTO" and "ON CONFLICT" in sql and "DO UPDATE" in sql:
        verb = "INSERT … ON CONFLICT DO UPDATE"
    return f"{verb} {table.replace('conversations_', '').replace('routing_', '')}".strip()


@dataclass
class Profile:
    messages: int
    wall: float
    cpu: float
    statements: dict[str, tuple[int, float]]
    parts: dict[str, tuple[int, float]]  # label -> (calls, CPU seconds, inclusive)
    per_message: Counter[str]
    top: list[tuple[str, float, float]] = field(default_factory=list)


def _timed_parts() -> list[tuple[str, Any, str]]:
    """(label, owner, attribute) of the functions timed in the profile run; patched on their owners for the run."""
    from connectors.email import EmailConnector
    from connectors.telegram import TelegramConnector
    from connectors.webchat import WebchatConnector
    from connectors.x import XConnector
    from inbox.conversations import realtime
    from inbox.conversations.services import ingest_batch, intake

    return [
        ("claim and load the events (one statement, JSON payloads)", intake, "_claim_load"),
        ("normalise: web chat", WebchatConnector, "normalize"),
        ("normalise: Telegram", TelegramConnector, "normalize"),
        ("normalise: e-mail (MIME parsing)", EmailConnector, "normalize"),
        ("normalise: X", XConnector, "normalize"),
        ("split: special cases, e-mail reply lookups", intake, "batch_split"),
        ("set path (batch_ingest), all of it", intake, "batch_ingest"),
        ("  of which language detection", ingest_batch, "language_detect"),
        ("per-message path (message_ingest)", intake, "message_ingest"),
        ("events marked done", intake, "_events_save"),
        ("assignment (after the commit)", intake, "queues_assign"),
        ("live events to Redis (after the commit)", realtime, "publish_many"),
    ]


def profile_run(args: argparse.Namespace, texts: Texts, samples: Samples, database: str, cprofile: bool) -> Profile:
    """The same workload in this process, one batch at a time, with a CPU timer around the main steps and a wall
    timer around every SQL statement (PostgreSQL's work plus the round trip). With ``cprofile`` the run is done
    again under cProfile for the functions with the most time of their own (cProfile inflates Python code)."""
    from django.db import connection

    from inbox.conversations.models import InboundEvent, Message
    from inbox.conversations.services import inbound_events_process
    from inbox.routing import langid
    from inbox.routing.selectors import configured_languages

    def prepare() -> tuple[Workload, list[int], int]:
        accounts = fresh_database(database)
        before = Message.objects.count()
        workload = Generator(random.Random(99), texts, samples, args.events).build()
        workload.events = workload.events[: args.profile_events]
        workload.expected_messages = len({e.message_key for e in workload.events if e.message_key is not None})
        record_all(accounts, workload, args.record_chunk, args.batch)
        # The tasks went to Redis with nobody listening; this process takes the events in batches instead.
        pending = InboundEvent.objects.filter(state=InboundEvent.State.PENDING)
        ids = list(pending.order_by("account_id", "id").values_list("id", flat=True))
        langid.warm_up(configured_languages())  # as the workers do before they fork: not part of the profile
        return workload, ids, before

    statements: dict[str, list[float]] = {}

    def timer(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            entry = statements.setdefault(statement_kind(sql), [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - start

    parts: dict[str, list[float]] = {}
    patched = []
    for label, owner, name in _timed_parts():
        original = getattr(owner, name)
        entry = parts.setdefault(label, [0, 0.0])

        def wrapped(*a: Any, __original: Any = original, __entry: list[float] = entry, **kw: Any) -> Any:
            start = time.process_time()
            try:
                return __original(*a, **kw)
            finally:
                __entry[0] += 1
                __entry[1] += time.process_time() - start

        patched.append((owner, name, original))
        setattr(owner, name, wrapped)
    workload, ids, before = prepare()
    per_message: Counter[str] = Counter()
    try:
        started, cpu = time.perf_counter(), time.process_time()
        with connection.execute_wrapper(timer):
            for start in range(0, len(ids), args.batch):
                per_message += inbound_events_process(event_ids=ids[start : start + args.batch]).per_message
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)
    verify(workload, before)
    profile = Profile(
        messages=workload.expected_messages,
        wall=wall,
        cpu=cpu,
        statements={k: (int(v[0]), float(v[1])) for k, v in statements.items()},
        parts={k: (int(v[0]), float(v[1])) for k, v in parts.items()},
        per_message=per_message,
    )
    if cprofile:
        workload, ids, before = prepare()
        profiler = cProfile.Profile()
        profiler.enable()
        for start in range(0, len(ids), args.batch):
            inbound_events_process(event_ids=ids[start : start + args.batch])
        profiler.disable()
        raw = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        own = []
        for (filename, line, function), (_, _, tottime, cumulative, _) in raw.items():
            short = filename.replace(str(ROOT) + "/", "").replace(".venv/lib/python3.11/site-packages/", "")
            own.append((f"{short}:{line}({function})", tottime, cumulative))
        own.sort(key=lambda row: -row[1])
        profile.top = own[:15]
    return profile


# --- Report ---------------------------------------------------------------------------------------------------------
def _measured(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[str]:
    from _report import header, spread, table

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in results]

    kinds = results[0]["kinds"]

    mix = ", ".join(f"{name} {count:,}" for name, count in sorted(kinds.items(), key=lambda kv: -kv[1]))
    command = (
        f".venv/bin/python bench/ingest.py --events {args.events} --history {args.history} --workers {args.workers} "
        f"--concurrency {args.concurrency} --batch {args.batch} --repeat {args.repeat} "
        f"--profile-events {args.profile_events}" + (f" --mix {args.mix}" if args.mix != DEFAULT_MIX else "")
    )
    return [
        header(
            command,
            [
                f"Workload per run: {results[0]['events']:,} events carrying {results[0]['messages']:,} distinct "
                f"messages: {mix}.",
                f"Workers: {args.workers} process(es) x {args.concurrency} prefork children; "
                f"SWITCHBOARD_INGEST_BATCH={args.batch}; each channel recorded in transactions of "
                f"{args.record_chunk} events.",
                "Load average (1 min) at the end of each run: "
                + ", ".join(f"{r['load']:.2f}" for r in results)
                + "; whole-machine CPU busy during the runs (every process of every user): "
                + spread(col("machine_busy"), "{:.0f}")
                + " %.",
            ],
        ),
        "",
        table(
            ["measure", "median (min-max)"],
            [
                ["messages/s, whole pipeline", f"**{spread(col('rate'), '{:,.0f}')}**"],
                ["events recorded/s (the receive step alone)", spread(col("record_rate"), "{:,.0f}")],
                ["messages per task", spread(col("per_task"), "{:,.0f}")],
                ["worker CPU per message (Celery processes)", spread(col("worker_cpu_us"), "{:,.0f}") + " µs"],
                ["PostgreSQL CPU per message (the workers' backends)", spread(col("pg_cpu_us"), "{:,.0f}") + " µs"],
                ["recorder CPU per message (this process)", spread(col("recorder_cpu_us"), "{:,.0f}") + " µs"],
            ],
        ),
    ]


def report(args: argparse.Namespace, results: list[dict[str, Any]], profile: Profile | None) -> str:
    from _report import table

    lines: list[str] = []
    if results:
        lines += _measured(args, results)
    if profile is not None:
        per = 1e6 / profile.messages
        sql_total = sum(t for _, t in profile.statements.values())
        slow = sum(profile.per_message.values())
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in profile.per_message.most_common()) or "none"
        lines += [
            "",
            f"Where the time goes: {profile.messages:,} of the same messages ingested by one process, one batch of "
            f"{args.batch} events at a time (the --profile-events run): {profile.wall * per:,.0f} µs wall and "
            f"{profile.cpu * per:,.0f} µs of its CPU per message; {sql_total * per:,.0f} µs per message waiting on "
            f"SQL statements (PostgreSQL's work and the round trip). {slow:,} messages took the per-message path "
            f"({reasons}), the rest the set path.",
            "",
            table(
                ["step (CPU of the process, inclusive)", "calls", "µs per message", "µs per call"],
                [
                    [label, f"{calls:,}", f"{seconds * per:,.0f}", f"{seconds / calls * 1e6:,.0f}" if calls else "-"]
                    for label, (calls, seconds) in profile.parts.items()
                    if calls
                ],
            ),
            "",
            table(
                ["SQL statement (wall)", "calls", "µs per message"],
                [
                    [f"`{kind}`", f"{count:,}", f"{seconds * per:,.0f}"]
                    for kind, (count, seconds) in sorted(profile.statements.items(), key=lambda kv: -kv[1][1])[:14]
                ],
            ),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each with --concurrency children)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000, help="events per task (SWITCHBOARD_INGEST_BATCH)")
    parser.add_argument("--record-chunk", type=int, default=1000, help="events per recording transaction")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mix", default=DEFAULT_MIX, help="channel shares of the events")
    parser.add_argument("--history", type=int, default=100_000, help="messages already in the inbox before a run")
    parser.add_argument("--reuse-seed", action="store_true", help="start from the seed database of a previous run")
    parser.add_argument("--profile-events", type=int, default=20_000, help="0: no profile run")
    parser.add_argument("--cprofile", action="store_true", help="also list the top functions under cProfile")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    parser.add_argument("--database-url", default=f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args()
    MIX.update(parse_mix(args.mix))
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["REDIS_URL"] = args.redis_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "inbox.settings"
    os.environ["SWITCHBOARD_INGEST_BATCH"] = str(args.batch)
    os.environ.setdefault("SWITCHBOARD_ROUTING_CACHE_SECONDS", "5")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop our workers
    texts = load_texts()
    samples = load_samples()
    import django

    django.setup()
    if args.reuse_seed:
        database = _database(os.environ["DATABASE_URL"]) + "_seed"
        log(f"seed database: {database} as it is (--reuse-seed)")
    else:
        log(f"seed database: {args.history:,} messages of history")
        database = prepare_seed(texts, args.events, args.history)
    log_dir = ROOT / "var" / "bench" / f"ingest-{os.getpid()}"  # the folder is shared with other benchmarks
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in range(args.repeat):
        log(f"run {n + 1}/{args.repeat}: {args.events} events, {args.workers} worker(s) x {args.concurrency}")
        result = run_once(args, texts, samples, seed=n, log_dir=log_dir, database=database)
        log(
            f"  {result['rate']:,.0f} messages/s, {result['per_task']:.0f} per task, worker CPU "
            f"{result['worker_cpu_us']:.0f} µs + PostgreSQL {result['pg_cpu_us']:.0f} µs per message, "
            f"load {result['load']:.2f}"
        )
        results.append(result)
    profile = None
    if args.profile_events:
        log(f"profile: {args.profile_events} events in this process")
        profile = profile_run(args, texts, samples, database, args.cprofile)
    text = report(args, results, profile)
    print(text)
    if profile is not None and profile.top:
        print("\nTop functions by own time (cProfile run):")
        for name, tottime, cumulative in profile.top:
            print(f"  {tottime:8.2f} s own {cumulative:8.2f} s cumulative  {name}")
    rates = [r["rate"] for r in results]
    if rates:
        print(f"\nmessages/s median {statistics.median(rates):,.0f} (min {min(rates):,.0f}, max {max(rates):,.0f})")
    if args.write_docs:
        from _report import write_section

        write_section("ingest", text, title="Sustained ingest")


if __name__ == "__main__":
    main()
