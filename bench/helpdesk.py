"""Side by side with django-helpdesk: the same mailbox imported by its IMAP import and by Switchboard's sync.

    .venv/bin/python bench/helpdesk.py [--mails 1000] [--repeat 3] [--write-docs] [--reinstall]

What it does (every step is logged on stderr):

1. The peer. django-helpdesk is installed into its own virtualenv, var/bench/helpdesk-venv (outside the project's
   .venv; var/ is git-ignored), with `pip install django-helpdesk psycopg[binary]`: pip picks the newest release
   that installs on this Python with a Django it supports. What pip installed is pinned in
   var/bench/helpdesk-venv/bench-pins.txt and printed. A throwaway Django project is generated in
   var/bench/helpdesk-project (settings written by this script: PostgreSQL database `switchboard_bench_helpdesk`,
   e-mail backend "dummy" so its notification mails are rendered but not sent), migrated, and a helpdesk Queue is
   created for IMAP polling of our Dovecot. Nothing of django-helpdesk is in the repository; --reinstall builds
   the venv and the project again.
2. The mails. One mail set per run (seeded), APPENDed in the same order to two mailboxes of one private Dovecot
   (tests/fakes/dovecot.py): helpdesk@example.test for django-helpdesk (its import deletes what it imported)
   and support@example.test for Switchboard. The set mixes
   - every real sample of ../shared/data/email (*.eml, read at run time, never copied into the project), byte for
     byte except a fresh unique Message-ID (so each system's copy can be found again);
   - generated mails carrying real sentences of ../shared/data/langid in the charsets they are sent in in the
     wild (KOI8-R, windows-1251, KOI8-U, GB2312, Shift_JIS, ISO-2022-JP, EUC-JP, EUC-KR, ISO-8859-1/-9/-15,
     windows-1252/1254/1256, ISO-8859-6, UTF-8) as 8bit, quoted-printable or base64, with RFC 2047 subjects
     (B and Q) in the same charset; plain, HTML-only, multipart/alternative, and with attachments taken from
     the real samples (a PDF and a JPEG, some with non-ASCII file names in RFC 2231 or RFC 2047 form);
   - threads of 2-5 mails from one customer, each reply with In-Reply-To (the previous mail) and References
     (the whole chain); in some threads the first reply is delivered before the mail it answers, as happens
     when two mail servers deliver out of order;
   - duplicate deliveries: some mails are delivered a second time (same bytes plus one more Received: line, as
     an MTA retry or a second alias produces), right after the first or later.
3. The imports, one after the other (their order alternates between runs). django-helpdesk: its own
   `get_email` command (process_email -> process_queue -> imap_sync) in its venv, pass after pass as its cron job
   would run it, until a pass takes nothing more out of the mailbox. A mail on which its import raises an
   exception it does not catch ends the pass, and every later pass at the same mail: the queue is stuck until
   an admin deletes that mail. The script plays that admin (outside the clock): it deletes the mail (watched by
   a wrapper around extract_email_metadata that only records which mail is imported and what it raised),
   counts it lost, and runs the next pass. Switchboard: the mailbox sync that `listen_mail` runs (as
   bench/email.py's backfill: BODY.PEEK in batches of 200, events + cursor committed together) with one real
   Celery worker (2 children), database `switchboard_bench`, Redis db 12. The clock runs from the start of the
   import until every mail is stored (helpdesk: its last pass returned; Switchboard: no event pending); start-up
   (Django, the workers' language models) is outside it. CPU per mail counts each system's own processes, not
   PostgreSQL's.
4. The check: each system's database is read afterwards and every stored record is matched to the mail it came
   from by Message-ID (see count_errors() for the exact definitions of lost, duplicated, mis-threaded, mangled).

Needs PostgreSQL, Redis and Dovecot (installed from Debian when missing, as the tests do), ../shared/data/email and
../shared/data/langid.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds email.py, which would shadow the standard library's `email` package for every script run
# from here (the script's folder comes first on sys.path): move it to the end.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)] + [_BENCH]

import argparse
import base64
import hashlib
import html
import importlib.util
import inspect
import json
import os
import quopri
import random
import re
import shlex
import shutil
import signal
import subprocess
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.utils import format_datetime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VAR = ROOT / "var" / "bench"
os.environ.setdefault("MEDIA_ROOT", str(VAR / "switchboard-media"))  # Switchboard's attachments of these runs
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/switchboard_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
os.environ.setdefault("SWITCHBOARD_ROUTING_CACHE_SECONDS", "5")

import _report  # bench/_report.py
import ingest  # bench/ingest.py: database, seeding and worker helpers

_spec = importlib.util.spec_from_file_location("bench_email", Path(_BENCH) / "email.py")
assert _spec and _spec.loader
bench_email = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_email)  # bench/email.py: the Switchboard mailbox account and SUPPORT address

EMAIL_DATA = ROOT.parent / "shared" / "data" / "email"
HD_VENV = VAR / "helpdesk-venv"
HD_PROJECT = VAR / "helpdesk-project"
HD_PINS = HD_VENV / "bench-pins.txt"
HD_DB = "switchboard_bench_helpdesk"
HD_USER = "helpdesk@example.test"  # django-helpdesk's copy of the mailbox
SUPPORT = bench_email.SUPPORT  # Switchboard's copy (support@example.test), and the address the mails are sent to
PASSWORD = bench_email.PASSWORD
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def log(message: str) -> None:
    print(f"[helpdesk] {message}", file=sys.stderr, flush=True)


# --- The peer: django-helpdesk in its own venv and throwaway project --------------------------------------------
HD_SETTINGS = '''"""Generated by bench/helpdesk.py: a throwaway django-helpdesk site for a benchmark."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "benchmark-only-not-a-secret"
DEBUG = False  # DEBUG would keep every SQL query in memory
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.humanize",
    "rest_framework",
    "helpdesk",
]
SITE_ID = 1
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "hdbench.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "%(db)s",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": 5432,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
MEDIA_ROOT = BASE_DIR / "media"
MEDIA_URL = "/media/"
# Its notification mails (new ticket / updated ticket to the submitter) are rendered as usual; none leaves the machine.
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
DEFAULT_FROM_EMAIL = "support@example.test"
LOGIN_URL = "/helpdesk/login/"
# Teams (knowledge-base ownership) would need the optional pinax-teams app; nothing here uses them.
HELPDESK_TEAMS_MODE_ENABLED = False
'''

HD_URLS = """from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls), path("helpdesk/", include("helpdesk.urls", namespace="helpdesk"))]
"""

HD_MANAGE = """#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hdbench.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

# Run with the helpdesk venv's python: `bench_helper.py reset|import|versions CONFIG_JSON`; prints one JSON line.
HD_HELPER = r'''"""Generated by bench/helpdesk.py; runs inside the django-helpdesk venv. Prints one JSON line."""

import imaplib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hdbench.settings")
import django

django.setup()
from django.conf import settings
from django.db import connection


def undeleted(cfg):
    """Mails in the queue's mailbox not flagged \\Deleted: what django-helpdesk has not taken (yet)."""
    imap = imaplib.IMAP4(cfg["host"], cfg["port"])
    try:
        imap.login(cfg["user"], cfg["password"])
        imap.select("INBOX", readonly=True)
        data = imap.search(None, "NOT", "DELETED")[1]
        return len(data[0].split()) if data and data[0] else 0
    finally:
        imap.logout()


def reset(cfg):
    from django.contrib.auth.models import Permission
    from helpdesk.models import Queue

    with connection.cursor() as cursor:  # tickets, follow-ups, attachments, CCs... (CASCADE); users, templates stay
        cursor.execute("TRUNCATE helpdesk_queue, helpdesk_ticket, helpdesk_followup RESTART IDENTITY CASCADE")
    Permission.objects.filter(codename__startswith="queue_access_").delete()  # a new queue creates its own
    shutil.rmtree(Path(settings.MEDIA_ROOT) / "helpdesk", ignore_errors=True)
    queue = Queue.objects.create(
        title="Support",
        slug="support",
        email_address=cfg["address"],
        allow_email_submission=True,
        email_box_type="imap",
        email_box_host=cfg["host"],
        email_box_port=cfg["port"],
        email_box_ssl=False,
        email_box_user=cfg["user"],
        email_box_pass=cfg["password"],
        email_box_imap_folder="INBOX",
        email_box_interval=0,
    )
    return {"queue": queue.pk}


def remove(cfg, message_id):
    """What an admin does to unblock the queue: delete the mail from the mailbox."""
    imap = imaplib.IMAP4(cfg["host"], cfg["port"])
    try:
        imap.login(cfg["user"], cfg["password"])
        imap.select("INBOX")
        data = imap.search(None, "HEADER", "Message-ID", '"' + message_id + '"')[1]
        for num in data[0].split() if data and data[0] else []:
            imap.store(num, "+FLAGS", "\\Deleted")
        imap.expunge()
    finally:
        imap.logout()


def run_import(cfg):
    """get_email passes until one makes no progress. A pass that stops at a mail (an exception that
    process_queue does not catch ends the pass: the mails behind it wait for the next one, which stops at the
    same mail) is followed by what an admin would do: that mail is deleted from the mailbox, outside the clock."""
    import re

    import helpdesk.email as hd_email
    from django.core.management import call_command
    from helpdesk.exceptions import DeleteIgnoredTicketException, IgnoreTicketException

    caught = (TypeError, IgnoreTicketException, DeleteIgnoredTicketException)  # imap_sync goes on after these
    original = hd_email.extract_email_metadata
    last = {"mid": "", "exc": None}
    errors = {}

    def observed(message, queue, logger):  # only watches: which mail is being imported, and what it raised
        head = re.split(r"\r?\n\r?\n", message, maxsplit=1)[0]
        found = re.search(r"(?im)^message-id[ \t]*:[ \t]*(\S+)", head)
        last["mid"], last["exc"] = (found.group(1) if found else ""), None
        try:
            return original(message=message, queue=queue, logger=logger)
        except BaseException as exc:
            last["exc"] = exc
            errors[last["mid"]] = f"{type(exc).__name__}: {exc}"[:300]
            raise

    hd_email.extract_email_metadata = observed
    passes, removed = [], []
    left = None
    while len(passes) < cfg["max_passes"]:
        last["mid"], last["exc"] = "", None
        started, cpu = time.perf_counter(), time.process_time()
        call_command("get_email", quiet=True)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        now_left = undeleted(cfg)
        passes.append({"seconds": seconds, "cpu": cpu, "left": now_left})
        if last["exc"] is not None and not isinstance(last["exc"], caught):
            removed.append([last["mid"], errors[last["mid"]]])
            remove(cfg, last["mid"])
            left = undeleted(cfg)
            continue
        if now_left == 0 or (left is not None and now_left >= left):
            break
        left = now_left
    return {"passes": passes, "removed": removed, "errors": errors}


def versions(cfg):
    import helpdesk
    from importlib.metadata import version

    return {"django": django.get_version(), "helpdesk": version("django-helpdesk")}


if __name__ == "__main__":
    command, cfg = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    result = {"reset": reset, "import": run_import, "versions": versions}[command](cfg)
    print(json.dumps(result))
'''


def hd_python() -> str:
    return str(HD_VENV / "bin" / "python")


def hd_env() -> dict[str, str]:
    """The environment for django-helpdesk's processes: ours, less what points at Switchboard."""
    drop = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop}


def hd_helper(command: str, cfg: dict[str, object] | None = None) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [hd_python(), str(HD_PROJECT / "bench_helper.py"), command, json.dumps(cfg or {})],
        cwd=HD_PROJECT,
        capture_output=True,
        text=True,
        env=hd_env(),
    )
    if result.returncode != 0:
        raise SystemExit(f"django-helpdesk helper '{command}' failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ensure_pg_database(name: str) -> bool:
    """Create the database when missing; True when it was created."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            return False
        conn.execute(f'create database "{name}"')
        return True


def setup_helpdesk(reinstall: bool) -> dict[str, str]:
    """The venv, the pinned install, the throwaway project and its database; returns the versions in use."""
    if reinstall and HD_VENV.exists():
        log(f"--reinstall: removing {HD_VENV.relative_to(ROOT)} and {HD_PROJECT.relative_to(ROOT)}")
        shutil.rmtree(HD_VENV)
        shutil.rmtree(HD_PROJECT, ignore_errors=True)
    if not HD_PINS.exists():
        base = Path(getattr(sys, "_base_executable", sys.executable))
        log(f"creating a separate virtualenv {HD_VENV.relative_to(ROOT)} (outside .venv) with {base}")
        shutil.rmtree(HD_VENV, ignore_errors=True)
        subprocess.run([str(base), "-m", "venv", str(HD_VENV)], check=True)
        log("pip install django-helpdesk 'psycopg[binary]' into it (pip picks the newest release that installs here)")
        install = subprocess.run(
            [
                str(HD_VENV / "bin" / "pip"),
                "install",
                "--disable-pip-version-check",
                "django-helpdesk",
                "psycopg[binary]",
            ],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            raise SystemExit(f"pip install failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
        pins = subprocess.run(
            [str(HD_VENV / "bin" / "pip"), "freeze", "--disable-pip-version-check"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        HD_PINS.write_text(pins)
        log(f"pinned what pip installed in {HD_PINS.relative_to(ROOT)}")
    else:
        log(
            f"reusing the virtualenv {HD_VENV.relative_to(ROOT)} (pins in {HD_PINS.relative_to(ROOT)}; --reinstall "
            "to build it again)"
        )
    log("installed: " + ", ".join(line for line in HD_PINS.read_text().split() if line))
    (HD_PROJECT / "hdbench").mkdir(parents=True, exist_ok=True)
    (HD_PROJECT / "hdbench" / "__init__.py").write_text("")
    (HD_PROJECT / "hdbench" / "settings.py").write_text(HD_SETTINGS % {"db": HD_DB})
    (HD_PROJECT / "hdbench" / "urls.py").write_text(HD_URLS)
    (HD_PROJECT / "manage.py").write_text(HD_MANAGE)
    (HD_PROJECT / "bench_helper.py").write_text(HD_HELPER)
    log(
        f"wrote the throwaway Django project {HD_PROJECT.relative_to(ROOT)} (hdbench/settings.py: PostgreSQL "
        f"database {HD_DB}, dummy e-mail backend, MEDIA_ROOT in the project)"
    )
    if ensure_pg_database(HD_DB):
        log(f"created the PostgreSQL database {HD_DB}")
    started = time.perf_counter()
    subprocess.run(
        [hd_python(), "manage.py", "migrate", "--no-input", "-v", "0"], cwd=HD_PROJECT, env=hd_env(), check=True
    )
    log(f"migrated it ({time.perf_counter() - started:.1f} s)")
    versions = hd_helper("versions")
    log(f"django-helpdesk {versions['helpdesk']} on Django {versions['django']}")
    return versions


# --- The mail set -----------------------------------------------------------------------------------------------
# The charsets each language is mailed in (the labels as mail clients write them; Python's codec of each label).
CHARSETS: dict[str, list[str]] = {
    "ru": ["koi8-r", "windows-1251", "utf-8"],
    "uk": ["windows-1251", "koi8-u", "utf-8"],
    "zh": ["gb2312", "utf-8"],
    "ja": ["shift_jis", "iso-2022-jp", "euc-jp", "utf-8"],
    "ko": ["euc-kr", "ks_c_5601-1987", "utf-8"],
    "de": ["iso-8859-1", "windows-1252", "iso-8859-15", "utf-8"],
    "fr": ["iso-8859-1", "windows-1252", "iso-8859-15", "utf-8"],
    "es": ["iso-8859-1", "windows-1252", "utf-8"],
    "pt": ["iso-8859-1", "windows-1252", "utf-8"],
    "it": ["iso-8859-1", "windows-1252", "utf-8"],
    "tr": ["iso-8859-9", "windows-1254", "utf-8"],
    "ar": ["windows-1256", "iso-8859-6", "utf-8"],
    "vi": ["utf-8"],
    "en": ["us-ascii", "utf-8"],
}
KINDS = [("plain", 45), ("html-only", 20), ("alternative", 15), ("attachment", 20)]
THREAD_SIZES = [(1, 50), (2, 20), (3, 15), (4, 10), (5, 5)]
DUPLICATE_SHARE = 0.03  # of the N deliveries, second deliveries of a mail
OUT_OF_ORDER_SHARE = 0.15  # of threads with replies: the first reply is delivered before the mail it answers
SAMPLE_SHARE = 0.2  # at most this share of the N deliveries are real samples (all of them at N=1000)
CUSTOMER_DOMAIN = "customer.test"
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
NON_ASCII_NAMES = ["счёт-фактура {n}.pdf", "請求書 {n}.pdf", "Überweisung {n}.jpg", "صورة {n}.jpg", "ảnh chụp {n}.jpg"]


COMPOSITION = [
    "real samples (byte-exact but for the Message-ID)",
    "generated mails",
    "… plain text",
    "… HTML only",
    "… multipart/alternative (text + HTML)",
    "… with attachments",
    "… in a non-UTF-8 charset",
    "… … of which sent as 8bit",
    "… replies (In-Reply-To + References)",
    "threads with replies",
    "… delivered out of order (first reply before the mail it answers)",
    "duplicate deliveries (a mail delivered a second time)",
    "mails APPENDed in all",
]


@dataclass
class Mail:
    """One distinct mail (a Message-ID) and what a correct import must keep of it."""

    key: str  # Message-ID without <>
    raw: bytes
    category: str  # "generated plain koi8-r 8bit", "sample ruby-mail/multi_charset/japanese_shift_jis.eml", ...
    when: datetime
    thread: int  # generated threads: their number; real samples: a thread of their own (negative)
    position: int = 0  # 0 = the thread's first mail
    probe: str | None = None  # text the stored body must contain (None: no defined truth)
    subject: str | None = None  # the decoded subject (None: no defined truth)
    attachments: list[tuple[str, str]] = field(default_factory=list)  # (file name, sha256 of the bytes)
    out_of_order: bool = False  # its thread was delivered out of order
    generated: bool = True
    has_fffd: bool = False  # the original text itself holds U+FFFD (some real samples do)


@dataclass
class MailSet:
    mails: dict[str, Mail]
    deliveries: list[bytes]  # in APPEND order, duplicates included
    duplicate_keys: list[str]
    composition: Counter  # type: ignore[type-arg]


def _codec(charset: str) -> str:
    return "ascii" if charset == "us-ascii" else charset


def encoded_words(text: str, charset: str, mode: str) -> str:
    """RFC 2047 encoded words (B or Q) of at most 75 characters each, folded onto continuation lines."""

    def word(chunk: str) -> str:
        data = chunk.encode(_codec(charset))
        if mode == "B":
            payload = base64.b64encode(data).decode("ascii")
        else:
            payload = "".join(
                "_"
                if b == 0x20
                else chr(b)
                if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A)
                else f"={b:02X}"
                for b in data
            )
        return f"=?{charset}?{mode}?{payload}?="

    words, chunk = [], ""
    for ch in text:
        if chunk and len(word(chunk + ch)) > 75:
            words.append(word(chunk))
            chunk = ch
        else:
            chunk += ch
    if chunk:
        words.append(word(chunk))
    return "\r\n ".join(words)


def header_text(text: str, charset: str, mode: str) -> str:
    if charset == "us-ascii" or text.isascii():
        return text
    return encoded_words(text, charset, mode)


def encode_body(text: str, charset: str, cte: str) -> bytes:
    data = text.replace("\r\n", "\n").encode(_codec(charset))
    if cte in ("7bit", "8bit"):
        return data.replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return quopri.encodestring(data).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return base64.encodebytes(data.replace(b"\n", b"\r\n")).replace(b"\n", b"\r\n")


def leaf(content_type: str, charset: str, cte: str, text: str) -> bytes:
    return (
        f'Content-Type: {content_type}; charset="{charset}"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'.encode()
        + encode_body(text, charset, cte)
    )


def multipart(subtype: str, parts: list[bytes], rng: random.Random) -> bytes:
    boundary = f"----=_Part_{rng.randrange(16**12):012x}"
    out = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode() + part + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def attachment_part(filename: str, content_type: str, content: bytes, style: str) -> bytes:
    if filename.isascii():
        params = f'; name="{filename}"', f'; filename="{filename}"'
    elif style == "rfc2231":
        quoted = "".join(
            chr(b) if b < 0x80 and (chr(b).isalnum() or chr(b) in "-._") else f"%{b:02X}" for b in filename.encode()
        )
        params = f"; name*=utf-8''{quoted}", f"; filename*=utf-8''{quoted}"
    else:  # RFC 2047 words inside the quoted parameter: not standard, but what many mail clients send
        words = encoded_words(filename, "utf-8", "B").replace("\r\n ", " ")
        params = f'; name="{words}"', f'; filename="{words}"'
    head = (
        f"Content-Type: {content_type}{params[0]}\r\nContent-Disposition: attachment{params[1]}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode() + base64.encodebytes(content).replace(b"\n", b"\r\n")


def message_bytes(headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode("ascii") + b"MIME-Version: 1.0\r\n" + body


def sentence_for(rng: random.Random, texts: list[str], charset: str) -> str:
    for _ in range(50):
        text = rng.choice(texts)
        try:
            text.encode(_codec(charset))
        except UnicodeEncodeError:
            continue
        return text
    raise LookupError(f"no sentence encodable in {charset}")


def short_subject(sentence: str) -> str:
    words = sentence.split()
    if len(words) > 3:  # a phrase of words
        out = ""
        for w in words:
            if len(out) + len(w) > 55:
                break
            out = f"{out} {w}".strip()
        return out or sentence[:40]
    return sentence[:24].strip()  # scripts without spaces (zh, ja): the first characters


def load_sentences() -> dict[str, list[str]]:
    loaded = ingest.load_texts()  # ../shared/data/langid; exits with the reason when absent
    # bench/ingest.py returns {language: sentences}, or (newer) an object whose .sentences is that
    texts: dict[str, list[str]] = getattr(loaded, "sentences", loaded)

    # One line each, short enough for a text/plain line (RFC 5322: 998 octets, CJK in UTF-8 takes 3 per character)
    # and free of control characters (a few lines hold C1 controls, e.g. U+0092 left over from a cp1252 apostrophe,
    # which decoders of ISO-8859-1 legitimately read as windows-1252).
    def clean(t: str) -> bool:
        return 20 <= len(t) <= 160 and not any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") for ch in t)

    return {lang: [t for t in lines if clean(t)] or lines for lang, lines in texts.items()}


def sample_files() -> list[Path]:
    if not EMAIL_DATA.is_dir():
        raise SystemExit(f"{EMAIL_DATA} is absent: this benchmark builds its mail set from ../shared/data/email")
    return sorted(p for p in EMAIL_DATA.rglob("*.eml") if p.is_file() and p.stat().st_size > 0)


def sample_attachments() -> list[tuple[str, bytes]]:
    """Attachment bytes taken from real samples: the PDF and the JPEG of ruby-mail's attachment_emails."""
    found: list[tuple[str, bytes]] = []
    for name, ctype in (
        ("attachment_pdf.eml", "application/pdf"),
        ("attachment_with_quoted_filename.eml", "image/jpeg"),
    ):
        path = EMAIL_DATA / "ruby-mail" / "attachment_emails" / name
        if not path.exists():
            continue
        for part in message_from_bytes(path.read_bytes()).walk():
            if part.get_content_type() == ctype:
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes) and payload:
                    found.append((ctype, payload))
                    break
    if not found:
        raise SystemExit(f"no PDF or JPEG attachment found in {EMAIL_DATA}/ruby-mail/attachment_emails")
    return found


def split_header(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block, separator, body) of a raw message; the line end style is the file's own."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(sep)
        if at >= 0:
            return raw[:at], sep, raw[at + len(sep) :]
    return raw, b"", b""


def with_message_id(raw: bytes, key: str) -> bytes:
    """The sample with a new Message-ID in place of its own (or added first when it had none); all else unchanged."""
    head, sep, body = split_header(raw)
    eol = b"\r\n" if b"\r\n" in head or sep == b"\r\n\r\n" else b"\n"
    lines = head.split(eol)
    out: list[bytes] = []
    new = f"Message-ID: <{key}>".encode()
    skipping = placed = False
    for line in lines:
        if skipping and line[:1] in (b" ", b"\t"):
            continue
        skipping = False
        if re.match(rb"(?i)message-id[ \t]*:", line):  # also the obsolete form with spaces before the colon
            skipping = True
            if not placed:
                out.append(new)
                placed = True
            continue
        out.append(line)
    if not placed:
        out.insert(0, new)
    return eol.join(out) + (sep or eol + eol) + body


# Shift_JIS / EUC-JP bytes that JIS X 0208 and Microsoft's cp932 map to different code points (the "wave dash
# problem"): either reading is a correct decoding of the same bytes, so they compare equal.
JIS_VARIANTS = str.maketrans(
    {
        "\uff5e": "\u301c",
        "\u2225": "\u2016",
        "\uff0d": "\u2212",
        "\uffe0": "\u00a2",
        "\uffe1": "\u00a3",
        "\uffe2": "\u00ac",
    }
)


def has_c1(text: str) -> bool:
    return any("\x80" <= ch <= "\x9f" for ch in text)


def normal_text(text: str) -> str:
    """For comparing texts: HTML entities resolved, NFC, JIS mapping variants unified, and no whitespace at all
    (re-wrapping is not mangling)."""
    text = unicodedata.normalize("NFC", html.unescape(text)).translate(JIS_VARIANTS)
    return "".join(ch for ch in text if not ch.isspace() and ch not in "\u200b\u200c\u200d\ufeff")


def sample_truth(raw: bytes) -> tuple[str | None, str | None, str | None]:
    """(probe, full text, subject) of a real sample, decoded independently of both systems with the charsets it
    declares, strictly: where that fails (undeclared 8-bit bytes, a wrong label) the truth is undefined (None)."""
    msg = message_from_bytes(raw)
    subject: str | None = None
    head = split_header(raw)[0]
    found = re.search(rb"(?im)^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", head)
    if found:
        value = found.group(1)
        try:
            if value.isascii():
                # make_header keeps the space RFC 2047 keeps between plain text and an encoded word
                subject = str(make_header(decode_header(value.decode("ascii"))))
            elif b"=?" not in value and (msg.get_content_charset() or "utf-8") in ("utf-8", "us-ascii"):
                # Raw 8-bit: defined only as UTF-8 (RFC 6532) in a mail that declares no other charset.
                subject = value.decode("utf-8")
        except (LookupError, UnicodeDecodeError):
            subject = None
    if subject is not None:
        subject = " ".join(subject.split()) or None  # unfolded; an empty subject is judged by no one
    if subject is not None and (
        has_c1(subject) or any(type(d).__name__ == "MissingHeaderBodySeparatorDefect" for d in msg.defects)
    ):
        subject = None  # ISO-8859-1 or windows-1252? / a broken header block: what it says depends on the parser
    defects = [d for part in msg.walk() for d in part.defects]
    if defects:  # a broken structure: what "the text" is depends on the parser; not judged
        return None, None, subject

    def leaves(part: Message) -> list[Message]:  # the mail's own parts, not those of a forwarded message/*
        if part.get_content_maintype() == "message":
            return []
        if part.is_multipart():
            return [leaf for sub in part.get_payload() for leaf in leaves(sub)]  # type: ignore[union-attr]
        return [part]

    chosen = None
    for kind in ("text/plain", "text/html"):
        chosen = next(
            (
                p
                for p in leaves(msg)
                if p.get_content_type() == kind and "attachment" not in str(p.get("Content-Disposition", "")).lower()
            ),
            None,
        )
        if chosen is not None:
            break
    if chosen is None:
        return None, None, subject
    payload = chosen.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None, None, subject
    try:
        text = payload.decode(chosen.get_content_charset() or "ascii")
    except (LookupError, UnicodeDecodeError):
        return None, None, subject
    if has_c1(text):  # C1 controls: a label of ISO-8859-1 read as windows-1252 (WHATWG) or not: not judged
        return None, None, subject
    if chosen.get_content_type() == "text/html":
        text = html.unescape(re.sub(r"(?is)<(script|style|head)\b.*?</\1>|<[^>]+>", "\n", text))
    for line in text.splitlines():
        line = " ".join(line.split())
        if len(line) >= 4 and not line.startswith(">") and any(ch.isalpha() for ch in line):
            return line[:60], text, subject
    return None, text, subject


def build_mail_set(n_mails: int, seed: int, sentences: dict[str, list[str]]) -> MailSet:
    rng = random.Random(seed)
    mails: dict[str, Mail] = {}
    composition: Counter = Counter()  # type: ignore[type-arg]
    run_tag = f"r{seed}"
    n_dup = max(1, round(n_mails * DUPLICATE_SHARE)) if n_mails >= 20 else 0
    samples = sample_files()
    n_samples = min(len(samples), int(n_mails * SAMPLE_SHARE))
    chosen_samples = samples if n_samples == len(samples) else sorted(rng.sample(samples, n_samples))
    n_generated = n_mails - n_dup - len(chosen_samples)
    if n_generated < 1:
        raise SystemExit(f"--mails {n_mails} is too small for this mail set")
    files = sample_attachments()

    # Real samples: one each, at a random time, a thread of their own.
    for index, path in enumerate(chosen_samples):
        key = f"sample.{run_tag}.{index}.{rng.randrange(16**8):08x}@bench.example.test"
        raw = with_message_id(path.read_bytes(), key)
        probe, full, subject = sample_truth(raw)
        rel = path.relative_to(EMAIL_DATA)
        mails[key] = Mail(
            key=key,
            raw=raw,
            category=f"sample {rel}",
            when=T0 + timedelta(seconds=rng.uniform(0, 14 * 86400)),
            thread=-(index + 1),
            probe=probe,
            subject=subject,
            generated=False,
            has_fffd="\ufffd" in (full or ""),
        )
        composition[COMPOSITION[0]] += 1

    # Generated threads.
    langs = list(CHARSETS)
    customers = max(1, n_generated // 4)
    thread_no = 0
    made = 0
    while made < n_generated:
        size = min(rng.choices([s for s, _ in THREAD_SIZES], [w for _, w in THREAD_SIZES])[0], n_generated - made)
        thread_no += 1
        lang = rng.choice(langs)
        customer = rng.randrange(customers)
        sender = f"customer{customer}@{CUSTOMER_DOMAIN}"
        display = f"Customer {customer}"
        start = T0 + timedelta(seconds=rng.uniform(0, 14 * 86400))
        root_charset = rng.choice(CHARSETS[lang])
        root_subject = (
            short_subject(sentence_for(rng, sentences[lang], root_charset)) + f" #{rng.randrange(10000, 99999)}"
        )
        chain: list[str] = []
        previous_text = ""
        when = start
        ooo = size > 1 and rng.random() < OUT_OF_ORDER_SHARE
        for position in range(size):
            charset = root_charset if position == 0 else rng.choice(CHARSETS[lang])
            subject = root_subject if position == 0 else f"Re: {root_subject}"
            try:
                subject.encode(_codec(charset))
            except UnicodeEncodeError:
                charset = "utf-8"
            kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
            first = sentence_for(rng, sentences[lang], charset)
            second = sentence_for(rng, sentences[lang], charset)
            plain = f"{first}\n\n{second}\n\n-- \n{display}\n"
            html_body = (
                f'<html><head><meta http-equiv="Content-Type" content="text/html; charset={charset}"></head><body>'
                f"<div>{html.escape(first, quote=False)}</div><div><br></div><div>{html.escape(second, quote=False)}"
                f"</div><div><br></div><div>-- <br>{display}</div>"
            )
            if previous_text:
                quoted_intro = f"On {format_datetime(when)}, {display} <{sender}> wrote:"
                plain += f"\n{quoted_intro}\n" + "".join(f"> {line}\n" for line in previous_text.splitlines())
                html_body += (
                    f'<div><br></div><div>{html.escape(quoted_intro)}</div><blockquote style="margin:0 0 0 .8ex;'
                    'border-left:1px #ccc solid;padding-left:1ex">'
                    + "<br>".join(html.escape(line, quote=False) for line in previous_text.splitlines())
                    + "</blockquote>"
                )
            html_body += "</body></html>"
            try:
                plain.encode(_codec(charset))
            except UnicodeEncodeError:  # the quoted earlier mail does not fit this charset: the client picks UTF-8
                charset = "utf-8"
            if charset == "us-ascii" and not plain.isascii():
                charset = "utf-8"
            if charset == "iso-2022-jp" or charset == "us-ascii":
                cte = "7bit"
            else:
                cte = rng.choices(["8bit", "quoted-printable", "base64"], [40, 30, 30])[0]
            attachments: list[tuple[str, str]] = []
            if kind == "plain":
                body = leaf("text/plain", charset, cte, plain)
            elif kind == "html-only":
                body = leaf("text/html", charset, cte, html_body)
            elif kind == "alternative":
                body = multipart(
                    "alternative",
                    [leaf("text/plain", charset, cte, plain), leaf("text/html", charset, cte, html_body)],
                    rng,
                )
            else:
                parts = [leaf("text/plain", charset, cte, plain)]
                for _ in range(rng.choice((1, 1, 2))):
                    ctype, content = rng.choice(files)
                    ext = ".pdf" if ctype == "application/pdf" else ".jpg"
                    n = rng.randrange(1000, 9999)
                    if rng.random() < 0.5:
                        name = ("invoice-" if ext == ".pdf" else "screenshot-") + f"{n}{ext}"
                    else:
                        name = rng.choice([t for t in NON_ASCII_NAMES if t.endswith(ext)]).format(n=n)
                    style = rng.choice(("rfc2231", "rfc2047"))
                    parts.append(attachment_part(name, ctype, content, style))
                    attachments.append((name, hashlib.sha256(content).hexdigest()))
                body = multipart("mixed", parts, rng)
            key = f"{rng.randrange(16**16):016x}.{run_tag}.{thread_no}.{position}@mail.{CUSTOMER_DOMAIN}"
            mode = rng.choice(("B", "Q")) if charset not in ("iso-2022-jp",) else "B"
            headers = [
                ("Return-Path", f"<{sender}>"),
                ("From", f"{display} <{sender}>"),
                ("To", f"Support <{SUPPORT}>"),
                (
                    "Subject",
                    ("Re: " + header_text(root_subject, charset, mode))
                    if position
                    else header_text(subject, charset, mode),
                ),
                ("Date", format_datetime(when)),
                ("Message-ID", f"<{key}>"),
            ]
            if chain:
                headers.append(("In-Reply-To", f"<{chain[-1]}>"))
                headers.append(("References", "\r\n ".join(f"<{c}>" for c in chain)))
            raw = message_bytes(headers, body)
            label = f"generated {kind} {charset} {cte}" + (" reply" if position else "")
            mails[key] = Mail(
                key=key,
                raw=raw,
                category=label,
                when=when,
                thread=thread_no,
                position=position,
                probe=first,
                subject=subject,
                attachments=attachments,
                out_of_order=ooo,
            )
            composition[COMPOSITION[1]] += 1
            composition[COMPOSITION[2 + [k for k, _ in KINDS].index(kind)]] += 1
            if charset not in ("utf-8", "us-ascii"):
                composition[COMPOSITION[6]] += 1
                if cte == "8bit":
                    composition[COMPOSITION[7]] += 1
            if position:
                composition[COMPOSITION[8]] += 1
            chain.append(key)
            previous_text = f"{first}\n\n{second}"
            when = when + timedelta(seconds=rng.uniform(20 * 60, 2 * 86400))
            made += 1
        if ooo:
            composition[COMPOSITION[10]] += 1
        if size > 1:
            composition[COMPOSITION[9]] += 1

    # Delivery order: by time; out-of-order threads swap their first two mails' slots; then the duplicates.
    order = sorted(mails.values(), key=lambda m: m.when)
    slot = {m.key: i for i, m in enumerate(order)}
    for m in list(order):
        if m.generated and m.out_of_order and m.position == 1:
            root = next(x for x in order if x.thread == m.thread and x.position == 0)
            a, b = slot[root.key], slot[m.key]
            order[a], order[b] = order[b], order[a]
            slot[root.key], slot[m.key] = b, a
    deliveries = [m.raw for m in order]
    duplicate_keys = rng.sample([m.key for m in order], n_dup) if n_dup else []
    for key in duplicate_keys:
        mail = mails[key]
        head, sep, _ = split_header(mail.raw)
        eol = b"\r\n" if b"\r\n" in head or sep == b"\r\n\r\n" else b"\n"
        received = (
            f"Received: from mx2.example.test (mx2.example.test [192.0.2.25]){eol.decode()}\tby mx1.example.test "
            f"with ESMTP id {rng.randrange(16**10):010X}; {format_datetime(mail.when)}"
        ).encode() + eol
        at = deliveries.index(mail.raw)
        where = at + 1 if rng.random() < 0.5 else rng.randrange(at + 1, len(deliveries) + 1)
        deliveries.insert(where, received + mail.raw)
    composition[COMPOSITION[11]] = n_dup
    composition[COMPOSITION[12]] = len(deliveries)
    composition = Counter({k: composition[k] for k in COMPOSITION})  # this order in the report
    return MailSet(mails=mails, deliveries=deliveries, duplicate_keys=duplicate_keys, composition=composition)


# --- Delivery and the two imports -------------------------------------------------------------------------------
def fill_mailbox(dovecot: object, user: str, deliveries: list[bytes]) -> None:
    """Empty the user's INBOX, then APPEND every delivery in order over one IMAP session."""
    with dovecot.client(user) as client:  # type: ignore[attr-defined]
        uids = client.search("ALL")
        if uids:
            client.delete_messages(uids)
            client.expunge()
    started = time.perf_counter()
    with dovecot.client(user, folder=None) as client:  # type: ignore[attr-defined]
        for n, raw in enumerate(deliveries, 1):
            client.append("INBOX", raw)
            if n % 500 == 0:
                log(f"  {user}: {n}/{len(deliveries)} APPENDed")
    log(f"  {user}: {len(deliveries)} mails APPENDed in {time.perf_counter() - started:.1f} s")


def mailbox_keys(dovecot: object, user: str) -> list[str]:
    """Message-IDs of the mails still in the user's INBOX and not flagged \\Deleted."""
    with dovecot.client(user) as client:  # type: ignore[attr-defined]
        uids = client.search(["NOT", "DELETED"])
        if not uids:
            return []
        data = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    keys = []
    for item in data.values():
        header = item.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b"").decode("ascii", "replace")
        keys.append(message_key(header.partition(":")[2]))
    return keys


def message_key(value: str | None) -> str:
    return (value or "").strip().strip("<>").strip()


def hd_count(sql: str) -> int:
    import psycopg

    with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{HD_DB}") as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def run_helpdesk(dovecot: object, n_mails: int) -> dict:  # type: ignore[type-arg]
    cfg = {
        "host": dovecot.host,  # type: ignore[attr-defined]
        "port": dovecot.port,  # type: ignore[attr-defined]
        "user": HD_USER,
        "password": PASSWORD,
        "address": SUPPORT,
        "max_passes": 200,
    }
    hd_helper("reset", cfg)
    log(
        f"django-helpdesk: queue 'support' polls {HD_USER} on {dovecot.host}:{dovecot.port} over IMAP; running its "  # type: ignore[attr-defined]
        "get_email command, pass after pass (a mail that stops a pass is deleted by hand, as an admin would)"
    )
    stderr_path = HD_PROJECT / "import-stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [hd_python(), str(HD_PROJECT / "bench_helper.py"), "import", json.dumps(cfg)],
            cwd=HD_PROJECT,
            env=hd_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        started = time.perf_counter()
        while proc.poll() is None:
            time.sleep(1.0)
            elapsed = time.perf_counter() - started
            if int(elapsed) % 5 == 0:
                done = hd_count("select count(*) from helpdesk_followup")
                log(f"  django-helpdesk: {done:>5}/{n_mails} follow-ups stored, {elapsed:5.1f} s")
            if elapsed > 900:
                proc.kill()
                raise SystemExit("django-helpdesk's import did not finish in 15 minutes")
        out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(
            f"django-helpdesk's import failed ({proc.returncode}):\n{out}\n{stderr_path.read_text()[-3000:]}"
        )
    result = json.loads(out.strip().splitlines()[-1])
    passes = result["passes"]
    seconds = sum(p["seconds"] for p in passes)
    if result["removed"]:
        log(
            f"  django-helpdesk: {len(result['removed'])} mails each stopped the import of every mail behind them; "
            "removed from the mailbox by hand (outside the clock) so that the next pass could go on"
        )
    return {
        "seconds": seconds,
        "rate": n_mails / seconds,
        "cpu_ms": sum(p["cpu"] for p in passes) / n_mails * 1000,
        "passes": len(passes),
        "left": passes[-1]["left"],
        "left_keys": mailbox_keys(dovecot, HD_USER),
        "removed": {message_key(mid): error for mid, error in result["removed"]},
        "mail_errors": {message_key(mid): error for mid, error in result["errors"].items()},
    }


def start_workers() -> list[subprocess.Popen[bytes]]:
    """One Celery worker with 2 children, by bench/ingest.py (whose newer start_workers wants a log folder)."""
    if "log_dir" in inspect.signature(ingest.start_workers).parameters:
        logs = VAR / "switchboard-workers"
        logs.mkdir(parents=True, exist_ok=True)
        return ingest.start_workers(1, 2, log_dir=logs)  # type: ignore[call-arg]
    return ingest.start_workers(1, 2)  # type: ignore[call-arg]


def run_switchboard(dovecot: object, n_mails: int) -> dict:  # type: ignore[type-arg]
    from inbox.conversations.mail import mailbox_reader_for, mailbox_sync
    from inbox.conversations.models import ChannelAccount, InboundEvent, Message

    ingest.reset_and_seed()
    shutil.rmtree(os.environ["MEDIA_ROOT"], ignore_errors=True)
    account = bench_email.email_account(dovecot)
    log(f"Switchboard: mailbox sync of {SUPPORT} (as listen_mail runs it) with 1 Celery worker x 2 children")
    procs = start_workers()
    try:
        pids = [p for proc in procs for p in ingest.process_tree(proc.pid)]
        worker_cpu = ingest.cpu_seconds(pids)
        reader = mailbox_reader_for(account)
        reader.connect()
        started, own_cpu = time.perf_counter(), time.process_time()
        fetched = mailbox_sync(account=account, mailbox_reader=reader, batch=200)
        fetch_seconds, own_cpu = time.perf_counter() - started, time.process_time() - own_cpu
        reader.close()
        last = 0.0
        while True:
            pending = InboundEvent.objects.filter(account=account, state=InboundEvent.State.PENDING).count()
            elapsed = time.perf_counter() - started
            if pending == 0:
                break
            if not ChannelAccount.objects.filter(pk=account.pk).exists():  # type: ignore[attr-defined]
                raise SystemExit(f"another process reset {os.environ['DATABASE_URL']} during the run; run again")
            if elapsed - last >= 5:
                stored = Message.objects.filter(account=account).count()
                log(f"  Switchboard: {stored:>5}/{n_mails} messages stored, {pending} events pending, {elapsed:5.1f} s")
                last = elapsed
            if elapsed > 900:
                raise SystemExit("Switchboard's import did not finish in 15 minutes")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        worker_cpu = ingest.cpu_seconds([p for proc in procs for p in ingest.process_tree(proc.pid)]) - worker_cpu
    finally:
        ingest.stop_workers(procs)
    return {
        "seconds": seconds,
        "rate": n_mails / seconds,
        "cpu_ms": (worker_cpu + own_cpu) / n_mails * 1000,  # the workers, and this process's IMAP fetch
        "fetched": fetched,
        "fetch_seconds": fetch_seconds,
        "account": account.pk,  # type: ignore[attr-defined]
    }


# --- Reading each system's database -----------------------------------------------------------------------------
@dataclass
class Record:
    """One stored copy of a mail: a django-helpdesk FollowUp or a Switchboard inbound Message."""

    key: str  # the Message-ID it was stored under, without <> (Switchboard: a "#hash" suffix removed)
    ticket: int  # ticket / conversation
    rid: int  # follow-up / message id (creation order)
    text: str
    title: str  # the ticket's title / the conversation's subject
    attachments: list[tuple[str, str]]  # (file name, sha256)


def helpdesk_records() -> list[Record]:
    import psycopg

    media = HD_PROJECT / "media"
    with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{HD_DB}") as conn:
        rows = conn.execute(
            "select f.id, f.ticket_id, f.message_id, coalesce(f.comment, ''), t.title, coalesce(t.description, '') "
            "from helpdesk_followup f join helpdesk_ticket t on t.id = f.ticket_id order by f.id"
        ).fetchall()
        files = conn.execute("select followup_id, file, filename from helpdesk_followupattachment").fetchall()
    by_followup: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for followup_id, path, filename in files:
        try:
            digest = hashlib.sha256((media / path).read_bytes()).hexdigest()
        except OSError:
            digest = ""
        by_followup[followup_id].append((filename, digest))
    first: dict[int, int] = {}
    records = []
    for rid, ticket, message_id, comment, title, description in rows:
        first.setdefault(ticket, rid)
        # The first follow-up of a ticket is the mail that opened it: its text is also the ticket's description.
        text = comment + ("\n" + description if first[ticket] == rid else "")
        records.append(Record(message_key(message_id), ticket, rid, text, title, by_followup.get(rid, [])))
    return records


def switchboard_records(account_id: int) -> tuple[list[Record], dict[str, str]]:
    """The inbound messages, and the quarantined events (Message-ID -> reason)."""
    from inbox.conversations.models import Attachment, ChannelAccount, InboundEvent, Message

    if not ChannelAccount.objects.filter(pk=account_id).exists():
        raise SystemExit(f"another process reset {os.environ['DATABASE_URL']} during the run; run again")
    files: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for message_id, filename, sha in Attachment.objects.filter(message__account_id=account_id).values_list(
        "message_id", "filename", "sha256"
    ):
        files[message_id].append((filename, sha))
    records = []
    rows = (
        Message.objects.filter(account_id=account_id, direction=Message.Direction.INBOUND)
        .order_by("id")
        .values_list("id", "conversation_id", "external_id", "text", "metadata", "conversation__subject")
    )
    for rid, conversation, external_id, text, metadata, subject in rows:
        extra = [str(metadata.get(k) or "") for k in ("quoted", "signature")]  # the reply split keeps them apart
        records.append(
            Record(external_id.split("#", 1)[0], conversation, rid, "\n".join([text, *extra]), subject, files[rid])
        )
    quarantined = {}
    for payload, error in InboundEvent.objects.filter(
        account_id=account_id, state=InboundEvent.State.FAILED
    ).values_list("payload", "error"):
        raw = base64.b64decode(payload.get("raw_b64", ""))
        found = re.search(rb"(?im)^message-id:\s*(<[^>\r\n]*>)", split_header(raw)[0])
        quarantined[message_key(found.group(1).decode("ascii", "replace") if found else "")] = error
    return records, quarantined


# --- Counting errors --------------------------------------------------------------------------------------------
SUBJECT_AFFIXES = ["Re: ", "Fw: ", "RE: ", "FW: ", "Automatic reply: "]  # django-helpdesk removes these by design


def normal_subject(text: str) -> str:
    for affix in SUBJECT_AFFIXES:
        text = text.replace(affix, "")
    return " ".join(unicodedata.normalize("NFC", text).translate(JIS_VARIANTS).split())


def subject_ok(stored: str, expected: str) -> bool:
    got, want = normal_subject(stored), normal_subject(expected)
    if got == want:
        return True
    # django-helpdesk cuts titles over 200 characters to 197 + "..." (a limit, not mangling)
    return len(stored) >= 200 and stored.endswith("...") and want.startswith(normal_subject(stored[:-3]))


def count_errors(mailset: MailSet, records: list[Record]) -> dict:  # type: ignore[type-arg]
    """Every stored record is matched to its mail by Message-ID; then, over the distinct mails:

    - lost: a mail with no stored record at all.
    - duplicated: stored records beyond the first of each mail (a mail delivered twice must still be stored once).
    - mis-threaded (generated threads only, where the truth is known): the thread's ticket is the one holding the
      first stored copy of its first mail; a mail is mis-threaded when its first stored copy sits in another
      ticket, or in a ticket that also holds another thread's mail (two threads merged).
    - mangled text: the body stored for the mail's first copy does not contain the mail's own text (its first
      sentence for generated mails; for real samples the first line of the text part decoded with its declared
      charset), compared without whitespace and with HTML entities resolved; or it holds U+FFFD where the
      original has none. Subject: the ticket title / conversation subject, judged for the mail that opened the
      ticket, must equal the decoded Subject ("Re: "-like affixes ignored, as django-helpdesk strips them).
      Mails whose original cannot be decoded strictly (no defined truth) are not judged.
    - attachments missing: a generated mail's attachment whose exact bytes (sha256) are not among its first
      copy's stored files; "names altered": the stored file name does not end with the sent one.
    """
    by_key: dict[str, list[Record]] = defaultdict(list)
    unmatched = 0
    for record in records:
        if record.key in mailset.mails:
            by_key[record.key].append(record)
        else:
            unmatched += 1
    matched_by_text: set[int] = set()
    # A record stored without a usable Message-ID (the parser lost the header) is matched by the Message-ID
    # showing up in its text (the header block ended up in the body), else it stays "unmatched".
    if unmatched:
        missing = [key for key in mailset.mails if key not in by_key]
        for record in records:
            if record.key not in mailset.mails:
                hit = next((key for key in missing if key in record.text), None)
                if hit is not None:
                    by_key[hit].append(record)
                    missing.remove(hit)
                    matched_by_text.add(record.rid)
    first = {key: min(recs, key=lambda r: r.rid) for key, recs in by_key.items()}
    lost = [key for key in mailset.mails if key not in by_key]
    duplicated = {key: len(recs) - 1 for key, recs in by_key.items() if len(recs) > 1}

    threads: dict[int, list[Mail]] = defaultdict(list)
    for mail in mailset.mails.values():
        threads[mail.thread].append(mail)
    home: dict[int, int] = {}
    for number, members in threads.items():
        stored = sorted((m for m in members if m.key in first), key=lambda m: m.position)
        if stored:
            home[number] = first[stored[0].key].ticket
    threads_in_ticket: dict[int, set[int]] = defaultdict(set)
    for key, record in first.items():
        threads_in_ticket[record.ticket].add(mailset.mails[key].thread)
    misthreaded = [
        key
        for key, record in first.items()
        if mailset.mails[key].generated
        and (record.ticket != home[mailset.mails[key].thread] or len(threads_in_ticket[record.ticket]) > 1)
    ]

    opened: dict[int, Record] = {}
    for record in first.values():
        if record.ticket not in opened or record.rid < opened[record.ticket].rid:
            opened[record.ticket] = record
    body_bad: dict[str, str] = {}
    subject_bad: dict[str, str] = {}
    attachment_bad: dict[str, str] = {}
    names_bad: dict[str, str] = {}
    for key, record in first.items():
        mail = mailset.mails[key]
        if mail.probe is not None:
            if normal_text(mail.probe) not in normal_text(record.text):
                body_bad[key] = f"text differs: expected {mail.probe[:40]!r}, stored {record.text.strip()[:60]!r}"
            elif "\ufffd" in record.text and not mail.has_fffd:
                body_bad[key] = "U+FFFD in the stored text"
        if (
            mail.subject is not None
            and opened.get(record.ticket) is record
            and not subject_ok(record.title, mail.subject)
        ):
            subject_bad[key] = f"subject {mail.subject[:40]!r} stored as {record.title[:60]!r}"
        pool = list(record.attachments)
        for name, sha in mail.attachments:
            same = [f for f in pool if f[1] == sha]
            if not same:
                attachment_bad[key] = f"{name!r} not stored"
                continue
            named = [f for f in same if unicodedata.normalize("NFC", f[0]).endswith(unicodedata.normalize("NFC", name))]
            pool.remove((named or same)[0])
            if not named:
                names_bad[key] = f"{name!r} stored as {same[0][0]!r}"
    return {
        "distinct": len(mailset.mails),
        "records": len(records),
        "unmatched": [
            f"Message-ID {r.key!r}, title {r.title[:40]!r}, text {r.text.strip()[:40]!r}"
            for r in records
            if r.key not in mailset.mails and r.rid not in matched_by_text
        ],
        "lost": lost,
        "duplicated": duplicated,
        "misthreaded": misthreaded,
        "body": body_bad,
        "subject": subject_bad,
        "attachments": attachment_bad,
        "names": names_bad,
    }


# --- Reporting --------------------------------------------------------------------------------------------------
SYSTEMS = ("django-helpdesk", "Switchboard")


def group_of(mail: Mail) -> str:
    return mail.category.removesuffix(" reply")


def charset_group(mail: Mail) -> str:
    """'generated windows-1251 8bit' (the kind of body left out): how text errors are summed up."""
    if not mail.generated:
        return group_of(mail)
    _, _kind, charset, cte = group_of(mail).split(" ")
    return f"generated {charset} {cte}"


def thread_cause(mailset: MailSet, mail: Mail) -> str:
    members = [m for m in mailset.mails.values() if m.thread == mail.thread]
    if mail.out_of_order:
        return "thread delivered out of order (first reply before the mail it answers)"
    if any(m.key in mailset.duplicate_keys for m in members):
        return "thread with a mail delivered twice"
    return "thread delivered in order"


def details_of(system: str, mailset: MailSet, errors: dict, run: dict) -> Counter:  # type: ignore[type-arg]
    """(error kind, what) -> count, for the report."""
    found: Counter = Counter()  # type: ignore[type-arg]
    for key in errors["lost"]:
        mail = mailset.mails[key]
        if system == "Switchboard":
            reason = run["quarantined"].get(key)
            how = f"quarantined (raw mail kept): {reason[:90]}" if reason else "not stored, no event failed"
        elif key in run["removed"]:
            how = f"stopped the import of all mails behind it (removed by hand): {run['removed'][key][:90]}"
        elif key in run["left_keys"]:
            how = f"left in the mailbox: {run['mail_errors'].get(key, 'not imported')[:90]}"
        else:
            how = "taken out of the mailbox, nothing stored under its Message-ID"
        found[("lost", f"{group_of(mail)} — {how}")] += 1
    for key, extra in errors["duplicated"].items():
        how = "delivered twice, stored twice" if key in mailset.duplicate_keys else "delivered once, stored twice"
        found[("duplicated", how)] += extra
    for line in errors["unmatched"]:
        found[("unmatched", f"a stored record that matches no mail ({line})")] += 1
    for key in errors["misthreaded"]:
        found[("mis-threaded", thread_cause(mailset, mailset.mails[key]))] += 1
    for kind in ("body", "subject", "attachments", "names"):
        for key, why in errors[kind].items():
            mail = mailset.mails[key]
            what = (
                (charset_group(mail) if kind == "body" else group_of(mail))
                if mail.generated
                else f"{group_of(mail)}: {why}"
            )
            if mail.generated and kind == "body":
                what += " (U+FFFD)" if why.startswith("U+FFFD") else ""
            found[
                (
                    {
                        "body": "mangled body",
                        "subject": "mangled subject",
                        "attachments": "attachment missing",
                        "names": "attachment name altered",
                    }[kind],
                    what,
                )
            ] += 1
    return found


def summary_row(system: str, runs: list[dict]) -> list[object]:  # type: ignore[type-arg]
    def med(values: list[float]) -> str:
        return _report.spread(values, "{:,.0f}")

    errs = [r["errors"] for r in runs]
    lost = [len(e["lost"]) for e in errs]
    if system == "Switchboard":
        why = [sum(1 for k in e["lost"] if k in r["quarantined"]) for e, r in zip(errs, runs, strict=True)]
        lost_note = f" (quarantined, raw kept: {med(why)})" if any(why) else ""
    else:
        why = [sum(1 for k in e["lost"] if k in r["removed"]) for e, r in zip(errs, runs, strict=True)]
        left = [sum(1 for k in e["lost"] if k in r["left_keys"]) for e, r in zip(errs, runs, strict=True)]
        notes = [f"blocked the queue, removed by hand: {med(why)}"] if any(why) else []
        notes += [f"left in the mailbox: {med(left)}"] if any(left) else []
        lost_note = f" ({'; '.join(notes)})" if notes else ""
    return [
        system,
        med([e["distinct"] for e in errs]),
        med(lost) + lost_note,
        med([sum(e["duplicated"].values()) for e in errs]),
        med([len(e["misthreaded"]) for e in errs]),
        med([len(e["body"]) for e in errs]),
        med([len(e["subject"]) for e in errs]),
        med([len(e["attachments"]) for e in errs]),
        med([len(e["names"]) for e in errs]),
    ]


ERROR_HEADERS = [
    "system",
    "distinct mails",
    "lost",
    "duplicated",
    "mis-threaded",
    "mangled bodies",
    "mangled subjects",
    "attachments missing",
    "attachment names altered",
]


def rate_rows(results: dict[str, list[dict]]) -> list[list[object]]:  # type: ignore[type-arg]
    rows: list[list[object]] = []
    for system in SYSTEMS:
        runs = results[system]
        note = ""
        if system == "django-helpdesk":
            note = (
                f"get_email passes: {_report.spread([r['passes'] for r in runs], '{:.0f}')}, of which stopped by one "
                f"mail: {_report.spread([len(r['removed']) for r in runs], '{:.0f}')}"
            )
        else:
            fetch = [r["fetched"] / r["fetch_seconds"] for r in runs]
            note = f"IMAP fetch alone: {_report.spread(fetch, '{:,.0f}')} mails/s"
        rows.append(
            [
                system,
                f"**{_report.spread([r['rate'] for r in runs])}**",
                _report.spread([r["seconds"] for r in runs]),
                _report.spread([r["cpu_ms"] for r in runs]),
                note,
            ]
        )
    ratios = [
        sb["rate"] / hd["rate"] for sb, hd in zip(results["Switchboard"], results["django-helpdesk"], strict=True)
    ]
    rows.append(["ratio Switchboard ÷ django-helpdesk", f"**{_report.spread(ratios, '{:.1f}')}×**", "", "", "per run"])
    return rows


def details_lines(system: str, details: Counter, totals: Counter) -> list[str]:  # type: ignore[type-arg]
    """One line per kind of error: generated mails summed up per group ("windows-1251 8bit 63/63": 63 of the 63
    such mails sent), real samples one by one with what happened."""
    lines = []
    for kind in (
        "lost",
        "duplicated",
        "mis-threaded",
        "mangled body",
        "mangled subject",
        "attachment missing",
        "attachment name altered",
        "unmatched",
    ):
        items = sorted(((what, n) for (k, what), n in details.items() if k == kind), key=lambda x: (-x[1], x[0]))
        generated, other = [], []
        for what, n in items:
            group = what.removesuffix(" (U+FFFD)")
            if group.startswith("generated ") and totals[group]:
                generated.append(f"{what.removeprefix('generated ')} {n}/{totals[group]}")
            else:
                other.append(f"{n} × {what}")
        if generated:
            lines.append(f"{system}, {kind}, generated mails (failed/sent): " + ", ".join(generated))
        if other:
            lines.append(f"{system}, {kind}: " + "; ".join(other))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mails", type=int, default=1000, help="mails APPENDed per run (duplicate deliveries included)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs (a new mail set each, seeded 0, 1, ...)")
    parser.add_argument("--write-docs", action="store_true", help="write the 'helpdesk' section of docs/benchmarks.md")
    parser.add_argument("--reinstall", action="store_true", help="build django-helpdesk's venv and project again")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop our workers and Dovecot
    sentences = load_sentences()
    sample_files()
    log(f"load average at the start: {_report.load()} (1 / 5 / 15 min; the CPU is shared)")
    versions = setup_helpdesk(args.reinstall)
    ingest.ensure_database()
    import django

    django.setup()
    from tests.fakes.dovecot import Dovecot, ensure_dovecot

    binary = ensure_dovecot()
    if not binary:
        raise SystemExit("dovecot is not installed (apt-get install dovecot-imapd)")
    dovecot_version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split(" ")[0]
    results: dict[str, list[dict]] = {s: [] for s in SYSTEMS}  # type: ignore[type-arg]
    details: dict[str, Counter] = {s: Counter() for s in SYSTEMS}  # type: ignore[type-arg]
    totals: Counter = Counter()  # type: ignore[type-arg]
    composition: Counter = Counter()  # type: ignore[type-arg]
    with Dovecot({SUPPORT: PASSWORD, HD_USER: PASSWORD}) as dovecot:
        log(
            f"Dovecot {dovecot_version} on {dovecot.host}:{dovecot.port}: mailboxes {HD_USER} (django-helpdesk's "
            f"copy) and {SUPPORT} (Switchboard's copy)"
        )
        for n in range(args.repeat):
            mailset = build_mail_set(args.mails, seed=n, sentences=sentences)
            composition += mailset.composition
            totals.update(group_of(m) for m in mailset.mails.values())
            totals.update(charset_group(m) for m in mailset.mails.values() if m.generated)
            log(
                f"run {n + 1}/{args.repeat}: {len(mailset.deliveries)} mails ({len(mailset.mails)} distinct), "
                f"load {_report.load()}"
            )
            fill_mailbox(dovecot, HD_USER, mailset.deliveries)
            fill_mailbox(dovecot, SUPPORT, mailset.deliveries)
            order = SYSTEMS if n % 2 == 0 else tuple(reversed(SYSTEMS))
            for system in order:
                if system == "django-helpdesk":
                    run = run_helpdesk(dovecot, len(mailset.deliveries))
                    records = helpdesk_records()
                else:
                    run = run_switchboard(dovecot, len(mailset.deliveries))
                    records, run["quarantined"] = switchboard_records(run["account"])
                run["errors"] = count_errors(mailset, records)
                details[system] += details_of(system, mailset, run["errors"], run)
                results[system].append(run)
                e = run["errors"]
                log(
                    f"  {system}: {run['rate']:.1f} mails/s ({run['seconds']:.1f} s); lost {len(e['lost'])}, "
                    f"duplicated {sum(e['duplicated'].values())}, mis-threaded {len(e['misthreaded'])}, mangled "
                    f"{len(e['body'])} bodies / {len(e['subject'])} subjects, attachments missing "
                    f"{len(e['attachments'])}, unmatched records {len(e['unmatched'])}; load {_report.load()}"
                )
    rates = _report.table(
        ["system", "mails/s", "seconds for the mailbox", "CPU ms per mail (own processes, not PostgreSQL)", "notes"],
        rate_rows(results),
    )
    errors = _report.table(ERROR_HEADERS, [summary_row(s, results[s]) for s in SYSTEMS])
    print(f"\nmails per run {args.mails}, runs {args.repeat}; median (min-max) over the runs\n")
    for what, count in composition.items():
        print(f"{count / args.repeat:8,.0f}  {what}")
    print()
    print(rates + "\n\n" + errors + "\n")
    for system in SYSTEMS:
        for line in details_lines(system, details[system], totals):
            print(line)
    print(f"load average after the runs: {_report.load()}")
    if args.write_docs:
        write_docs(args, versions, dovecot_version, results, details, totals, composition, rates, errors)


def write_docs(args, versions, dovecot_version, results, details, totals, composition, rates, errors) -> None:  # type: ignore[no-untyped-def]
    command = f".venv/bin/python bench/helpdesk.py {shlex.join(sys.argv[1:])}".strip()
    runs = args.repeat
    mix = _report.table(
        ["in each run's mail set (mean over runs)", "mails"],
        [[what, f"{count / runs:,.0f}"] for what, count in composition.items()],
    )
    detail_md = "\n".join(f"- {line}" for s in SYSTEMS for line in details_lines(s, details[s], totals))
    markdown = "\n\n".join(
        [
            _report.header(
                command,
                [
                    f"**Peer:** django-helpdesk {versions['helpdesk']} on Django {versions['django']}, installed by "
                    "the script with pip into its own venv (var/bench/helpdesk-venv, pins in bench-pins.txt there), a "
                    f'generated throwaway project on PostgreSQL (`{HD_DB}`), e-mail backend "dummy" (its '
                    "acknowledgement mails are rendered, not sent); import = its `get_email` command over IMAP.",
                    "**Switchboard:** the mailbox sync of `listen_mail` (BODY.PEEK, 200 per transaction) with one "
                    "Celery worker (2 children), PostgreSQL `switchboard_bench`, Redis db 12.",
                    "**Mail set:** every real sample of ../shared/data/email (byte for byte, but for a new "
                    "Message-ID) and generated mails carrying real sentences of ../shared/data/langid in the charsets, "
                    "transfer encodings and MIME shapes below, with RFC 2047 subjects and attachments (a PDF, a JPEG) "
                    "taken from the samples; a new set per run (seeded with the run number).",
                    f"**Mailbox:** Dovecot {dovecot_version} on loopback; the same mails APPENDed in the same order to "
                    "one mailbox per system (django-helpdesk deletes what it imports). The imports run one after the "
                    "other, never together; their order alternates between runs.",
                    "**Clock:** from the start of the import until every mail is stored (django-helpdesk: its last "
                    "`get_email` pass returned, Django start-up excluded; Switchboard: no event pending, worker "
                    "start-up excluded). mails/s = mails in the mailbox ÷ that time.",
                ],
            ),
            mix,
            rates,
            errors,
            "How each count is made (the script's `count_errors()`): every stored record (a django-helpdesk "
            "follow-up, a Switchboard inbound message) is matched to the mail it came from by Message-ID. "
            "**Lost**: a mail with no stored record. **Duplicated**: records beyond the first for one mail (a mail "
            "delivered twice must be stored once). **Mis-threaded** (generated threads, where the truth is known): "
            "the thread's ticket is the one holding its first mail; a reply stored in another ticket, or a mail in a "
            "ticket that also holds another thread, counts. **Mangled body**: the stored text (Switchboard: text, "
            "quoted part and signature; django-helpdesk: the follow-up's comment and the ticket description) lacks "
            "the mail's own text — its first sentence for generated mails, the first line of the text part decoded "
            "with the declared charset for real samples — compared without whitespace, or holds U+FFFD the original "
            "lacks. **Mangled subject**: the ticket title / conversation subject differs from the decoded Subject of "
            'the mail that opened it ("Re: "-like affixes ignored). Real samples whose text or subject cannot be '
            "decoded strictly with the charset they declare, or whose text holds C1 controls (an ISO-8859-1 label "
            "read as windows-1252 or not), are not judged; Shift_JIS / EUC-JP vendor variants (the wave dash: "
            "JIS X 0208 or cp932) compare equal. **Attachments**: the exact bytes "
            "(sha256) of each attachment of a generated mail must be stored with it; the name must end with the "
            "sent one.",
            f'What went wrong, summed over the {runs} runs ("74/118": 74 of the 118 such mails sent):\n\n'
            + (detail_md or "- nothing"),
        ]
    )
    _report.write_section("helpdesk", markdown, title="Side by side with django-helpdesk (issue 9)")


if __name__ == "__main__":
    main()
