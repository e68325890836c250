"""X (Twitter) intake: polling DMs and mentions within the rate limits, and the Account Activity webhook's
registration. Each poll's events and the advanced cursor are committed together; the provider's ids are the
events' external ids, so what the webhook and polling both deliver is stored once.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from connectors.base import RateLimited
from inbox.conversations.channels import connector_for
from inbox.conversations.mail import account_health
from inbox.conversations.models import ChannelAccount
from inbox.conversations.services import inbound_events_record

logger = logging.getLogger(__name__)

# What is polled, and where its position is kept in ChannelAccount.cursor.
STREAMS = {"dm": "dm_newest_id", "mentions": "mentions_newest_id"}
# In webhook mode X pushes; a slow poll still catches what a webhook outage missed (ids dedupe the overlap).
DEFAULT_CATCHUP_SECONDS = 900.0


def x_account_user_id(account: ChannelAccount, connector: Any | None = None) -> str:
    """Our X user id (settings["user_id"]); asked once from GET /2/users/me and kept in the settings."""
    user_id = str(account.settings.get("user_id") or "")
    if user_id:
        return user_id
    client: Any = connector or connector_for(account)
    user_id = str(client.me()["id"])
    ChannelAccount.objects.filter(pk=account.pk).update(settings={**account.settings, "user_id": user_id})
    account.settings = {**account.settings, "user_id": user_id}
    return user_id


def x_poll_stream(*, account: ChannelAccount, stream: str) -> float:
    """One polling round of one stream ("dm" or "mentions"): every page since the stored position, stored with the
    new position in one transaction. Returns the seconds until this stream should be polled again (spread over
    what the rate limit has left; until the reset after a 429)."""
    connector: Any = connector_for(account)
    key = STREAMS[stream]
    cursor = ChannelAccount.objects.values_list("cursor", flat=True).get(pk=account.pk) or {}
    try:
        fetch = (
            connector.fetch_dm_events(cursor.get(key)) if stream == "dm" else connector.fetch_mentions(cursor.get(key))
        )
    except RateLimited as exc:
        until = timezone.now() + timedelta(seconds=exc.retry_after)
        logger.warning("x %s: %s rate limited; next poll at %s", account.name, stream, f"{until:%H:%M:%S}")
        account_health(
            account=account,
            health=ChannelAccount.Health.DEGRADED,
            detail=f"X rate limit for {stream}; polling again at {until:%H:%M:%S} UTC",
        )
        return max(1.0, exc.retry_after)
    if not fetch.complete and cursor.get(key):
        # X lists newest first and has no "since" for DMs: past the page limit, older items cannot be fetched later.
        logger.warning(
            "x %s: %s backlog larger than the page limit; the oldest items were not fetched", account.name, stream
        )
        account_health(
            account=account,
            health=ChannelAccount.Health.DEGRADED,
            detail=f"{stream}: the backlog was larger than the page limit; the oldest items were not fetched",
        )
    newest = fetch.newest_id or cursor.get(key)
    if fetch.events or newest != cursor.get(key):
        new = inbound_events_record(account=account, events=fetch.events, cursor={**cursor, key: newest})
        logger.info(
            "x %s: %s %s events (%s new), position %s", account.name, len(fetch.events), stream, len(new), newest
        )
    return float(connector.next_poll_delay(fetch.rate))


def x_session(account: ChannelAccount, stop: threading.Event) -> None:
    """Poll DMs and mentions, each on its own schedule, until stop. In webhook mode only a slow catch-up poll."""
    connector: Any = connector_for(account)
    x_account_user_id(account, connector)
    webhook = str(account.settings.get("mode") or "polling") == "webhook"
    catchup = float(account.settings.get("catchup_seconds") or DEFAULT_CATCHUP_SECONDS)
    streams = [s for s in account.settings.get("streams") or list(STREAMS) if s in STREAMS]
    account_health(
        account=account,
        health=ChannelAccount.Health.OK,
        detail=f"webhook, catch-up poll every {catchup:.0f} s" if webhook else f"polling {', '.join(streams)}",
    )
    due = dict.fromkeys(streams, 0.0)
    while not stop.is_set() and due:
        for stream in streams:
            if due[stream] <= time.monotonic():
                delay = x_poll_stream(account=account, stream=stream)
                due[stream] = time.monotonic() + (max(delay, catchup) if webhook else delay)
        stop.wait(max(0.2, min(due.values()) - time.monotonic()))


def webhook_url(account: ChannelAccount) -> str:
    path = reverse("x-webhook", kwargs={"public_id": account.public_id})
    return str(account.settings.get("webhook_url") or settings.PUBLIC_URL.rstrip("/") + path)


def x_webhook_register(*, account: ChannelAccount) -> dict[str, Any]:
    """Register our webhook URL with X (which checks it with a CRC request first) and subscribe the account."""
    connector: Any = connector_for(account)
    # Events name the account they are for (for_user_id): its id must be known before X starts posting.
    x_account_user_id(account, connector)
    url = webhook_url(account)
    result: dict[str, Any] = connector.register_webhook(url)
    account.settings = {
        **account.settings,
        "webhook_id": result.get("webhook_id"),
        "webhook_url": url,
        "mode": "webhook",
    }
    account.save(update_fields=["settings"])
    return result
