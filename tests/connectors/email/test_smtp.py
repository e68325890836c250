"""SmtpSender and build_reply against a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import time

import pytest

from connectors.base import AuthError, PermanentError, TransientError
from connectors.email.parse import parse_email
from connectors.email.smtp import OutboundAttachment, SmtpSender, build_reply, reply_subject
from tests.fakes.dovecot import free_port
from tests.fakes.smtp_server import SmtpServer

USER, PASSWORD = "support@example.test", "smtp-secret"
# aiosmtpd warns that AUTH without TLS is unsafe: true, and fine on a loopback test server.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def reply(**overrides: object) -> object:
    values: dict[str, object] = {
        "from_address": USER,
        "from_name": "ACME Support – Team",
        "to": "Customer <customer@example.com>",
        "subject": "RE: Aw: My order",
        "text": "Hello,\n.\nA line with a single dot above (RFC 5321 dot-stuffing).\nGrüße",
        "html": "<p>Hello, <b>Grüße</b></p>",
        "message_id": "<sb.1.abc.d1@example.test>",
        "in_reply_to": "<parent@example.com>",
        "references": ["<root@example.com>", "<parent@example.com>"],
    }
    values.update(overrides)
    return build_reply(**values)  # type: ignore[arg-type]


def sender(server: SmtpServer, **kwargs: object) -> SmtpSender:
    options: dict[str, object] = {"security": "none", "timeout": 5}
    options.update(kwargs)
    return SmtpSender(server.host, server.port, USER, PASSWORD, **options)  # type: ignore[arg-type]


def test_reply_subject() -> None:
    assert reply_subject("Order 42") == "Re: Order 42"
    assert reply_subject("Re: Order 42") == "Re: Order 42"
    assert reply_subject("RE: re: Aw: SV: Order") == "Re: Order"
    assert reply_subject("Re[2]: Order") == "Re: Order"
    assert reply_subject("回复：订单") == "Re: 订单"
    assert reply_subject("") == "Re:"


def test_send_delivers_with_threading_headers(smtp_server: SmtpServer) -> None:
    message = reply(attachments=[OutboundAttachment("invoice.pdf", "application/pdf", b"%PDF-1.4 test")])
    result = sender(smtp_server).send(message)  # type: ignore[arg-type]
    assert result.provider_id == "sb.1.abc.d1@example.test"
    assert len(smtp_server.messages) == 1
    received = smtp_server.messages[0]
    assert received.envelope_from == USER
    assert received.recipients == ["customer@example.com"]
    assert received.login == USER
    got = received.message
    assert got["Message-ID"] == "<sb.1.abc.d1@example.test>"
    assert got["In-Reply-To"] == "<parent@example.com>"
    assert got["References"] == "<root@example.com> <parent@example.com>"
    assert got["Subject"] == "Re: My order"
    assert got["From"].addresses[0].display_name == "ACME Support – Team"
    assert got["From"].addresses[0].addr_spec == USER
    assert got["X-Loop"] == USER
    assert got["Auto-Submitted"] is None
    assert got.get_content_type() == "multipart/mixed"
    body = got.get_body(preferencelist=("plain",))
    assert body is not None and "\n.\nA line with a single dot" in body.get_content().replace("\r\n", "\n")
    html = got.get_body(preferencelist=("html",))
    assert html is not None and "<b>Grüße</b>" in html.get_content()
    # and our own parser reads what we sent
    parsed = parse_email(received.raw)
    assert parsed.external_id == "sb.1.abc.d1@example.test"
    assert parsed.thread_key == "root@example.com"
    assert parsed.attachments[0].content_type == "application/pdf"
    assert parsed.metadata["auto_reason"] == f"X-Loop: {USER}"  # our own mail coming back is never answered


def test_references_get_the_parent_appended_and_automatic_mails_are_marked(smtp_server: SmtpServer) -> None:
    message = reply(references=["<root@example.com>"], in_reply_to="parent@example.com", auto=True, html=None)
    sender(smtp_server).send(message)  # type: ignore[arg-type]
    got = smtp_server.messages[0].message
    assert got["References"] == "<root@example.com> <parent@example.com>"
    assert got["Auto-Submitted"] == "auto-replied"
    assert got.get_content_type() == "text/plain"
    assert parse_email(smtp_server.messages[0].raw, our_addresses=[USER]).metadata["auto_submitted"] is True


def test_retry_reuses_the_message_id(smtp_server: SmtpServer) -> None:
    smtp_server.script("DATA", "451 4.3.0 Try again later")
    with pytest.raises(TransientError) as first:
        sender(smtp_server).send(reply())  # type: ignore[arg-type]
    assert "451" in str(first.value) and first.value.maybe_delivered is False
    result = sender(smtp_server).send(reply())  # type: ignore[arg-type]
    assert result.provider_id == "sb.1.abc.d1@example.test"
    assert [m.message["Message-ID"] for m in smtp_server.messages] == ["<sb.1.abc.d1@example.test>"]


def test_recipient_refused_permanently(smtp_server: SmtpServer) -> None:
    smtp_server.script("RCPT", "550 5.1.1 <customer@example.com>: Recipient address rejected: User unknown")
    with pytest.raises(PermanentError) as error:
        sender(smtp_server).send(reply())  # type: ignore[arg-type]
    assert not isinstance(error.value, AuthError)
    assert "550 5.1.1" in str(error.value) and "User unknown" in str(error.value)
    assert smtp_server.messages == []


def test_recipient_refused_temporarily(smtp_server: SmtpServer) -> None:
    smtp_server.script("RCPT", "450 4.2.0 Mailbox busy")
    with pytest.raises(TransientError, match=r"450 4\.2\.0 Mailbox busy"):
        sender(smtp_server).send(reply())  # type: ignore[arg-type]


def test_data_refused_permanently(smtp_server: SmtpServer) -> None:
    smtp_server.script("DATA", "554 5.7.1 Message rejected as spam")
    with pytest.raises(PermanentError, match=r"554 5\.7\.1 Message rejected as spam"):
        sender(smtp_server).send(reply())  # type: ignore[arg-type]


def test_sender_refused(smtp_server: SmtpServer) -> None:
    smtp_server.script("MAIL", "553 5.7.1 Sender address rejected: not owned by user")
    with pytest.raises(PermanentError, match="not owned by user"):
        sender(smtp_server).send(reply())  # type: ignore[arg-type]


def test_partial_recipients_still_delivers(smtp_server: SmtpServer) -> None:
    smtp_server.script("RCPT", "550 5.1.1 no such user")
    sender(smtp_server).send(reply(cc=["second@example.com"]))  # type: ignore[arg-type]
    assert smtp_server.messages[0].recipients == ["second@example.com"]


def test_wrong_password_is_an_auth_error(smtp_server: SmtpServer) -> None:
    bad = SmtpSender(smtp_server.host, smtp_server.port, USER, "wrong", security="none", timeout=5)
    with pytest.raises(AuthError, match="535"):
        bad.send(reply())  # type: ignore[arg-type]
    assert smtp_server.auth_attempts and all(user == USER and not ok for user, ok in smtp_server.auth_attempts)


def test_timeout_after_data_may_have_delivered(smtp_server: SmtpServer) -> None:
    smtp_server.data_delay = 3
    started = time.monotonic()
    with pytest.raises(TransientError) as error:
        sender(smtp_server, timeout=1).send(reply())  # type: ignore[arg-type]
    assert error.value.maybe_delivered is True
    assert time.monotonic() - started < 5


def test_connection_refused_is_transient() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(TransientError, match="cannot connect") as error:
        SmtpSender("127.0.0.1", port, USER, PASSWORD, security="none", timeout=2).send(reply())  # type: ignore[arg-type]
    assert error.value.maybe_delivered is False


def test_starttls_with_a_verified_certificate() -> None:
    with SmtpServer(users={USER: PASSWORD}, tls=True) as server:
        tls_sender = SmtpSender(
            "localhost", server.port, USER, PASSWORD, security="starttls", timeout=5,
            ssl_context=server.client_tls_context(),
        )  # fmt: skip
        tls_sender.send(reply())  # type: ignore[arg-type]
        assert len(server.messages) == 1
        # the default context does not trust a self-signed certificate: a configuration error, not a retry
        with pytest.raises(PermanentError, match="certificate"):
            SmtpSender("localhost", server.port, USER, PASSWORD, security="starttls", timeout=5).send(reply())  # type: ignore[arg-type]


def test_starttls_missing_is_reported(smtp_server: SmtpServer) -> None:
    with pytest.raises(PermanentError, match="STARTTLS"):
        sender(smtp_server, security="starttls").send(reply())  # type: ignore[arg-type]


def test_bad_message_id_is_refused_before_sending() -> None:
    with pytest.raises(ValueError):
        reply(message_id="no-at-sign")


def test_no_password_sends_without_auth_and_a_server_wanting_auth_says_so() -> None:
    with SmtpServer() as open_relay:  # no users: AUTH not required
        SmtpSender(open_relay.host, open_relay.port, USER, "", security="none", timeout=5).send(reply())  # type: ignore[arg-type]
        assert open_relay.messages[0].login is None
    with SmtpServer(users={USER: PASSWORD}) as strict, pytest.raises(AuthError, match="530"):
        SmtpSender(strict.host, strict.port, USER, "", security="none", timeout=5).send(reply())  # type: ignore[arg-type]


def test_long_message_ids_in_threading_headers_are_never_encoded() -> None:
    """Our own Message-IDs are ~90 characters; the stdlib would RFC 2047-encode them in In-Reply-To/References."""
    from email import message_from_bytes
    from email import policy as email_policy

    from connectors.email.smtp import SMTP_POLICY, build_reply

    long_id = "<sb.1.tssba3wx5xxxcapr7oqxogid.f049ad1c-d26d-47bc-a450-bb2a170a5a30@example.test>"
    msg = build_reply(
        from_address="support@example.test",
        to="a@customer.test",
        subject="Withdrawal",
        text="hi",
        message_id=long_id.replace("sb.1", "sb.2"),
        in_reply_to=long_id,
        references=[long_id, "<short@customer.test>"],
    )
    raw = msg.as_bytes(policy=SMTP_POLICY)
    assert b"=?utf-8?" not in raw
    parsed = message_from_bytes(raw, policy=email_policy.default)
    assert parsed["In-Reply-To"] == long_id
    assert parsed["References"].split() == [long_id, "<short@customer.test>"]
