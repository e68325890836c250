"""Fixtures with real mail servers: a private Dovecot (IMAP) and aiosmtpd (SMTP), both on 127.0.0.1.

No database is needed by these tests. Usable from other test packages too: import the fixtures, or use the
classes in tests/fakes/dovecot.py and tests/fakes/smtp_server.py directly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.dovecot import Dovecot, ensure_dovecot
from tests.fakes.smtp_server import SmtpServer

# <project>/tests/connectors/email/conftest.py -> parents[3] is the project root; the data sits beside it.
SHARED_EMAIL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "email"
_counter = itertools.count(1)


@dataclass(frozen=True)
class MailAccount:
    server: Dovecot
    user: str
    password: str

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def deliver(self, raw: bytes, *, folder: str = "INBOX") -> int:
        return self.server.deliver(self.user, raw, folder=folder)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One private Dovecot for the test session (skipped with the reason when it cannot be installed)."""
    if ensure_dovecot() is None:
        pytest.skip("dovecot is not installed and cannot be installed here (apt-get install dovecot-imapd)")
    server = Dovecot(users={})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mail_account(dovecot: Dovecot) -> MailAccount:
    """A fresh account with an empty INBOX on the session's Dovecot."""
    user = f"support{next(_counter)}@example.test"
    password = f"pw-{user}"
    dovecot.add_user(user, password)
    return MailAccount(server=dovecot, user=user, password=password)


@pytest.fixture
def isolated_account() -> Iterator[MailAccount]:
    """An account on a Dovecot of its own, for tests that log in with a wrong password on purpose.

    Dovecot's anvil delays every later login from the same IP after failed ones (the "auth penalty", up to
    15 s); a private instance keeps that away from the session's server.
    """
    if ensure_dovecot() is None:
        pytest.skip("dovecot is not installed and cannot be installed here (apt-get install dovecot-imapd)")
    user, password = "lonely@example.test", "lonely-password"
    server = Dovecot(users={user: password})
    server.start()
    try:
        yield MailAccount(server=server, user=user, password=password)
    finally:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """aiosmtpd on a free loopback port, AUTH required for support@example.test / smtp-secret."""
    server = SmtpServer(users={"support@example.test": "smtp-secret"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def shared_email_dir() -> Path:
    if not SHARED_EMAIL.is_dir():
        pytest.skip(f"shared e-mail corpus not found at {SHARED_EMAIL.resolve()} (../shared/data/email)")
    return SHARED_EMAIL
