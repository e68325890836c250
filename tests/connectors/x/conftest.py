"""Fixtures for the X connector: the recorded real X shapes (read where they lie) and a connector on the fake X API.

No database is needed. The fake server (tests/fakes/x_server.py) is imported lazily, so the pure tests (text,
normalize, webhook) run without it.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.x import XConnector

# ../shared/data/twitter/tweepy, beside the project (never copied into it).
SHARED_TWEEPY = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "twitter" / "tweepy"
DECODED = SHARED_TWEEPY / "decoded_responses"


def recorded(relative: str) -> list[dict[str, Any]]:
    """One decoded cassette: [{method, uri, request_body, status, response}]; skips when the data is absent."""
    path = DECODED / relative
    if not path.is_file():
        pytest.skip(f"the recorded X responses are absent ({path}): conformance not checked")
    data: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def x_server() -> Iterator[Any]:
    from tests.fakes.x_server import XServer

    with XServer() as server:
        yield server


@pytest.fixture
def make_connector(x_server: Any) -> Callable[..., XConnector]:
    """A connector for the fake server; keyword arguments override settings, ``secrets=`` overrides secrets."""

    def make(secrets: dict[str, str] | None = None, **settings: Any) -> XConnector:
        return XConnector(
            settings={"api_base": x_server.url, **settings},
            secrets=x_server.credentials() if secrets is None else secrets,
        )

    return make


@pytest.fixture
def x(make_connector: Callable[..., XConnector]) -> XConnector:
    return make_connector()


class WebhookEndpoint:
    """A tiny loopback stand-in for the inbox's webhook view, built on the connector's own calls: GET answers the
    CRC with ``crc_response``; POST checks ``verify_signature`` on the raw body, then ``split_webhook``."""

    def __init__(self, connector: XConnector, *, wrong_crc: bool = False) -> None:
        self.connector = connector
        self.wrong_crc = wrong_crc
        self.crc_tokens: list[str] = []
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.ignored: list[str] = []
        self.rejected = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                token = query.get("crc_token", [""])[0]
                endpoint.crc_tokens.append(token)
                answer = endpoint.connector.crc_response(token + ("x" if endpoint.wrong_crc else ""))
                self._send(200, answer)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not endpoint.connector.verify_signature(body, self.headers.get("x-twitter-webhooks-signature")):
                    endpoint.rejected += 1
                    self._send(403, {"error": "wrong signature"})
                    return
                events, ignored = endpoint.connector.split_webhook(json.loads(body))
                endpoint.received.extend(events)
                endpoint.ignored.extend(ignored)
                self._send(200, {"accepted": len(events)})

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/x"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
