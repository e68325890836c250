"""Inbound mail over IMAP4rev1 (RFC 3501) with ``imapclient``: fetch by UID since a cursor, and IDLE (RFC 2177).

The inbox stores ``(UIDVALIDITY, last UID)`` per mailbox. UIDs only grow within one UIDVALIDITY (RFC 3501
§2.3.1.1); when the server reports another UIDVALIDITY the stored cursor is meaningless and the inbox re-syncs
from 0, deduplicating by Message-ID and ``metadata["content_hash"]``.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from connectors.base import AuthError, ConnectorError, PermanentError, TransientError

# RFC 2177 §3: servers may log a client out after 30 minutes of inactivity, so clients re-issue IDLE "at least
# every 29 minutes". NAT boxes and load balancers often drop idle TCP flows much sooner; 10 minutes is safe.
DEFAULT_MAX_IDLE_SECONDS = 600.0
_MISSING_FOLDER_MARKERS = ("nonexistent", "doesn't exist", "does not exist", "no such", "not found", "unknown mailbox")


class Mailbox:
    """One IMAP folder of one account. Not thread-safe: one Mailbox per listener/poller.

    ``ssl``: implicit TLS (port 993); ``starttls``: upgrade a plain connection (port 143, RFC 2595);
    neither: plain text (only for loopback test servers).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        ssl: bool = True,
        starttls: bool = False,
        folder: str = "INBOX",
        timeout: float = 30,
        max_idle_seconds: float = DEFAULT_MAX_IDLE_SECONDS,
        ssl_context: Any = None,
    ) -> None:
        if ssl and starttls:
            raise ValueError("choose implicit TLS (ssl=True) or STARTTLS, not both")
        self.host = host
        self.port = int(port)
        self.username = username
        self.password = password
        self.use_ssl = ssl
        self.starttls = starttls
        self.folder = folder
        self.timeout = float(timeout)
        self.max_idle_seconds = float(max_idle_seconds)
        self.ssl_context = ssl_context
        self.client: IMAPClient | None = None
        self._uidvalidity: int | None = None
        self._uidnext: int | None = None
        self._exists: int | None = None

    def __repr__(self) -> str:  # never the password
        return f"Mailbox({self.host}:{self.port}, user={self.username!r}, folder={self.folder!r})"

    def __enter__(self) -> Mailbox:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"IMAP {self.host}:{self.port}"

    # --- connection ----------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect, log in and select the folder. Raises TransientError / AuthError / PermanentError."""
        self.close()
        context = self.ssl_context or (ssl.create_default_context() if (self.use_ssl or self.starttls) else None)
        try:
            client = IMAPClient(self.host, port=self.port, ssl=self.use_ssl, ssl_context=context, timeout=self.timeout)
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(f"the TLS certificate of {self.where} is not valid: {exc.verify_message}") from exc
        except TimeoutError as exc:
            raise TransientError(f"timed out connecting to {self.where}") from exc
        except (OSError, IMAPClientError, imaplib.IMAP4.error) as exc:
            raise TransientError(f"cannot connect to {self.where}: {exc.__class__.__name__}: {exc}") from exc
        self.client = client
        try:
            if self.starttls:
                client.starttls(context)
            client.login(self.username, self.password)
        except LoginError as exc:
            self.close()
            raise AuthError(f"{self.where} refused the login for {self.username!r}: {_text(exc)}") from exc
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise PermanentError(f"the TLS certificate of {self.where} is not valid: {exc.verify_message}") from exc
        except Exception as exc:
            self.close()
            raise _map_error(exc, f"{self.where} during login") from exc
        self.select()

    def select(self) -> None:
        client = self._client()
        try:
            info = client.select_folder(self.folder)
        except (IMAPClientAbortError, OSError) as exc:
            raise _map_error(exc, f"{self.where} selecting {self.folder!r}") from exc
        except (IMAPClientError, imaplib.IMAP4.error) as exc:
            text = _text(exc)
            if any(marker in text.lower() for marker in _MISSING_FOLDER_MARKERS):
                raise PermanentError(f"folder {self.folder!r} does not exist on {self.where}: {text}") from exc
            raise PermanentError(f"{self.where} refused to select folder {self.folder!r}: {text}") from exc
        self._uidvalidity = _int(info.get(b"UIDVALIDITY"))
        self._uidnext = _int(info.get(b"UIDNEXT"))
        self._exists = _int(info.get(b"EXISTS"))

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # closing a broken connection: nothing left to report
            with contextlib.suppress(Exception):
                client.shutdown()

    def _client(self) -> IMAPClient:
        if self.client is None:
            raise ConnectorError("Mailbox is not connected: call connect() first")
        return self.client

    # --- state ---------------------------------------------------------------------------------------------
    @property
    def uidvalidity(self) -> int:
        """UIDVALIDITY of the selected folder (RFC 3501 §2.3.1.1)."""
        if self._uidvalidity is None:
            raise ConnectorError("no folder selected")
        return self._uidvalidity

    @property
    def uidnext(self) -> int:
        """The UID the next message will get, as of the last SELECT/refresh (0 when the server did not say)."""
        if self._uidnext is None:
            return 0
        return self._uidnext

    def refresh(self) -> None:
        """Re-read UIDVALIDITY / UIDNEXT with STATUS (RFC 3501 §6.3.10)."""
        client = self._client()
        try:
            status = client.folder_status(self.folder, [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"])
        except Exception as exc:
            raise _map_error(exc, f"{self.where} STATUS {self.folder!r}") from exc
        self._uidvalidity = _int(status.get(b"UIDVALIDITY"))
        self._uidnext = _int(status.get(b"UIDNEXT"))

    # --- fetching ------------------------------------------------------------------------------------------
    def uids_since(self, last_uid: int) -> list[int]:
        """UIDs greater than ``last_uid``, ascending."""
        client = self._client()
        try:
            # NOOP first: a server updates the selected mailbox's view (new EXISTS) at command boundaries, and
            # some (Dovecot) only on NOOP/CHECK-like commands; RFC 3501 §6.1.2 names NOOP as the poll.
            client.noop()
            # RFC 3501 §6.4.8: "n:*" always includes the highest UID even when it is below n, so filter.
            found = client.search(["UID", f"{int(last_uid) + 1}:*"])
        except Exception as exc:
            raise _map_error(exc, f"{self.where} UID SEARCH") from exc
        return sorted(uid for uid in (int(u) for u in found) if uid > last_uid)

    def fetch_since(self, last_uid: int, batch: int = 200) -> Iterator[list[tuple[int, bytes]]]:
        """Batches of (uid, raw bytes), in UID order, of the messages after ``last_uid``.

        Uses ``BODY.PEEK[]`` (RFC 3501 §6.4.5), which unlike ``BODY[]``/``RFC822`` does not set \\Seen: the
        mailbox stays as the humans who also read it expect. The caller persists each batch, then advances its
        cursor to the batch's last UID.
        """
        if batch < 1:
            raise ValueError("batch must be >= 1")
        uids = self.uids_since(last_uid)
        client = self._client()
        for start in range(0, len(uids), batch):
            chunk = uids[start : start + batch]
            try:
                response = client.fetch(chunk, [b"BODY.PEEK[]"])
            except Exception as exc:
                raise _map_error(exc, f"{self.where} UID FETCH") from exc
            items: list[tuple[int, bytes]] = []
            for uid in chunk:
                data = response.get(uid)
                if not data:
                    continue  # expunged between SEARCH and FETCH
                raw = data.get(b"BODY[]")
                if isinstance(raw, bytes):
                    items.append((uid, raw))
            if items:
                yield items

    # --- IDLE ----------------------------------------------------------------------------------------------
    def idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for new mail. True as soon as the server announces it (EXISTS).

        Each IDLE command lasts at most ``max_idle_seconds`` and is then re-issued (RFC 2177 §3). Returns False
        when the time passed without new mail; raises TransientError when the connection drops.
        """
        client = self._client()
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            if b"IDLE" not in client.capabilities():
                return self._poll_for_new_mail(deadline)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                session_end = time.monotonic() + min(remaining, self.max_idle_seconds)
                client.idle()
                found = False
                try:
                    while not found:
                        wait = session_end - time.monotonic()
                        if wait <= 0:
                            break
                        started = time.monotonic()
                        responses = client.idle_check(timeout=wait)
                        found = _announces_new_mail(responses)
                        if not responses and time.monotonic() - started < min(wait, 1.0) * 0.5:
                            break  # returned early with nothing: the server may have hung up; DONE will tell
                finally:
                    _, done_responses = client.idle_done()
                found = found or _announces_new_mail(done_responses)
                if found:
                    return True
        except ConnectorError:
            raise
        except Exception as exc:
            raise _map_error(exc, f"{self.where} IDLE") from exc

    def _poll_for_new_mail(self, deadline: float) -> bool:
        # Servers without IDLE: NOOP every few seconds (RFC 3501 §6.1.2 lets NOOP report new messages).
        client = self._client()
        while time.monotonic() < deadline:
            _, responses = client.noop()
            if _announces_new_mail(responses):
                return True
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        return False

    # --- optional actions ----------------------------------------------------------------------------------
    def mark_seen(self, uids: Iterable[int]) -> None:
        items = list(uids)
        if not items:
            return
        try:
            self._client().add_flags(items, [b"\\Seen"], silent=True)
        except Exception as exc:
            raise _map_error(exc, f"{self.where} STORE +FLAGS \\Seen") from exc

    def move(self, uids: Iterable[int], folder: str) -> None:
        """Move to ``folder`` (RFC 6851 MOVE, else COPY + \\Deleted + UID EXPUNGE)."""
        items = list(uids)
        if not items:
            return
        client = self._client()
        try:
            if client.has_capability("MOVE"):
                client.move(items, folder)
            else:
                client.copy(items, folder)
                client.delete_messages(items)
                if client.has_capability("UIDPLUS"):
                    client.uid_expunge(items)
                else:
                    client.expunge()
        except (IMAPClientError, imaplib.IMAP4.error) as exc:
            if any(marker in _text(exc).lower() for marker in (*_MISSING_FOLDER_MARKERS, "trycreate")):
                raise PermanentError(f"folder {folder!r} does not exist on {self.where}: {_text(exc)}") from exc
            raise _map_error(exc, f"{self.where} MOVE to {folder!r}") from exc
        except Exception as exc:
            raise _map_error(exc, f"{self.where} MOVE to {folder!r}") from exc


def _announces_new_mail(responses: Iterable[Any]) -> bool:
    for response in responses or ():
        if isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT"):
            return True
    return False


def _int(value: Any) -> int | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _text(exc: BaseException) -> str:
    value = exc.args[0] if exc.args else str(exc)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())


def _map_error(exc: BaseException, context: str) -> ConnectorError:
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, LoginError):
        return AuthError(f"{context}: {_text(exc)}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return TransientError(f"{context}: timed out")
    if isinstance(exc, IMAPClientAbortError | imaplib.IMAP4.abort | OSError):
        return TransientError(f"{context}: connection lost ({exc.__class__.__name__}: {_text(exc)})")
    if isinstance(exc, IMAPClientError | imaplib.IMAP4.error):
        return PermanentError(f"{context}: the server said {_text(exc)}")
    return TransientError(f"{context}: {exc.__class__.__name__}: {_text(exc)}")
