"""Connectors for channel accounts: the bridge from models to the plain connectors/ package."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from connectors.base import Connector, ConnectorContext
from connectors.registry import Registry, parse_extra
from inbox.conversations.models import ChannelAccount
from inbox.conversations.realtime import publish, visitor_group


@functools.cache
def registry() -> Registry:
    return Registry(parse_extra(settings.SWITCHBOARD_EXTRA_CONNECTORS))


def _publish_to_identity(handle: str, event: Mapping[str, Any]) -> None:
    publish([visitor_group(handle)], event)


CONTEXT = ConnectorContext(publish=_publish_to_identity)


def connector_for(account: ChannelAccount) -> Connector:
    cls = registry().get(account.kind)
    return cls(settings=account.settings, secrets=account.secrets, context=CONTEXT)
