"""normalize() of the four stored shapes: polling DM / mention (v2) and webhook DM / tweet (v1.1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.base import PermanentError
from connectors.x import XConnector, describe_payload, normalize_payload
from connectors.x.normalize import dm_event_item, mention_item, pick_includes, real_language

US = "1072250532645998596"
ANN = "750362064426721281"
ANN_USER = {"id": ANN, "name": "Ann Example", "username": "ann_ex"}


def v2_dm(**overrides: Any) -> dict[str, Any]:
    event = {
        "id": "1585800613253812228",
        "event_type": "MessageCreate",
        "text": "Where is my order?",
        "sender_id": ANN,
        "dm_conversation_id": f"{ANN}-{US}",
        "created_at": "2026-11-21T10:00:00.000Z",
    }
    event.update(overrides)
    return event


def v2_tweet(**overrides: Any) -> dict[str, Any]:
    tweet = {
        "id": "1578516295611748353",
        "text": "@brand @TwitterSupport my parcel is late &amp; nobody answers",
        "edit_history_tweet_ids": ["1578516295611748353"],
        "author_id": ANN,
        "created_at": "2026-11-21T10:05:00.000Z",
        "conversation_id": "1578516000000000000",
        "lang": "en",
        "in_reply_to_user_id": US,
        "referenced_tweets": [{"type": "replied_to", "id": "1578516000000000000"}],
    }
    tweet.update(overrides)
    return tweet


def dm_payload(event: dict[str, Any], includes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"source": "dm_events", "for_user_id": US, "event": event, "includes": includes or {"users": [ANN_USER]}}


def mention_payload(tweet: dict[str, Any], includes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"source": "mentions", "for_user_id": US, "tweet": tweet, "includes": includes or {"users": [ANN_USER]}}


def v1_dm_payload(**data: Any) -> dict[str, Any]:
    return {
        "source": "account_activity",
        "for_user_id": US,
        "direct_message_event": {
            "type": "message_create",
            "id": "1150493286110552068",
            "created_timestamp": "1563133949197",
            "message_create": {
                "target": {"recipient_id": US},
                "sender_id": ANN,
                "message_data": {"text": "Hi &amp; thanks", "entities": {}, **data},
            },
        },
        "users": {ANN: {"id": ANN, "name": "Ann Example", "screen_name": "ann_ex", "lang": "de"}},
    }


def v1_tweet_payload(**overrides: Any) -> dict[str, Any]:
    tweet = {
        "created_at": "Wed Oct 10 20:19:24 +0000 2018",
        "id": 1050118621198921728,
        "id_str": "1050118621198921728",
        "text": "@brand the app crashes &lt;again&gt;",
        "user": {"id": int(ANN), "id_str": ANN, "name": "Ann Example", "screen_name": "ann_ex", "lang": "fr"},
        "lang": "en",
        "in_reply_to_status_id_str": "1050118000000000000",
        "entities": {"hashtags": [], "urls": [], "user_mentions": []},
    }
    tweet.update(overrides)
    return {"source": "account_activity", "for_user_id": US, "tweet_create_event": tweet}


def test_polling_dm() -> None:
    (message,) = normalize_payload(dm_payload(v2_dm()))
    assert message.external_id == "dm:1585800613253812228"
    assert message.sender.handle == ANN
    assert message.sender.display_name == "Ann Example (@ann_ex)"
    assert message.text == "Where is my order?"
    assert message.thread_key == "dm"
    assert message.sent_at == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert message.language_hints == ()
    assert message.metadata == {
        "x": {
            "kind": "dm",
            "dm_conversation_id": f"{ANN}-{US}",
            "username": "ann_ex",
            "full_text": "Where is my order?",
        }
    }


def test_polling_dm_keeps_leading_mentions_and_media() -> None:
    includes = {
        "users": [ANN_USER],
        "media": [
            {"media_key": "3_1", "type": "photo", "url": "https://ton.twitter.com/1.1/ton/data/dm/1/2/abc.jpg"},
            {"media_key": "3_9", "type": "photo", "url": "https://pbs.twimg.com/media/other.jpg"},
        ],
    }
    event = v2_dm(text="@bob said to ask you", attachments={"media_keys": ["3_1"]})
    (message,) = normalize_payload(dm_payload(event, includes))
    assert message.text == "@bob said to ask you"  # a DM has no reply prefix
    assert message.metadata["files"] == [
        {
            "file_id": "https://ton.twitter.com/1.1/ton/data/dm/1/2/abc.jpg",
            "file_name": "abc.jpg",
            "mime_type": "image/jpeg",
        }
    ]


def test_polling_mention() -> None:
    (message,) = normalize_payload(mention_payload(v2_tweet()))
    assert message.external_id == "tweet:1578516295611748353"
    assert message.thread_key == "public"
    assert message.text == "my parcel is late & nobody answers"
    assert message.language_hints == ("en",)
    assert message.sent_at == datetime(2026, 11, 21, 10, 5, tzinfo=UTC)
    assert message.metadata["x"] == {
        "kind": "mention",
        "tweet_id": "1578516295611748353",
        "conversation_id": "1578516000000000000",
        "in_reply_to_tweet_id": "1578516000000000000",
        "lang": "en",
        "username": "ann_ex",
        "full_text": "@brand @TwitterSupport my parcel is late & nobody answers",
    }


def test_mention_video_takes_the_highest_bit_rate_mp4() -> None:
    media = {
        "media_key": "7_1",
        "type": "video",
        "preview_image_url": "https://pbs.twimg.com/ext_tw_video_thumb/1/pu/img/p.jpg",
        "variants": [
            {"content_type": "application/x-mpegURL", "url": "https://video.twimg.com/ext_tw_video/1/pu/pl/a.m3u8"},
            {
                "bit_rate": 832000,
                "content_type": "video/mp4",
                "url": "https://video.twimg.com/v/640x360/mid.mp4?tag=12",
            },
            {
                "bit_rate": 2176000,
                "content_type": "video/mp4",
                "url": "https://video.twimg.com/v/1280x720/hi.mp4?tag=12",
            },
            {"bit_rate": 256000, "content_type": "video/mp4", "url": "https://video.twimg.com/v/320x180/lo.mp4?tag=12"},
        ],
    }
    gif = {
        "media_key": "16_2",
        "type": "animated_gif",
        "variants": [{"bit_rate": 0, "content_type": "video/mp4", "url": "https://video.twimg.com/tweet_video/g.mp4"}],
    }
    tweet = v2_tweet(
        text="@brand look https://t.co/abc",
        attachments={"media_keys": ["7_1", "16_2"]},
        entities={"urls": [{"url": "https://t.co/abc", "media_key": "7_1", "start": 12, "end": 35}]},
    )
    (message,) = normalize_payload(mention_payload(tweet, {"users": [ANN_USER], "media": [media, gif]}))
    assert message.text == "look"  # the media link is gone; the files carry it
    assert message.metadata["x"]["full_text"] == "@brand look https://t.co/abc"
    assert message.metadata["files"] == [
        {
            "file_id": "https://video.twimg.com/v/1280x720/hi.mp4?tag=12",
            "file_name": "hi.mp4",
            "mime_type": "video/mp4",
        },
        {"file_id": "https://video.twimg.com/tweet_video/g.mp4", "file_name": "g.mp4", "mime_type": "video/mp4"},
    ]


@pytest.mark.parametrize(
    ("tweet_lang", "user_lang", "expected"),
    [
        ("en", None, ("en",)),
        ("und", None, ()),
        ("zxx", "de", ("de",)),
        ("qme", None, ()),
        ("art", None, ()),
        ("in", None, ("id",)),  # X's old code for Indonesian
        ("iw", None, ("he",)),
        ("pt", "pt-BR", ("pt", "pt-BR")),
        ("en", "en", ("en",)),
    ],
)
def test_language_hints(tweet_lang: str, user_lang: str | None, expected: tuple[str, ...]) -> None:
    payload = v1_tweet_payload(lang=tweet_lang)
    payload["tweet_create_event"]["user"]["lang"] = user_lang
    (message,) = normalize_payload(payload)
    assert message.language_hints == expected


def test_real_language() -> None:
    assert real_language("EN") == "en"
    assert real_language("zh_Hant") == "zh-Hant"
    assert real_language(None) == ""
    assert real_language("qht") == ""


def test_webhook_dm() -> None:
    (message,) = normalize_payload(v1_dm_payload())
    assert message.external_id == "dm:1150493286110552068"
    assert message.text == "Hi & thanks"
    assert message.sender.display_name == "Ann Example (@ann_ex)"
    assert message.language_hints == ("de",)
    assert message.sent_at == datetime.fromtimestamp(1563133949.197, UTC)
    assert message.metadata["x"]["dm_conversation_id"] == f"{ANN}-{US}"  # as polling gives it


def test_webhook_dm_media() -> None:
    media = {
        "id_str": "1150493286110552069",
        "type": "photo",
        "url": "https://t.co/xyz",
        "media_url_https": "https://ton.twitter.com/1.1/ton/data/dm/1150493286110552068/1150493286110552069/p.png",
    }
    payload = v1_dm_payload(text="see this https://t.co/xyz", attachment={"type": "media", "media": media})
    (message,) = normalize_payload(payload)
    assert message.text == "see this"
    assert message.metadata["files"][0]["file_name"] == "p.png"
    assert message.metadata["files"][0]["mime_type"] == "image/png"


def test_webhook_tweet() -> None:
    (message,) = normalize_payload(v1_tweet_payload())
    assert message.external_id == "tweet:1050118621198921728"
    assert message.text == "the app crashes <again>"
    assert message.sent_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert message.language_hints == ("en", "fr")
    assert message.metadata["x"]["in_reply_to_tweet_id"] == "1050118000000000000"
    assert message.metadata["x"]["full_text"] == "@brand the app crashes <again>"


def test_webhook_tweet_uses_extended_full_text_and_media() -> None:
    long = "@brand " + "word " * 60 + "end"
    media = {
        "type": "animated_gif",
        "url": "https://t.co/gif",
        "media_url_https": "https://pbs.twimg.com/tweet_video_thumb/g.jpg",
        "video_info": {
            "variants": [{"bitrate": 0, "content_type": "video/mp4", "url": "https://video.twimg.com/g.mp4"}]
        },
    }
    payload = v1_tweet_payload(
        text="@brand word word word… https://t.co/short",
        truncated=True,
        extended_tweet={"full_text": long + " https://t.co/gif", "extended_entities": {"media": [media]}},
    )
    (message,) = normalize_payload(payload)
    assert message.text == long.removeprefix("@brand ")
    assert message.metadata["files"] == [
        {"file_id": "https://video.twimg.com/g.mp4", "file_name": "g.mp4", "mime_type": "video/mp4"}
    ]


def test_mentions_only_post_keeps_its_text() -> None:
    (message,) = normalize_payload(mention_payload(v2_tweet(text="@brand")))
    assert message.text == "@brand"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (dm_payload(v2_dm(sender_id=US)), "our own DM"),
        (dm_payload(v2_dm(event_type="ParticipantsJoin")), "of type ParticipantsJoin"),
        (mention_payload(v2_tweet(author_id=US)), "our own post"),
        (mention_payload(v2_tweet(referenced_tweets=[{"type": "retweeted", "id": "1"}])), "retweet"),
        (v1_tweet_payload(user={"id_str": US, "screen_name": "brand"}), "our own post"),
        (v1_tweet_payload(retweeted_status={"id_str": "1"}), "retweet"),
    ],
)
def test_ignored_events(payload: dict[str, Any], reason: str) -> None:
    assert normalize_payload(payload) == []
    assert reason in describe_payload(payload)


def test_ignored_own_webhook_dm_and_non_message() -> None:
    own = v1_dm_payload()
    own["direct_message_event"]["message_create"]["sender_id"] = US
    assert normalize_payload(own) == []
    assert "our own DM" in describe_payload(own)
    other = v1_dm_payload()
    other["direct_message_event"]["type"] = "participants_leave"
    assert normalize_payload(other) == []


def test_describe_messages() -> None:
    assert describe_payload(dm_payload(v2_dm())) == f"DM 1585800613253812228 from @ann_ex ({ANN})"
    assert describe_payload(mention_payload(v2_tweet())) == f"mention 1578516295611748353 by @ann_ex ({ANN})"
    assert "must be one of" in describe_payload({"source": "nope"})


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "payload must be an object"),
        ({"source": "other"}, "field 'source'"),
        ({"source": "dm_events", "for_user_id": US}, "payload.event must be an object"),
        (dm_payload(v2_dm(id="abc")), "event.id must be a numeric id"),
        (dm_payload(v2_dm(sender_id=None)), "event.sender_id"),
        (dm_payload(v2_dm(text=5)), "event.text must be a string"),
        (dm_payload(v2_dm(created_at="yesterday")), "event.created_at"),
        (dm_payload(v2_dm(attachments={"media_keys": "3_1"})), "event.attachments.media_keys must be a list"),
        (mention_payload(v2_tweet(author_id="")), "tweet.author_id"),
        (mention_payload(v2_tweet(referenced_tweets={"id": 1})), "tweet.referenced_tweets must be a list"),
        ({"source": "account_activity", "for_user_id": US}, "direct_message_event"),
        (v1_tweet_payload(user=None), "tweet_create_event.user must be an object"),
        (v1_tweet_payload(created_at="2018-10-10"), "tweet_create_event.created_at"),
        ({**v1_dm_payload(), "for_user_id": ["x"]}, "payload.for_user_id"),
    ],
)
def test_malformed_payloads_name_the_field(payload: Any, field: str) -> None:
    with pytest.raises(PermanentError, match=field.replace("(", r"\(").replace(".", r"\.")):
        normalize_payload(payload)


def test_items_keep_only_their_includes() -> None:
    includes = {
        "users": [ANN_USER, {"id": "2", "username": "bob"}, {"id": US, "username": "brand"}],
        "media": [{"media_key": "3_1", "type": "photo", "url": "u"}, {"media_key": "3_2", "type": "photo"}],
        "tweets": [{"id": "9", "text": "quoted"}, {"id": "8", "text": "other"}],
    }
    event = v2_dm(attachments={"media_keys": ["3_1"]}, referenced_tweets=[{"id": "9"}], participant_ids=[ANN, US])
    item = dm_event_item(event, includes, US)
    assert item["source"] == "dm_events" and item["for_user_id"] == US and item["event"] == event
    assert item["includes"] == {
        "users": [ANN_USER, {"id": US, "username": "brand"}],
        "media": [{"media_key": "3_1", "type": "photo", "url": "u"}],
        "tweets": [{"id": "9", "text": "quoted"}],
    }
    tweet = v2_tweet(referenced_tweets=[{"type": "quoted", "id": "8"}])
    assert mention_item(tweet, includes, US)["includes"] == {
        "users": [ANN_USER, {"id": US, "username": "brand"}],
        "tweets": [{"id": "8", "text": "other"}],
    }
    assert pick_includes({}, users=["1"], media=[], tweets=[]) == {}


def test_connector_normalize_and_describe() -> None:
    x = XConnector(settings={}, secrets={})
    assert x.normalize(dm_payload(v2_dm()))[0].external_id == "dm:1585800613253812228"
    assert x.describe(dm_payload(v2_dm(sender_id=US))) == "ignored: our own DM 1585800613253812228"
