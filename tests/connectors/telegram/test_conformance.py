"""Every real-world Update shape in ../shared/data/telegram/nutgram/Updates is handled: a message, or [] with its type.

The fixtures are read where they lie (never copied into the project); the test skips with the reason when absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ConnectorContext
from connectors.telegram import TelegramConnector, describe_update, update_type

pytestmark = pytest.mark.langdata

# Shapes that must become a message (customer content), and shapes that must not.
MUST_BE_MESSAGES = {
    "text",
    "message",
    "entities",
    "command",
    "photo",
    "document",
    "animation",
    "audio",
    "voice",
    "video",
    "video_note",
    "sticker",
    "location",
    "venue",
    "contact",
    "dice",
    "message_poll",
    "edited_message",
    "message_forward_origin",
    "callback_query",
    "callback_query_complex",
    "callback_query_inaccessible_message",
    "callback_query_without_message",
}
MUST_BE_IGNORED = {
    "channel_post",
    "edited_channel_post",
    "my_chat_member",
    "chat_member",
    "inline_query",
    "chosen_inline_result",
    "poll",
    "poll_answer",
    "new_chat_members",
    "left_chat_member",
    "pinned_message",
    "business_message",
    "pre_checkout_query",
    "shipping_query",
    "message_reaction",
}


def load_all(directory: Path) -> dict[str, Any]:
    files = sorted(directory.glob("*.json"))
    assert files, f"no fixtures in {directory}"
    return {path.stem: json.loads(path.read_text()) for path in files}


def oracle_text(payload: dict[str, Any]) -> str | None:
    """Independent expectation: the text/caption a private chat's message carries, or a button's data."""
    kind = update_type(payload)
    inner = payload[kind]
    if kind == "callback_query":
        return inner.get("data") or inner.get("game_short_name")
    private = inner["chat"]["type"] == "private"
    if kind in ("message", "edited_message") and private and isinstance(inner.get("text"), str):
        return str(inner["text"])
    return None


@pytest.mark.parametrize("allow_groups", [False, True])
def test_every_shared_update_is_handled(shared_updates_dir: Path, allow_groups: bool) -> None:
    connector = TelegramConnector(
        settings={"allow_groups": allow_groups}, secrets={"bot_token": "1:x"}, context=ConnectorContext()
    )
    produced, ignored = set(), set()
    for name, payload in load_all(shared_updates_dir).items():
        messages = connector.normalize(payload)  # any exception fails the test with the file's name in the trace
        line = describe_update(payload, allow_groups=allow_groups)
        assert line.startswith(update_type(payload)), (name, line)
        if not messages:
            assert "ignored" in line, (name, line)
            ignored.add(name)
            continue
        assert len(messages) == 1, name
        message = messages[0]
        produced.add(name)
        kind = update_type(payload)
        inner = payload[kind]
        assert message.metadata["update_id"] == payload["update_id"], name
        assert message.sender.handle, name
        if kind == "callback_query":
            assert message.external_id == f"cb:{inner['id']}", name
        else:
            assert message.external_id == f"{inner['chat']['id']}:{inner['message_id']}", name
            assert message.text or message.metadata.get("files"), f"{name}: neither text nor file"
        expected = oracle_text(payload)
        if expected is not None:
            assert message.text == expected, name
        for info in message.metadata.get("files", []):
            assert info["file_id"] and info["file_unique_id"], name
    assert produced >= MUST_BE_MESSAGES, MUST_BE_MESSAGES - produced
    assert ignored >= MUST_BE_IGNORED, MUST_BE_IGNORED - ignored
    if allow_groups:
        assert {"message_topic", "message_general_topic"} <= produced
    else:
        assert {"message_topic", "message_general_topic"} <= ignored


def test_the_shared_edit_keeps_the_id_of_the_message_it_edits(shared_updates_dir: Path) -> None:
    payload = json.loads((shared_updates_dir / "edited_message.json").read_text())
    (message,) = TelegramConnector(settings={}, secrets={}).normalize(payload)
    assert message.external_id == "999999999:23762"
    assert message.metadata["edit"] is True
    assert message.metadata["original_message_id"] == 23762
    assert message.metadata["reply_to_message_id"] == 23758


def test_the_shared_photo_picks_the_largest_size(shared_updates_dir: Path) -> None:
    payload = json.loads((shared_updates_dir / "photo.json").read_text())
    (message,) = TelegramConnector(settings={}, secrets={}).normalize(payload)
    assert message.text == "asdasdasdasdasdasd"
    assert message.metadata["files"][0]["file_id"] == "SAAS"  # 720x960, the most pixels
