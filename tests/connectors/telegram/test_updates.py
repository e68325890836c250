"""get_updates: long polling with offsets against the fake server: no loss, no repeats, conflicts reported."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from connectors.base import RateLimited
from connectors.telegram import PollingConflict, TelegramConnector
from tests.fakes.telegram_server import TelegramServer


def test_updates_are_returned_exactly_as_queued(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    queued = [telegram_server.queue_message(f"message {i}") for i in range(3)]
    queued[0]["message"]["a_field_from_the_future"] = {"x": 1}  # the queue holds its own copy
    updates = telegram.get_updates(0, timeout=0)
    assert [u["update_id"] for u in updates] == [u["update_id"] for u in queued]
    assert updates[1] == queued[1]
    call = telegram_server.calls_of("getUpdates")[0]
    assert call.params["allowed_updates"] == ["message", "edited_message", "callback_query"]
    assert call.params["timeout"] == 0 and call.params["limit"] == 100


def test_offset_confirms_and_long_poll_times_out_empty(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    first = telegram_server.queue_message("one")
    assert len(telegram.get_updates(0, timeout=0)) == 1
    assert len(telegram.get_updates(0, timeout=0)) == 1  # unconfirmed: delivered again
    started = time.monotonic()
    assert telegram.get_updates(first["update_id"] + 1, timeout=1) == []
    assert 0.9 <= time.monotonic() - started < 5
    assert telegram_server.pending_updates() == []  # confirmed and forgotten


def test_long_poll_wakes_up_when_an_update_arrives(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    timer = threading.Timer(0.5, lambda: telegram_server.queue_message("late"))
    timer.start()
    started = time.monotonic()
    updates = telegram.get_updates(0, timeout=10)
    assert [u["message"]["text"] for u in updates] == ["late"]
    assert time.monotonic() - started < 5


def test_no_loss_and_no_repeat_across_calls_with_limit_and_a_concurrent_producer(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    total = 260
    for i in range(total // 2):
        telegram_server.queue_message(f"early {i}")

    def produce() -> None:
        for i in range(total // 2):
            telegram_server.queue_message(f"late {i}")
            if i % 20 == 0:
                time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    seen: list[int] = []
    offset = 0
    deadline = time.monotonic() + 30
    while len(seen) < total and time.monotonic() < deadline:
        batch = telegram.get_updates(offset, timeout=2, limit=100)
        assert len(batch) <= 100
        seen.extend(u["update_id"] for u in batch)
        if batch:
            offset = batch[-1]["update_id"] + 1  # store first, then confirm with the next call
    producer.join()
    assert len(seen) == total
    assert len(set(seen)) == total
    assert seen == sorted(seen)
    assert telegram.get_updates(offset, timeout=0) == []


def test_duplicate_deliveries_carry_the_same_update_id(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    update = telegram_server.build_message_update("twice")
    telegram_server.queue_update(update, times=2)
    updates = telegram.get_updates(0, timeout=0)
    assert len(updates) == 2 and updates[0] == updates[1]
    assert telegram.normalize(updates[0])[0].external_id == telegram.normalize(updates[1])[0].external_id


def test_negative_offset_keeps_only_the_latest(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    for i in range(5):
        telegram_server.queue_message(f"m{i}")
    updates = telegram.get_updates(-2, timeout=0)
    assert [u["message"]["text"] for u in updates] == ["m3", "m4"]


def test_allowed_updates_filter(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    telegram_server.queue_update({"update_id": 0, "my_chat_member": {"chat": {"id": 1, "type": "private"}}})
    telegram_server.queue_message("kept")
    updates = telegram.get_updates(0, timeout=0)
    assert [next(k for k in u if k != "update_id") for u in updates] == ["message"]
    telegram_server.queue_update({"update_id": 0, "my_chat_member": {"chat": {"id": 1, "type": "private"}}})
    assert len(telegram.get_updates(0, timeout=0, allowed_updates=["message", "my_chat_member"])) == 2


def test_polling_while_a_webhook_is_set_is_a_conflict(
    telegram_server: TelegramServer, telegram: TelegramConnector
) -> None:
    telegram.set_webhook("https://example.com/telegram/hook", secret_token="abc")
    with pytest.raises(PollingConflict, match="webhook is active"):
        telegram.get_updates(0, timeout=0)
    telegram.delete_webhook()
    assert telegram.get_updates(0, timeout=0) == []


def test_a_second_poller_terminates_the_first(
    telegram_server: TelegramServer, make_connector: Callable[..., TelegramConnector]
) -> None:
    errors: list[Exception] = []

    def first() -> None:
        try:
            make_connector().get_updates(0, timeout=10)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.5)
    assert make_connector().get_updates(0, timeout=0) == []
    thread.join(timeout=5)
    assert len(errors) == 1 and isinstance(errors[0], PollingConflict)
    assert "only one bot instance" in str(errors[0])


def test_flood_control_on_get_updates(telegram_server: TelegramServer, telegram: TelegramConnector) -> None:
    telegram_server.rate_limit_next("getUpdates", retry_after=3)
    with pytest.raises(RateLimited) as excinfo:
        telegram.get_updates(0, timeout=0)
    assert excinfo.value.retry_after == 3


def test_limit_is_validated(telegram: TelegramConnector) -> None:
    with pytest.raises(ValueError, match="limit"):
        telegram.get_updates(0, timeout=0, limit=0)
