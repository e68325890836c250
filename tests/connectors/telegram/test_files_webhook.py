"""download_file with its size limit; webhooks (secret check, set/delete/info, delivery); diagnose; token hygiene."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from connectors.base import AuthError, PermanentError, TransientError
from connectors.telegram import (
    SECRET_HEADER,
    TelegramConnector,
    generate_webhook_secret,
    is_valid_secret_token,
    verify_webhook_secret,
)
from tests.connectors.telegram.conftest import WEBHOOK_SECRET
from tests.fakes.callback_server import CallbackServer
from tests.fakes.telegram_server import TelegramServer

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 20 + b"\n%%EOF"


# --- files ----------------------------------------------------------------------------------------------------------
def test_download_a_file_from_a_normalized_update(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    document = telegram_server.add_file(PDF, file_name="receipt.pdf", mime_type="application/pdf")
    telegram_server.queue_message(None, document=document, caption="my receipt")  # type: ignore[arg-type]
    (message,) = telegram.normalize(telegram.get_updates(0, timeout=0)[0])
    (info,) = message.metadata["files"]
    assert info["file_name"] == "receipt.pdf"
    content, filename, content_type = telegram.download_file(
        info["file_id"], max_bytes=1_000_000, filename=info["file_name"], content_type=info["mime_type"]
    )
    assert content == PDF
    assert (filename, content_type) == ("receipt.pdf", "application/pdf")
    # Without hints, the name comes from Telegram's file_path and the type is guessed from it.
    content, filename, content_type = telegram.download_file(info["file_id"], max_bytes=1_000_000)
    assert content == PDF and filename.endswith(".pdf") and content_type == "application/pdf"


def test_over_limit_file_is_refused_before_downloading(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    document = telegram_server.add_file(PDF, file_name="big.pdf", mime_type="application/pdf")
    with pytest.raises(PermanentError, match=rf"{len(PDF)} bytes, over the limit of 100 bytes"):
        telegram.download_file(document["file_id"], max_bytes=100)
    assert telegram_server.calls_of("getFile") and telegram_server.calls_of("download") == []


def test_unknown_file_and_vanished_file(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    with pytest.raises(PermanentError, match=r"(?i)wrong file_id") as excinfo:
        telegram.download_file("nope", max_bytes=100)
    assert telegram_server.token not in str(excinfo.value)
    document = telegram_server.add_file(b"abc", file_name="a.txt", mime_type="text/plain")
    telegram_server.fail_next("download", status=404, description="Not Found")
    with pytest.raises(PermanentError, match="no longer has this file") as excinfo:
        telegram.download_file(document["file_id"], max_bytes=100)
    assert telegram_server.token not in str(excinfo.value)


def test_default_limit_comes_from_settings(
    telegram_server: TelegramServer, make_connector: Callable[..., TelegramConnector]
) -> None:
    document = telegram_server.add_file(b"x" * 50, file_name="a.bin")
    with pytest.raises(PermanentError, match="over the limit of 10 bytes"):
        make_connector(max_file_bytes=10).download_file(document["file_id"])


# --- webhook secret -------------------------------------------------------------------------------------------------
def test_verify_webhook_secret() -> None:
    assert verify_webhook_secret("s3cr3t", "s3cr3t")
    assert not verify_webhook_secret("s3cr3t", "s3cr3T")
    assert not verify_webhook_secret("s3cr3t", None)
    assert not verify_webhook_secret("s3cr3t", "")
    assert not verify_webhook_secret("", "")  # an unconfigured secret never verifies
    assert not verify_webhook_secret("", None)
    assert not verify_webhook_secret("é", "e")
    secret = generate_webhook_secret()
    assert is_valid_secret_token(secret) and len(secret) >= 43
    assert not is_valid_secret_token("has space") and not is_valid_secret_token("x" * 257)


def test_set_webhook_and_deliver_with_the_secret_header(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    with CallbackServer() as receiver:
        assert telegram.set_webhook(receiver.url, secret_token=WEBHOOK_SECRET, max_connections=10) is True
        info = telegram.get_webhook_info()
        assert info["url"] == receiver.url
        assert info["max_connections"] == 10
        assert info["allowed_updates"] == ["message", "edited_message", "callback_query"]
        update = telegram_server.queue_message("via webhook")
        assert telegram_server.deliver_webhook() == 1
        (request,) = receiver.requests
        assert request.json() == update
        assert telegram.verify_webhook(request.headers[SECRET_HEADER])
        assert telegram.normalize(request.json())[0].text == "via webhook"
    assert telegram.get_webhook_info()["pending_update_count"] == 0
    assert telegram.delete_webhook() is True
    assert telegram.get_webhook_info()["url"] == ""


def test_post_update_helper_sends_the_header(telegram_server: TelegramServer) -> None:
    with CallbackServer() as receiver:
        status, _ = TelegramServer.post_update(receiver.url, {"update_id": 1}, secret="abc")
        status_without, _ = TelegramServer.post_update(receiver.url, {"update_id": 2}, secret=None)
    assert status == status_without == 200
    assert receiver.requests[0].headers[SECRET_HEADER] == "abc"
    assert SECRET_HEADER not in receiver.requests[1].headers


def test_invalid_webhook_secret_is_refused_locally(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    with pytest.raises(PermanentError, match="1-256 characters"):
        telegram.set_webhook("https://example.com/hook", secret_token="no spaces allowed")
    assert telegram_server.calls_of("setWebhook") == []


# --- diagnose -------------------------------------------------------------------------------------------------------
def test_diagnose_polling(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    steps = telegram.diagnose()
    assert [(s.name, s.ok) for s in steps] == [("token format", True), ("getMe", True), ("webhook info", True)]
    assert "@switchboard_test_bot" in steps[1].detail
    telegram.set_webhook("https://example.com/hook", secret_token="abc")
    last = telegram.diagnose()[-1]
    assert not last.ok and "409" in last.detail


def test_diagnose_webhook_mode_reports_delivery_errors(
    telegram_server: TelegramServer, make_connector: Callable[..., TelegramConnector]
) -> None:
    with CallbackServer() as receiver:
        connector = make_connector(mode="webhook", webhook_url=receiver.url)
        assert not connector.diagnose()[-1].ok  # no webhook yet
        connector.set_webhook(receiver.url, secret_token=WEBHOOK_SECRET)
        assert [(s.name, s.ok) for s in connector.diagnose()][-2:] == [("webhook info", True), ("webhook secret", True)]
        receiver.then(500)
        telegram_server.queue_message("refused")
        assert telegram_server.deliver_webhook() == 0
        last = next(s for s in connector.diagnose() if s.name == "webhook info")
        assert (
            not last.ok and "Wrong response from the webhook: 500" in last.detail and "1 updates waiting" in last.detail
        )


def test_diagnose_bad_tokens(telegram_server: TelegramServer, make_connector: Callable[..., TelegramConnector]) -> None:
    assert [(s.name, s.ok) for s in make_connector(token="").diagnose()] == [("token format", False)]
    assert [(s.name, s.ok) for s in make_connector(token="hello").diagnose()] == [("token format", False)]
    wrong = "1234567:AAwrongwrongwrongwrongwrongwrongwrong"
    steps = make_connector(token=wrong).diagnose()
    assert [(s.name, s.ok) for s in steps] == [("token format", True), ("getMe", False)]
    assert "rejected the bot token" in steps[1].detail and wrong not in steps[1].detail


def test_unknown_token_answers_401_like_telegram(telegram_server: TelegramServer) -> None:
    with CallbackServer():  # any client works: use the stdlib helper
        status, body = TelegramServer.post_update(f"{telegram_server.api_base}/bot1:nope/getMe", {}, secret=None)
    assert status == 401
    assert body == b'{"ok": false, "error_code": 401, "description": "Unauthorized"}'


def test_auth_error_on_admin_calls(make_connector: Callable[..., TelegramConnector]) -> None:
    with pytest.raises(AuthError):
        make_connector(token="1234567:AAwrongwrongwrongwrongwrongwrongwrong").get_me()


# --- token hygiene --------------------------------------------------------------------------------------------------
def test_the_token_never_reaches_the_logs(
    telegram_server: TelegramServer, telegram: TelegramConnector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    telegram.get_me()
    telegram_server.server_error_next("getMe")
    with pytest.raises(TransientError):
        telegram.get_me()
    document = telegram_server.add_file(b"abc", file_name="a.txt")
    telegram.download_file(document["file_id"], max_bytes=10)
    assert "getMe" in caplog.text  # httpx and PTB did log the requests...
    assert telegram_server.token not in caplog.text  # ...without the token
    assert telegram_server.token.partition(":")[2] not in caplog.text
    assert telegram_server.token not in repr(telegram) and telegram_server.token not in repr(telegram.client)
