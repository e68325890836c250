"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests: records every message, can be scripted to refuse.

    with SmtpServer(users={"support@example.test": "pw"}) as server:
        SmtpSender("127.0.0.1", server.port, "support@example.test", "pw", security="none").send(msg)
        server.messages[0].envelope_from, .recipients, .raw, .message (parsed)

Scripting: ``server.script("RCPT", "550 5.1.1 No such user")`` answers the next RCPT with that line (then
normal service resumes); ``"MAIL"``, ``"RCPT"``, ``"DATA"`` (the reply after the message body) are supported.
``server.data_delay = 5`` makes the server wait after the body before answering (client timeouts).
``tls=True`` offers STARTTLS with a fresh self-signed certificate (``server.client_tls_context()`` trusts it).

Each ``ReceivedMessage`` carries ``received_at`` (``time.time()`` when the end of its DATA arrived, before any
``data_delay``), so a benchmark in the same process can time a send up to its full receipt (bench/outbound.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import tempfile
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.fakes.dovecot import free_port


@dataclass
class ReceivedMessage:
    envelope_from: str
    recipients: list[str]
    raw: bytes
    mail_options: list[str] = field(default_factory=list)
    login: str | None = None
    received_at: float = field(default_factory=time.time)  # wall clock: the whole message was in

    @property
    def message(self) -> EmailMessage:
        return cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(self.raw))


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    def _scripted(self, stage: str) -> str | None:
        with self.server.lock:
            queue = self.server.scripts[stage]
            return queue.popleft() if queue else None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        answer = self._scripted("MAIL")
        if answer:
            return answer
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        answer = self._scripted("RCPT")
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        received_at = time.time()  # aiosmtpd calls this once the body's final "." has been read
        if self.server.data_delay:
            await asyncio.sleep(self.server.data_delay)
        answer = self._scripted("DATA")
        if answer:
            return answer
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.server.lock:
            self.server.messages.append(
                ReceivedMessage(
                    envelope_from=str(envelope.mail_from),
                    recipients=list(envelope.rcpt_tos),
                    raw=raw,
                    mail_options=list(envelope.mail_options),
                    login=login,
                    received_at=received_at,
                )
            )
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    def __init__(
        self,
        users: dict[str, str] | None = None,
        *,
        tls: bool = False,
        require_auth: bool | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.users = dict(users or {})
        self.tls = tls
        self.require_auth = bool(self.users) if require_auth is None else require_auth
        self.messages: list[ReceivedMessage] = []
        self.scripts: dict[str, deque[str]] = defaultdict(deque)
        self.data_delay = 0.0
        self.lock = threading.Lock()
        self.auth_attempts: list[tuple[str, bool]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.cert_path: Path | None = None
        self.controller: Controller | None = None

    def script(self, stage: str, answer: str) -> None:
        """Answer the next ``stage`` command ("MAIL", "RCPT", "DATA") with ``answer`` (e.g. "451 4.3.0 Busy")."""
        if stage not in {"MAIL", "RCPT", "DATA"}:
            raise ValueError(stage)
        with self.lock:
            self.scripts[stage].append(answer)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            ok = self.users.get(login) == password
            with self.lock:
                self.auth_attempts.append((login, ok))
            return AuthResult(success=ok, handled=False, auth_data=data)
        return AuthResult(success=False, handled=False)

    def _server_tls_context(self) -> ssl.SSLContext:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        assert self._tmp is not None
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.cert_path = Path(self._tmp.name) / "cert.pem"
        key_path = Path(self._tmp.name) / "key.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_path), str(key_path))
        return context

    def client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's self-signed certificate (for the name "localhost")."""
        if self.cert_path is None:
            raise RuntimeError("the server was started without tls=True")
        return ssl.create_default_context(cafile=str(self.cert_path))

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="sb-smtp-")
        kwargs: dict[str, Any] = {
            "authenticator": self._authenticate,
            # Loopback test server: allow AUTH without TLS unless TLS is what the test is about.
            "auth_require_tls": self.tls,
            "auth_required": self.require_auth,
            "server_hostname": "localhost",
            "data_size_limit": 64 * 2**20,
            "enable_SMTPUTF8": True,
        }
        if self.tls:
            kwargs["tls_context"] = self._server_tls_context()
        self.controller = Controller(_Handler(self), hostname=self.host, port=self.port, **kwargs)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
