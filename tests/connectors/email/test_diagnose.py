"""The admin's connection checks against the real test servers."""

from __future__ import annotations

import pytest

from connectors.email.diagnose import diagnose_imap, diagnose_smtp
from tests.connectors.email.conftest import MailAccount
from tests.fakes.dovecot import free_port
from tests.fakes.smtp_server import SmtpServer

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def names(steps: list) -> list[tuple[str, bool]]:  # type: ignore[type-arg]
    return [(s.name, s.ok) for s in steps]


def test_imap_all_good(mail_account: MailAccount) -> None:
    steps = diagnose_imap(mail_account.host, mail_account.port, mail_account.user, mail_account.password, ssl=False)
    assert names(steps) == [("dns", True), ("tcp", True), ("greeting", True), ("login", True), ("folder", True)]
    assert "IDLE supported" in steps[-1].detail and "UIDVALIDITY" in steps[-1].detail


def test_imap_wrong_password(isolated_account: MailAccount) -> None:
    account = isolated_account
    steps = diagnose_imap(account.host, account.port, account.user, "nope", ssl=False)
    assert names(steps)[-1] == ("login", False)
    assert "AUTHENTICATIONFAILED" in steps[-1].detail
    assert "nope" not in " ".join(s.detail for s in steps)


def test_imap_missing_folder(mail_account: MailAccount) -> None:
    steps = diagnose_imap(
        mail_account.host, mail_account.port, mail_account.user, mail_account.password, ssl=False, folder="Missing"
    )
    assert names(steps)[-1] == ("folder", False)


def test_imap_tls_to_a_plain_server_fails_at_tls(mail_account: MailAccount) -> None:
    steps = diagnose_imap(mail_account.host, mail_account.port, mail_account.user, "x", ssl=True, timeout=3)
    assert names(steps) == [("dns", True), ("tcp", True), ("tls", False)]


def test_dns_and_tcp_failures() -> None:
    steps = diagnose_imap("no-such-host.invalid", 993, "u", "p")
    assert names(steps) == [("dns", False)]
    assert "not resolved" in steps[0].detail
    steps = diagnose_smtp("127.0.0.1", free_port(), "u", "p", security="none", timeout=2)
    assert names(steps) == [("dns", True), ("tcp", False)]
    assert "refused" in steps[-1].detail.lower()


def test_smtp_good_and_bad_login(smtp_server: SmtpServer) -> None:
    steps = diagnose_smtp(smtp_server.host, smtp_server.port, "support@example.test", "smtp-secret", security="none")
    assert names(steps) == [("dns", True), ("tcp", True), ("greeting", True), ("login", True)]
    assert "auth" in steps[2].detail
    steps = diagnose_smtp(smtp_server.host, smtp_server.port, "support@example.test", "bad", security="none")
    assert names(steps)[-1] == ("login", False) and "535" in steps[-1].detail


def test_smtp_starttls_not_offered(smtp_server: SmtpServer) -> None:
    steps = diagnose_smtp(smtp_server.host, smtp_server.port, "support@example.test", "smtp-secret")
    assert names(steps)[-1] == ("starttls", False)
    assert "STARTTLS" in steps[-1].detail


def test_smtp_starttls_verified() -> None:
    with SmtpServer(users={"u@example.test": "pw"}, tls=True) as server:
        steps = diagnose_smtp("localhost", server.port, "u@example.test", "pw", ssl_context=server.client_tls_context())
        assert names(steps)[-2:] == [("starttls", True), ("login", True)]
        assert "TLSv1" in steps[-2].detail
        steps = diagnose_smtp("localhost", server.port, "u@example.test", "pw")
        assert names(steps)[-1] == ("starttls", False) and "certificate" in steps[-1].detail
