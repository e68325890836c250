"""Connectors for channel accounts: the bridge from models to the plain connectors/ package."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from connectors.base import Connector, ConnectorContext, Diagnosable, DiagnosticStep, HasReplyModes, ReplyMode
from connectors.email.tokens import read_token
from connectors.registry import Registry, parse_extra
from inbox.conversations.models import ChannelAccount
from inbox.conversations.realtime import publish, visitor_group


@functools.cache
def registry() -> Registry:
    return Registry(parse_extra(settings.SWITCHBOARD_EXTRA_CONNECTORS))


def _publish_to_identity(handle: str, event: Mapping[str, Any]) -> None:
    publish([visitor_group(handle)], event)


@functools.cache
def signing_key() -> bytes:
    """The connectors' signing key (e-mail reply tokens), derived from SECRET_KEY: stable across restarts."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"switchboard-reply-token").derive(
        settings.SECRET_KEY.encode()
    )


@functools.cache
def context() -> ConnectorContext:
    return ConnectorContext(publish=_publish_to_identity, signing_key=signing_key())


def connector_for(account: ChannelAccount) -> Connector:
    cls = registry().get(account.kind)
    return cls(settings=account.settings, secrets=account.secrets, context=context())


def reply_mode(connector: Connector, thread_key: str) -> ReplyMode:
    """How a reply in a conversation of this thread goes out: who sees it and its length limit (the composer shows
    the label). Channels without public conversations: private, their class's max_text_length."""
    if isinstance(connector, HasReplyModes):
        return connector.reply_mode(thread_key)
    cls = connector.__class__
    return ReplyMode(visibility="private", label=f"{cls.label} reply", max_text_length=cls.max_text_length)


def text_length(connector: Connector, mode: ReplyMode, text: str) -> int:
    """The text's length as the channel counts it for this mode: public posts by the channel's own rule (X:
    weighted, URLs as 23, CJK and emoji as 2); private messages by characters."""
    if mode.visibility == "public" and isinstance(connector, HasReplyModes):
        return connector.text_length(text)
    return len(text)


def reply_token_read(value: str) -> int | None:
    """The conversation id in a genuine reply token (e-mail), else None: forged or tampered tokens fail here."""
    return read_token(value, signing_key())


def channel_diagnose(*, account: ChannelAccount) -> list[DiagnosticStep]:
    """The connector's own connection test, step by step; [] for channels with nothing to connect to."""
    try:
        connector = connector_for(account)
    except Exception as exc:  # misconfigured beyond building the connector: say so as a step
        return [DiagnosticStep("configuration", False, f"{exc.__class__.__name__}: {exc}")]
    if not isinstance(connector, Diagnosable):
        return []
    return connector.diagnose()
