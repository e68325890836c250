"""python manage.py telegram_webhook --account ID set|delete: register or remove a bot's webhook with Telegram.

Run when a Telegram account is created or switched to webhook mode (never from a model's save()).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connectors.base import ConnectorError
from inbox.conversations.models import ChannelAccount
from inbox.conversations.telegram import telegram_webhook_delete, telegram_webhook_set


class Command(BaseCommand):
    help = "Register (set) or remove (delete) a Telegram bot's webhook."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["set", "delete"])
        parser.add_argument("--account", type=int, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        account = ChannelAccount.objects.filter(pk=options["account"], kind="telegram").first()
        if account is None:
            raise CommandError(f"no Telegram channel account {options['account']}")
        try:
            if options["action"] == "set":
                url = telegram_webhook_set(account=account)
                self.stdout.write(f"webhook set: {url}")
            else:
                telegram_webhook_delete(account=account)
                self.stdout.write("webhook deleted")
        except ConnectorError as exc:
            raise CommandError(str(exc)) from exc
