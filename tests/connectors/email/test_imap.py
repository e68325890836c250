"""Mailbox against a real, private Dovecot."""

from __future__ import annotations

import threading
import time

import pytest

from connectors.base import AuthError, PermanentError, TransientError
from connectors.email.imap import Mailbox
from tests.connectors.email.conftest import MailAccount
from tests.fakes.dovecot import free_port


def mail(n: int, *, subject: str = "Hello") -> bytes:
    return (
        f"From: Customer {n} <c{n}@example.com>\r\nTo: support@example.test\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <msg{n}@example.com>\r\nDate: Mon, 06 Jan 2025 10:00:00 +0000\r\n\r\nBody number {n}\r\n"
    ).encode()


def mailbox(account: MailAccount, **kwargs: object) -> Mailbox:
    options: dict[str, object] = {"ssl": False, "timeout": 10}
    options.update(kwargs)
    return Mailbox(account.host, account.port, account.user, account.password, **options)  # type: ignore[arg-type]


def test_fetch_since_yields_each_message_once_in_uid_order_and_unseen(mail_account: MailAccount) -> None:
    uids = [mail_account.deliver(mail(i)) for i in range(7)]
    with mailbox(mail_account) as box:
        assert box.uidvalidity > 0
        assert box.uidnext == uids[-1] + 1
        batches = list(box.fetch_since(0, batch=3))
        assert [len(b) for b in batches] == [3, 3, 1]
        fetched = [item for b in batches for item in b]
        assert [uid for uid, _ in fetched] == uids
        assert [raw for _, raw in fetched] == [mail(i) for i in range(7)]
        cursor = fetched[-1][0]
        assert list(box.fetch_since(cursor)) == []  # nothing after the cursor (RFC 3501 "n:*" quirk handled)
        newer = mail_account.deliver(mail(99))
        assert [[uid for uid, _ in b] for b in box.fetch_since(cursor)] == [[newer]]
    for uid in uids:
        assert b"\\Seen" not in mail_account.server.flags(mail_account.user, uid)  # BODY.PEEK[]


def test_empty_mailbox(mail_account: MailAccount) -> None:
    with mailbox(mail_account) as box:
        assert list(box.fetch_since(0)) == []
        assert box.uidnext >= 1


def test_idle_returns_true_soon_after_delivery(mail_account: MailAccount) -> None:
    with mailbox(mail_account) as box:
        timer = threading.Timer(0.5, lambda: mail_account.deliver(mail(1)))
        started = time.monotonic()
        timer.start()
        try:
            assert box.idle(15) is True
        finally:
            timer.join()
        assert time.monotonic() - started < 3
        assert [[uid for uid, _ in b] for b in box.fetch_since(0)] == [[1]]


def test_idle_sees_a_local_maildir_delivery(mail_account: MailAccount) -> None:
    with mailbox(mail_account) as box:
        timer = threading.Timer(0.5, lambda: mail_account.server.deliver_to_maildir(mail_account.user, mail(2)))
        timer.start()
        try:
            assert box.idle(15) is True
        finally:
            timer.join()


def test_idle_times_out_and_reissues_within_the_limit(mail_account: MailAccount) -> None:
    with mailbox(mail_account, max_idle_seconds=0.5) as box:
        started = time.monotonic()
        assert box.idle(1.6) is False  # three IDLE commands of at most 0.5 s each
        assert 1.5 < time.monotonic() - started < 3
        timer = threading.Timer(1.2, lambda: mail_account.deliver(mail(3)))  # arrives during a later IDLE
        timer.start()
        try:
            assert box.idle(10) is True
        finally:
            timer.join()


def test_mark_seen_and_move(mail_account: MailAccount) -> None:
    first = mail_account.deliver(mail(1))
    second = mail_account.deliver(mail(2))
    mail_account.server.create_folder(mail_account.user, "Processed")
    with mailbox(mail_account) as box:
        box.mark_seen([first])
        assert b"\\Seen" in mail_account.server.flags(mail_account.user, first)
        box.move([second], "Processed")
        assert [uid for b in box.fetch_since(0) for uid, _ in b] == [first]
        with pytest.raises(PermanentError, match="does not exist"):
            box.move([first], "NoSuchFolder")
    with mailbox(mail_account, folder="Processed") as processed:
        assert len([m for b in processed.fetch_since(0) for m in b]) == 1


def test_wrong_password_is_an_auth_error(isolated_account: MailAccount) -> None:
    account = isolated_account
    box = Mailbox(account.host, account.port, account.user, "wrong", ssl=False, timeout=10)
    with pytest.raises(AuthError, match="refused the login"):
        box.connect()


def test_missing_folder_is_a_permanent_error(mail_account: MailAccount) -> None:
    with pytest.raises(PermanentError, match="does not exist") as error:
        mailbox(mail_account, folder="Nope").connect()
    assert not isinstance(error.value, AuthError)


def test_nothing_listening_is_transient() -> None:
    box = Mailbox("127.0.0.1", free_port(), "u", "p", ssl=False, timeout=2)
    with pytest.raises(TransientError, match="cannot connect"):
        box.connect()


def test_silent_server_times_out_as_transient() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        box = Mailbox("127.0.0.1", port, "u", "p", ssl=False, timeout=1)
        started = time.monotonic()
        with pytest.raises(TransientError):
            box.connect()  # TCP accepted by the backlog, but no greeting ever comes
        assert time.monotonic() - started < 5


def test_uidvalidity_is_stable_across_sessions(mail_account: MailAccount) -> None:
    with mailbox(mail_account) as box:
        first = box.uidvalidity
    with mailbox(mail_account) as box:
        assert box.uidvalidity == first
