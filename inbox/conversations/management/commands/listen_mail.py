"""python manage.py listen_mail: keep every active e-mail account's mailbox in sync (IMAP IDLE, poll fallback).

A long-running process of its own (started by `make run`; a systemd unit / Deployment in production), never a
Celery task: an IDLE connection lives for hours. One thread per account; each one backfills from the stored
cursor, then waits in IDLE (re-issued every --idle-seconds, well inside the server's 29-minute limit, RFC 2177)
and syncs again whenever it returns. After any outage it simply resumes from the cursor: nothing is lost, and
nothing is stored twice (events are unique per account and UID).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connectors.base import AuthError, ConnectorError
from inbox.conversations.listeners import supervise
from inbox.conversations.mail import account_health, mailbox_reader_for, mailbox_sync
from inbox.conversations.models import ChannelAccount


def mail_session(account: ChannelAccount, stop: threading.Event, *, idle_seconds: float, batch: int) -> None:
    reader = mailbox_reader_for(account)
    try:
        reader.connect()
        fetched = mailbox_sync(account=account, mailbox_reader=reader, batch=batch)
        account_health(account=account, health=ChannelAccount.Health.OK, detail=f"connected; {fetched} fetched")
        while not stop.is_set():
            # IDLE (or, on a server without it, polling inside idle()) until new mail or the timeout.
            reader.idle(timeout=idle_seconds)
            if stop.is_set():
                break
            mailbox_sync(account=account, mailbox_reader=reader, batch=batch)
    finally:
        reader.close()


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

        supervise(
            kind="email",
            account_id=options["account"],
            session=functools.partial(mail_session, idle_seconds=options["idle_seconds"], batch=options["batch"]),
        )
