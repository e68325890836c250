"""Inbound webhooks. The event is stored before we answer 2xx: nothing is acknowledged before it is in the database."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from connectors import api as api_connector
from inbox.common.http import error
from inbox.conversations.channels import connector_for
from inbox.conversations.models import ChannelAccount
from inbox.conversations.services import inbound_event_record

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
