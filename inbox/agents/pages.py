"""The agents' inbox: server-rendered pages (the conversation list, a conversation) and their form actions.

Plain HTML forms that POST and redirect (they work without JavaScript); inbox.js adds live updates, keyboard
shortcuts and the composer's niceties on top. Every page and action reads conversations through
``conversations_visible_to``: a conversation the agent may not see answers 404, the same as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from inbox.agents.models import CannedResponse
from inbox.agents.selectors import (
    InboxFilters,
    conversation_visible,
    conversations_visible_to,
    inbox_conversations,
    queue_counts,
    role_of,
)
from inbox.agents.services import canned_render, conversation_mark_read
from inbox.agents.views import MAX_REPLY_FILE_BYTES, MAX_REPLY_FILES  # one limit for the page and the API
from inbox.conversations.channels import connector_for, reply_mode
from inbox.conversations.models import Attachment, ChannelAccount, Conversation, Message
from inbox.conversations.services import (
    ReplyFile,
    ReplyRefused,
    conversation_assign,
    conversation_claim,
    conversation_move_to_private,
    conversation_set_language,
    conversation_set_priority,
    conversation_set_status,
    conversation_snooze,
    conversation_take_next,
    delivery_retry,
    note_create,
    reply_create,
)
from inbox.routing.models import AgentProfile, AgentQueue
from inbox.routing.services import agent_set_presence

CHANNEL_LABELS = {"email": "E-mail", "telegram": "Telegram", "x": "X", "webchat": "Web chat", "api": "API"}


def _user(request: HttpRequest) -> User:
    return cast(User, request.user)


def _visible(request: HttpRequest, conversation_id: int) -> Conversation:
    conversation = conversation_visible(user=request.user, conversation_id=conversation_id)
    if conversation is None:
        raise Http404("no such conversation")
    return conversation


# --- The list ---------------------------------------------------------------------------------------------------
@login_required
@require_GET
def inbox_list(request: HttpRequest) -> HttpResponse:
    filters = InboxFilters.from_query(request.GET)
    rows, more = inbox_conversations(user=request.user, filters=filters, page_size=settings.SWITCHBOARD_INBOX_PAGE_SIZE)
    context = {
        "nav": "inbox",
        "rows": rows,
        "more": more,
        "filters": filters,
        "next_page": filters.query(page=filters.page + 1) if more else None,
        "prev_page": filters.query(page=filters.page - 1) if filters.page > 1 else None,
        "channel_labels": CHANNEL_LABELS,
    }
    if request.GET.get("partial") == "rows":  # the live layer refreshes only the rows
        return render(request, "agents/_rows.html", context)
    role = role_of(request.user)
    counts = queue_counts(user=request.user)
    context.update(
        counts=counts,
        queue_links=[(c, filters.query(queue=c.queue.pk, page="")) for c in counts],
        all_queues_link=filters.query(queue="", page=""),
        channels=sorted(ChannelAccount.objects.filter(is_active=True).values_list("kind", flat=True).distinct()),
        agents=_assignable(role.is_manager, None),
        statuses=["open", "pending", "snoozed", "resolved", "all"],
        priorities=Conversation.Priority.choices,
    )
    return render(request, "agents/inbox.html", context)


def _assignable(is_manager: bool, queue_id: int | None) -> list[tuple[int, str]]:
    """Whom the caller may hand a conversation to: agents of its queue; managers: anyone with a profile."""
    users = get_user_model().objects.filter(is_active=True, agent_profile__isnull=False)
    if not is_manager and queue_id is not None:
        users = users.filter(agent_profile__queues=queue_id)
    return [(u.pk, u.get_username()) for u in users.order_by("username").distinct()[:200]]


@login_required
@require_POST
def take_next(request: HttpRequest) -> HttpResponse:
    conversation = conversation_take_next(actor=_user(request))
    if conversation is None:
        messages.info(request, "Nothing is waiting in your queues.")
        return redirect("inbox")
    messages.success(request, f"You took conversation #{conversation.pk}.")
    return redirect("inbox-conversation", conversation.pk)


@login_required
@require_POST
def presence_set(request: HttpRequest) -> HttpResponse:
    try:
        agent_set_presence(user=_user(request), presence=request.POST.get("presence", ""))
    except (ValueError, AgentProfile.DoesNotExist):
        messages.error(request, "Your status could not be changed: you have no agent profile or the value is unknown.")
    back = request.POST.get("next") or request.headers.get("Referer") or ""
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("inbox")
    return redirect(back)


# --- A conversation ---------------------------------------------------------------------------------------------
@login_required
@require_GET
def conversation_page(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = _visible(request, conversation_id)
    user = _user(request)
    role = role_of(user)
    before = request.GET.get("before", "")
    timeline, earlier = _timeline(request, conversation, int(before) if before.isdigit() else None)
    conversation_mark_read(conversation=conversation, user=user, read_at=getattr(conversation, "read_at", None))
    context: dict[str, Any] = {
        "nav": "inbox",
        "c": conversation,
        "timeline": timeline,
        "earlier": earlier,
        "channel_labels": CHANNEL_LABELS,
    }
    if request.GET.get("partial") == "timeline":
        return render(request, "agents/_timeline.html", context)
    mode = reply_mode(connector_for(conversation.account), conversation.thread_key)
    canned = [
        (c, canned_render(canned=c, conversation=conversation, agent=user))
        for c in CannedResponse.objects.filter(language__in=[conversation.language, ""]).order_by("shortcut")[:100]
    ]
    draft = request.session.pop(f"draft:{conversation.pk}", None) or {}
    context.update(
        mode=mode,
        canned=canned,
        identities=list(conversation.contact.identities.order_by("kind", "handle")[:50]),
        queues=list(AgentQueue.objects.filter(is_active=True).order_by("is_fallback", "name")),
        agents=_assignable(role.is_manager, conversation.queue_id),
        statuses=Conversation.Status.choices,
        priorities=Conversation.Priority.choices,
        snooze_presets=_snooze_presets(),
        draft=draft,
        max_files=MAX_REPLY_FILES,
        max_file_mb=MAX_REPLY_FILE_BYTES // 2**20,
    )
    return render(request, "agents/conversation.html", context)


def _timeline(request: HttpRequest, conversation: Conversation, before: int | None) -> tuple[list[Message], int | None]:
    """The contact's latest messages across every channel and identity — from the conversations this agent may
    see — oldest first; and the id to page back from when there are earlier ones. Three queries, any size."""
    visible = conversations_visible_to(request.user).filter(contact_id=conversation.contact_id).values("pk")
    # Few joins per statement (planning a 7-table join cost more than running it): the account with the message,
    # the rest prefetched by id. The account's secrets and poll state are not needed here.
    qs = (
        Message.objects.filter(conversation__in=visible)
        .select_related("conversation__account")
        .defer("conversation__account__secrets", "conversation__account__cursor")
        .prefetch_related("attachments", "delivery", "author", "sender_identity")
    )
    if before is not None:
        pivot = Message.objects.filter(pk=before).values_list("created_at", flat=True).first()
        if pivot is not None:
            qs = qs.filter(Q(created_at__lt=pivot) | Q(created_at=pivot, pk__lt=before))
    size = settings.SWITCHBOARD_TIMELINE_PAGE_SIZE
    page = list(qs.order_by("-created_at", "-id")[: size + 1])
    earlier = page[size - 1].pk if len(page) > size else None
    return list(reversed(page[:size])), earlier


def _snooze_presets() -> list[tuple[str, str]]:
    now = timezone.localtime()
    tomorrow = (now + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    monday = (now + timedelta(days=7 - now.weekday())).replace(hour=9, minute=0, second=0, microsecond=0)
    return [
        ((now + timedelta(hours=1)).isoformat(), "1 hour"),
        ((now + timedelta(hours=4)).isoformat(), "4 hours"),
        (tomorrow.isoformat(), "Tomorrow 9:00"),
        (monday.isoformat(), "Next Monday 9:00"),
    ]


# --- Actions on a conversation (POST, then back to the page) --------------------------------------------------
Action = Callable[[HttpRequest, Conversation], str]


def _reply(request: HttpRequest, c: Conversation) -> str:
    text = request.POST.get("text", "")
    uploads = request.FILES.getlist("files")
    if len(uploads) > MAX_REPLY_FILES:
        raise ReplyRefused(f"At most {MAX_REPLY_FILES} files per reply.")
    files = []
    for upload in uploads:
        if upload.size is None or upload.size > MAX_REPLY_FILE_BYTES:
            raise ReplyRefused(f"{upload.name} is larger than {MAX_REPLY_FILE_BYTES // 2**20} MB.")
        files.append(ReplyFile(str(upload.name or "file"), upload.read()))
    if request.POST.get("kind") == "note":
        if files:
            raise ReplyRefused("Notes cannot carry files; send them as a reply or leave the note without them.")
        note_create(conversation=c, author=_user(request), text=text)
        return "Note added (only agents see it)."
    if request.POST.get("private"):
        message = conversation_move_to_private(conversation=c, author=_user(request), text=text, files=files)
        return f"Sent as a private message in conversation #{message.conversation_id}."
    reply_create(conversation=c, author=_user(request), text=text, files=files, thread=bool(request.POST.get("thread")))
    return "Reply queued for sending."


def _assign(request: HttpRequest, c: Conversation) -> str:
    value = request.POST.get("assignee", "")
    assignee = get_user_model().objects.filter(pk=int(value)).first() if value.isdigit() else None
    if value and assignee is None:
        raise ReplyRefused("No such agent.")
    conversation_assign(conversation=c, assignee=cast(User | None, assignee), actor=_user(request))
    return f"Assigned to {assignee.get_username()}." if assignee else "Unassigned."


def _claim(request: HttpRequest, c: Conversation) -> str:
    conversation_claim(conversation=c, actor=_user(request))
    return "It is yours."


def _language(request: HttpRequest, c: Conversation) -> str:
    language = request.POST.get("language", "")
    moved = conversation_set_language(conversation=c, language=language, actor=_user(request))
    queue = moved.queue.name if moved.queue else "no queue"
    return f"Language set to {language or 'unknown'}: now in {queue}."


def _status(request: HttpRequest, c: Conversation) -> str:
    status = request.POST.get("status", "")
    conversation_set_status(conversation=c, status=status, actor=_user(request))
    return {"resolved": "Resolved.", "open": "Reopened.", "pending": "Waiting on the customer."}.get(status, "Done.")


def _snooze(request: HttpRequest, c: Conversation) -> str:
    raw = request.POST.get("until", "")
    until = parse_datetime(raw) if raw else None
    if until is None:
        raise ReplyRefused("Pick when the conversation should come back.")
    if timezone.is_naive(until):
        until = timezone.make_aware(until)
    conversation_snooze(conversation=c, until=until, actor=_user(request))
    return f"Snoozed until {timezone.localtime(until):%a %d %b %H:%M}."


def _priority(request: HttpRequest, c: Conversation) -> str:
    value = request.POST.get("priority", "")
    if not value.lstrip("-").isdigit():
        raise ReplyRefused("Unknown priority.")
    conversation_set_priority(conversation=c, priority=int(value), actor=_user(request))
    return "Priority changed."


ACTIONS: dict[str, Action] = {
    "reply": _reply,
    "assign": _assign,
    "claim": _claim,
    "language": _language,
    "status": _status,
    "snooze": _snooze,
    "priority": _priority,
}


@login_required
@require_POST
def conversation_action(request: HttpRequest, conversation_id: int, action: str) -> HttpResponse:
    handler = ACTIONS.get(action)
    if handler is None:
        raise Http404("no such action")
    conversation = _visible(request, conversation_id)
    try:
        done = handler(request, conversation)
    except (ReplyRefused, ValueError) as exc:
        messages.error(request, str(exc))
        if action == "reply":  # nothing typed is lost: the page puts it back in the box
            request.session[f"draft:{conversation.pk}"] = {
                "text": request.POST.get("text", ""),
                "kind": request.POST.get("kind", "reply"),
            }
        return redirect("inbox-conversation", conversation.pk)
    messages.success(request, done)
    if not conversations_visible_to(request.user).filter(pk=conversation.pk).exists():
        return redirect("inbox")  # re-routed to a queue this agent does not serve
    return redirect(reverse("inbox-conversation", args=[conversation.pk]) + ("#composer" if action == "reply" else ""))


def _own_message(request: HttpRequest, message_id: int) -> Message:
    message = (
        Message.objects.select_related("conversation")
        .filter(pk=message_id, conversation__in=conversations_visible_to(request.user).values("pk"))
        .first()
    )
    if message is None:
        raise Http404("no such message")
    return message


@login_required
@require_POST
def message_retry(request: HttpRequest, message_id: int) -> HttpResponse:
    message = _own_message(request, message_id)
    try:
        delivery_retry(message=message, actor=_user(request), resend_uncertain=request.POST.get("confirm") == "1")
        messages.success(request, "Sending again.")
    except ReplyRefused as exc:
        messages.error(request, str(exc))
    return redirect(reverse("inbox-conversation", args=[message.conversation_id]) + f"#m{message.pk}")


# E-mail HTML, already sanitised with nh3 at intake, shown in a frame that can do nothing: no script, no form,
# no plugin, no request anywhere (remote images are tracking pixels), its own origin (CSP sandbox).
EMAIL_FRAME_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; base-uri 'none'"


@login_required
@require_GET
def message_html(request: HttpRequest, message_id: int) -> HttpResponse:
    message = _own_message(request, message_id)
    if not message.html:
        raise Http404("this message has no HTML part")
    page = f'<!doctype html><meta charset="utf-8"><base target="_blank">{message.html}'
    response = HttpResponse(page, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = EMAIL_FRAME_POLICY
    response["X-Content-Type-Options"] = "nosniff"
    response["X-Frame-Options"] = "SAMEORIGIN"
    response["Referrer-Policy"] = "no-referrer"
    return response


@login_required
@require_GET
def attachment_download(request: HttpRequest, attachment_id: int) -> FileResponse:
    """Always a download (never rendered inline: an SVG or HTML file from a customer would run in our origin)."""
    attachment = (
        Attachment.objects.filter(
            pk=attachment_id, message__conversation__in=conversations_visible_to(request.user).values("pk")
        )
        .only("file", "filename", "content_type")
        .first()
    )
    if attachment is None:
        raise Http404("no such attachment")
    response = FileResponse(attachment.file.open("rb"), as_attachment=True, filename=attachment.filename)
    response["Content-Type"] = "application/octet-stream"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


__all__ = [
    "attachment_download",
    "conversation_action",
    "conversation_page",
    "inbox_list",
    "message_html",
    "message_retry",
    "presence_set",
    "take_next",
]
