"""EmailConnector end to end: SMTP out to aiosmtpd, the same bytes delivered into Dovecot, fetched and normalised."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from connectors.base import ConnectorContext, OutboundMessage, PermanentError
from connectors.email import EmailConnector
from connectors.email.tokens import make_message_id, read_token
from tests.connectors.email.conftest import MailAccount
from tests.fakes.smtp_server import SmtpServer

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
KEY = b"inbox-token-key"


def connector(smtp: SmtpServer | None = None, account: MailAccount | None = None, **extra: Any) -> EmailConnector:
    settings: dict[str, Any] = {
        "address": "support@example.test",
        "display_name": "ACME Support",
        "domain": "example.test",
        "timeout": 10,
    }
    secrets: dict[str, Any] = {}
    if smtp is not None:
        settings.update(smtp_host=smtp.host, smtp_port=smtp.port, smtp_security="none")
        secrets["smtp_password"] = "smtp-secret"
    if account is not None:
        settings.update(
            imap_host=account.host, imap_port=account.port, imap_security="none", imap_username=account.user
        )
        secrets["imap_password"] = account.password
    settings.update(extra)
    return EmailConnector(settings=settings, secrets=secrets, context=ConnectorContext())


def test_kind_and_protocol_attributes() -> None:
    assert EmailConnector.kind == "email"
    assert EmailConnector.label and EmailConnector.max_text_length > 0


def test_send_then_receive_the_customer_reply(smtp_server: SmtpServer, mail_account: MailAccount) -> None:
    conn = connector(smtp_server, mail_account)
    message_id = make_message_id(42, KEY, domain="example.test", unique="delivery-uuid-1")
    result = conn.send(
        OutboundMessage(
            idempotency_key="delivery-uuid-1",
            recipient="customer@example.com",
            text="We have shipped your order.",
            subject="Where is my order?",
            reply_to_external_id="customer-first@example.com",
            metadata={
                "message_id": message_id,
                "references": ["customer-first@example.com"],
                "html": "<p>We have <b>shipped</b> your order.</p>",
            },
        )
    )
    assert result.provider_id == message_id.strip("<>")
    sent = smtp_server.messages[0].message
    assert sent["Subject"] == "Re: Where is my order?"
    assert sent["In-Reply-To"] == "<customer-first@example.com>"
    assert sent["From"].addresses[0].display_name == "ACME Support"

    # The customer answers our mail: their client threads it under our Message-ID.
    answer = (
        "From: Customer <Customer@Example.com>\r\nTo: support@example.test\r\nSubject: Re: Where is my order?\r\n"
        f"Message-ID: <answer@example.com>\r\nIn-Reply-To: {message_id}\r\n"
        f"References: <customer-first@example.com> {message_id}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Thank you!\r\n\r\nOn Mon, ACME Support <support@example.test> wrote:\r\n> We have shipped your order.\r\n"
    ).encode()
    uid = mail_account.deliver(answer)
    with conn.mailbox() as box:
        batches = list(box.fetch_since(0))
        uidvalidity = box.uidvalidity
    assert [[u for u, _ in b] for b in batches] == [[uid]]
    payload = EmailConnector.payload(raw=batches[0][0][1], uid=uid, uidvalidity=uidvalidity, folder="INBOX")
    [inbound] = conn.normalize(payload)
    assert inbound.text == "Thank you!"
    assert inbound.sender.handle == "customer@example.com"
    assert inbound.thread_key == "customer-first@example.com"
    assert read_token(inbound.reply_token, KEY) == 42
    assert inbound.metadata["imap"] == {"uid": uid, "uidvalidity": uidvalidity, "folder": "INBOX"}
    assert inbound.metadata["auto_submitted"] is False


def test_message_id_without_metadata_is_stable_across_retries(smtp_server: SmtpServer) -> None:
    conn = connector(smtp_server)
    outbound = OutboundMessage(idempotency_key="abc-123", recipient="c@example.com", text="hi", subject="New topic")
    first = conn.send(outbound)
    second = conn.send(outbound)
    assert first.provider_id == second.provider_id == "sb-abc-123@example.test"
    assert smtp_server.messages[0].message["Subject"] == "New topic"  # not a reply: no "Re:"


def test_automatic_mail_is_marked(smtp_server: SmtpServer) -> None:
    conn = connector(smtp_server)
    conn.send(
        OutboundMessage(idempotency_key="ack-1", recipient="c@example.com", text="We got it", metadata={"auto": True})
    )
    assert smtp_server.messages[0].message["Auto-Submitted"] == "auto-replied"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "raw_b64"),
        ({"raw_b64": "***not base64***"}, "not valid base64"),
        ({"raw_b64": base64.b64encode(b"Subject: x\r\n\r\nno sender").decode()}, "no sender"),
        ({"raw_b64": base64.b64encode(b"From: a@b.example\r\n\r\nx").decode(), "uid": "7"}, "uid"),
    ],
)
def test_normalize_rejects_bad_payloads(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        connector().normalize(payload)


def test_missing_configuration_is_permanent() -> None:
    with pytest.raises(PermanentError, match="smtp_host"):
        connector().send(OutboundMessage(idempotency_key="x", recipient="c@example.com", text="hi"))
    with pytest.raises(PermanentError, match="imap_host"):
        connector().mailbox()
