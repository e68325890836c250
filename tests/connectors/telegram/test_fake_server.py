"""The fake Bot API server answers in the shapes of the real one (../shared/data/telegram/nutgram/Responses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.base import OutboundMessage
from connectors.telegram import TelegramConnector, scrub
from tests.fakes.telegram_server import SHARED_UPDATES, TelegramServer

RESPONSES = SHARED_UPDATES.parent / "Responses"
MESSAGES = SHARED_UPDATES.parent / "Messages"


def call_raw(server: TelegramServer, method: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    status, raw = TelegramServer.post_update(f"{server.api_base}/bot{server.token}/{method}", body, secret=None)  # type: ignore[arg-type]
    return status, json.loads(raw)


@pytest.mark.langdata
def test_error_answers_match_the_real_shapes(telegram_server: TelegramServer) -> None:
    if not RESPONSES.is_dir():
        pytest.skip(f"the shared Telegram responses are absent ({RESPONSES.resolve()})")
    telegram_server.rate_limit_next("sendMessage", retry_after=14, window=False)
    assert call_raw(telegram_server, "sendMessage", {"chat_id": 1, "text": "x"}) == (
        429,
        json.loads((RESPONSES / "too_many_requests.json").read_text()),
    )
    telegram_server.fail_next("sendMessage", status=403, description="Forbidden: user is deactivated")
    assert call_raw(telegram_server, "sendMessage", {"chat_id": 1, "text": "x"})[1] == json.loads(
        (RESPONSES / "user_deactivated.json").read_text()
    )
    assert call_raw(telegram_server, "sendMessage", {"chat_id": 1, "text": "x" * 4097})[1] == json.loads(
        (RESPONSES / "too_long.json").read_text()
    )
    assert call_raw(telegram_server, "getFile", {"file_id": "nope"})[1] == json.loads(
        (RESPONSES / "wrong_file_id.json").read_text()
    )


@pytest.mark.langdata
def test_sent_message_has_the_real_message_shape(telegram_server: TelegramServer) -> None:
    if not MESSAGES.is_dir():
        pytest.skip(f"the shared Telegram messages are absent ({MESSAGES.resolve()})")
    real = json.loads((MESSAGES / "rich_message.json").read_text())
    status, answer = call_raw(telegram_server, "sendMessage", {"chat_id": 12345678, "text": "hi"})
    assert status == 200 and answer["ok"] is True
    message = answer["result"]
    assert isinstance(message, dict)
    assert {"message_id", "from", "chat", "date"} <= set(message) and {"message_id", "from", "chat", "date"} <= set(
        real
    )
    assert set(message["from"]) == set(real["from"])  # id, is_bot, first_name, username
    assert message["from"]["is_bot"] is True
    assert type(message["date"]) is type(real["date"])


def test_json_bodies_and_case_insensitive_methods(telegram_server: TelegramServer) -> None:
    status, answer = call_raw(telegram_server, "SENDMESSAGE", {"chat_id": 5, "text": "json body"})
    assert status == 200 and answer["result"]["text"] == "json body"  # type: ignore[index]
    assert telegram_server.calls_of("sendMessage")[0].params == {"chat_id": 5, "text": "json body"}
    assert call_raw(telegram_server, "noSuchMethod", {})[0] == 404


def test_message_ids_increase_per_chat(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    ids = [
        telegram.send(OutboundMessage(idempotency_key=str(i), recipient="77", text=f"m{i}")).provider_id
        for i in range(3)
    ]
    assert ids == ["77:1", "77:2", "77:3"]


def test_scrub_removes_tokens_plain_and_url_encoded() -> None:
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    text = (
        f"POST https://api.telegram.org/bot{token}/getMe and /file/bot123456789%3AAAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/x"
    )
    cleaned = scrub(text, token)
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in cleaned
    assert cleaned.count("<redacted>") == 2


def test_shared_update_helper(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    if not (SHARED_UPDATES / "voice.json").is_file():
        pytest.skip(f"the shared Telegram updates are absent ({Path(SHARED_UPDATES).resolve()})")
    queued = telegram_server.queue_update(TelegramServer.shared_update("voice"))
    (update,) = telegram.get_updates(0, timeout=0)
    assert update == queued and update["update_id"] != TelegramServer.shared_update("voice")["update_id"]
    assert telegram.normalize(update)[0].metadata["content_type"] == "voice"


def test_built_updates_are_distinct(telegram_server: TelegramServer) -> None:
    first, second = (telegram_server.build_message_update("same text", chat_id=9) for _ in range(2))
    assert first["update_id"] != second["update_id"]
    assert first["message"]["message_id"] != second["message"]["message_id"]
    queued = telegram_server.queue_message("queued")
    assert queued["update_id"] > second["update_id"]
