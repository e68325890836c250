"""Fixtures for the Telegram connector: a fake Bot API server on loopback and a connector pointed at it.

No database is needed. Other test packages can use ``tests.fakes.telegram_server.TelegramServer`` directly
(``with TelegramServer() as server: ...``) or import these fixtures into their conftest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.telegram import TelegramConnector
from connectors.telegram.client import silence_ptb_warnings
from tests.fakes.telegram_server import SHARED_UPDATES, TelegramServer

WEBHOOK_SECRET = "whsec_" + "a" * 40


@pytest.fixture(autouse=True)
def _ptb_warning_filters() -> None:
    """pytest resets warning filters per test; re-install the connector's (see connectors/telegram/client.py)."""
    silence_ptb_warnings()


@pytest.fixture
def telegram_server() -> Iterator[TelegramServer]:
    with TelegramServer() as server:
        yield server


@pytest.fixture
def make_connector(telegram_server: TelegramServer) -> Callable[..., TelegramConnector]:
    """A connector for the fake server; keyword arguments override settings (``token=`` replaces the token)."""

    def make(token: str | None = None, **settings: Any) -> TelegramConnector:
        return TelegramConnector(
            settings={"api_base": telegram_server.api_base, **settings},
            secrets={"bot_token": telegram_server.token if token is None else token, "webhook_secret": WEBHOOK_SECRET},
        )

    return make


@pytest.fixture
def telegram(make_connector: Callable[..., TelegramConnector]) -> TelegramConnector:
    return make_connector()


@pytest.fixture(scope="session")
def shared_updates_dir() -> Path:
    """../shared/data/telegram/nutgram/Updates, read where it lies (never copied into the project)."""
    if not SHARED_UPDATES.is_dir():
        pytest.skip(f"the shared Telegram fixtures are absent ({SHARED_UPDATES.resolve()}): conformance not checked")
    return SHARED_UPDATES
