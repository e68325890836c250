"""Step-by-step connection checks for an admin's "test connection" button.

Each function returns the steps it ran, in order, and stops at the first failure: DNS, TCP, TLS, the server's
greeting, STARTTLS, login, and (IMAP) the folder. ``detail`` holds what the server or the OS said, verbatim
enough to search for; passwords never appear in it.
"""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient

SECURITY_CHOICES = ("starttls", "ssl", "none")


@dataclass(frozen=True)
class DiagnosticStep:
    name: str  # dns | tcp | tls | greeting | starttls | login | folder
    ok: bool
    detail: str
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "seconds": round(self.seconds, 3)}


class _Steps:
    def __init__(self) -> None:
        self.steps: list[DiagnosticStep] = []

    def run(self, name: str, action: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail = action()
            ok = True
        except Exception as exc:
            detail = _describe(exc)
            ok = False
        self.steps.append(DiagnosticStep(name=name, ok=ok, detail=detail, seconds=time.monotonic() - started))
        return ok


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not valid: {exc.verify_message}"
    if isinstance(exc, socket.gaierror):
        return f"name not resolved: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return f"{exc.smtp_code} {' '.join(str(error).split())}"
    value = exc.args[0] if exc.args else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = " ".join(str(value or exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _dns_and_tcp(steps: _Steps, host: str, port: int, timeout: float) -> bool:
    addresses: list[str] = []

    def dns() -> str:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses.extend(dict.fromkeys(str(info[4][0]) for info in infos))
        return ", ".join(addresses)

    def tcp() -> str:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            peer = sock.getpeername()
        return f"connected to {peer[0]} port {peer[1]}"

    return steps.run("dns", dns) and steps.run("tcp", tcp)


def _tls_probe(host: str, port: int, timeout: float, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return _tls_summary(tls)


def _tls_summary(tls: ssl.SSLSocket) -> str:
    cert = tls.getpeercert() or {}
    subject: dict[str, str] = {}
    for rdn in cert.get("subject", ()):
        for pair in rdn:
            if isinstance(pair, tuple) and len(pair) == 2:
                subject[str(pair[0])] = str(pair[1])
    return f"{tls.version()}, certificate for {subject.get('commonName', '?')}, valid until {cert.get('notAfter', '?')}"


def diagnose_imap(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    ssl: bool = True,
    starttls: bool = False,
    folder: str = "INBOX",
    timeout: float = 10,
    ssl_context: Any = None,
) -> list[DiagnosticStep]:
    steps = _Steps()
    if not _dns_and_tcp(steps, host, port, timeout):
        return steps.steps
    import ssl as ssl_module

    context = ssl_context or ssl_module.create_default_context()
    if ssl and not steps.run("tls", lambda: _tls_probe(host, port, timeout, context)):
        return steps.steps
    holder: dict[str, IMAPClient] = {}

    def greeting() -> str:
        client = IMAPClient(host, port=port, ssl=ssl, ssl_context=context if ssl else None, timeout=timeout)
        holder["client"] = client
        welcome = client.welcome.decode("utf-8", "replace") if isinstance(client.welcome, bytes) else client.welcome
        return " ".join(str(welcome).split())

    def do_starttls() -> str:
        holder["client"].starttls(context)
        return "upgraded to TLS"

    def login() -> str:
        holder["client"].login(username, password)
        return f"logged in as {username}"

    def select() -> str:
        client = holder["client"]
        info = client.select_folder(folder, readonly=True)
        idle = "IDLE supported" if client.has_capability("IDLE") else "no IDLE: the inbox will poll"
        return (
            f"{folder}: {info.get(b'EXISTS', '?')} messages, UIDVALIDITY {info.get(b'UIDVALIDITY', '?')}, "
            f"UIDNEXT {info.get(b'UIDNEXT', '?')}; {idle}"
        )

    try:
        ok = steps.run("greeting", greeting)
        ok = ok and (not starttls or steps.run("starttls", do_starttls))
        ok = ok and steps.run("login", login)
        ok = ok and steps.run("folder", select)
    finally:
        client = holder.get("client")
        if client is not None:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                with contextlib.suppress(OSError, imaplib.IMAP4.error):
                    client.shutdown()
    return steps.steps


def diagnose_smtp(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    security: str = "starttls",
    timeout: float = 10,
    ssl_context: ssl.SSLContext | None = None,
) -> list[DiagnosticStep]:
    if security not in SECURITY_CHOICES:
        raise ValueError(f"security must be one of {', '.join(SECURITY_CHOICES)}")
    steps = _Steps()
    if not _dns_and_tcp(steps, host, port, timeout):
        return steps.steps
    context = ssl_context or ssl.create_default_context()
    if security == "ssl" and not steps.run("tls", lambda: _tls_probe(host, port, timeout, context)):
        return steps.steps
    holder: dict[str, smtplib.SMTP] = {}

    def greeting() -> str:
        client: smtplib.SMTP
        if security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        holder["client"] = client
        code, text = client.ehlo()
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        features = ", ".join(sorted(client.esmtp_features)) or "none"
        return f"EHLO {code}; extensions: {features}"

    def do_starttls() -> str:
        client = holder["client"]
        if not client.has_extn("starttls"):
            raise RuntimeError("the server does not offer STARTTLS on this port")
        client.starttls(context=context)
        client.ehlo()
        sock = client.sock
        return _tls_summary(sock) if isinstance(sock, ssl.SSLSocket) else "upgraded to TLS"

    def login() -> str:
        client = holder["client"]
        if not client.has_extn("auth"):
            raise RuntimeError("the server does not offer AUTH (on an unencrypted connection many servers hide it)")
        client.login(username, password)
        return f"logged in as {username}"

    try:
        ok = steps.run("greeting", greeting)
        ok = ok and (security != "starttls" or steps.run("starttls", do_starttls))
        # Without a password the sender skips AUTH (SmtpSender), so the check does too: same behaviour, same verdict.
        ok = ok and (not username or not password or steps.run("login", login))
    finally:
        client = holder.get("client")
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    return steps.steps
