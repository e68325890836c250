"""Outbound mail: building a reply (RFC 5322 threading headers) and submitting it over SMTP (RFC 5321).

:class:`SmtpSender` drives the SMTP dialogue step by step instead of ``smtplib.SMTP.send_message`` so that it
knows whether the message body had already been sent when a failure happened: a timeout after the final "."
may mean the server accepted the mail (RFC 5321 §4.5.3.2.6 asks servers to answer within 10 minutes, and some
are slow), so that one is ``TransientError(maybe_delivered=True)`` and the delivery is marked uncertain.
"""

from __future__ import annotations

import functools
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as _SMTP
from email.utils import format_datetime, getaddresses

from connectors.base import AuthError, PermanentError, SendResult, TransientError
from connectors.email.loops import AUTO_REPLIED, AUTO_SUBMITTED, X_LOOP

SECURITY_CHOICES = ("starttls", "ssl", "none")
MAX_REFERENCES = 20  # keep the thread root and the most recent ids; a References header must not grow forever
# "Re:" and the prefixes localised clients write instead (Aw: German, SV: Nordic, Antw: Dutch, Réf: French,
# 回复/答复 Chinese, Отв/Ответ Russian), with optional counters: "Re[2]:", "RE: RE:".
_REPLY_PREFIX_RE = re.compile(
    r"^\s*((re|aw|sv|antw|ref|réf|rif|odp|vs|ynt|回复|答复|回覆|отв|ответ)\s*(\[\d+\]|\(\d+\))?\s*[:：]\s*)+",
    re.IGNORECASE,
)

# Python's default policies treat In-Reply-To and References as unstructured text and, when one Message-ID is
# longer than a 78-character line, RFC 2047-encode it ("=?utf-8?q?=3Csb...?="), which no mail client can thread
# on. Folding at RFC 5322's hard limit (998, section 2.1.1) keeps identifiers intact; folding still happens
# between ids.
SMTP_POLICY = _SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class OutboundAttachment:
    filename: str
    content_type: str
    content: bytes


def reply_subject(subject: str) -> str:
    """``"RE: Aw: Order 42"`` -> ``"Re: Order 42"``: exactly one "Re:" (RFC 5322 §3.6.5)."""
    base = _REPLY_PREFIX_RE.sub("", subject or "").strip()
    return f"Re: {base}" if base else "Re:"


def _bracketed(message_id: str) -> str:
    value = message_id.strip()
    if not value:
        raise ValueError("empty Message-ID")
    value = value.strip("<>")
    if "@" not in value or any(c.isspace() or c in "<>" for c in value):
        raise ValueError(f"not a valid Message-ID: {message_id!r}")
    return f"<{value}>"


def build_reply(
    *,
    from_address: str,
    to: Sequence[str] | str,
    subject: str,
    text: str,
    message_id: str,
    from_name: str = "",
    html: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    cc: Sequence[str] = (),
    reply_to: str | None = None,
    attachments: Sequence[OutboundAttachment] = (),
    auto: bool = False,
    x_loop: str | None = None,
    date: datetime | None = None,
    is_reply: bool = True,
) -> EmailMessage:
    """A reply as a MIME message: text (and HTML alternative), attachments, threading headers.

    ``message_id`` is chosen by the caller before the first attempt and passed again on every retry, so that a
    retried delivery is the same message to the recipient's client (RFC 5322 §3.6.4). ``references`` are the
    parent's References; the parent's id (``in_reply_to``) is appended to them as RFC 5322 §3.6.4 prescribes.
    ``auto`` marks a machine-written mail (an acknowledgement) ``Auto-Submitted: auto-replied`` (RFC 3834 §5).
    ``x_loop`` defaults to ``from_address``: our own mail coming back to us is recognised and never answered.
    """
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = Address(display_name=from_name, addr_spec=from_address) if from_name else from_address
    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        raise ValueError("a reply needs at least one recipient")
    msg["To"] = ", ".join(recipients)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = reply_subject(subject) if is_reply else (subject or "")
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = _bracketed(message_id)
    refs = [_bracketed(r) for r in references if r and r.strip()]
    if in_reply_to:
        parent = _bracketed(in_reply_to)
        msg["In-Reply-To"] = parent
        if parent not in refs:
            refs.append(parent)
    if refs:
        if len(refs) > MAX_REFERENCES:
            refs = refs[:1] + refs[-(MAX_REFERENCES - 1) :]
        msg["References"] = " ".join(refs)
    if auto:
        msg[AUTO_SUBMITTED] = AUTO_REPLIED
    msg[X_LOOP] = x_loop or from_address
    msg["MIME-Version"] = "1.0"

    msg.set_content(text or "", subtype="plain", charset="utf-8", cte="quoted-printable")
    if html:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(
            attachment.content,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    return msg


def envelope_recipients(message: EmailMessage) -> list[str]:
    values = [str(v) for h in ("To", "Cc", "Bcc") for v in message.get_all(h, [])]
    return [addr for _, addr in getaddresses(values) if addr]


def _text(response: bytes | str) -> str:
    value = response.decode("utf-8", "replace") if isinstance(response, bytes) else str(response)
    return " ".join(value.split())


def _dot_stuffed(data: bytes) -> bytes:
    # RFC 5321 §4.5.2: a line that starts with "." gets one more; §2.3.8: CRLF line ends only.
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data.replace(b"\r\r\n", b"\r\n"))
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The system's CA bundle, verified hostnames: one per process (loading it takes ~20 ms, a send's whole cost
    otherwise); an SSLContext is safe to share between connections and threads."""
    return ssl.create_default_context()


class SmtpSender:
    """One SMTP submission server (RFC 6409 port 587 with STARTTLS, 465 with implicit TLS, or 25).

    Every call opens a connection, submits, and quits: a support inbox sends a few mails a minute per account,
    and a fresh connection never trips over a server-side idle timeout.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        security: str = "starttls",
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_CHOICES)}, got {security!r}")
        self.host = host
        self.port = int(port)
        self.username = username
        self.password = password
        self.security = security
        self.timeout = float(timeout)
        self.ssl_context = ssl_context  # None: default_tls_context(), and only when TLS is used
        self.local_hostname = local_hostname

    def __repr__(self) -> str:  # never the password
        return f"SmtpSender({self.host}:{self.port}, user={self.username!r}, security={self.security})"

    # --- connection ----------------------------------------------------------------------------------------
    def connect(self) -> smtplib.SMTP:
        """An SMTP session, secured and logged in. Raises TransientError / AuthError / PermanentError."""
        where = f"{self.host}:{self.port}"
        client: smtplib.SMTP
        try:
            if self.security == "ssl":
                client = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=self.ssl_context or default_tls_context(),
                    local_hostname=self.local_hostname,
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname)
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(f"the TLS certificate of {where} is not valid: {exc.verify_message}") from exc
        except TimeoutError as exc:
            raise TransientError(f"timed out connecting to SMTP server {where}") from exc
        except smtplib.SMTPConnectError as exc:
            raise TransientError(
                f"SMTP server {where} refused the session: {exc.smtp_code} {_text(exc.smtp_error)}"
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(f"cannot connect to SMTP server {where}: {exc.__class__.__name__}: {exc}") from exc
        try:
            client.ehlo()
            if self.security == "starttls":
                if not client.has_extn("starttls"):
                    raise PermanentError(f"SMTP server {where} does not offer STARTTLS; choose ssl or none")
                client.starttls(context=self.ssl_context or default_tls_context())
                client.ehlo()  # RFC 3207 §4.2: forget what was learned before TLS
            # No password: a trusted relay that needs no AUTH (the user name defaults to the address, so an
            # empty password is the switch). A server that does want AUTH then answers 530 -> AuthError.
            if self.username and self.password:
                if not client.has_extn("auth"):
                    raise AuthError(f"SMTP server {where} does not offer AUTH (a login is configured)")
                client.login(self.username, self.password)
        except smtplib.SMTPAuthenticationError as exc:
            self._close(client)
            raise AuthError(f"SMTP login refused by {where}: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
        except ssl.SSLCertVerificationError as exc:
            self._close(client)
            raise PermanentError(f"the TLS certificate of {where} is not valid: {exc.verify_message}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            self._close(client)
            raise AuthError(f"SMTP server {where}: {exc}") from exc
        except smtplib.SMTPException as exc:
            self._close(client)
            raise _map_smtp_error(exc, f"SMTP server {where} during login") from exc
        except (TimeoutError, OSError) as exc:
            self._close(client)
            raise TransientError(f"connection to SMTP server {where} failed: {exc.__class__.__name__}: {exc}") from exc
        except Exception:
            self._close(client)
            raise
        return client

    @staticmethod
    def _close(client: smtplib.SMTP) -> None:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()

    # --- sending -------------------------------------------------------------------------------------------
    def send(self, message: EmailMessage, *, envelope_from: str | None = None) -> SendResult:
        """Submit ``message``; ``provider_id`` is its Message-ID without <>.

        All recipients refused -> PermanentError (5xx) or TransientError (4xx); some refused -> the message goes
        to the others (their refusal comes back as a bounce the inbox reads with ``parse_bounce``).
        """
        message_id = str(message.get("Message-ID", "")).strip()
        if not message_id:
            raise PermanentError("the message has no Message-ID; build it with build_reply(message_id=...)")
        recipients = envelope_recipients(message)
        if not recipients:
            raise PermanentError("the message has no recipients")
        sender = envelope_from or next((a for _, a in getaddresses([str(message.get("From", ""))]) if a), "")
        if not sender:
            raise PermanentError("the message has no From address")
        del message["Bcc"]  # RFC 5322 §3.6.3: Bcc recipients are in the envelope only
        data = message.as_bytes(policy=SMTP_POLICY)
        needs_utf8 = any(not a.isascii() for a in [sender, *recipients])

        client = self.connect()
        where = f"{self.host}:{self.port}"
        body_sent = False
        try:
            options: list[str] = []
            if needs_utf8:
                if not client.has_extn("smtputf8"):
                    raise PermanentError(f"an address is not ASCII and {where} does not support SMTPUTF8 (RFC 6531)")
                options.append("SMTPUTF8")
            if client.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            code, response = client.mail(sender, options)
            if code != 250:
                raise _reply_error(code, response, f"sender {sender} refused by {where}")
            accepted: list[str] = []
            refused: list[tuple[str, int, bytes]] = []
            for rcpt in recipients:
                code, response = client.rcpt(rcpt)
                if code in (250, 251):
                    accepted.append(rcpt)
                else:
                    refused.append((rcpt, code, response))
            if not accepted:
                first = refused[0]
                all_permanent = all(500 <= code < 600 for _, code, _ in refused)
                detail = "; ".join(f"{r}: {c} {_text(t)}" for r, c, t in refused)
                raise _reply_error(first[1] if all_permanent else 450, first[2], f"recipient refused: {detail}")
            code, response = client.docmd("DATA")
            if code != 354:
                raise _reply_error(code, response, f"DATA refused by {where}")
            client.send(_dot_stuffed(data))
            body_sent = True
            code, response = client.getreply()
            if code != 250:
                raise _reply_error(code, response, f"message refused by {where} after DATA")
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientError(
                f"SMTP server {where} closed the connection{' after the message was sent' if body_sent else ''}",
                maybe_delivered=body_sent,
            ) from exc
        except TimeoutError as exc:
            raise TransientError(
                f"SMTP server {where} timed out{' after the message was sent' if body_sent else ''}",
                maybe_delivered=body_sent,
            ) from exc
        except smtplib.SMTPException as exc:
            raise _map_smtp_error(exc, f"SMTP server {where}") from exc
        except OSError as exc:
            raise TransientError(
                f"connection to SMTP server {where} failed: {exc.__class__.__name__}: {exc}", maybe_delivered=body_sent
            ) from exc
        finally:
            self._close(client)
        return SendResult(provider_id=message_id.strip("<>"), sent_at=datetime.now(UTC))


def _reply_error(code: int, response: bytes | str, context: str) -> PermanentError | TransientError:
    """RFC 5321 §4.2.1: 4yz is a transient negative reply, 5yz a permanent one."""
    text = f"{context}: {code} {_text(response)}".strip()
    if code == 530 or code == 535:
        return AuthError(text)
    if 500 <= code < 600:
        return PermanentError(text)
    return TransientError(text)


def _map_smtp_error(exc: smtplib.SMTPException, context: str) -> PermanentError | TransientError:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_error(exc.smtp_code, exc.smtp_error, context)
    return TransientError(f"{context}: {exc.__class__.__name__}: {exc}")
