"""Small display helpers for the inbox templates (no business logic: words for states the services set)."""

from __future__ import annotations

from django import template
from django.utils import timezone

from inbox.conversations.models import Message, OutboundDelivery

register = template.Library()

State = OutboundDelivery.State


@register.simple_tag
def delivery_state(message: Message) -> dict[str, object]:
    """What the agent reads under a reply: sending, sent, retrying at HH:MM because …, failed because …"""
    delivery = getattr(message, "delivery", None)
    if message.direction != Message.Direction.OUTBOUND or delivery is None:
        return {}
    reason = (delivery.last_error or "").strip()
    at = f"{timezone.localtime(delivery.next_attempt_at):%H:%M}" if delivery.next_attempt_at else ""
    if delivery.state == State.SENT:
        text, retry = "sent", False
    elif delivery.state == State.SENDING:
        text, retry = "sending…", False
    elif delivery.state == State.QUEUED:
        # A provider's rate limit keeps it queued with the time it goes ("queued: X rate limit; sends at …").
        text, retry = (reason or "sending…"), False
    elif delivery.state == State.RETRY_WAIT:
        text = f"retrying at {at}" + (f" because {reason}" if reason else "")
        retry = True
    elif delivery.state == State.FAILED:
        text, retry = "failed" + (f" because {reason}" if reason else ""), True
    else:  # uncertain: it may have arrived; the agent decides
        text = "may not have arrived" + (f" ({reason})" if reason else "") + ": check before sending again"
        retry = True
    return {"state": delivery.state, "text": text, "retry": retry, "attempts": delivery.attempts}


@register.simple_tag
def dropped_files(message: Message) -> list[dict[str, str]]:
    """Files the channel sent that were not kept (too large, refused type), with the reason: e-mail records them
    at parsing, chat channels when the download is refused."""
    meta = message.metadata or {}
    listed = list(meta.get("dropped_attachments") or []) + list(meta.get("dropped_files") or [])
    return [
        {
            "name": str(f.get("filename") or f.get("file_name") or "a file"),
            "reason": str(f.get("reason") or ""),
        }
        for f in listed
        if isinstance(f, dict)
    ]


@register.simple_tag
def contact_label(contact: object, identity: object) -> str:
    """The name agents read: the contact's name, the channel's display name, else a short handle (a web visitor's
    handle is a UUID: "Web visitor 055c38")."""
    name = getattr(contact, "name", "") or getattr(identity, "display_name", "")
    if name:
        return str(name)
    handle = str(getattr(identity, "handle", "") or "")
    if getattr(identity, "kind", "") == "webchat":
        return f"Web visitor {handle[:6]}"
    return handle or "Unknown"
