"""python manage.py listen_mail: keep every active e-mail account's mailbox in sync (IMAP IDLE, poll fallback).

A long-running process of its own (started by `make run`; a systemd unit / Deployment in production), never a
Celery task: an IDLE connection lives for hours. One thread per account; each one backfills from the stored
cursor, then waits in IDLE (re-issued every --idle-seconds, well inside the server's 29-minute limit, RFC 2177)
and syncs again whenever it returns. After any outage it simply resumes from the cursor: nothing is lost, and
nothing is stored twice (events are unique per account and UID).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connection

from connectors.base import AuthError, ConnectorError
from inbox.conversations.mail import account_health, mailbox_reader_for, mailbox_sync
from inbox.conversations.models import ChannelAccount

logger = logging.getLogger("inbox.mail.listener")


def listen_account(account_id: int, stop: threading.Event, *, idle_seconds: float, batch: int) -> None:
    backoff = 1.0
    while not stop.is_set():
        close_old_connections()
        account = ChannelAccount.objects.filter(pk=account_id, kind="email", is_active=True).first()
        if account is None:
            return
        reader = None
        try:
            reader = mailbox_reader_for(account)
            reader.connect()
            fetched = mailbox_sync(account=account, mailbox_reader=reader, batch=batch)
            account_health(account=account, health=ChannelAccount.Health.OK, detail=f"connected; {fetched} fetched")
            backoff = 1.0
            while not stop.is_set():
                # IDLE (or, on a server without it, polling inside idle()) until new mail or the timeout.
                reader.idle(timeout=idle_seconds)
                if stop.is_set():
                    break
                mailbox_sync(account=account, mailbox_reader=reader, batch=batch)
        except AuthError as exc:
            logger.error("mailbox %s: login refused: %s", account.name, exc)
            account_health(account=account, health=ChannelAccount.Health.DOWN, detail=f"login refused: {exc}")
            stop.wait(60)
        except (ConnectorError, OSError) as exc:
            logger.warning("mailbox %s: %s; reconnecting in %.0f s", account.name, exc, backoff)
            account_health(account=account, health=ChannelAccount.Health.DEGRADED, detail=str(exc))
            stop.wait(backoff)
            backoff = min(backoff * 2, 60.0)
        except Exception:
            logger.exception("mailbox %s: unexpected error; reconnecting in %.0f s", account.name, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 60.0)
        finally:
            if reader is not None:
                reader.close()
    connection.close()


class Command(BaseCommand):
    help = "Keep the e-mail accounts' mailboxes in sync (IMAP IDLE with a poll fallback). Ctrl-C / SIGTERM stops."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", type=int, help="only this channel account id")
        parser.add_argument("--once", action="store_true", help="sync each mailbox once and exit")
        parser.add_argument(
            "--idle-seconds", type=float, default=60.0, help="sync at least this often (IDLE returns early on new mail)"
        )
        parser.add_argument("--batch", type=int, default=200, help="mails fetched per transaction")

    def handle(self, *args: Any, **options: Any) -> None:
        accounts = ChannelAccount.objects.filter(kind="email", is_active=True)
        if options["account"]:
            accounts = accounts.filter(pk=options["account"])
        if options["once"]:
            for account in accounts:
                reader = mailbox_reader_for(account)
                try:
                    reader.connect()
                    fetched = mailbox_sync(account=account, mailbox_reader=reader, batch=options["batch"])
                except ConnectorError as exc:
                    health = (
                        ChannelAccount.Health.DOWN if isinstance(exc, AuthError) else ChannelAccount.Health.DEGRADED
                    )
                    account_health(account=account, health=health, detail=str(exc))
                    raise CommandError(f"{account.name}: {exc}") from exc
                finally:
                    reader.close()
                account_health(account=account, health=ChannelAccount.Health.OK, detail=f"synced; {fetched} fetched")
                self.stdout.write(f"{account.name}: {fetched} mails fetched")
            return

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        threads: dict[int, threading.Thread] = {}
        logger.info("mail listener started")
        while not stop.is_set():
            ids = set(accounts.values_list("pk", flat=True))
            for account_id in ids:
                thread = threads.get(account_id)
                if thread is None or not thread.is_alive():
                    thread = threading.Thread(
                        target=listen_account,
                        args=(account_id, stop),
                        kwargs={
                            "idle_seconds": options["idle_seconds"],
                            "batch": options["batch"],
                        },
                        name=f"mailbox-{account_id}",
                        daemon=True,
                    )
                    thread.start()
                    threads[account_id] = thread
                    logger.info("listening to mailbox of account %s", account_id)
            close_old_connections()
            stop.wait(30)  # pick up accounts added or re-enabled by an admin
        logger.info("mail listener stopping")
        for thread in threads.values():
            thread.join(timeout=10)
