"""send() through the real python-telegram-bot against the fake Bot API server: replies, splitting, uploads, errors."""

from __future__ import annotations

import socket
import struct
import time
import zlib
from collections.abc import Callable

import pytest

from connectors.base import AuthError, OutboundMessage, PermanentError, RateLimited, TransientError
from connectors.telegram import TelegramConnector
from tests.conftest import wait_for
from tests.connectors.telegram.test_text import long_text
from tests.fakes.telegram_server import TelegramServer

CHAT = 424242


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def reply(text: str = "Thanks, we are on it.", **kwargs: object) -> OutboundMessage:
    return OutboundMessage(idempotency_key="uuid-1", recipient=str(CHAT), text=text, **kwargs)  # type: ignore[arg-type]


def assert_token_hidden(exc: BaseException, token: str) -> None:
    """Neither the message nor anything a traceback would print (cause/context) contains the token."""
    seen: BaseException | None = exc
    while seen is not None:
        assert token not in str(seen), repr(seen)
        assert token not in repr(seen)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def test_plain_reply_with_reply_parameters(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    customer = telegram_server.queue_message("Where is my order?", chat_id=CHAT)
    answered = f"{CHAT}:{customer['message']['message_id']}"
    result = telegram.send(reply("It left our warehouse today.", reply_to_external_id=answered))
    (call,) = telegram_server.calls_of("sendMessage")
    assert call.params["chat_id"] == str(CHAT)
    assert call.params["text"] == "It left our warehouse today."
    assert call.params["reply_parameters"] == {
        "message_id": customer["message"]["message_id"],
        "allow_sending_without_reply": True,
    }
    assert "parse_mode" not in call.params  # plain text: nothing to escape
    (sent,) = telegram_server.sent_messages(CHAT)
    assert result.provider_id == f"{CHAT}:{sent['message_id']}"
    assert sent["reply_to_message"]["text"] == "Where is my order?"
    assert result.sent_at is not None


def test_reply_to_a_deleted_message_still_sends(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    result = telegram.send(reply(reply_to_external_id=f"{CHAT}:999"))  # unknown to the server
    assert result.provider_id.startswith(f"{CHAT}:")
    assert "reply_to_message" not in telegram_server.sent_messages(CHAT)[0]


def test_markup_characters_are_sent_verbatim(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    text = "Use *code* _x_ [link](http://a) <b>1 < 2</b> & `tick` \\ 100% #tag"
    telegram.send(reply(text))
    assert telegram_server.sent_messages(CHAT)[0]["text"] == text


def test_ten_thousand_characters_are_sent_as_three_ordered_paced_parts(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    text = long_text(10_000)
    result = telegram.send(reply(text))
    calls = telegram_server.calls_of("sendMessage")
    assert len(calls) == 3
    parts = [c.params["text"] for c in calls]
    assert "\n\n".join(parts) == text
    assert all(len(p) <= 4096 and p.endswith(".") for p in parts)
    sent = telegram_server.sent_messages(CHAT)
    assert [m["text"] for m in sent] == parts
    assert result.provider_id == f"{CHAT}:{sent[0]['message_id']}"  # the first part's id
    # About one message per second per chat: the parts are paced inside the send.
    assert calls[1].at - calls[0].at >= 0.9
    assert calls[2].at - calls[1].at >= 0.9


def test_send_all_returns_every_part(
    telegram_server: TelegramServer, make_connector: Callable[..., TelegramConnector]
) -> None:
    connector = make_connector()
    connector.part_interval = 0.01
    results = connector.send_all(reply("😀" * 5000))  # 10,000 UTF-16 units: the server counts them too
    assert len(results) == 3
    assert [r.provider_id for r in results] == [f"{CHAT}:{m['message_id']}" for m in telegram_server.sent_messages()]


def test_photo_and_document_uploads(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    image, pdf = png(), b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF"
    telegram.part_interval = 0.01
    attachments = [
        {"filename": "screenshot.png", "content_type": "image/png", "content": image},
        {"filename": "invoice 42.pdf", "content_type": "application/pdf", "content": pdf},
    ]
    result = telegram.send(reply("Here you are", metadata={"attachments": attachments}))
    assert [c.method for c in telegram_server.calls if c.method.startswith("send")] == [
        "sendMessage",
        "sendPhoto",
        "sendDocument",
    ]
    photo_call = telegram_server.calls_of("sendPhoto")[0]
    assert photo_call.files["photo"].content == image
    assert photo_call.params["chat_id"] == str(CHAT)
    document_call = telegram_server.calls_of("sendDocument")[0]
    assert document_call.files["document"].content == pdf
    assert document_call.files["document"].filename == "invoice 42.pdf"
    sent = telegram_server.sent_messages(CHAT)
    assert sent[1]["photo"][-1]["width"] == 3 and sent[1]["photo"][-1]["height"] == 2
    assert sent[2]["document"]["file_name"] == "invoice 42.pdf"
    assert result.provider_id == f"{CHAT}:{sent[0]['message_id']}"


def test_attachment_without_text_and_non_photo_images(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    telegram.send(
        reply("", metadata={"attachments": [{"filename": "a.svg", "content_type": "image/svg+xml", "content": svg}]})
    )
    assert telegram_server.calls_of("sendMessage") == []
    assert telegram_server.calls_of("sendDocument")[0].files["document"].content == svg


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (reply("   "), "nothing to send"),
        (OutboundMessage(idempotency_key="k", recipient="not a chat", text="x"), "not a Telegram chat id"),
        (reply("x", metadata={"attachments": [{"filename": "a"}]}), "no content bytes"),
    ],
)
def test_unsendable_replies_are_refused_before_calling(
    telegram_server: TelegramServer, telegram: TelegramConnector, message: OutboundMessage, reason: str
) -> None:
    with pytest.raises(PermanentError, match=reason):
        telegram.send(message)
    assert telegram_server.calls == []


@pytest.mark.parametrize(
    ("inject", "error", "words", "retry_after"),
    [
        (lambda s: s.rate_limit_next("sendMessage", retry_after=14), RateLimited, "retry after 14", 14.0),
        (lambda s: s.block_next("sendMessage"), PermanentError, "bot was blocked by the user", None),
        (
            lambda s: s.fail_next("sendMessage", status=403, description="Forbidden: user is deactivated"),
            PermanentError,
            "user is deactivated",
            None,
        ),
        (lambda s: s.unauthorized_next("sendMessage"), AuthError, "bot token", None),
        (lambda s: s.server_error_next("sendMessage", status=500), TransientError, "server error", None),
        (lambda s: s.server_error_next("sendMessage", status=502), TransientError, "server error", None),
        (
            lambda s: s.fail_next("sendMessage", status=400, description="Bad Request: message is too long"),
            PermanentError,
            "Message is too long",
            None,
        ),
        (
            lambda s: s.fail_next("sendMessage", status=429, description="Too Many Requests"),
            RateLimited,
            "Too Many Requests",
            30.0,
        ),
    ],
)
def test_provider_errors_map_to_connector_errors(
    telegram_server: TelegramServer,
    telegram: TelegramConnector,
    inject: Callable[[TelegramServer], None],
    error: type[Exception],
    words: str,
    retry_after: float | None,
) -> None:
    inject(telegram_server)
    with pytest.raises(error) as excinfo:
        telegram.send(reply())
    exc = excinfo.value
    assert words in str(exc)
    if error is PermanentError:
        assert not isinstance(exc, AuthError)
    if error is TransientError:
        assert not isinstance(exc, RateLimited)
        assert exc.maybe_delivered is False  # type: ignore[attr-defined]
    if retry_after is not None:
        assert isinstance(exc, RateLimited) and exc.retry_after == retry_after
    assert_token_hidden(exc, telegram_server.token)
    assert telegram_server.sent_messages() == []


def test_real_bad_request_from_the_server(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    with pytest.raises(PermanentError, match="Chat not found") as excinfo:
        telegram.send(OutboundMessage(idempotency_key="k", recipient="@nobody_here", text="x"))
    assert_token_hidden(excinfo.value, telegram_server.token)


def test_a_blocked_chat_stays_blocked(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    telegram_server.block_chat(CHAT)
    for _ in range(2):
        with pytest.raises(PermanentError, match="blocked by the user"):
            telegram.send(reply())


def test_wrong_token_is_an_auth_error(
    telegram_server: TelegramServer, make_connector: Callable[..., TelegramConnector]
) -> None:
    wrong = "1234567:AAwrongwrongwrongwrongwrongwrongwrong"
    with pytest.raises(AuthError) as excinfo:
        make_connector(token=wrong).send(reply())
    assert_token_hidden(excinfo.value, wrong)
    with pytest.raises(AuthError, match="no bot token"):
        make_connector(token="").send(reply())


def test_timeout_after_sending_may_have_delivered(
    telegram_server: TelegramServer, make_connector: Callable[..., TelegramConnector]
) -> None:
    connector = make_connector(timeout=0.5)
    telegram_server.slow_next("sendMessage", delay=1.5)
    started = time.monotonic()
    with pytest.raises(TransientError) as excinfo:
        connector.send(reply())
    assert time.monotonic() - started < 1.4
    assert excinfo.value.maybe_delivered is True
    assert "timed out" in str(excinfo.value)
    assert_token_hidden(excinfo.value, telegram_server.token)
    # ...and indeed the server went on and delivered it.
    wait_for(lambda: telegram_server.sent_messages(CHAT), timeout=5, what="the slow send to complete")


def test_dropped_connection_may_have_delivered(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    telegram_server.drop_next("sendMessage")
    with pytest.raises(TransientError) as excinfo:
        telegram.send(reply())
    assert excinfo.value.maybe_delivered is True
    assert len(telegram_server.sent_messages(CHAT)) == 1
    assert_token_hidden(excinfo.value, telegram_server.token)


def test_unreachable_server_was_not_delivered(make_connector: Callable[..., TelegramConnector]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    connector = make_connector(api_base=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientError) as excinfo:
        connector.send(reply())
    assert excinfo.value.maybe_delivered is False
    assert not isinstance(excinfo.value, RateLimited)
    assert_token_hidden(excinfo.value, connector.client._token)


def test_failure_after_a_delivered_part_is_uncertain(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    telegram.part_interval = 0.01
    text = long_text(6000)
    telegram_server.fail_next("sendMessage", status=None)  # the first call passes untouched
    telegram_server.server_error_next("sendMessage")  # ...the second one fails
    with pytest.raises(TransientError) as excinfo:
        telegram.send(reply(text))
    assert excinfo.value.maybe_delivered is True
    assert "1 of 2 parts were already delivered" in str(excinfo.value)
    assert len(telegram_server.sent_messages(CHAT)) == 1


def test_short_flood_wait_between_parts_is_waited_out(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    telegram.part_interval = 0.01
    telegram_server.fail_next("sendMessage", status=None)
    telegram_server.rate_limit_next("sendMessage", retry_after=1)
    results = telegram.send_all(reply(long_text(6000)))
    assert len(results) == 2
    assert len(telegram_server.sent_messages(CHAT)) == 2
    calls = telegram_server.calls_of("sendMessage")
    assert len(calls) == 3 and calls[2].at - calls[1].at >= 0.9


def test_flood_control_holds_for_retry_after(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    telegram_server.rate_limit_next("sendMessage", retry_after=2)
    with pytest.raises(RateLimited) as first:
        telegram.send(reply())
    with pytest.raises(RateLimited) as second:  # as on Telegram, the window holds for every call
        telegram.send(reply())
    assert first.value.retry_after == 2 and 1 <= second.value.retry_after <= 2
    time.sleep(2.05)
    assert telegram.send(reply()).provider_id.startswith(f"{CHAT}:")
    assert [c.status for c in telegram_server.calls_of("sendMessage")] == [429, 429, 200]
