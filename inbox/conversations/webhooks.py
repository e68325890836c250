"""Inbound webhooks. The event is stored before we answer 2xx: nothing is acknowledged before it is in the database."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from connectors import api as api_connector
from connectors.base import PermanentError
from inbox.common.http import error
from inbox.conversations.channels import connector_for
from inbox.conversations.models import ChannelAccount
from inbox.conversations.services import inbound_event_record, inbound_events_record

MAX_BODY = 512 * 1024


@csrf_exempt
@require_http_methods(["POST"])
def api_channel_events(request: HttpRequest, public_id: str) -> JsonResponse:
    """The API channel: the team's own app posts customer messages, signed with the channel's secret."""
    account = ChannelAccount.objects.filter(public_id=public_id, kind="api", is_active=True).first()
    if account is None:
        return error("no active API channel has this id", 404)
    body = request.body
    if len(body) > MAX_BODY:
        return error(f"body larger than {MAX_BODY} bytes", 413)
    # The signature covers the raw bytes, checked before the body is parsed (constant-time compare).
    if not api_connector.verify(
        str(account.secrets.get("signing_secret", "")),
        body,
        request.headers.get(api_connector.SIGNATURE_HEADER),
    ):
        return error("missing or wrong signature", 403)
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error(f"body is not valid JSON: {exc}", 400)
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str) or not payload["id"]:
        return error("body must be a JSON object with a string 'id' (your message id, used to drop duplicates)", 400)
    created = inbound_event_record(account=account, external_id=payload["id"], payload=payload)
    return JsonResponse({"accepted": True, "duplicate": not created}, status=202 if created else 200)


TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret


@csrf_exempt
@require_http_methods(["POST"])
def telegram_webhook(request: HttpRequest, public_id: str) -> JsonResponse:
    """Telegram's webhook (https://core.telegram.org/bots/api#setwebhook). The secret header is checked in constant
    time before anything is parsed or stored; the update is stored before we answer 200 (Telegram retries
    anything else), and a retried update is dropped by UNIQUE(bot, update_id)."""
    account = ChannelAccount.objects.filter(public_id=public_id, kind="telegram", is_active=True).first()
    if account is None:
        return error("no active Telegram channel has this id", 404)
    received = request.headers.get(TELEGRAM_SECRET_HEADER)
    if not received:
        return error("missing secret token header", 401)
    connector: Any = connector_for(account)
    if not connector.verify_webhook(received):
        return error("wrong secret token", 403)
    if len(request.body) > MAX_BODY:
        return error(f"body larger than {MAX_BODY} bytes", 413)
    try:
        update = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error(f"body is not valid JSON: {exc}", 400)
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
        return error("body must be a Telegram Update with an integer update_id", 400)
    created = inbound_event_record(account=account, external_id=str(update["update_id"]), payload=update)
    return JsonResponse({"ok": True, "duplicate": not created})


X_SIGNATURE_HEADER = "X-Twitter-Webhooks-Signature"


@csrf_exempt
@require_http_methods(["GET", "POST"])
def x_webhook(request: HttpRequest, public_id: str) -> JsonResponse:
    """X's Account Activity webhook. GET is the CRC challenge (answered with the HMAC of crc_token under the app's
    consumer secret); every POST must carry a valid x-twitter-webhooks-signature over the raw body, checked before
    anything is parsed or stored. Each DM / post in the body is stored as its own event under the id polling would
    give it (dm:<id>, tweet:<id>), so a redelivery or an overlap with polling is stored once."""
    account = ChannelAccount.objects.filter(public_id=public_id, kind="x", is_active=True).first()
    if account is None:
        return error("no active X channel has this id", 404)
    connector: Any = connector_for(account)
    if request.method == "GET":
        crc_token = request.GET.get("crc_token", "")
        if not crc_token:
            return error("missing crc_token", 400)
        try:
            return JsonResponse(connector.crc_response(crc_token))
        except PermanentError as exc:  # not a token's shape: never sign it (connectors/x/webhook.py)
            return error(str(exc), 400)
    body = request.body
    received = request.headers.get(X_SIGNATURE_HEADER)
    if not received:
        return error("missing x-twitter-webhooks-signature header", 401)
    if not connector.verify_signature(body, received):
        return error("wrong signature", 403)
    if len(body) > MAX_BODY:
        return error(f"body larger than {MAX_BODY} bytes", 413)
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error(f"body is not valid JSON: {exc}", 400)
    if not isinstance(payload, dict):
        return error("body must be a JSON object (an Account Activity event)", 400)
    target = x_account_for_user(account, str(payload.get("for_user_id") or ""))
    if target is None:
        # One app's webhook carries every subscribed account: this one is not connected here. Acknowledge it,
        # or X would retry it.
        return JsonResponse({"accepted": 0, "ignored": ["for_user_id of no active X channel"]})
    events, ignored = connector.split_webhook(payload)
    new = inbound_events_record(account=target, events=events) if events else []
    return JsonResponse({"accepted": len(new), "duplicates": len(events) - len(new), "ignored": ignored})


def x_account_for_user(account: ChannelAccount, for_user_id: str) -> ChannelAccount | None:
    """The X channel an Account Activity event belongs to: this one, or another active X channel of the same app
    whose user it is. None when no channel has that user (never stored under the wrong account)."""
    own = str(account.settings.get("user_id") or "")
    if not for_user_id or for_user_id == own:
        return account
    other = ChannelAccount.objects.filter(kind="x", is_active=True, settings__user_id=for_user_id).first()
    if other is not None:
        return other
    # This channel's own id is not known yet (never tested nor polled): the event can only be its own.
    return None if own else account
