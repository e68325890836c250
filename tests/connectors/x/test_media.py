"""Media: downloading DM media (OAuth 1.0a on ton.twitter.com) and tweet photos with a size limit."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.base import PermanentError
from connectors.x import XConnector
from tests.connectors.x.test_send import png

KEYS = {"consumer_key": "ck", "consumer_secret": "cs", "access_token": "1-at", "access_token_secret": "ats"}


def jpeg(size: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + b"\x00" * (size - 6) + b"\xff\xd9"


@pytest.fixture
def ann(x_server: Any) -> str:
    return str(x_server.add_user(username="ann_ex", name="Ann Example")["id"])


def test_dm_photo_downloads_with_oauth(x_server: Any, x: XConnector, ann: str) -> None:
    content = png(4, 4)
    x_server.add_dm(sender_id=ann, text="my receipt", media=[("receipt.png", "image/png", content)])
    ((_, stored),) = x.fetch_dm_events(None).events
    (message,) = x.normalize(stored)
    assert message.text == "my receipt"  # the media's t.co link is removed
    assert message.metadata["x"]["full_text"].startswith("my receipt https://t.co/")
    (file,) = message.metadata["files"]
    assert file["file_id"].startswith("https://ton.twitter.com/1.1/ton/data/dm/")
    data, name, content_type = x.download_file(file["file_id"], filename=file["file_name"])
    assert data == content
    assert name == file["file_name"]
    assert content_type == "image/png"
    (request,) = [r for r in x_server.requests if r["path"].startswith("/1.1/ton/")]
    assert request["headers"]["Authorization"].startswith("OAuth ")
    assert request["host"] == "ton.twitter.com"


def test_dm_media_with_wrong_keys_is_refused(
    x_server: Any, make_connector: Callable[..., XConnector], x: XConnector, ann: str
) -> None:
    x_server.add_dm(sender_id=ann, text="", media=[("a.png", "image/png", png())])
    ((_, stored),) = x.fetch_dm_events(None).events
    url = x.normalize(stored)[0].metadata["files"][0]["file_id"]
    wrong = make_connector(secrets={**x_server.credentials(), "access_token_secret": "nope"})
    with pytest.raises(PermanentError, match="refused the download"):
        wrong.download_file(url)


def test_mention_photo_and_size_limit(x_server: Any, make_connector: Callable[..., XConnector], ann: str) -> None:
    content = jpeg(40_000)
    x_server.add_mention(
        author_id=ann, text=f"@{x_server.me['username']} broken", media=[("a.jpg", "image/jpeg", content)]
    )
    x = make_connector(max_media_bytes=10_000)
    ((_, stored),) = x.fetch_mentions(None).events
    (message,) = x.normalize(stored)
    assert message.text == "broken"
    (file,) = message.metadata["files"]
    assert file["file_id"].startswith("https://pbs.twimg.com/media/")
    assert file["mime_type"] == "image/jpeg"
    with pytest.raises(PermanentError, match="40000 bytes, over the limit of 10000 bytes"):
        x.download_file(file["file_id"])
    data, _, content_type = x.download_file(file["file_id"], max_bytes=50_000)
    assert data == content and content_type == "image/jpeg"


def test_missing_media_is_permanent(x_server: Any, x: XConnector) -> None:
    with pytest.raises(PermanentError):
        x.download_file("https://pbs.twimg.com/media/nothing-here.jpg")


# --- streaming limit when no Content-Length is given ----------------------------------------------------------------
class _Chunked(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(40):
            chunk = b"v" * 1000
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def chunked_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Chunked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_size_limit_while_streaming(chunked_url: str) -> None:
    x = XConnector(settings={"api_base": chunked_url}, secrets=KEYS)
    url = "https://video.twimg.com/ext_tw_video/1/pu/vid/640x360/v.mp4"
    with pytest.raises(PermanentError, match="over the limit of 10000 bytes"):
        x.download_file(url, max_bytes=10_000)
    data, name, content_type = x.download_file(url)
    assert len(data) == 40_000 and name == "v.mp4" and content_type == "video/mp4"
