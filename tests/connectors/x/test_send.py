"""send() through tweepy against the fake X API: DMs, public replies, threads, images, and every error mapping."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from connectors.base import AuthError, OutboundMessage, PermanentError, RateLimited, TransientError
from connectors.x import XConnector
from connectors.x.text import split_thread, weighted_length
from tests.connectors.x.test_text import long_text


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def image(name: str = "photo.png") -> dict[str, Any]:
    return {"filename": name, "content_type": "image/png", "content": png()}


def dm(recipient: str, text: str = "Your parcel is on its way.", **kwargs: Any) -> OutboundMessage:
    return OutboundMessage(idempotency_key="uuid-1", recipient=recipient, text=text, thread_key="dm", **kwargs)


def public(recipient: str, tweet_id: str, text: str = "We are on it!", **kwargs: Any) -> OutboundMessage:
    return OutboundMessage(
        idempotency_key="uuid-2",
        recipient=recipient,
        text=text,
        thread_key="public",
        reply_to_external_id=f"tweet:{tweet_id}",
        **kwargs,
    )


@pytest.fixture
def ann(x_server: Any) -> str:
    return str(x_server.add_user(username="ann_ex", name="Ann Example", lang="en")["id"])


@pytest.fixture
def mention(x_server: Any, ann: str) -> dict[str, Any]:
    return dict(x_server.add_mention(author_id=ann, text=f"@{x_server.me['username']} where is my parcel?"))


def assert_no_secret(exc: BaseException, secrets: dict[str, str]) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        for value in secrets.values():
            assert value not in str(seen) and value not in repr(seen)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


# --- DMs ---------------------------------------------------------------------------------------------------------
def test_dm(x_server: Any, x: XConnector, ann: str) -> None:
    result = x.send(dm(ann))
    (sent,) = x_server.sent_dms
    assert sent["participant_id"] == ann
    assert sent["text"] == "Your parcel is on its way."
    assert not sent["media_ids"]
    assert result.provider_id == f"dm:{sent['dm_event_id']}"
    assert result.sent_at is not None
    assert x.send_all(dm(ann, "again"))[0].provider_id.startswith("dm:")


def test_dm_with_an_image(x_server: Any, x: XConnector, ann: str) -> None:
    x.send(dm(ann, "Here is the label.", metadata={"attachments": [image("label.png")]}))
    (upload,) = x_server.uploads
    assert upload["media_category"] == "dm_image"
    (sent,) = x_server.sent_dms
    assert [str(media_id) for media_id in sent["media_ids"]] == [str(upload["media_id"])]
    assert sent["text"] == "Here is the label."


def test_dm_image_without_text(x_server: Any, x: XConnector, ann: str) -> None:
    x.send(dm(ann, "", metadata={"attachments": [image()]}))
    assert len(x_server.sent_dms) == 1 and len(x_server.uploads) == 1


def test_dm_refused_by_the_recipient(x_server: Any, x: XConnector, ann: str) -> None:
    x_server.refuse_dms_from_us(ann)
    with pytest.raises(PermanentError, match="You are not permitted to send a message to this user") as caught:
        x.send(dm(ann))
    assert not isinstance(caught.value, AuthError)
    assert "403" in str(caught.value)
    assert x_server.sent_dms == []


# --- public replies ----------------------------------------------------------------------------------------------
def test_public_reply(x_server: Any, x: XConnector, ann: str, mention: dict[str, Any]) -> None:
    result = x.send(public(ann, mention["id"]))
    (tweet,) = x_server.tweets
    assert tweet["in_reply_to_tweet_id"] == mention["id"]
    assert tweet["text"] == "We are on it!"
    assert result.provider_id == f"tweet:{tweet['id']}"


def test_public_reply_with_images(x_server: Any, x: XConnector, ann: str, mention: dict[str, Any]) -> None:
    x.send(public(ann, mention["id"], metadata={"attachments": [image("a.png"), image("b.png")]}))
    assert [upload["media_category"] for upload in x_server.uploads] == ["tweet_image", "tweet_image"]
    (tweet,) = x_server.tweets
    assert sorted(map(str, tweet["media_ids"])) == sorted(str(upload["media_id"]) for upload in x_server.uploads)


def test_thread_of_a_700_character_reply(x_server: Any, x: XConnector, ann: str, mention: dict[str, Any]) -> None:
    text = long_text(700)
    results = x.send_all(public(ann, mention["id"], text, metadata={"thread": True}))
    assert len(results) == 3
    tweets = x_server.tweets
    assert [f"tweet:{tweet['id']}" for tweet in tweets] == [result.provider_id for result in results]
    assert tweets[0]["in_reply_to_tweet_id"] == mention["id"]
    assert tweets[1]["in_reply_to_tweet_id"] == tweets[0]["id"]
    assert tweets[2]["in_reply_to_tweet_id"] == tweets[1]["id"]
    assert [tweet["text"] for tweet in tweets] == split_thread(text)
    assert all(weighted_length(tweet["text"]) <= 280 for tweet in tweets)
    assert tweets[2]["text"].endswith(" (3/3)")


def test_over_280_without_thread_is_refused(x_server: Any, x: XConnector, ann: str, mention: dict[str, Any]) -> None:
    with pytest.raises(PermanentError) as caught:
        x.send(public(ann, mention["id"], long_text(300)))
    assert str(caught.value).startswith("X allows 280 characters in a public reply; this one counts ")
    assert "Shorten it, send it as a thread, or move the conversation to DM." in str(caught.value)
    assert x_server.tweets == []


def test_280_weighted_with_a_long_url_is_one_post(
    x_server: Any, x: XConnector, ann: str, mention: dict[str, Any]
) -> None:
    text = "a" * 256 + " https://example.com/" + "p" * 100  # 256 + 1 + 23 = 280
    x.send(public(ann, mention["id"], text))
    assert [tweet["text"] for tweet in x_server.tweets] == [text]


def test_reply_to_a_missing_post(x_server: Any, x: XConnector, ann: str) -> None:
    with pytest.raises(PermanentError):
        x.send(public(ann, "1999999999999999999"))
    assert x_server.tweets == []


def test_duplicate_content_is_permanent(x_server: Any, x: XConnector, ann: str, mention: dict[str, Any]) -> None:
    x.send(public(ann, mention["id"], "Same words"))
    with pytest.raises(PermanentError, match="duplicate content"):
        x.send(public(ann, mention["id"], "Same words"))


def test_thread_failing_half_way_is_permanent_with_the_count(
    x_server: Any, x: XConnector, ann: str, mention: dict[str, Any]
) -> None:
    text = long_text(700)
    parts = split_thread(text)
    x.send(public(ann, mention["id"], parts[1]))  # the thread's second post will be a duplicate
    with pytest.raises(PermanentError, match=r"duplicate content.*\(1 of 3 posts were already published\)"):
        x.send_all(public(ann, mention["id"], text, metadata={"thread": True}))
    assert len(x_server.tweets) == 2


def test_thread_failing_half_way_transiently_is_maybe_delivered(
    x_server: Any, x: XConnector, ann: str, mention: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = x.client.client.create_tweet
    calls = []

    def create_tweet(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 2:
            x_server.fail_next("POST", "/2/tweets", 503)
        return original(**kwargs)

    monkeypatch.setattr(x.client.client, "create_tweet", create_tweet)
    with pytest.raises(TransientError) as caught:
        x.send_all(public(ann, mention["id"], long_text(700), metadata={"thread": True}))
    assert caught.value.maybe_delivered
    assert "1 of 3 posts were already published; retrying would repeat them" in str(caught.value)


# --- error mapping -----------------------------------------------------------------------------------------------
def test_429_is_rate_limited_until_the_reset(x_server: Any, x: XConnector, ann: str, mention: dict[str, Any]) -> None:
    x_server.fail_next("POST", "/2/tweets", 429, reset_in=120)
    with pytest.raises(RateLimited) as caught:
        x.send(public(ann, mention["id"]))
    assert 115 <= caught.value.retry_after <= 121
    reset = time.strftime("%H:%M", time.gmtime(time.time() + caught.value.retry_after))
    assert str(caught.value) == f"X rate limit reached for POST /2/tweets; resets at {reset} UTC"
    assert x_server.tweets == []


def test_429_on_dm_events(x_server: Any, x: XConnector) -> None:
    x_server.fail_next("GET", "/2/dm_events", 429, reset_in=300)
    with pytest.raises(RateLimited, match=r"GET /2/dm_events; resets at") as caught:
        x.fetch_dm_events(None)
    assert 295 <= caught.value.retry_after <= 301


def test_wrong_keys_are_an_auth_error(x_server: Any, make_connector: Callable[..., XConnector], ann: str) -> None:
    secrets = {**x_server.credentials(), "consumer_secret": "wrong-secret-value", "access_token_secret": "wrong-too"}
    x = make_connector(secrets=secrets, user_id=str(x_server.me["id"]))
    with pytest.raises(AuthError) as caught:
        x.send(dm(ann))
    message = str(caught.value)
    assert "401" in message and "check the four keys" in message and "Read+Write+Direct Messages" in message
    assert_no_secret(caught.value, secrets)
    assert_no_secret(caught.value, x_server.credentials())


def test_401_from_x(x_server: Any, x: XConnector, ann: str) -> None:
    x_server.fail_next("POST", "/2/dm_conversations", 401)
    with pytest.raises(AuthError):
        x.send(dm(ann))


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_transient(x_server: Any, x: XConnector, ann: str, status: int) -> None:
    x_server.fail_next("POST", "/2/dm_conversations", status)
    with pytest.raises(TransientError) as caught:
        x.send(dm(ann))
    assert not isinstance(caught.value, RateLimited)
    assert not caught.value.maybe_delivered
    assert f"({status})" in str(caught.value)
    assert len(x.send_all(dm(ann))) == 1  # the next attempt goes through


def test_read_timeout_on_a_post_may_have_delivered(
    x_server: Any, make_connector: Callable[..., XConnector], ann: str, mention: dict[str, Any]
) -> None:
    x = make_connector(timeout=0.5, user_id=str(x_server.me["id"]))
    x_server.slow_next("POST", "/2/tweets", 2)
    with pytest.raises(TransientError) as caught:
        x.send(public(ann, mention["id"]))
    assert caught.value.maybe_delivered
    assert "did not answer in time on POST /2/tweets" in str(caught.value)
    time.sleep(2)
    assert len(x_server.tweets) == 1  # it was published after all: a retry would have duplicated it


def test_read_timeout_on_a_get_is_plain_transient(
    x_server: Any, make_connector: Callable[..., XConnector], ann: str
) -> None:
    x = make_connector(timeout=0.5, user_id=str(x_server.me["id"]))
    x_server.slow_next("GET", "/2/dm_events", 2)
    with pytest.raises(TransientError) as caught:
        x.fetch_dm_events(None)
    assert not caught.value.maybe_delivered


def test_403_on_upload_names_the_call(x_server: Any, x: XConnector, ann: str) -> None:
    x_server.fail_next("POST", "/1.1/media/upload.json", 403, detail="media upload not permitted")
    with pytest.raises(PermanentError, match=r"POST /1\.1/media/upload\.json \(403\): media upload not permitted"):
        x.send(dm(ann, metadata={"attachments": [image()]}))
    assert x_server.sent_dms == []
