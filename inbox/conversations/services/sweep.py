"""The sweeper: re-enqueues what a lost broker message or a dead worker left behind."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from inbox.conversations.models import (
    InboundEvent,
    OutboundDelivery,
)
from inbox.conversations.services.actions import conversations_wake
from inbox.conversations.services.intake import _chunks
from inbox.taskqueue import PROCESS_INBOUND, SEND_DELIVERY, enqueue

logger = logging.getLogger(__name__)


# --- Sweep ------------------------------------------------------------------------------------------------
@dataclass
class SweepReport:
    events: int = 0
    deliveries: int = 0
    uncertain: int = 0
    woken: int = 0  # snoozed conversations whose time had come, back to open


def sweep_stuck_work(*, limit: int = 5000) -> SweepReport:
    """Re-enqueue what a lost broker message or a dead worker left behind. Safe to run anywhere, any time."""
    now = timezone.now()
    lease_expired = now - timedelta(seconds=settings.SWITCHBOARD_CLAIM_LEASE_SECONDS)
    report = SweepReport()
    due = (
        InboundEvent.objects.filter(state=InboundEvent.State.PENDING)
        .filter(Q(claimed_at__isnull=True, next_attempt_at__lte=now) | Q(claimed_at__lt=lease_expired))
        .order_by("id")
        .values_list("id", "attempts")[:limit]
    )
    fresh: list[int] = []
    retried: list[int] = []
    for event_id, attempts in due:
        (fresh if attempts == 0 else retried).append(event_id)
    for batch in _chunks(fresh, settings.SWITCHBOARD_INGEST_BATCH):
        enqueue(PROCESS_INBOUND, batch)
    for event_id in retried:
        enqueue(PROCESS_INBOUND, [event_id])  # alone, so a poison event cannot take a batch down with it
    report.events = len(fresh) + len(retried)

    # A worker that died mid-send: the provider may have the message. Do not resend blindly.
    report.uncertain = OutboundDelivery.objects.filter(
        state=OutboundDelivery.State.SENDING, claimed_at__lt=lease_expired
    ).update(
        state=OutboundDelivery.State.UNCERTAIN,
        last_error="the worker stopped during the send; the customer may or may not have it",
    )
    lost_after = now - timedelta(seconds=settings.SWITCHBOARD_SWEEP_AFTER_SECONDS)
    deliveries = list(
        OutboundDelivery.objects.filter(
            Q(state=OutboundDelivery.State.QUEUED, created_at__lt=lost_after, next_attempt_at__isnull=True)
            | Q(state__in=OutboundDelivery.CLAIMABLE, next_attempt_at__lte=now)
        )
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    for delivery_id in deliveries:
        enqueue(SEND_DELIVERY, delivery_id)
    report.deliveries = len(deliveries)
    # Snoozes end here too: beat runs this every few seconds, so a conversation wakes within one sweep interval.
    report.woken = conversations_wake(now=now, limit=limit)
    if report.events or report.deliveries or report.uncertain or report.woken:
        logger.info(
            "sweep: re-enqueued %s events, %s deliveries; %s uncertain; %s snoozed conversations woken",
            report.events,
            report.deliveries,
            report.uncertain,
            report.woken,
        )
    return report
