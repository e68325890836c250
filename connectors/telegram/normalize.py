"""Telegram Update (a dict, as received by the webhook or getUpdates) -> InboundMessage values.

https://core.telegram.org/bots/api#update : "At most one of the optional parameters can be present in any given
update", so the update's type is the one key beside ``update_id``.

Handled: ``message`` and ``edited_message`` carrying customer content (text, media, location, venue, contact,
dice, poll, ...), and ``callback_query`` (a press on an inline keyboard button, stored as a message with its
data). Everything else (channel posts, membership changes, service messages such as "new chat members",
business messages, polls' answers, inline queries, payments ...) yields ``[]``: the caller acknowledges the update
and logs ``describe_update(payload)``. Nothing here downloads anything: files are referenced by ``file_id`` in
the metadata and fetched later with ``TelegramConnector.download_file``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from connectors.base import InboundMessage, PermanentError, Sender
from connectors.telegram.text import utf16_slice

HANDLED_UPDATE_TYPES = ("message", "edited_message", "callback_query")
PRIVATE_CHAT = "private"
GROUP_CHATS = ("group", "supergroup")

# https://core.telegram.org/bots/api#message : fields every message may carry that say nothing about its content.
_COMMON_FIELDS = frozenset(
    {
        "message_id",
        "message_thread_id",
        "direct_messages_topic",
        "from",
        "sender_chat",
        "sender_boost_count",
        "sender_business_bot",
        "date",
        "business_connection_id",
        "chat",
        "forward_origin",
        "forward_from",
        "forward_from_chat",
        "forward_from_message_id",
        "forward_signature",
        "forward_sender_name",
        "forward_date",
        "is_topic_message",
        "is_automatic_forward",
        "reply_to_message",
        "external_reply",
        "quote",
        "reply_to_story",
        "reply_to_checklist_task_id",
        "via_bot",
        "edit_date",
        "has_protected_content",
        "is_from_offline",
        "is_paid_post",
        "media_group_id",
        "author_signature",
        "paid_star_count",
        "entities",
        "caption_entities",
        "link_preview_options",
        "effect_id",
        "show_caption_above_media",
        "has_media_spoiler",
        "reply_markup",
        "suggested_post_info",
    }
)

# Files: https://core.telegram.org/bots/api#available-types (PhotoSize, Document, Audio, Voice, Video, VideoNote,
# Animation, Sticker). An animation message also carries the same file as "document", so it is checked first.
_FILE_KINDS = ("animation", "photo", "document", "audio", "voice", "video", "video_note", "sticker")

# Customer content that is not a file. Order matters: a venue message also carries its "location".
_OTHER_CONTENT = ("venue", "location", "contact", "dice", "poll", "story", "checklist", "rich_message")

# Content we store with a placeholder: a customer sent it on purpose, but it carries nothing an agent can answer.
_PLACEHOLDER_CONTENT = ("game", "invoice", "giveaway", "paid_media")

# Service messages (https://core.telegram.org/bots/api#message, "Service message: ..."): not written by the
# customer; acknowledged and ignored. Unknown fields (a newer Bot API) are ignored the same way, with their name
# in describe_update(), unless the message also has text or a caption.
_SERVICE_FIELDS = frozenset(
    {
        "new_chat_members",
        "left_chat_member",
        "new_chat_title",
        "new_chat_photo",
        "delete_chat_photo",
        "group_chat_created",
        "supergroup_chat_created",
        "channel_chat_created",
        "message_auto_delete_timer_changed",
        "migrate_to_chat_id",
        "migrate_from_chat_id",
        "pinned_message",
        "successful_payment",
        "refunded_payment",
        "users_shared",
        "user_shared",
        "chat_shared",
        "gift",
        "unique_gift",
        "connected_website",
        "write_access_allowed",
        "passport_data",
        "proximity_alert_triggered",
        "boost_added",
        "chat_background_set",
        "checklist_tasks_done",
        "checklist_tasks_added",
        "direct_message_price_changed",
        "paid_message_price_changed",
        "forum_topic_created",
        "forum_topic_edited",
        "forum_topic_closed",
        "forum_topic_reopened",
        "general_forum_topic_hidden",
        "general_forum_topic_unhidden",
        "giveaway_created",
        "giveaway_completed",
        "giveaway_winners",
        "video_chat_scheduled",
        "video_chat_started",
        "video_chat_ended",
        "video_chat_participants_invited",
        "web_app_data",
    }
)


# --- validation helpers -----------------------------------------------------------------------------------------
def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PermanentError(f"malformed Telegram update: {where}.{key} must be an integer, got {type(value).__name__}")
    return value


def _opt_int(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, where)


def _obj(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, Mapping):
        raise PermanentError(f"malformed Telegram update: {where}.{key} must be an object, got {type(value).__name__}")
    return value


def _opt_obj(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    return None if obj.get(key) is None else _obj(obj, key, where)


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PermanentError(f"malformed Telegram update: {where}.{key} must be a string, got {type(value).__name__}")
    return value


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop absent values (None, "", empty containers) but keep 0 and False."""
    return {key: value for key, value in values.items() if value is not None and value != "" and value != {}}


def _timestamp(value: int) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value > 0 else None


# --- classification ---------------------------------------------------------------------------------------------
def update_type(payload: Mapping[str, Any]) -> str:
    """The update's type: "message", "edited_message", "callback_query", "channel_post", "my_chat_member", ...

    "invalid" when the payload is not an object, "empty" when it carries nothing beside update_id.
    """
    if not isinstance(payload, Mapping):
        return "invalid"
    for key in payload:
        if key != "update_id":
            return str(key)
    return "empty"


def message_content_type(message: Mapping[str, Any]) -> str:
    """What a Message carries: "text", "photo", ..., "service:<field>" or "unknown:<field>"."""
    for kind in _FILE_KINDS:
        if message.get(kind):
            return kind
    for kind in (*_OTHER_CONTENT, *_PLACEHOLDER_CONTENT):
        if message.get(kind):
            return kind
    if isinstance(message.get("text"), str):
        return "text"
    for key in message:
        if key in _SERVICE_FIELDS:
            return f"service:{key}"
    if isinstance(message.get("caption"), str):
        return "text"
    others = [key for key in message if key not in _COMMON_FIELDS and key not in ("text", "caption")]
    return f"unknown:{others[0]}" if others else "empty"


def _ignored_reason(payload: Mapping[str, Any], *, allow_groups: bool) -> str | None:
    """Why a well-formed update yields no message, or None when it yields one."""
    kind = update_type(payload)
    if kind not in HANDLED_UPDATE_TYPES:
        return f"update type {kind!r} is not handled"
    inner = payload[kind]
    if kind == "callback_query":
        message = inner.get("message")
        chat = message.get("chat") if isinstance(message, Mapping) else None
        chat_type = chat.get("type") if isinstance(chat, Mapping) else PRIVATE_CHAT
        if chat_type != PRIVATE_CHAT and not (allow_groups and chat_type in GROUP_CHATS):
            return f"callback query from a {chat_type} chat"
        return None
    chat_type = inner["chat"].get("type")
    if chat_type != PRIVATE_CHAT and not (allow_groups and chat_type in GROUP_CHATS):
        return f"{chat_type} chat (only private chats{' and groups' if allow_groups else ''} are handled)"
    content = message_content_type(inner)
    if content.startswith("service:"):
        return f"service message ({content.partition(':')[2]})"
    if content.startswith("unknown:") or content == "empty":
        return f"message without supported content ({content})"
    return None


def describe_update(payload: Mapping[str, Any], *, allow_groups: bool = False) -> str:
    """One line for the log: "message/photo" or "my_chat_member: ignored (update type ... not handled)"."""
    kind = update_type(payload)
    inner = payload.get(kind) if isinstance(payload, Mapping) else None
    label = kind
    if kind in ("message", "edited_message") and isinstance(inner, Mapping):
        label = f"{kind}/{message_content_type(inner)}"
    try:
        validate_update(payload)
        reason = _ignored_reason(payload, allow_groups=allow_groups)
    except PermanentError as exc:
        return f"{label}: malformed ({exc})"
    return f"{label}: ignored ({reason})" if reason else label


def validate_update(payload: Mapping[str, Any]) -> None:
    """PermanentError with the reason when the payload is not a well-formed Update (for the handled types)."""
    if not isinstance(payload, Mapping):
        raise PermanentError(f"malformed Telegram update: expected an object, got {type(payload).__name__}")
    _int(payload, "update_id", "update")
    kind = update_type(payload)
    if kind == "empty":
        raise PermanentError("malformed Telegram update: it carries nothing beside update_id")
    if kind not in HANDLED_UPDATE_TYPES:
        return
    inner = _obj(payload, kind, "update")
    if kind == "callback_query":
        _opt_str(inner, "id", kind) or _raise(f"malformed Telegram update: {kind}.id must be a non-empty string")
        _validate_user(_obj(inner, "from", kind), f"{kind}.from")
        _opt_str(inner, "data", kind)
        message = _opt_obj(inner, "message", kind)
        if message is not None:
            _int(message, "message_id", f"{kind}.message")
            _int(_obj(message, "chat", f"{kind}.message"), "id", f"{kind}.message.chat")
        return
    _int(inner, "message_id", kind)
    _int(inner, "date", kind)
    chat = _obj(inner, "chat", kind)
    _int(chat, "id", f"{kind}.chat")
    _opt_str(chat, "type", f"{kind}.chat") or _raise(f"malformed Telegram update: {kind}.chat.type is missing")
    sender = _opt_obj(inner, "from", kind)
    if sender is not None:
        _validate_user(sender, f"{kind}.from")
    _opt_str(inner, "text", kind)
    _opt_str(inner, "caption", kind)


def _validate_user(user: Mapping[str, Any], where: str) -> None:
    _int(user, "id", where)
    for key in ("first_name", "last_name", "username", "language_code"):
        _opt_str(user, key, where)


def _raise(message: str) -> str:
    raise PermanentError(message)


# --- extraction -------------------------------------------------------------------------------------------------
def _display_name(user: Mapping[str, Any] | None, chat: Mapping[str, Any] | None = None) -> str:
    for source in (user, chat):
        if not source:
            continue
        name = " ".join(str(source.get(key) or "").strip() for key in ("first_name", "last_name")).strip()
        if name:
            return name
        if source.get("username"):
            return f"@{source['username']}"
    return ""


def _entities(text: str, raw: Any) -> list[dict[str, Any]]:
    """MessageEntity list, keeping the fields an agent or a renderer needs; offsets stay in UTF-16 units."""
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return []
    result = []
    for entity in raw:
        if not isinstance(entity, Mapping):
            continue
        offset, length = entity.get("offset"), entity.get("length")
        if not isinstance(offset, int) or not isinstance(length, int):
            continue
        item: dict[str, Any] = {"type": str(entity.get("type") or ""), "offset": offset, "length": length}
        item["text"] = utf16_slice(text, offset, length)
        for key in ("url", "language", "custom_emoji_id"):
            if entity.get(key):
                item[key] = entity[key]
        user = entity.get("user")
        if isinstance(user, Mapping) and isinstance(user.get("id"), int):
            item["user_id"] = user["id"]
        result.append(item)
    return result


def _file_info(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    info = {
        "kind": kind,
        "file_id": obj.get("file_id"),
        "file_unique_id": obj.get("file_unique_id"),
        "mime_type": obj.get("mime_type"),
        "file_size": obj.get("file_size"),
        "file_name": obj.get("file_name"),
        "width": obj.get("width"),
        "height": obj.get("height"),
        "duration": obj.get("duration"),
    }
    if kind == "sticker":
        info["emoji"] = obj.get("emoji")
        info["mime_type"] = info["mime_type"] or (
            "video/webm"
            if obj.get("is_video")
            else "application/x-tgsticker"
            if obj.get("is_animated")
            else "image/webp"
        )
    if kind == "photo":
        info["mime_type"] = "image/jpeg"  # Telegram re-encodes photos as JPEG (https://core.telegram.org/api/files)
    if kind == "voice" and not info["mime_type"]:
        info["mime_type"] = "audio/ogg"
    if kind == "video_note" and not info["mime_type"]:
        info["mime_type"] = "video/mp4"
    return _compact(info)


def _largest_photo(sizes: Any) -> Mapping[str, Any] | None:
    candidates = [size for size in sizes if isinstance(size, Mapping)] if isinstance(sizes, Sequence) else []
    if not candidates:
        return None

    def area(size: Mapping[str, Any]) -> tuple[int, int]:
        width, height, file_size = size.get("width"), size.get("height"), size.get("file_size")
        pixels = width * height if isinstance(width, int) and isinstance(height, int) else 0
        return pixels, file_size if isinstance(file_size, int) else 0

    return max(candidates, key=area)


def _content(message: Mapping[str, Any], kind: str) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(text, files, extra metadata) of a message whose content type is ``kind``."""
    caption = str(message["caption"]) if isinstance(message.get("caption"), str) else ""
    files: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    text: str = caption
    if kind == "text":
        text = str(message["text"]) if isinstance(message.get("text"), str) else caption
    elif kind == "photo":
        largest = _largest_photo(message.get("photo"))
        if largest is not None:
            files.append(_file_info("photo", largest))
    elif kind in _FILE_KINDS:
        obj = message.get(kind)
        if isinstance(obj, Mapping):
            files.append(_file_info(kind, obj))
            if kind == "sticker":
                text = caption or str(obj.get("emoji") or "")
                extra["sticker"] = _compact({"emoji": obj.get("emoji"), "set_name": obj.get("set_name")})
    elif kind == "venue":
        venue = message["venue"]
        location = venue.get("location") if isinstance(venue.get("location"), Mapping) else {}
        extra["venue"] = _compact(
            {
                "title": venue.get("title"),
                "address": venue.get("address"),
                "latitude": location.get("latitude"),
                "longitude": location.get("longitude"),
                "foursquare_id": venue.get("foursquare_id"),
                "google_place_id": venue.get("google_place_id"),
            }
        )
        text = "📍 " + ", ".join(str(v) for v in (venue.get("title"), venue.get("address")) if v)
    elif kind == "location":
        location = message["location"]
        extra["location"] = _compact(
            {
                key: location.get(key)
                for key in ("latitude", "longitude", "horizontal_accuracy", "live_period", "heading")
            }
        )
        text = f"📍 {location.get('latitude')}, {location.get('longitude')}"
    elif kind == "contact":
        contact = message["contact"]
        extra["contact"] = _compact(
            {
                key: contact.get(key)
                for key in ("phone_number", "first_name", "last_name", "user_id", "vcard")
                if key != "vcard" or contact.get(key)
            }
        )
        name = " ".join(str(contact.get(key) or "") for key in ("first_name", "last_name")).strip()
        text = "👤 " + ", ".join(v for v in (name, str(contact.get("phone_number") or "")) if v)
    elif kind == "dice":
        dice = message["dice"]
        extra["dice"] = _compact({"emoji": dice.get("emoji"), "value": dice.get("value")})
        text = f"{dice.get('emoji') or '🎲'} {dice.get('value')}"
    elif kind == "poll":
        poll = message["poll"]
        options = [str(o.get("text") or "") for o in poll.get("options") or [] if isinstance(o, Mapping)]
        extra["poll"] = _compact({"id": poll.get("id"), "question": poll.get("question"), "options": options})
        text = "📊 " + str(poll.get("question") or "") + "".join(f"\n• {option}" for option in options)
    elif kind == "checklist":
        checklist = message["checklist"]
        tasks = [str(t.get("text") or "") for t in checklist.get("tasks") or [] if isinstance(t, Mapping)]
        text = "☑ " + str(checklist.get("title") or "") + "".join(f"\n• {task}" for task in tasks)
    elif kind == "rich_message":
        text = _rich_text(message["rich_message"]).strip() or "[rich message]"
    elif kind == "story":
        story = message["story"]
        chat = story.get("chat") if isinstance(story.get("chat"), Mapping) else {}
        extra["story"] = _compact({"id": story.get("id"), "chat_id": chat.get("id")})
        text = caption or "[story]"
    else:  # _PLACEHOLDER_CONTENT
        text = caption or f"[{kind.replace('_', ' ')}]"
    return text, files, extra


def _rich_text(node: Any) -> str:
    """Flatten a rich_message tree (blocks of paragraphs, tables, nested styled runs) into plain text."""
    if isinstance(node, str):
        return node
    if isinstance(node, Sequence):
        return "".join(_rich_text(item) for item in node)
    if not isinstance(node, Mapping):
        return ""
    if isinstance(node.get("blocks"), Sequence):
        return "\n".join(_rich_text(block) for block in node["blocks"])
    if isinstance(node.get("cells"), Sequence):
        rows = [row for row in node["cells"] if isinstance(row, Sequence)]
        return "\n".join(" | ".join(_rich_text(cell) for cell in row) for row in rows)
    return _rich_text(node.get("text"))


def _forward_info(message: Mapping[str, Any]) -> dict[str, Any]:
    """https://core.telegram.org/bots/api#messageorigin (forward_origin); the pre-7.0 forward_* fields as fallback."""
    origin = message.get("forward_origin")
    if isinstance(origin, Mapping):
        user = origin.get("sender_user") if isinstance(origin.get("sender_user"), Mapping) else None
        chat = origin.get("sender_chat") or origin.get("chat")
        chat = chat if isinstance(chat, Mapping) else None
        return _compact(
            {
                "type": origin.get("type"),
                "date": origin.get("date"),
                "from_user_id": user.get("id") if user else None,
                "from_name": _display_name(user) if user else origin.get("sender_user_name"),
                "from_chat_id": chat.get("id") if chat else None,
                "from_chat_title": chat.get("title") if chat else None,
                "message_id": origin.get("message_id"),
                "author_signature": origin.get("author_signature"),
            }
        )
    legacy_user = message.get("forward_from") if isinstance(message.get("forward_from"), Mapping) else None
    legacy_chat = message.get("forward_from_chat") if isinstance(message.get("forward_from_chat"), Mapping) else None
    if legacy_user or legacy_chat or message.get("forward_sender_name") or message.get("forward_date"):
        return _compact(
            {
                "type": "user" if legacy_user else "chat" if legacy_chat else "hidden_user",
                "date": message.get("forward_date"),
                "from_user_id": legacy_user.get("id") if legacy_user else None,
                "from_name": _display_name(legacy_user) if legacy_user else message.get("forward_sender_name"),
                "from_chat_id": legacy_chat.get("id") if legacy_chat else None,
                "from_chat_title": legacy_chat.get("title") if legacy_chat else None,
                "message_id": message.get("forward_from_message_id"),
            }
        )
    return {}


def _message_to_inbound(update_id: int, kind: str, message: Mapping[str, Any]) -> InboundMessage:
    chat = message["chat"]
    chat_id: int = chat["id"]
    chat_type = str(chat.get("type") or "")
    message_id: int = message["message_id"]
    user = message.get("from") if isinstance(message.get("from"), Mapping) else None
    content_type = message_content_type(message)
    text, files, extra = _content(message, content_type)
    entity_source = (
        "entities" if content_type == "text" and isinstance(message.get("text"), str) else "caption_entities"
    )
    entities = _entities(text, message.get(entity_source))
    metadata: dict[str, Any] = {
        "update_id": update_id,
        "update_type": kind,
        "chat_id": chat_id,
        "chat_type": chat_type,
        "message_id": message_id,
        "content_type": content_type,
    }
    if chat_type != PRIVATE_CHAT:
        metadata["chat_title"] = chat.get("title") or ""
    if user is not None:
        metadata["from_id"] = user["id"]
        if user.get("username"):
            metadata["username"] = user["username"]
        if user.get("is_bot"):
            metadata["from_is_bot"] = True
    if entities:
        metadata["entities"] = entities
        links = [e["url"] for e in entities if e["type"] == "text_link" and e.get("url")]
        if links:
            metadata["links"] = links  # text_link URLs are not visible in the plain text
        first = entities[0]
        if first["type"] == "bot_command" and first["offset"] == 0:
            metadata["command"] = first["text"].lstrip("/").partition("@")[0]
    if files:
        metadata["files"] = files
    metadata.update(extra)
    reply = message.get("reply_to_message")
    if isinstance(reply, Mapping) and isinstance(reply.get("message_id"), int):
        metadata["reply_to_message_id"] = reply["message_id"]
        metadata["reply_to_external_id"] = f"{chat_id}:{reply['message_id']}"
        reply_from = reply.get("from")
        if isinstance(reply_from, Mapping) and isinstance(reply_from.get("id"), int):
            metadata["reply_to_from_id"] = reply_from["id"]
    quote = message.get("quote")
    if isinstance(quote, Mapping) and isinstance(quote.get("text"), str):
        metadata["quote"] = quote["text"]
    if isinstance(message.get("external_reply"), Mapping):
        metadata["external_reply"] = True
    forward = _forward_info(message)
    if forward:
        metadata["forward"] = forward
    for key in ("media_group_id", "message_thread_id", "author_signature"):
        if message.get(key) is not None:
            metadata[key] = message[key]
    via_bot = message.get("via_bot")
    if isinstance(via_bot, Mapping) and via_bot.get("username"):
        metadata["via_bot"] = via_bot["username"]
    if kind == "edited_message":
        # The inbox updates the stored message (same external_id) and keeps the previous text as history.
        metadata["edit"] = True
        metadata["original_message_id"] = message_id
        if isinstance(message.get("edit_date"), int):
            metadata["edit_date"] = message["edit_date"]
    language = user.get("language_code") if user else None
    is_topic = bool(message.get("is_topic_message")) and message.get("message_thread_id") is not None
    return InboundMessage(
        external_id=f"{chat_id}:{message_id}",
        # The conversation is per chat: in a private chat the chat id is the user's id; in a group (allow_groups)
        # the whole group is one contact and the writer is in the metadata.
        sender=Sender(
            handle=str(chat_id),
            display_name=_display_name(user, chat) if chat_type == PRIVATE_CHAT else str(chat.get("title") or ""),
        ),
        text=text,
        sent_at=_timestamp(message["date"]),
        language_hints=(language,) if isinstance(language, str) and language else (),
        thread_key=str(message["message_thread_id"]) if is_topic else "",
        metadata=metadata,
    )


def _callback_to_inbound(update_id: int, query: Mapping[str, Any]) -> InboundMessage:
    """https://core.telegram.org/bots/api#callbackquery : a button press. ``message`` is absent for buttons of
    inline-mode messages and may be an InaccessibleMessage (``date`` 0) when the message is too old."""
    user = query["from"]
    message = query.get("message") if isinstance(query.get("message"), Mapping) else None
    chat = message["chat"] if message else None
    # A private chat's id is the user's id, so without a message the user id still addresses the customer.
    chat_id: int = chat["id"] if chat else user["id"]
    data = str(query["data"]) if isinstance(query.get("data"), str) else ""
    game = str(query["game_short_name"]) if isinstance(query.get("game_short_name"), str) else ""
    metadata: dict[str, Any] = {
        "update_id": update_id,
        "update_type": "callback_query",
        "chat_id": chat_id,
        "chat_type": str(chat.get("type") or PRIVATE_CHAT) if chat else PRIVATE_CHAT,
        "from_id": user["id"],
        "content_type": "callback_query",
        "callback": _compact(
            {
                "id": query["id"],
                "data": data,
                "game_short_name": game,
                "chat_instance": query.get("chat_instance"),
                "inline_message_id": query.get("inline_message_id"),
                "message_id": message["message_id"] if message else None,
                "message_text": message.get("text") if message and isinstance(message.get("text"), str) else None,
            }
        ),
    }
    if user.get("username"):
        metadata["username"] = user["username"]
    if message:
        metadata["reply_to_message_id"] = message["message_id"]
        metadata["reply_to_external_id"] = f"{chat_id}:{message['message_id']}"
    language = user.get("language_code")
    return InboundMessage(
        external_id=f"cb:{query['id']}",
        sender=Sender(handle=str(chat_id), display_name=_display_name(user)),
        text=data or game,
        sent_at=None,  # a CallbackQuery has no date; the inbox uses the time it was received
        language_hints=(language,) if isinstance(language, str) and language else (),
        metadata=metadata,
    )


def normalize_update(payload: Mapping[str, Any], *, allow_groups: bool = False) -> list[InboundMessage]:
    """One Update -> zero or one InboundMessage. PermanentError when malformed (see validate_update)."""
    validate_update(payload)
    if _ignored_reason(payload, allow_groups=allow_groups) is not None:
        return []
    update_id: int = payload["update_id"]
    kind = update_type(payload)
    if kind == "callback_query":
        return [_callback_to_inbound(update_id, payload[kind])]
    return [_message_to_inbound(update_id, kind, payload[kind])]
