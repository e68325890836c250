"""The contract every channel connector follows.

A connector is built from plain configuration (the channel account's settings and decrypted secrets) and
turns raw provider events into :class:`InboundMessage` values (``normalize``) and :class:`OutboundMessage`
values into provider calls (``send``). Provider failures are mapped onto the four error types below, which the
inbox's delivery service turns into states the agent can read (retrying at HH:MM because ..., failed because ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable


# --- Errors ---------------------------------------------------------------------------------------------
class ConnectorError(Exception):
    """Base of every error a connector raises on purpose. ``str(error)`` is shown to agents/admins."""


class TransientError(ConnectorError):
    """Worth retrying later: timeouts, connection errors, provider 5xx.

    ``maybe_delivered`` is True when the provider may have accepted the message before the failure (a timeout
    after the request was sent): a retry may then duplicate it, and the delivery is marked uncertain.
    """

    def __init__(self, message: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class PermanentError(ConnectorError):
    """Retrying will not help: a malformed event, a 4xx for this message, a recipient who blocked us."""


class AuthError(PermanentError):
    """The channel's credentials are wrong or revoked: every message on the account will fail until fixed."""


class RateLimited(TransientError):
    """The provider asked us to wait ``retry_after`` seconds before calling again for this account."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, float(retry_after))


# --- Values ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sender:
    handle: str  # the stable provider id of the sender (chat id, user id, e-mail address, visitor id)
    display_name: str = ""
    email: str = ""


@dataclass(frozen=True)
class InboundAttachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class InboundMessage:
    external_id: str  # the provider's id of this message, unique within the channel account
    sender: Sender
    text: str
    html: str = ""  # raw HTML as received; the inbox sanitises it before storing
    subject: str = ""
    sent_at: datetime | None = None
    language_hints: tuple[str, ...] = ()  # language tags the channel declares, best first
    # Conversation threading: chats use "" (one open conversation per identity); email uses its thread root.
    thread_key: str = ""
    reply_token: str = ""  # our own signed token found in a reply (email), if any
    attachments: tuple[InboundAttachment, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    idempotency_key: str  # stable across retries of the same delivery (our message uuid)
    recipient: str  # the identity handle to send to
    text: str
    subject: str = ""
    reply_to_external_id: str = ""  # the customer's message we answer, when the channel threads replies
    thread_key: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    provider_id: str
    sent_at: datetime | None = None


@dataclass(frozen=True)
class ConnectorContext:
    """What the host application lends a connector: plain callables, never models."""

    # publish(handle, event): push a live event to that identity's open sessions (web chat).
    publish: Callable[[str, Mapping[str, Any]], None] | None = None
    # A key for the connector's own signatures (e-mail reply tokens); derived from the install's secret.
    signing_key: bytes = b""


class Connector(Protocol):
    kind: ClassVar[str]
    label: ClassVar[str]
    # Limits the agent's composer shows and the inbox enforces before queueing a reply.
    max_text_length: ClassVar[int]
    # Seconds between two sends to the same chat (0: no limit). The inbox enforces it across all workers.
    per_chat_interval: ClassVar[float]
    # Names of the secrets this channel needs (passwords, tokens): the admin offers write-only inputs for them.
    secret_fields: ClassVar[tuple[str, ...]]

    def __init__(
        self, *, settings: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext
    ) -> None: ...

    def normalize(self, payload: Mapping[str, Any]) -> list[InboundMessage]:
        """Raw event -> messages (empty when the event carries none). Raises PermanentError when malformed."""
        ...

    def send(self, message: OutboundMessage) -> SendResult:
        """Deliver one message. Raises TransientError / RateLimited / PermanentError / AuthError."""
        ...


@runtime_checkable
class AssignsOutboundIds(Protocol):
    """A connector whose channel lets us choose a reply's id before the first attempt (e-mail's Message-ID).

    The inbox stores that id with the reply and passes it on every attempt (``metadata["message_id"]``), so a
    retry re-sends the same message rather than a second one, and replies to it thread back to us.
    """

    def outbound_id(self, *, conversation_id: int, idempotency_key: str) -> str: ...


def require_str(payload: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    """A field that must be a string: PermanentError with the field's name otherwise."""
    value = payload.get(key)
    if not isinstance(value, str):
        raise PermanentError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise PermanentError(f"field {key!r} must not be empty")
    return value


@dataclass(frozen=True)
class DiagnosticStep:
    """One step of a connection test (DNS, TCP, TLS, login, folder...): what an admin needs to fix it."""

    name: str
    ok: bool
    detail: str = ""


@runtime_checkable
class Diagnosable(Protocol):
    """A connector that can test its own connection for the admin's "test connection" action."""

    def diagnose(self) -> list[DiagnosticStep]: ...


@dataclass(frozen=True)
class ReplyMode:
    """How a reply in one conversation goes out, shown above the agent's composer (who will see it, how long).

    Channels without the notion answer nothing (the inbox then uses the class's ``max_text_length``, private).
    """

    visibility: str  # "private": only the customer sees it; "public": anyone can (a reply to a public post)
    label: str  # what the agent reads above the composer: "Private DM on X", "Public reply on X: everyone sees it"
    max_text_length: int  # as the channel counts it (``HasReplyModes.text_length``)
    # > 0: when the agent asks for it, a longer text goes out as a thread of up to this many posts, each within
    # max_text_length; 0: a longer text is refused.
    max_thread_parts: int = 0
    # The thread key of the private conversation a public one can move to ("move to DM"); "" when there is none.
    private_thread_key: str = ""


@runtime_checkable
class HasReplyModes(Protocol):
    """A channel where a conversation is private or public (X: DMs and public mentions)."""

    def reply_mode(self, thread_key: str) -> ReplyMode: ...

    def text_length(self, text: str) -> int:
        """The text's length as the channel counts it in public posts (X: weighted characters, URLs as 23); the
        inbox counts private messages by characters."""
        ...
