"""XConnector without a server: settings, reply modes, poll spacing, refusals made before any request, and the
transport adapter (against a tiny loopback HTTP server)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from connectors.base import (
    AuthError,
    Diagnosable,
    HasReplyModes,
    OutboundMessage,
    PermanentError,
    ReplyMode,
    TransientError,
)
from connectors.x import DEFAULT_MAX_MEDIA_BYTES, RateInfo, XConnector, XTransportAdapter
from connectors.x.client import mount

KEYS = {
    "consumer_key": "ck",
    "consumer_secret": "cs",
    "access_token": "1-at",
    "access_token_secret": "ats",
    "bearer_token": "AAAA",
}


def make(**settings: Any) -> XConnector:
    return XConnector(settings=settings, secrets=KEYS)


def test_class_attributes_and_protocols() -> None:
    assert XConnector.kind == "x"
    assert XConnector.label == "X (Twitter)"
    assert XConnector.max_text_length == 10_000
    assert XConnector.per_chat_interval == 0.0
    assert XConnector.secret_fields == (
        "consumer_key",
        "consumer_secret",
        "access_token",
        "access_token_secret",
        "bearer_token",
    )
    x = make()
    assert isinstance(x, HasReplyModes)
    assert isinstance(x, Diagnosable)


def test_defaults() -> None:
    x = make()
    assert x.api_base == ""
    assert x.mode == "polling"
    assert x.max_media_bytes == DEFAULT_MAX_MEDIA_BYTES == 15 * 1024 * 1024
    assert x.timeout == 20.0
    assert x.min_poll_interval == 60.0
    assert x.initial_backfill_pages == 1
    assert "ck" not in repr(x) and "cs" not in repr(x.client)


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"mode": "push"}, "mode"),
        ({"user_id": "@brand"}, "user_id"),
        ({"max_media_bytes": "lots"}, "max_media_bytes"),
        ({"max_media_bytes": 0}, "max_media_bytes"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "0"}, "timeout"),
        ({"min_poll_interval": "soon"}, "min_poll_interval"),
        ({"initial_backfill_pages": 1.5}, "initial_backfill_pages"),
        ({"initial_backfill_pages": -1}, "initial_backfill_pages"),
        ({"api_base": "ftp://example"}, "api_base"),
        ({"api_base": "http://127.0.0.1:80/path"}, "api_base"),
    ],
)
def test_bad_settings_name_the_setting(settings: dict[str, Any], name: str) -> None:
    with pytest.raises(PermanentError, match=f"setting '{name}'"):
        make(**settings)


def test_good_settings() -> None:
    x = make(mode="webhook", user_id="42", max_media_bytes="1000", timeout="2.5", initial_backfill_pages="0")
    assert (x.mode, x.user_id, x.max_media_bytes, x.timeout, x.initial_backfill_pages) == (
        "webhook",
        "42",
        1000,
        2.5,
        0,
    )


def test_reply_modes() -> None:
    x = make()
    assert x.reply_mode("public") == ReplyMode(
        visibility="public",
        label="Public reply on X — everyone can see it",
        max_text_length=280,
        max_thread_parts=25,
        private_thread_key="dm",
    )
    assert x.reply_mode("dm") == ReplyMode("private", "Private DM on X — only the customer sees it", 10_000)
    assert x.reply_mode("") == x.reply_mode("dm")
    assert x.text_length("see https://example.com/" + "x" * 100) == 4 + 23
    assert x.text_length("日本") == 4


def test_next_poll_delay() -> None:
    x = make(min_poll_interval=10)
    now = 1_000_000.0
    assert x.next_poll_delay(None) == 10
    # 15 calls left in a window ending in 900 s: one call every 60 s.
    assert x.next_poll_delay(RateInfo(limit=180, remaining=15, reset_at=now + 900), now=now) == 60
    # Many calls left: never under min_poll_interval.
    assert x.next_poll_delay(RateInfo(limit=180, remaining=170, reset_at=now + 900), now=now) == 10
    # None left: until the reset, plus a second.
    assert x.next_poll_delay(RateInfo(limit=180, remaining=0, reset_at=now + 300), now=now) == 301
    assert x.next_poll_delay(RateInfo(limit=180, remaining=0, reset_at=now + 3), now=now) == 10
    # A reset already past: the minimum.
    assert x.next_poll_delay(RateInfo(limit=180, remaining=5, reset_at=now - 5), now=now) == 10
    assert make().next_poll_delay(RateInfo(limit=180, remaining=1, reset_at=now + 120), now=now) == 120


def test_rate_info_from_headers() -> None:
    headers = {"x-rate-limit-limit": "180", "x-rate-limit-remaining": "179", "x-rate-limit-reset": "1700000000"}
    assert RateInfo.from_headers(headers) == RateInfo(180, 179, 1700000000.0)
    assert RateInfo.from_headers({"x-rate-limit-limit": "180"}) is None
    assert RateInfo.from_headers(None) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/media/a.jpg",
        "http://pbs.twimg.com/media/a.jpg",
        "https://pbs.twimg.com.evil.example/media/a.jpg",
        "https://api.twitter.com/2/users/me",
        "file:///etc/passwd",
        "https://169.254.169.254/latest/meta-data",
    ],
)
def test_download_refuses_other_hosts(url: str) -> None:
    with pytest.raises(PermanentError, match="only X media hosts"):
        make().download_file(url)


def reply(**kwargs: Any) -> OutboundMessage:
    values: dict[str, Any] = {"idempotency_key": "uuid-1", "recipient": "750362064426721281", "text": "Thanks!"}
    values.update(kwargs)
    return OutboundMessage(**values)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (reply(thread_key="public"), "there is none to answer"),
        (reply(thread_key="public", reply_to_external_id="dm:5"), "there is none to answer"),
        (reply(thread_key="public", reply_to_external_id="tweet:5", text="x" * 281), "counts 281"),
        (reply(thread_key="public", reply_to_external_id="tweet:5", text=""), "nothing to send"),
        (reply(thread_key="dm", recipient="@ann"), "not an X user id"),
        (reply(thread_key="dm", text=""), "nothing to send"),
        (reply(thread_key="dm", text="x" * 10_001), "10000 characters in a DM"),
        (
            reply(
                metadata={"attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "content": b"%"}]}
            ),
            "'a.pdf' is application/pdf: X replies carry only images",
        ),
        (
            reply(
                metadata={
                    "attachments": [
                        {"filename": "big.png", "content_type": "image/png", "content": b"0" * (5 * 1024 * 1024 + 1)}
                    ]
                }
            ),
            "'big.png' is 5242881 bytes: X accepts images up to 5 MB",
        ),
        (
            reply(
                metadata={
                    "attachments": [
                        {"filename": f"{i}.png", "content_type": "image/png", "content": b"0"} for i in range(2)
                    ]
                }
            ),
            "a DM on X carries at most 1 image; this one has 2",
        ),
        (
            reply(
                thread_key="public",
                reply_to_external_id="tweet:5",
                metadata={
                    "attachments": [
                        {"filename": f"{i}.png", "content_type": "image/png", "content": b"0"} for i in range(5)
                    ]
                },
            ),
            "a post on X carries at most 4 images",
        ),
        (reply(metadata={"attachments": [{"filename": "a.png"}]}), "attachment 1 has no content bytes"),
    ],
)
def test_refusals_before_any_request(message: OutboundMessage, error: str) -> None:
    # api_base points nowhere reachable: any request would be a TransientError, not the PermanentError expected.
    x = XConnector(settings={"api_base": "http://127.0.0.1:9", "user_id": "1"}, secrets=KEYS)
    with pytest.raises(PermanentError, match=error.replace("(", r"\(")):
        x.send(message)


def test_missing_keys_are_named_before_any_request() -> None:
    x = XConnector(settings={"api_base": "http://127.0.0.1:9"}, secrets={"consumer_key": "ck"})
    with pytest.raises(AuthError, match="consumer_secret, access_token, access_token_secret"):
        x.me()
    (step,) = x.diagnose()
    assert not step.ok and step.name == "keys"
    assert "consumer_secret, access_token, access_token_secret" in step.detail
    assert "ck" not in step.detail


def test_connection_refused_is_transient() -> None:
    x = XConnector(settings={"api_base": "http://127.0.0.1:9", "timeout": 2}, secrets=KEYS)
    with pytest.raises(TransientError) as caught:
        x.me()
    assert not caught.value.maybe_delivered
    assert "could not reach X on GET /2/users/me" in str(caught.value)


# --- the transport adapter ---------------------------------------------------------------------------------------
class _Echo(http.server.BaseHTTPRequestHandler):
    delay = 0.0

    def do_GET(self) -> None:
        if "slow" in self.path:
            threading.Event().wait(1.0)
        body = json.dumps({"path": self.path, "forwarded": self.headers.get("X-Forwarded-Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_adapter_rewrites_x_hosts_and_applies_the_timeout(echo_url: str) -> None:
    session = requests.Session()
    mount(session, XTransportAdapter(api_base=echo_url, timeout=0.3))
    for host in ("api.twitter.com", "upload.twitter.com", "ton.twitter.com", "pbs.twimg.com"):
        answer = session.get(f"https://{host}/2/users/me?user.fields=name&a=%2C").json()
        assert answer == {"path": "/2/users/me?user.fields=name&a=%2C", "forwarded": host}
    with pytest.raises(requests.ReadTimeout):
        session.get("https://api.twitter.com/slow")
    assert session.get("https://api.twitter.com/slow", timeout=3).status_code == 200  # an explicit timeout wins
