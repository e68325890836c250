"""E-mail channel: IMAP in (fetch by UID, IDLE), SMTP out, threading by signed reply tokens and References.

Modules (plain Python, no Django, no Celery):

- ``parse``    raw RFC 5322 bytes -> InboundMessage; DSN bounces -> BounceInfo
- ``text``     HTML -> text, new text vs. quoted history and signature
- ``loops``    RFC 3834 auto-reply detection
- ``tokens``   HMAC reply tokens in Message-IDs and plus-addresses
- ``imap``     Mailbox (imapclient): fetch_since, idle, mark_seen, move
- ``smtp``     build_reply and SmtpSender
- ``diagnose`` the admin's "test connection" steps

Settings and secrets the connector reads are documented in docs/channels/email.md.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from connectors.base import (
    ConnectorContext,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    SendResult,
    require_str,
)
from connectors.base import DiagnosticStep as BaseDiagnosticStep
from connectors.email.diagnose import DiagnosticStep, diagnose_imap, diagnose_smtp
from connectors.email.imap import DEFAULT_MAX_IDLE_SECONDS, Mailbox
from connectors.email.loops import AUTO_REPLIED, AUTO_SUBMITTED, is_automatic
from connectors.email.parse import (
    DEFAULT_MAX_ATTACHMENT_BYTES,
    DEFAULT_MAX_TOTAL_BYTES,
    BounceInfo,
    RecipientStatus,
    normalise_message_id,
    parse_bounce,
    parse_email,
)
from connectors.email.smtp import OutboundAttachment, SmtpSender, build_reply, reply_subject
from connectors.email.text import html_to_text, split_reply
from connectors.email.tokens import find_tokens, make_message_id, make_token, read_token, reply_address

__all__ = [
    "AUTO_REPLIED",
    "AUTO_SUBMITTED",
    "DEFAULT_MAX_IDLE_SECONDS",
    "BounceInfo",
    "DiagnosticStep",
    "EmailConnector",
    "Mailbox",
    "OutboundAttachment",
    "RecipientStatus",
    "SmtpSender",
    "build_reply",
    "diagnose_imap",
    "diagnose_smtp",
    "find_tokens",
    "html_to_text",
    "is_automatic",
    "make_message_id",
    "make_token",
    "normalise_message_id",
    "parse_bounce",
    "parse_email",
    "read_token",
    "reply_address",
    "reply_subject",
    "split_reply",
]

IMAP_SECURITY_CHOICES = ("ssl", "starttls", "none")


def _int_setting(settings: Mapping[str, Any], key: str, default: int) -> int:
    value: Any = settings.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"setting {key!r} must be a number, got {value!r}") from exc


class EmailConnector:
    kind: ClassVar[str] = "email"
    label: ClassVar[str] = "E-mail"
    max_text_length: ClassVar[int] = 100_000
    per_chat_interval: ClassVar[float] = 0.0
    secret_fields: ClassVar[tuple[str, ...]] = ("imap_password", "smtp_password")

    def __init__(self, *, settings: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext) -> None:
        self.settings = settings
        self.secrets = secrets
        self.context = context
        self.address = str(settings.get("address") or "").strip()
        self.display_name = str(settings.get("display_name") or "").strip()
        self.domain = str(settings.get("domain") or self.address.rpartition("@")[2]).strip()
        self.max_attachment_bytes = _int_setting(settings, "max_attachment_bytes", DEFAULT_MAX_ATTACHMENT_BYTES)
        self.max_total_bytes = _int_setting(settings, "max_total_bytes", DEFAULT_MAX_TOTAL_BYTES)
        self.timeout = float(settings.get("timeout") or 30)

    # --- inbound -------------------------------------------------------------------------------------------
    @staticmethod
    def payload(*, raw: bytes, uid: int, uidvalidity: int, folder: str) -> dict[str, Any]:
        """The InboundEvent payload for one fetched message (what ``normalize`` takes back)."""
        return {
            "raw_b64": base64.b64encode(raw).decode("ascii"),
            "uid": uid,
            "uidvalidity": uidvalidity,
            "folder": folder,
        }

    def normalize(self, payload: Mapping[str, Any]) -> list[InboundMessage]:
        encoded = require_str(payload, "raw_b64")
        for key in ("uid", "uidvalidity"):
            if payload.get(key) is not None and (isinstance(payload[key], bool) or not isinstance(payload[key], int)):
                raise PermanentError(f"field {key!r} must be an integer")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PermanentError(f"field 'raw_b64' is not valid base64: {exc}") from exc
        message = parse_email(
            raw,
            max_attachment_bytes=self.max_attachment_bytes,
            max_total_bytes=self.max_total_bytes,
            our_addresses=[self.address] if self.address else (),
        )
        imap = {"uid": payload.get("uid"), "uidvalidity": payload.get("uidvalidity"), "folder": payload.get("folder")}
        return [dataclasses.replace(message, metadata={**message.metadata, "imap": imap})]

    def mailbox(self, *, folder: str | None = None, max_idle_seconds: float = DEFAULT_MAX_IDLE_SECONDS) -> Mailbox:
        """A (not yet connected) Mailbox for this account's IMAP settings."""
        host = str(self.settings.get("imap_host") or "")
        if not host:
            raise PermanentError("this e-mail channel has no imap_host configured")
        security = str(self.settings.get("imap_security") or "ssl")
        if security not in IMAP_SECURITY_CHOICES:
            raise PermanentError(f"imap_security must be one of {', '.join(IMAP_SECURITY_CHOICES)}, got {security!r}")
        return Mailbox(
            host,
            _int_setting(self.settings, "imap_port", 993 if security == "ssl" else 143),
            str(self.settings.get("imap_username") or self.address),
            str(self.secrets.get("imap_password") or ""),
            ssl=security == "ssl",
            starttls=security == "starttls",
            folder=folder or str(self.settings.get("imap_folder") or "INBOX"),
            timeout=self.timeout,
            max_idle_seconds=max_idle_seconds,
        )

    # --- outbound ------------------------------------------------------------------------------------------
    def sender(self) -> SmtpSender:
        host = str(self.settings.get("smtp_host") or "")
        if not host:
            raise PermanentError("this e-mail channel has no smtp_host configured")
        security = str(self.settings.get("smtp_security") or "starttls")
        default_port = {"ssl": 465, "starttls": 587}.get(security, 25)
        try:
            return SmtpSender(
                host,
                _int_setting(self.settings, "smtp_port", default_port),
                str(self.settings.get("smtp_username") or self.address),
                str(self.secrets.get("smtp_password") or ""),
                security=security,
                timeout=self.timeout,
            )
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc

    def send(self, message: OutboundMessage) -> SendResult:
        """Metadata read: message_id, in_reply_to, references, html, auto, reply_to, cc, attachments
        (see docs/channels/email.md)."""
        if not self.address:
            raise PermanentError("this e-mail channel has no address configured")
        meta = message.metadata
        message_id = str(meta.get("message_id") or "")
        if not message_id:
            # Stable across retries: derived from the delivery's idempotency key, never random per attempt.
            if not self.domain:
                raise PermanentError("this e-mail channel has no domain for Message-IDs")
            message_id = f"<sb-{message.idempotency_key}@{self.domain}>"
        in_reply_to = str(meta.get("in_reply_to") or message.reply_to_external_id or "") or None
        references = meta.get("references") or []
        if isinstance(references, str):
            references = references.split()
        attachments = [
            OutboundAttachment(
                filename=str(item.get("filename") or "attachment"),
                content_type=str(item.get("content_type") or "application/octet-stream"),
                content=bytes(item["content"]),
            )
            for item in meta.get("attachments") or []
            if isinstance(item, Mapping) and isinstance(item.get("content"), bytes | bytearray)
        ]
        cc = meta.get("cc") or []
        try:
            email_message = build_reply(
                from_address=self.address,
                from_name=self.display_name,
                to=message.recipient,
                cc=[str(c) for c in cc] if isinstance(cc, Sequence) and not isinstance(cc, str) else [str(cc)],
                subject=message.subject,
                text=message.text,
                html=str(meta["html"]) if meta.get("html") else None,
                message_id=message_id,
                in_reply_to=in_reply_to,
                references=[str(r) for r in references],
                reply_to=str(meta["reply_to"]) if meta.get("reply_to") else None,
                attachments=attachments,
                auto=bool(meta.get("auto")),
                is_reply=in_reply_to is not None,
            )
        except (ValueError, TypeError) as exc:
            raise PermanentError(f"cannot build the e-mail: {exc}") from exc
        return self.sender().send(email_message)

    def outbound_id(self, *, conversation_id: int, idempotency_key: str) -> str:
        """The Message-ID of a reply, chosen before its first attempt and sent again on every retry. It carries the
        conversation's signed reply token, so the customer's answer threads back even without References.
        Returned without <> (as inbound ids are stored)."""
        if not self.domain:
            raise PermanentError("this e-mail channel has no domain (or address) for Message-IDs")
        key = self.context.signing_key
        return make_message_id(conversation_id, key, domain=self.domain, unique=idempotency_key).strip("<>")

    # --- admin ---------------------------------------------------------------------------------------------
    def diagnose(self) -> list[BaseDiagnosticStep]:
        """Both connection checks, IMAP then SMTP, for the admin's "test connection" button."""
        return [
            BaseDiagnosticStep(f"{protocol} {step.name}", step.ok, step.detail)
            for protocol, steps in self.diagnose_by_protocol().items()
            for step in steps
        ]

    def diagnose_by_protocol(self) -> dict[str, list[DiagnosticStep]]:
        result: dict[str, list[DiagnosticStep]] = {}
        if self.settings.get("imap_host"):
            security = str(self.settings.get("imap_security") or "ssl")
            result["imap"] = diagnose_imap(
                str(self.settings["imap_host"]),
                _int_setting(self.settings, "imap_port", 993 if security == "ssl" else 143),
                str(self.settings.get("imap_username") or self.address),
                str(self.secrets.get("imap_password") or ""),
                ssl=security == "ssl",
                starttls=security == "starttls",
                folder=str(self.settings.get("imap_folder") or "INBOX"),
            )
        if self.settings.get("smtp_host"):
            security = str(self.settings.get("smtp_security") or "starttls")
            if security not in ("starttls", "ssl", "none"):
                result["smtp"] = [
                    DiagnosticStep("settings", False, f"smtp_security {security!r} is not starttls/ssl/none")
                ]
                return result
            result["smtp"] = diagnose_smtp(
                str(self.settings["smtp_host"]),
                _int_setting(self.settings, "smtp_port", {"ssl": 465, "starttls": 587}.get(security, 25)),
                str(self.settings.get("smtp_username") or self.address),
                str(self.secrets.get("smtp_password") or ""),
                security=security,
            )
        return result
