"""The one place that lists the channels. Adding a channel = one package under connectors/ + one line here."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from connectors.base import Connector

BUILTIN: dict[str, str] = {
    "webchat": "connectors.webchat:WebchatConnector",
    "api": "connectors.api:ApiConnector",
    "email": "connectors.email:EmailConnector",
    "telegram": "connectors.telegram:TelegramConnector",
    "x": "connectors.x:XConnector",
}


def load(path: str) -> type[Connector]:
    module_name, _, attr = path.partition(":")
    cls: type[Connector] = getattr(importlib.import_module(module_name), attr)
    return cls


class Registry:
    def __init__(self, extra: Iterable[tuple[str, str]] = ()) -> None:
        self._paths = dict(BUILTIN)
        self._paths.update(extra)
        self._classes: dict[str, type[Connector]] = {}

    def kinds(self) -> list[str]:
        return sorted(self._paths)

    def get(self, kind: str) -> type[Connector]:
        if kind not in self._paths:
            raise KeyError(f"unknown channel kind {kind!r}; known: {', '.join(self.kinds())}")
        if kind not in self._classes:
            self._classes[kind] = load(self._paths[kind])
        return self._classes[kind]


def parse_extra(spec: str) -> list[tuple[str, str]]:
    """ "kind=pkg.mod:Class,kind2=..." -> [(kind, path)]."""
    pairs = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        kind, sep, path = item.partition("=")
        if not sep or ":" not in path:
            raise ValueError(f"bad connector spec {item!r}; expected kind=package.module:Class")
        pairs.append((kind.strip(), path.strip()))
    return pairs
