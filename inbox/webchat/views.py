"""The visitor API the widget talks to (docs/webchat-widget.md). Authentication: ``Authorization: Bearer <token>``.

Browsers call it from the customer's website, so every answer carries CORS headers for the channel's allowed
origins (settings["allowed_origins"]; none set = any), and a request from another origin is refused. Posting is
rate limited per visitor and per IP address, with the wait in the answer.
"""

from __future__ import annotations

import functools
import gzip
import uuid
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from inbox.common import ratelimit
from inbox.common.http import BadRequest, client_ip, error, field_str, json_body
from inbox.conversations.models import ChannelAccount
from inbox.conversations.public import message_public_json
from inbox.webchat.models import Visitor
from inbox.webchat.selectors import (
    channel_config,
    visitor_attachment,
    visitor_for_token,
    visitor_messages,
    visitor_status,
)
from inbox.webchat.services import (
    VisitorFile,
    VisitorRefused,
    limit_setting,
    message_rate_limited,
    origin_allowed,
    visitor_continue_by_email,
    visitor_create,
    visitor_post,
    visitor_post_files,
)

WIDGET_JS = Path(__file__).resolve().parent / "static" / "switchboard" / "widget.js"
View = Callable[..., HttpResponseBase]


# --- Origin, CORS, limits ---------------------------------------------------------------------------------
def _cors(response: HttpResponseBase, request: HttpRequest) -> HttpResponseBase:
    origin = request.headers.get("Origin")
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response["Access-Control-Max-Age"] = "600"
        response["Vary"] = "Origin"
    return response


def _refused_origin() -> JsonResponse:
    return error("this website is not allowed to use this chat channel", 403)


def cors(view: View) -> View:
    """Preflight answered here; every answer carries the CORS headers (the origin check needs the channel, which
    the view knows: it calls ``origin_allowed``)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "OPTIONS":
            return _cors(HttpResponse(status=204), request)
        try:
            response: HttpResponseBase = view(request, *args, **kwargs)
        except BadRequest as exc:
            response = error(str(exc), exc.status)
        except VisitorRefused as exc:
            response = error(str(exc), exc.status)
        return _cors(response, request)

    return csrf_exempt(wrapper)


def _too_fast(wait: float) -> JsonResponse:
    response = JsonResponse(
        {"error": f"You are sending messages too fast. Try again in {wait:.0f} s.", "retry_after": wait}, status=429
    )
    response["Retry-After"] = str(max(1, round(wait)))
    return response


def _visitor(request: HttpRequest) -> Visitor | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return visitor_for_token(token=token.strip())


def _account(public_id: str) -> ChannelAccount | None:
    return ChannelAccount.objects.filter(public_id=public_id, kind="webchat", is_active=True).first()


def _client_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise BadRequest("field 'client_id' must be a UUID") from exc


# --- Endpoints --------------------------------------------------------------------------------------------
@cors
@require_http_methods(["GET", "OPTIONS"])
def config(request: HttpRequest, public_id: str) -> HttpResponse:
    account = _account(public_id)
    if account is None:
        return error("no active web chat channel has this key", 404)
    if not origin_allowed(account, request.headers.get("Origin")):
        return _refused_origin()
    return JsonResponse(channel_config(account=account, max_text=settings.SWITCHBOARD_MAX_MESSAGE_CHARS))


@cors
@require_http_methods(["POST", "OPTIONS"])
def session_create(request: HttpRequest, public_id: str) -> HttpResponse:
    account = _account(public_id)
    if account is None:
        return error("no active web chat channel has this key", 404)
    if not origin_allowed(account, request.headers.get("Origin")):
        return _refused_origin()
    data = json_body(request) if request.body else {}
    name = field_str(data, "name", required=False, max_length=200)
    email = field_str(data, "email", required=False, max_length=254)
    user_id = field_str(data, "user_id", required=False, max_length=200)
    user_hash = field_str(data, "user_hash", required=False, max_length=128)
    per_ip = limit_setting(
        account, "sessions_per_minute_per_ip", settings.SWITCHBOARD_WEBCHAT_SESSIONS_PER_MINUTE_PER_IP
    )
    wait = ratelimit.hit(f"wc:new:{account.pk}:{client_ip(request)}", limit=per_ip, window=60)
    if wait is not None:
        response = JsonResponse(
            {"error": f"Too many new chats from your network. Try again in {wait:.0f} s.", "retry_after": wait},
            status=429,
        )
        response["Retry-After"] = str(max(1, round(wait)))
        return response
    visitor, token = visitor_create(account=account, name=name, email=email, user_id=user_id, user_hash=user_hash)
    return JsonResponse({"visitor": str(visitor.uuid), "token": token}, status=201)


@cors
@require_http_methods(["GET", "POST", "OPTIONS"])
def messages(request: HttpRequest) -> HttpResponse:
    visitor = _visitor(request)
    if visitor is None:
        return error("missing or unknown visitor token", 401)
    if not origin_allowed(visitor.account, request.headers.get("Origin")):
        return _refused_origin()
    if request.method == "GET":
        try:
            after = int(request.GET.get("after", "0"))
        except ValueError:
            return error("'after' must be a message id (an integer)", 400)
        rows = visitor_messages(visitor=visitor, after_id=after)
        return JsonResponse({"messages": [message_public_json(m) for m in rows]})
    data = json_body(request)
    text = field_str(data, "text", max_length=settings.SWITCHBOARD_MAX_MESSAGE_CHARS)
    client_id = _client_id(field_str(data, "client_id"))
    if not text.strip():
        raise BadRequest("field 'text' must not be empty")
    wait = message_rate_limited(visitor, client_ip(request))
    if wait is not None:
        return _too_fast(wait)
    created = visitor_post(
        visitor=visitor, client_id=client_id, text=text, accept_language=request.headers.get("Accept-Language", "")
    )
    return JsonResponse(
        {"client_id": str(client_id), "accepted": True, "duplicate": not created}, status=202 if created else 200
    )


@cors
@require_http_methods(["POST", "OPTIONS"])
def attachments(request: HttpRequest) -> HttpResponse:
    visitor = _visitor(request)
    if visitor is None:
        return error("missing or unknown visitor token", 401)
    if not origin_allowed(visitor.account, request.headers.get("Origin")):
        return _refused_origin()
    if (request.content_type or "") != "multipart/form-data":
        raise BadRequest("send files as multipart/form-data (fields client_id, text, files)", status=415)
    client_id = _client_id(str(request.POST.get("client_id") or ""))
    text = str(request.POST.get("text") or "")
    if len(text) > settings.SWITCHBOARD_MAX_MESSAGE_CHARS:
        raise BadRequest(f"field 'text' is longer than {settings.SWITCHBOARD_MAX_MESSAGE_CHARS} characters", 413)
    wait = message_rate_limited(visitor, client_ip(request))
    if wait is not None:
        return _too_fast(wait)
    files = [VisitorFile(str(f.name or "file"), f.read()) for f in request.FILES.getlist("files")]
    created = visitor_post_files(
        visitor=visitor,
        client_id=client_id,
        text=text,
        files=files,
        accept_language=request.headers.get("Accept-Language", ""),
    )
    return JsonResponse(
        {"client_id": str(client_id), "accepted": True, "duplicate": not created}, status=202 if created else 200
    )


@cors
@require_http_methods(["GET", "OPTIONS"])
def attachment(request: HttpRequest, attachment_id: int) -> HttpResponseBase:
    visitor = _visitor(request)
    if visitor is None:
        return error("missing or unknown visitor token", 401)
    if not origin_allowed(visitor.account, request.headers.get("Origin")):
        return _refused_origin()
    found = visitor_attachment(visitor=visitor, attachment_id=attachment_id)
    if found is None:
        return error("no such file", 404)
    # Always a download with the stored type: an uploaded SVG or HTML can never run as a page of ours.
    response = FileResponse(found.file.open("rb"), as_attachment=True, filename=found.filename)
    response["Content-Type"] = found.content_type
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@cors
@require_http_methods(["GET", "OPTIONS"])
def status(request: HttpRequest) -> HttpResponse:
    visitor = _visitor(request)
    if visitor is None:
        return error("missing or unknown visitor token", 401)
    if not origin_allowed(visitor.account, request.headers.get("Origin")):
        return _refused_origin()
    return JsonResponse(visitor_status(visitor=visitor))


@cors
@require_http_methods(["POST", "OPTIONS"])
def contact(request: HttpRequest) -> HttpResponse:
    visitor = _visitor(request)
    if visitor is None:
        return error("missing or unknown visitor token", 401)
    if not origin_allowed(visitor.account, request.headers.get("Origin")):
        return _refused_origin()
    data = json_body(request)
    email = field_str(data, "email", max_length=254).strip()
    name = field_str(data, "name", required=False, max_length=200)
    local, at, domain = email.partition("@")
    if not (local and at and "." in domain and " " not in email):
        raise BadRequest("field 'email' must be an e-mail address")
    emailed = visitor_continue_by_email(visitor=visitor, email=email, name=name)
    return JsonResponse({"email": email, "emailed": emailed})


# --- The script and the demo page --------------------------------------------------------------------------
@functools.cache
def _widget_bytes() -> tuple[bytes, bytes]:
    raw = WIDGET_JS.read_bytes()
    return raw, gzip.compress(raw, compresslevel=9, mtime=0)


@require_http_methods(["GET"])
def widget_js(request: HttpRequest) -> HttpResponse:
    """The widget, served by the app itself (no static-files set-up needed for the one tag customers paste)."""
    raw, packed = _widget_bytes()
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
    response = HttpResponse(packed if gzipped else raw, content_type="text/javascript; charset=utf-8")
    if gzipped:
        response["Content-Encoding"] = "gzip"
    response["Vary"] = "Accept-Encoding"
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response


@require_http_methods(["GET"])
def demo(request: HttpRequest) -> HttpResponse:
    """A sample company page with the widget (``make run`` prints its URL)."""
    channels = ChannelAccount.objects.filter(kind="webchat", is_active=True)
    key = request.GET.get("key", "")
    account = (channels.filter(public_id=key) if key else channels.order_by("id")).first()
    if account is None:
        return HttpResponse("No web chat channel yet: add one in the admin (kind webchat).", status=404)
    return render(
        request,
        "webchat/demo.html",
        {"public_key": account.public_id, "lang": request.GET.get("lang", "")[:8], "account": account},
    )
