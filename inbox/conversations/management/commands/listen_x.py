"""python manage.py listen_x: poll every active X account's DMs and mentions within its rate limits.

Accounts in webhook mode are pushed to the web process; for them this runs only a slow catch-up poll, which
finds whatever a webhook outage missed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from inbox.conversations.listeners import supervise
from inbox.conversations.models import ChannelAccount
from inbox.conversations.x import STREAMS, x_poll_stream, x_session


class Command(BaseCommand):
    help = "Poll the X accounts (DMs and mentions). Ctrl-C / SIGTERM stops; positions are kept in the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", type=int, help="only this channel account id")
        parser.add_argument("--once", action="store_true", help="one round of each stream per account, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            accounts = ChannelAccount.objects.filter(kind="x", is_active=True)
            if options["account"]:
                accounts = accounts.filter(pk=options["account"])
            for account in accounts:
                for stream in STREAMS:
                    delay = x_poll_stream(account=account, stream=stream)
                    self.stdout.write(f"{account.name}: {stream} polled; next poll due in {delay:.0f} s")
            return
        supervise(kind="x", account_id=options["account"], session=x_session)
