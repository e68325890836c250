"""Telegram intake: long polling with the stored offset, and the bot's webhook registration."""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from django.conf import settings
from django.urls import reverse

from inbox.conversations.channels import connector_for
from inbox.conversations.mail import account_health
from inbox.conversations.models import ChannelAccount
from inbox.conversations.services import inbound_events_record

logger = logging.getLogger(__name__)


def telegram_poll_once(*, account: ChannelAccount, timeout: int) -> int:
    """One getUpdates round: the updates and the next offset are committed together, and only then is the next
    call made with that offset — which is what confirms them to Telegram. Killed at any point, the next run asks
    again from the stored offset: nothing is lost, and a re-delivered update is dropped by UNIQUE(bot, update_id).
    """
    connector: Any = connector_for(account)
    cursor = ChannelAccount.objects.values_list("cursor", flat=True).get(pk=account.pk) or {}
    offset = int(cursor.get("offset", 0))
    updates = connector.get_updates(offset, timeout=timeout)
    if not updates:
        return 0
    events = [(str(update["update_id"]), update) for update in updates if isinstance(update.get("update_id"), int)]
    next_offset = max(int(update["update_id"]) for update in updates) + 1
    new = inbound_events_record(account=account, events=events, cursor={**cursor, "offset": next_offset})
    logger.info("telegram %s: %s updates (%s new), offset %s", account.name, len(updates), len(new), next_offset)
    return len(updates)


def telegram_session(account: ChannelAccount, stop: threading.Event, *, timeout: int) -> None:
    if str(account.settings.get("mode") or "polling") != "polling":
        # Webhook mode: Telegram pushes to our view; nothing to poll. Check again later (the mode may change).
        stop.wait(60)
        return
    account_health(account=account, health=ChannelAccount.Health.OK, detail="polling")
    while not stop.is_set():
        telegram_poll_once(account=account, timeout=timeout)


def webhook_url(account: ChannelAccount) -> str:
    path = reverse("telegram-webhook", kwargs={"public_id": account.public_id})
    return str(account.settings.get("webhook_url") or settings.PUBLIC_URL.rstrip("/") + path)


def telegram_webhook_set(*, account: ChannelAccount) -> str:
    """Register our webhook with Telegram, with a secret it echoes in every call (created here if missing)."""
    secret = str(account.secrets.get("webhook_secret") or "")
    if not secret:
        secret = secrets.token_urlsafe(32)
        account.secrets = {**account.secrets, "webhook_secret": secret}
        account.save(update_fields=["secrets"])
    url = webhook_url(account)
    connector: Any = connector_for(account)
    connector.set_webhook(url, secret_token=secret)
    return url


def telegram_webhook_delete(*, account: ChannelAccount) -> None:
    connector: Any = connector_for(account)
    connector.delete_webhook()
