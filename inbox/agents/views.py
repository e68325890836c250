"""The agents' JSON API (the inbox UI builds on it). Session authentication; CSRF applies to writes.

An id that exists but is not visible to the caller answers 404, like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth import logout
from django.contrib.auth.models import User
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_http_methods

from inbox.agents.auth import sign_in
from inbox.agents.selectors import conversation_messages, conversations_visible_to
from inbox.common.http import BadRequest, error, field_str, json_body
from inbox.conversations.channels import connector_for, reply_mode
from inbox.conversations.models import Conversation, Message
from inbox.conversations.services import (
    ReplyFile,
    ReplyRefused,
    conversation_move_to_private,
    conversation_set_language,
    conversation_set_status,
    reply_create,
)
from inbox.routing.services import agent_set_presence

View = Callable[..., JsonResponse]

MAX_REPLY_FILES = 10
MAX_REPLY_FILE_BYTES = 20 * 2**20  # Telegram's bots may send up to 50 MB, most mail servers take 20-25 MB


def agent_api(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not request.user.is_authenticated:
            return error("sign in first", 401)
        try:
            return view(request, *args, **kwargs)
        except BadRequest as exc:
            return error(str(exc), exc.status)
        except ReplyRefused as exc:
            return error(str(exc), 422)

    return wrapper


def _conversation_json(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.pk,
        "channel": c.account.kind,
        "account": c.account.name,
        "contact": c.contact.name or c.identity.display_name or c.identity.handle,
        "language": c.language,
        "queue": c.queue.name if c.queue else None,
        "queue_id": c.queue_id,
        "status": c.status,
        "priority": c.priority,
        "assignee": c.assignee_id,
        "subject": c.subject,
        "waiting_since": c.waiting_since.isoformat() if c.waiting_since else None,
        "last_message_at": c.last_message_at.isoformat() if c.last_message_at else None,
    }


def _message_json(m: Message) -> dict[str, Any]:
    delivery = getattr(m, "delivery", None) if m.direction == Message.Direction.OUTBOUND else None
    return {
        "id": m.pk,
        "direction": m.direction,
        "text": m.text,
        "language": m.language,
        "language_confidence": round(m.language_confidence, 3),
        "author": m.author_id,
        "created_at": m.created_at.isoformat(),
        "delivery": None
        if delivery is None
        else {
            "state": delivery.state,
            "attempts": delivery.attempts,
            "next_attempt_at": delivery.next_attempt_at.isoformat() if delivery.next_attempt_at else None,
            "error": delivery.last_error,
        },
    }


def _user(request: HttpRequest) -> User:
    """The signed-in user (agent_api has already answered 401 to anyone else)."""
    return cast(User, request.user)


def _get(request: HttpRequest, conversation_id: int) -> Conversation | None:
    return conversations_visible_to(request.user).filter(pk=conversation_id).first()


@require_http_methods(["GET"])
@agent_api
def conversation_list(request: HttpRequest) -> JsonResponse:
    qs = conversations_visible_to(request.user)
    status = request.GET.get("status", "open")
    if status != "all":
        qs = qs.filter(status=status)
    if "queue" in request.GET:
        try:
            qs = qs.filter(queue_id=int(request.GET["queue"]))
        except ValueError as exc:
            raise BadRequest("'queue' must be a queue id (an integer)") from exc
    if "language" in request.GET:
        qs = qs.filter(language=request.GET["language"])
    qs = qs.order_by("-priority", "waiting_since", "-last_message_at")[:100]
    return JsonResponse({"conversations": [_conversation_json(c) for c in qs]})


@require_http_methods(["GET"])
@agent_api
def conversation_detail(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conversation = _get(request, conversation_id)
    if conversation is None:
        return error("no such conversation", 404)
    return JsonResponse(
        {
            "conversation": {**_conversation_json(conversation), "reply_mode": _reply_mode_json(conversation)},
            "messages": [_message_json(m) for m in conversation_messages(conversation=conversation)],
        }
    )


def _reply_mode_json(c: Conversation) -> dict[str, Any]:
    """What the composer shows: who will see the reply (private / public) and how long it may be."""
    mode = reply_mode(connector_for(c.account), c.thread_key)
    return {
        "visibility": mode.visibility,
        "label": mode.label,
        "max_text_length": mode.max_text_length,
        "max_thread_parts": mode.max_thread_parts,
        "can_move_to_private": bool(mode.private_thread_key),
    }


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if isinstance(value, str):  # multipart form fields
        value = value.strip().lower() in ("1", "true", "yes", "on")
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false")
    return value


@require_http_methods(["POST"])
@agent_api
def conversation_reply(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conversation = _get(request, conversation_id)
    if conversation is None:
        return error("no such conversation", 404)
    files: list[ReplyFile] = []
    if (request.content_type or "") == "multipart/form-data":
        # A reply with attachments: fields "text", optional "reply_to", and any number of "files".
        data: dict[str, Any] = {
            "text": request.POST.get("text"),
            "reply_to": request.POST.get("reply_to") or None,
            "thread": request.POST.get("thread", "false"),
            "private": request.POST.get("private", "false"),
        }
        uploads = request.FILES.getlist("files")
        if len(uploads) > MAX_REPLY_FILES:
            raise BadRequest(f"at most {MAX_REPLY_FILES} files per reply")
        for upload in uploads:
            if upload.size is None or upload.size > MAX_REPLY_FILE_BYTES:
                raise BadRequest(f"{upload.name} is larger than {MAX_REPLY_FILE_BYTES // 2**20} MiB", status=413)
            files.append(ReplyFile(str(upload.name or "file"), upload.read()))
    else:
        data = json_body(request)
    text = field_str(data, "text")
    reply_to = None
    if data.get("reply_to") is not None:
        reply_to = conversation.messages.filter(pk=data["reply_to"], direction=Message.Direction.INBOUND).first()
        if reply_to is None:
            raise BadRequest("'reply_to' is not a customer message of this conversation")
    if _flag(data, "private"):
        # "Move to DM": answer a public conversation (an X mention) by private message instead.
        if reply_to is not None:
            raise BadRequest("'reply_to' does not apply to a reply moved to a private message")
        message = conversation_move_to_private(conversation=conversation, author=_user(request), text=text, files=files)
    else:
        message = reply_create(
            conversation=conversation,
            author=_user(request),
            text=text,
            reply_to=reply_to,
            files=files,
            thread=_flag(data, "thread"),
        )
    message = Message.objects.select_related("delivery").get(pk=message.pk)
    body = _message_json(message)
    body["attachments"] = [
        {"filename": a.filename, "content_type": a.content_type, "size": a.size} for a in message.attachments.all()
    ]
    # A reply moved to a private message lives in another conversation: say which.
    body["conversation"] = message.conversation_id
    body["visibility"] = message.metadata.get("visibility", "private")
    body["thread"] = bool(message.metadata.get("thread"))
    return JsonResponse({"message": body}, status=201)


@require_http_methods(["POST"])
@agent_api
def conversation_language(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conversation = _get(request, conversation_id)
    if conversation is None:
        return error("no such conversation", 404)
    language = field_str(json_body(request), "language", max_length=16)
    conversation_set_language(conversation=conversation, language=language, actor=_user(request))
    # After a re-route the conversation may sit in a queue this agent does not serve: say so.
    moved = Conversation.objects.select_related("account", "queue", "identity", "contact").get(pk=conversation_id)
    return JsonResponse(
        {
            "conversation": _conversation_json(moved),
            "still_visible": _get(request, conversation_id) is not None,
        }
    )


@require_http_methods(["POST"])
@agent_api
def conversation_status(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conversation = _get(request, conversation_id)
    if conversation is None:
        return error("no such conversation", 404)
    status = field_str(json_body(request), "status", max_length=16)
    conversation = conversation_set_status(conversation=conversation, status=status, actor=_user(request))
    return JsonResponse({"id": conversation.pk, "status": conversation.status})


@require_http_methods(["POST"])
@agent_api
def presence(request: HttpRequest) -> JsonResponse:
    value = field_str(json_body(request), "presence", max_length=16)
    try:
        profile = agent_set_presence(user=_user(request), presence=value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return JsonResponse({"presence": profile.presence})


@ensure_csrf_cookie
@require_http_methods(["GET", "POST", "DELETE"])
@sensitive_variables("password", "data")
def session(request: HttpRequest) -> JsonResponse:
    """GET: who am I (and a CSRF cookie); POST {username, password}: sign in; DELETE: sign out.

    Signing in follows the sign-in page's rules (inbox/agents/auth.py): the same throttle (429 with Retry-After,
    refused before the password is checked) and the same "who may sign in".
    """
    if request.method == "GET":
        user = request.user
        return JsonResponse(
            {"authenticated": user.is_authenticated, "username": user.get_username() if user.is_authenticated else None}
        )
    if request.method == "DELETE":
        logout(request)
        return JsonResponse({"authenticated": False})
    try:
        data = json_body(request)
        username = field_str(data, "username", max_length=150)
        password = field_str(data, "password", max_length=1000)
    except BadRequest as exc:
        return error(str(exc), exc.status)
    result = sign_in(request, username=username, password=password)
    if result.retry_after is not None:
        response = JsonResponse({"error": result.throttled_message, "retry_after": result.retry_after}, status=429)
        response["Retry-After"] = str(result.retry_after)
        return response
    if result.user is None:
        return error("wrong username or password", 401)
    return JsonResponse({"authenticated": True, "username": result.user.get_username()})
