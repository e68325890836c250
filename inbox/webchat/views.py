"""The visitor API the widget talks to. Authentication: ``Authorization: Bearer <visitor token>``."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from inbox.common.http import BadRequest, error, field_str, json_body
from inbox.conversations.models import ChannelAccount, Message
from inbox.webchat.models import Visitor
from inbox.webchat.selectors import visitor_for_token, visitor_messages
from inbox.webchat.services import visitor_create, visitor_post


def _visitor(request: HttpRequest) -> Visitor | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return visitor_for_token(token=token.strip())


def _message_json(message: Message) -> dict[str, object]:
    delivery = getattr(message, "delivery", None) if message.direction == Message.Direction.OUTBOUND else None
    return {
        "id": message.pk,
        "from": "visitor" if message.direction == Message.Direction.INBOUND else "agent",
        "text": message.text,
        "client_id": message.external_id.partition(":")[2] if message.direction == Message.Direction.INBOUND else None,
        "created_at": message.created_at.isoformat(),
        "state": delivery.state if delivery is not None else None,
    }


@csrf_exempt
@require_http_methods(["POST"])
def session_create(request: HttpRequest, public_id: str) -> JsonResponse:
    account = ChannelAccount.objects.filter(public_id=public_id, kind="webchat", is_active=True).first()
    if account is None:
        return error("no active web chat channel has this key", 404)
    try:
        data = json_body(request) if request.body else {}
        name = field_str(data, "name", required=False, max_length=200)
        email = field_str(data, "email", required=False, max_length=254)
    except BadRequest as exc:
        return error(str(exc), exc.status)
    visitor, token = visitor_create(account=account, name=name, email=email)
    return JsonResponse({"visitor": str(visitor.uuid), "token": token}, status=201)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def messages(request: HttpRequest) -> JsonResponse:
    visitor = _visitor(request)
    if visitor is None:
        return error("missing or unknown visitor token", 401)
    if request.method == "GET":
        try:
            after = int(request.GET.get("after", "0"))
        except ValueError:
            return error("'after' must be a message id (an integer)", 400)
        return JsonResponse({"messages": [_message_json(m) for m in visitor_messages(visitor=visitor, after_id=after)]})
    try:
        data = json_body(request)
        text = field_str(data, "text", max_length=settings.SWITCHBOARD_MAX_MESSAGE_CHARS)
        raw_client_id = field_str(data, "client_id")
        try:
            client_id = uuid.UUID(raw_client_id)
        except ValueError as exc:
            raise BadRequest("field 'client_id' must be a UUID") from exc
        if not text.strip():
            raise BadRequest("field 'text' must not be empty")
    except BadRequest as exc:
        return error(str(exc), exc.status)
    created = visitor_post(
        visitor=visitor,
        client_id=client_id,
        text=text,
        accept_language=request.headers.get("Accept-Language", ""),
    )
    return JsonResponse(
        {"client_id": str(client_id), "accepted": True, "duplicate": not created},
        status=202 if created else 200,
    )
