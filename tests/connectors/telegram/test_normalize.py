"""normalize(): one Telegram Update -> InboundMessage, for every update type we handle (constructed payloads)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.base import ConnectorContext, PermanentError
from connectors.telegram import TelegramConnector, describe_update, update_type

USER = {
    "id": 5550001,
    "is_bot": False,
    "first_name": "Chloé",
    "last_name": "Martin",
    "username": "chloe",
    "language_code": "fr",
}
CHAT = {"id": 5550001, "first_name": "Chloé", "last_name": "Martin", "username": "chloe", "type": "private"}
DATE = 1717171717


def connector(**settings: Any) -> TelegramConnector:
    return TelegramConnector(settings=settings, secrets={"bot_token": "1:x"}, context=ConnectorContext())


def update(
    fields: dict[str, Any], *, kind: str = "message", update_id: int = 900, message_id: int = 31
) -> dict[str, Any]:
    return {
        "update_id": update_id,
        kind: {"message_id": message_id, "from": USER, "chat": CHAT, "date": DATE, **fields},
    }


def one(payload: dict[str, Any], **settings: Any) -> Any:
    messages = connector(**settings).normalize(payload)
    assert len(messages) == 1, describe_update(payload)
    return messages[0]


def test_text_message() -> None:
    message = one(update({"text": "Bonjour, ma commande n'est pas arrivée"}))
    assert message.external_id == "5550001:31"
    assert message.sender.handle == "5550001"
    assert message.sender.display_name == "Chloé Martin"
    assert message.text == "Bonjour, ma commande n'est pas arrivée"
    assert message.language_hints == ("fr",)
    assert message.sent_at == datetime.fromtimestamp(DATE, UTC)
    assert message.thread_key == ""
    assert message.attachments == ()
    meta = message.metadata
    assert meta["update_id"] == 900
    assert meta["chat_id"] == 5550001
    assert meta["chat_type"] == "private"
    assert meta["message_id"] == 31
    assert meta["from_id"] == 5550001
    assert meta["username"] == "chloe"
    assert meta["content_type"] == "text"
    assert "edit" not in meta


def test_display_name_falls_back_to_username_then_empty() -> None:
    bare = {"id": 7, "is_bot": False, "first_name": "", "username": "nick"}
    payload = {
        "update_id": 1,
        "message": {"message_id": 1, "from": bare, "chat": {"id": 7, "type": "private"}, "date": DATE, "text": "x"},
    }
    assert one(payload).sender.display_name == "@nick"
    assert one(payload).language_hints == ()
    anonymous = {
        "update_id": 1,
        "message": {"message_id": 1, "chat": {"id": 7, "type": "private"}, "date": DATE, "text": "x"},
    }
    assert one(anonymous).sender.display_name == ""


def test_entities_with_utf16_offsets_commands_and_hidden_links() -> None:
    text = "/start@switchboard_bot 😀 see docs"
    # "😀" is two UTF-16 code units: "docs" starts at UTF-16 offset 30 (code point offset 29).
    entities = [
        {"type": "bot_command", "offset": 0, "length": 22},
        {"type": "text_link", "offset": 30, "length": 4, "url": "https://example.com/docs"},
    ]
    message = one(update({"text": text, "entities": entities}))
    meta = message.metadata
    assert meta["command"] == "start"
    assert [e["text"] for e in meta["entities"]] == ["/start@switchboard_bot", "docs"]
    assert meta["links"] == ["https://example.com/docs"]


def test_photo_takes_the_largest_size_by_pixels_and_keeps_the_caption() -> None:
    sizes = [
        {"file_id": "small", "file_unique_id": "s", "file_size": 1000, "width": 90, "height": 120},
        {"file_id": "big", "file_unique_id": "b", "file_size": 84913, "width": 720, "height": 960},
        {"file_id": "mid", "file_unique_id": "m", "file_size": 104893, "width": 600, "height": 800},
    ]
    message = one(update({"photo": sizes, "caption": "The parcel arrived broken", "media_group_id": "album-1"}))
    assert message.text == "The parcel arrived broken"
    assert message.metadata["content_type"] == "photo"
    assert message.metadata["files"] == [
        {
            "kind": "photo",
            "file_id": "big",
            "file_unique_id": "b",
            "mime_type": "image/jpeg",
            "file_size": 84913,
            "width": 720,
            "height": 960,
        }
    ]
    assert message.metadata["media_group_id"] == "album-1"
    assert message.attachments == ()  # nothing downloaded in normalize


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        (
            "document",
            {
                "file_id": "D1",
                "file_unique_id": "U1",
                "file_name": "invoice.pdf",
                "mime_type": "application/pdf",
                "file_size": 123456,
            },
            {"file_name": "invoice.pdf", "mime_type": "application/pdf", "file_size": 123456},
        ),
        (
            "voice",
            {"file_id": "V1", "file_unique_id": "U2", "duration": 4, "file_size": 9000},
            {"mime_type": "audio/ogg", "duration": 4},
        ),
        (
            "audio",
            {
                "file_id": "A1",
                "file_unique_id": "U3",
                "duration": 180,
                "mime_type": "audio/mpeg",
                "file_name": "song.mp3",
            },
            {"mime_type": "audio/mpeg", "file_name": "song.mp3"},
        ),
        (
            "video",
            {
                "file_id": "M1",
                "file_unique_id": "U4",
                "width": 640,
                "height": 360,
                "duration": 12,
                "mime_type": "video/mp4",
            },
            {"mime_type": "video/mp4", "width": 640},
        ),
        (
            "video_note",
            {"file_id": "N1", "file_unique_id": "U5", "length": 240, "duration": 5},
            {"mime_type": "video/mp4"},
        ),
    ],
)
def test_media_are_referenced_by_file_id(kind: str, obj: dict[str, Any], expected: dict[str, Any]) -> None:
    message = one(update({kind: obj, "caption": "look"}))
    assert message.text == "look"
    assert message.metadata["content_type"] == kind
    (info,) = message.metadata["files"]
    assert info["kind"] == kind
    assert info["file_id"] == obj["file_id"]
    assert info["file_unique_id"] == obj["file_unique_id"]
    for key, value in expected.items():
        assert info[key] == value


def test_animation_is_one_file_although_telegram_also_sends_it_as_document() -> None:
    animation = {
        "file_id": "G1",
        "file_unique_id": "UG",
        "mime_type": "video/mp4",
        "file_name": "fun.mp4",
        "width": 1,
        "height": 1,
        "duration": 1,
    }
    message = one(update({"animation": animation, "document": dict(animation)}))
    assert message.metadata["content_type"] == "animation"
    assert [f["kind"] for f in message.metadata["files"]] == ["animation"]


def test_sticker_text_is_its_emoji() -> None:
    sticker = {
        "file_id": "S1",
        "file_unique_id": "US",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": "👍",
        "set_name": "Hands",
    }
    message = one(update({"sticker": sticker}))
    assert message.text == "👍"
    assert message.metadata["files"][0]["mime_type"] == "image/webp"
    assert message.metadata["sticker"] == {"emoji": "👍", "set_name": "Hands"}


def test_location_venue_contact() -> None:
    location = {"latitude": 48.8584, "longitude": 2.2945}
    message = one(update({"location": location}))
    assert message.metadata["content_type"] == "location"
    assert message.metadata["location"] == location
    assert "48.8584" in message.text and "2.2945" in message.text

    venue = {"location": location, "title": "Tour Eiffel", "address": "Champ de Mars, Paris"}
    message = one(update({"venue": venue, "location": location}))
    assert message.metadata["content_type"] == "venue"
    assert message.metadata["venue"]["title"] == "Tour Eiffel"
    assert message.metadata["venue"]["latitude"] == 48.8584
    assert "Tour Eiffel" in message.text and "Champ de Mars" in message.text

    contact = {"phone_number": "+33123456789", "first_name": "Jean", "last_name": "Dupont", "user_id": 77}
    message = one(update({"contact": contact}))
    assert message.metadata["content_type"] == "contact"
    assert message.metadata["contact"] == contact
    assert "Jean Dupont" in message.text and "+33123456789" in message.text


def test_dice_and_poll_become_readable_text() -> None:
    assert one(update({"dice": {"emoji": "🎲", "value": 5}})).text == "🎲 5"
    poll = {
        "id": "p1",
        "question": "Which size?",
        "options": [{"text": "S", "voter_count": 0}, {"text": "M", "voter_count": 0}],
    }
    message = one(update({"poll": poll}))
    assert message.text == "📊 Which size?\n• S\n• M"
    assert message.metadata["poll"] == {"id": "p1", "question": "Which size?", "options": ["S", "M"]}


def test_reply_to_message_is_in_the_metadata() -> None:
    reply = {
        "message_id": 30,
        "from": {"id": 999, "is_bot": True, "first_name": "Support"},
        "chat": CHAT,
        "date": DATE,
        "text": "How can we help?",
    }
    message = one(update({"text": "My order", "reply_to_message": reply, "quote": {"text": "help", "position": 12}}))
    assert message.metadata["reply_to_message_id"] == 30
    assert message.metadata["reply_to_external_id"] == "5550001:30"
    assert message.metadata["reply_to_from_id"] == 999
    assert message.metadata["quote"] == "help"


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (
            {
                "type": "user",
                "date": 1707234740,
                "sender_user": {"id": 42, "is_bot": False, "first_name": "Ann", "last_name": "Lee"},
            },
            {"type": "user", "date": 1707234740, "from_user_id": 42, "from_name": "Ann Lee"},
        ),
        (
            {"type": "hidden_user", "date": 1, "sender_user_name": "Someone"},
            {"type": "hidden_user", "date": 1, "from_name": "Someone"},
        ),
        (
            {
                "type": "channel",
                "date": 2,
                "chat": {"id": -1001, "title": "News", "type": "channel"},
                "message_id": 8,
                "author_signature": "Ed",
            },
            {
                "type": "channel",
                "date": 2,
                "from_chat_id": -1001,
                "from_chat_title": "News",
                "message_id": 8,
                "author_signature": "Ed",
            },
        ),
        (
            {"type": "chat", "date": 3, "sender_chat": {"id": -5, "title": "Team", "type": "group"}},
            {"type": "chat", "date": 3, "from_chat_id": -5, "from_chat_title": "Team"},
        ),
    ],
)
def test_forwarded_messages(origin: dict[str, Any], expected: dict[str, Any]) -> None:
    assert one(update({"text": "fwd", "forward_origin": origin})).metadata["forward"] == expected


def test_legacy_forward_fields_are_understood() -> None:
    fields = {"text": "old", "forward_from": {"id": 42, "is_bot": False, "first_name": "Ann"}, "forward_date": 5}
    assert one(update(fields)).metadata["forward"] == {
        "type": "user",
        "date": 5,
        "from_user_id": 42,
        "from_name": "Ann",
    }


def test_edited_message_keeps_the_external_id_and_flags_the_edit() -> None:
    original = one(update({"text": "I ordered 2"}, update_id=900))
    edited = one(update({"text": "I ordered 3", "edit_date": DATE + 60}, kind="edited_message", update_id=901))
    assert edited.external_id == original.external_id == "5550001:31"
    assert edited.text == "I ordered 3"
    assert edited.metadata["edit"] is True
    assert edited.metadata["original_message_id"] == 31
    assert edited.metadata["edit_date"] == DATE + 60
    assert edited.metadata["update_id"] == 901
    assert edited.metadata["update_type"] == "edited_message"


def test_callback_query_is_a_message_with_the_data() -> None:
    payload = {
        "update_id": 2,
        "callback_query": {
            "id": "666728699048485871",
            "from": USER,
            "message": {
                "message_id": 69587,
                "from": {"id": 1, "is_bot": True, "first_name": "Bot"},
                "chat": CHAT,
                "date": DATE,
                "text": "Was this helpful?",
            },
            "chat_instance": "162866",
            "data": "helpful:yes",
        },
    }
    message = one(payload)
    assert message.external_id == "cb:666728699048485871"
    assert message.text == "helpful:yes"
    assert message.sender.handle == "5550001"
    assert message.sender.display_name == "Chloé Martin"
    assert message.language_hints == ("fr",)
    assert message.metadata["callback"] == {
        "id": "666728699048485871",
        "data": "helpful:yes",
        "chat_instance": "162866",
        "message_id": 69587,
        "message_text": "Was this helpful?",
    }
    assert message.metadata["reply_to_external_id"] == "5550001:69587"


def test_callback_query_without_message_addresses_the_user() -> None:
    payload = {
        "update_id": 3,
        "callback_query": {"id": "77", "from": USER, "inline_message_id": "AAA", "chat_instance": "1", "data": "x"},
    }
    message = one(payload)
    assert message.sender.handle == str(USER["id"])
    assert message.metadata["callback"]["inline_message_id"] == "AAA"


@pytest.mark.parametrize(
    "payload",
    [
        {
            "update_id": 1,
            "channel_post": {
                "message_id": 1,
                "chat": {"id": -100, "type": "channel", "title": "C"},
                "date": DATE,
                "text": "news",
            },
        },
        {
            "update_id": 1,
            "edited_channel_post": {
                "message_id": 1,
                "chat": {"id": -100, "type": "channel", "title": "C"},
                "date": DATE,
                "text": "news",
            },
        },
        {"update_id": 1, "my_chat_member": {"chat": CHAT, "from": USER, "date": DATE}},
        {"update_id": 1, "inline_query": {"id": "1", "from": USER, "query": "", "offset": ""}},
        {"update_id": 1, "business_message": {"message_id": 1, "from": USER, "chat": CHAT, "date": DATE, "text": "hi"}},
        {"update_id": 1, "something_new": {"x": 1}},
        update({"new_chat_members": [USER]}),
        update({"pinned_message": {"message_id": 1, "chat": CHAT, "date": 0}}),
        update({"a_future_service_field": {"x": 1}}),
    ],
)
def test_other_updates_are_acknowledged_with_no_message(payload: dict[str, Any]) -> None:
    assert connector().normalize(payload) == []
    assert "ignored" in describe_update(payload)


def test_update_type() -> None:
    assert update_type({"update_id": 1, "channel_post": {}}) == "channel_post"
    assert update_type({"update_id": 1, "message": {}}) == "message"
    assert update_type({"update_id": 1}) == "empty"
    assert (
        describe_update(update({"photo": [{"file_id": "a", "file_unique_id": "b", "width": 1, "height": 1}]}))
        == "message/photo"
    )


def test_group_messages_are_ignored_unless_allowed() -> None:
    group = {"id": -100200, "title": "Customers FR", "type": "supergroup", "is_forum": True}
    payload = {
        "update_id": 5,
        "message": {
            "message_id": 9,
            "message_thread_id": 4,
            "is_topic_message": True,
            "from": USER,
            "chat": group,
            "date": DATE,
            "text": "Hi all",
        },
    }
    assert connector().normalize(payload) == []
    assert "supergroup" in describe_update(payload)
    message = one(payload, allow_groups=True)
    assert message.sender.handle == "-100200"
    assert message.sender.display_name == "Customers FR"
    assert message.thread_key == "4"
    assert message.metadata["from_id"] == USER["id"]
    assert message.metadata["chat_title"] == "Customers FR"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"message": {"message_id": 1}}, "update_id"),
        ({"update_id": "7", "message": {}}, "update_id must be an integer"),
        ({"update_id": True, "message": {}}, "update_id must be an integer"),
        ({"update_id": 1}, "nothing beside update_id"),
        ({"update_id": 1, "message": "hello"}, "update.message must be an object"),
        ({"update_id": 1, "message": {"message_id": 1, "date": DATE, "text": "x"}}, "message.chat must be an object"),
        (
            {"update_id": 1, "message": {"message_id": "1", "chat": CHAT, "date": DATE}},
            "message.message_id must be an integer",
        ),
        (
            {"update_id": 1, "message": {"message_id": 1, "chat": {"id": "x", "type": "private"}, "date": DATE}},
            "message.chat.id",
        ),
        (
            {"update_id": 1, "message": {"message_id": 1, "chat": CHAT, "date": DATE, "text": 5}},
            "message.text must be a string",
        ),
        (
            {"update_id": 1, "message": {"message_id": 1, "chat": CHAT, "date": DATE, "from": {"id": None}}},
            "message.from.id",
        ),
        ({"update_id": 1, "edited_message": {"message_id": 1, "chat": CHAT}}, "edited_message.date"),
        ({"update_id": 1, "callback_query": {"from": USER, "data": "x"}}, "callback_query.id"),
        ({"update_id": 1, "callback_query": {"id": "1", "data": "x"}}, "callback_query.from"),
        ([1, 2], "expected an object"),
    ],
)
def test_malformed_updates_are_refused_with_a_reason(payload: Any, reason: str) -> None:
    with pytest.raises(PermanentError) as excinfo:
        connector().normalize(payload)
    assert reason in str(excinfo.value)
    assert "malformed" in describe_update(payload) or update_type(payload) == "invalid"
