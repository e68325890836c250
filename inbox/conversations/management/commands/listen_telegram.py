"""python manage.py listen_telegram: long-poll every active Telegram bot in polling mode (getUpdates + offset).

For installs without a public URL. Bots in webhook mode are served by the web process instead.
"""

from __future__ import annotations

import functools
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from inbox.conversations.listeners import supervise
from inbox.conversations.models import ChannelAccount
from inbox.conversations.telegram import telegram_poll_once, telegram_session


class Command(BaseCommand):
    help = "Long-poll the Telegram bots in polling mode. Ctrl-C / SIGTERM stops; the offset is kept in the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", type=int, help="only this channel account id")
        parser.add_argument("--timeout", type=int, default=25, help="long-poll seconds per getUpdates call")
        parser.add_argument("--once", action="store_true", help="one getUpdates round per bot, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            accounts = ChannelAccount.objects.filter(kind="telegram", is_active=True)
            if options["account"]:
                accounts = accounts.filter(pk=options["account"])
            for account in accounts:
                count = telegram_poll_once(account=account, timeout=0)
                self.stdout.write(f"{account.name}: {count} updates")
            return
        supervise(
            kind="telegram",
            account_id=options["account"],
            session=functools.partial(telegram_session, timeout=options["timeout"]),
        )
