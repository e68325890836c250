"""The real recorded X shapes (../shared/data/twitter/tweepy, read where they lie) normalize: a message, or [] with
a reason. Skipped with the reason when the data is absent."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.x import describe_payload, normalize_payload, split_webhook
from connectors.x.normalize import mention_item
from tests.connectors.x.conftest import recorded

pytestmark = pytest.mark.langdata

OTHER_ACCOUNT = "1"  # a for_user_id that is none of the recorded authors


def recorded_v1_dm_event() -> dict[str, Any]:
    (call,) = [c for c in recorded("dm_and_mentions/testsendanddeletedirectmessage.json") if "events/new" in c["uri"]]
    event: dict[str, Any] = call["response"]["event"]
    return event


def recorded_v1_user() -> dict[str, Any]:
    (call,) = [c for c in recorded("dm_and_mentions/testsendanddeletedirectmessage.json") if "users/show" in c["uri"]]
    user: dict[str, Any] = call["response"]
    return user


def test_recorded_v1_dm_event_through_the_webhook_path() -> None:
    event = recorded_v1_dm_event()
    user = recorded_v1_user()
    body = {"for_user_id": OTHER_ACCOUNT, "direct_message_events": [event], "users": {user["id_str"]: user}}
    ((external_id, stored),), ignored = split_webhook(body)
    assert ignored == []
    assert external_id == f"dm:{event['id']}"
    (message,) = normalize_payload(stored)
    assert message.external_id == "dm:1150493286110552068"
    assert message.text == "test message"
    assert message.sender.handle == "1072250532645998596"
    assert message.sender.display_name == "Tweepy Testing (@TweepyDev)"
    assert message.thread_key == "dm"
    assert message.sent_at is not None and message.sent_at.year == 2019
    # The recorded DM was sent to itself: for that account it is its own DM, ignored with the reason.
    own = {**stored, "for_user_id": "1072250532645998596"}
    assert normalize_payload(own) == []
    assert describe_payload(own) == "ignored: our own DM 1150493286110552068"


def v1_tweets(name: str) -> list[dict[str, Any]]:
    tweets: list[dict[str, Any]] = []
    for call in recorded(f"other_tweet_reads/{name}"):
        response = call["response"]
        tweets.extend(response if isinstance(response, list) else response.get("statuses", []))
    return tweets


@pytest.mark.parametrize("name", ["testusertimeline.json", "testsearchtweets.json"])
def test_recorded_v1_tweets_through_the_webhook_path(name: str) -> None:
    tweets = v1_tweets(name)
    assert len(tweets) > 10
    items, ignored = split_webhook({"for_user_id": OTHER_ACCOUNT, "tweet_create_events": tweets})
    assert ignored == []
    assert len(items) == len(tweets)
    messages = 0
    for (external_id, stored), tweet in zip(items, tweets, strict=True):
        assert external_id == f"tweet:{tweet['id_str']}"
        result = normalize_payload(stored)
        if not result:
            reason = describe_payload(stored)
            assert reason.startswith("ignored: retweet"), reason
            assert "retweeted_status" in tweet
            continue
        messages += 1
        (message,) = result
        assert message.external_id == external_id
        assert message.sender.handle == tweet["user"]["id_str"]
        assert message.sender.display_name == f"{tweet['user']['name']} (@{tweet['user']['screen_name']})"
        assert message.sent_at is not None
        assert message.thread_key == "public"
        assert "&amp;" not in message.text and "&gt;" not in message.text
        assert not message.text.startswith("@"), message.text  # the reply prefix is removed
        assert message.metadata["x"].get("truncated") is (True if tweet["truncated"] else None)
        assert message.metadata["x"]["full_text"]
        assert all(len(hint) >= 2 and hint not in ("und", "qme") for hint in message.language_hints)
        for file in message.metadata.get("files", []):
            assert file["file_id"].startswith(("https://pbs.twimg.com/", "https://video.twimg.com/"))
    assert messages > 5


def test_recorded_v1_tweets_with_media_and_languages() -> None:
    tweets = {t["id_str"]: t for t in v1_tweets("testusertimeline.json")}
    (stored,) = [
        {"source": "account_activity", "for_user_id": OTHER_ACCOUNT, "tweet_create_event": t}
        for t in tweets.values()
        if t["text"].startswith("@TreyNKennedy")
    ]
    (message,) = normalize_payload(stored)
    assert message.text == "👀"  # mention prefix and media link removed
    assert message.language_hints == ()  # "und"
    assert message.metadata["files"][0]["mime_type"] in ("image/jpeg", "image/png")
    indonesian = [t for t in tweets.values() if t["lang"] == "in"]
    (message,) = normalize_payload(
        {"source": "account_activity", "for_user_id": OTHER_ACCOUNT, "tweet_create_event": indonesian[0]}
    )
    assert message.language_hints == ("id",)


def test_recorded_v1_search_video_and_gif_retweets_are_ignored() -> None:
    retweets = [t for t in v1_tweets("testsearchtweets.json") if "retweeted_status" in t]
    assert retweets
    for tweet in retweets:
        stored = {"source": "account_activity", "for_user_id": OTHER_ACCOUNT, "tweet_create_event": tweet}
        assert normalize_payload(stored) == []


def test_recorded_v2_mentions_through_the_polling_path() -> None:
    (call,) = recorded("dm_and_mentions/test_client_get_users_mentions.json")
    page = call["response"]
    assert call["uri"].endswith("/2/users/783214/mentions")
    texts = []
    for tweet in page["data"]:
        # The recording asked for no tweet.fields: author_id is absent; the connector always asks for it.
        stored = mention_item({**tweet, "author_id": "42"}, page.get("includes", {}), "783214")
        (message,) = normalize_payload(stored)
        assert message.external_id == f"tweet:{tweet['id']}"
        assert message.metadata["x"]["full_text"] == tweet["text"]
        assert message.sent_at is None
        texts.append(message.text)
    assert "this is my ENTIRE feed" in texts[0] and not texts[0].startswith("@")
    assert texts[5] == "make 🤨 an available reaction emoji in dms"
    assert texts[7].startswith("Hate to say it")  # a mention in the middle stays
