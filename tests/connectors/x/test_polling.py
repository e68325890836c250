"""Polling against the fake X API: DM events and mentions, pagination, cursors, duplicates, rate-limit spacing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connectors.base import OutboundMessage
from connectors.x import XConnector


def customer(x_server: Any, username: str = "ann_ex", name: str = "Ann Example", lang: str = "en") -> str:
    return str(x_server.add_user(username=username, name=name, lang=lang)["id"])


def ids(fetch: Any) -> list[int]:
    return [int(external_id.partition(":")[2]) for external_id, _ in fetch.events]


def test_me_is_asked_once(x_server: Any, x: XConnector) -> None:
    assert x.me()["id"] == x_server.me["id"]
    assert x.me()["username"] == x_server.me["username"]
    assert x.user_id == str(x_server.me["id"])
    assert len(x_server.calls("GET", "/2/users/me")) == 1


def test_user_id_setting_spares_users_me(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    x = make_connector(user_id=str(x_server.me["id"]))
    x.fetch_dm_events(None)
    assert x_server.calls("GET", "/2/users/me") == []


def test_250_dms_nothing_lost_no_repeats(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    ann = customer(x_server)
    sent = [x_server.add_dm(sender_id=ann, text=f"message {n}") for n in range(250)]
    x = make_connector(initial_backfill_pages=10)
    fetch = x.fetch_dm_events(None)
    assert fetch.complete
    assert len(x_server.calls("GET", "/2/dm_events")) == 3  # 100 + 100 + 50
    assert ids(fetch) == sorted(int(event["id"]) for event in sent)  # oldest first, each once
    assert fetch.newest_id == sent[-1]["id"]
    assert fetch.rate is not None and fetch.rate.limit > 0
    # Every stored payload is the polling shape, with only the includes it refers to.
    external_id, stored = fetch.events[0]
    assert external_id == f"dm:{sent[0]['id']}"
    assert stored["source"] == "dm_events"
    assert stored["for_user_id"] == str(x_server.me["id"])
    assert stored["event"]["id"] == sent[0]["id"]
    assert ann in [user["id"] for user in stored["includes"]["users"]]
    (message,) = x.normalize(stored)
    assert message.text == "message 0"
    assert message.sender.handle == ann
    assert message.sender.display_name == "Ann Example (@ann_ex)"
    assert message.metadata["x"]["dm_conversation_id"]

    # The next round: only what is newer than the cursor, and paging stops at the cursor.
    newer = [x_server.add_dm(sender_id=ann, text=f"later {n}") for n in range(5)]
    before = len(x_server.calls("GET", "/2/dm_events"))
    fetch = x.fetch_dm_events(fetch.newest_id)
    assert ids(fetch) == [int(event["id"]) for event in newer]
    assert fetch.complete and fetch.newest_id == newer[-1]["id"]
    assert len(x_server.calls("GET", "/2/dm_events")) == before + 1

    # Nothing new: no events, the cursor stays.
    again = x.fetch_dm_events(fetch.newest_id)
    assert again.events == [] and again.newest_id == fetch.newest_id and again.complete


def test_after_id_in_the_middle_stops_paging(x_server: Any, x: XConnector) -> None:
    ann = customer(x_server)
    sent = [x_server.add_dm(sender_id=ann, text=f"m{n}") for n in range(250)]
    fetch = x.fetch_dm_events(sent[99]["id"])
    assert ids(fetch) == [int(event["id"]) for event in sent[100:]]
    assert len(x_server.calls("GET", "/2/dm_events")) == 2  # the second page reaches the cursor


def test_max_pages_leaves_the_fetch_incomplete(x_server: Any, x: XConnector) -> None:
    ann = customer(x_server)
    sent = [x_server.add_dm(sender_id=ann, text=f"m{n}") for n in range(250)]
    fetch = x.fetch_dm_events(sent[0]["id"], max_pages=1)
    assert not fetch.complete
    assert ids(fetch) == [int(event["id"]) for event in sent[150:]]
    assert fetch.newest_id == sent[-1]["id"]


def test_first_poll_backfills_one_page_by_default(x_server: Any, x: XConnector) -> None:
    ann = customer(x_server)
    sent = [x_server.add_dm(sender_id=ann, text=f"m{n}") for n in range(150)]
    fetch = x.fetch_dm_events(None)
    assert ids(fetch) == [int(event["id"]) for event in sent[50:]]
    assert not fetch.complete  # older history was left on purpose
    assert fetch.newest_id == sent[-1]["id"]


def test_no_backfill_only_takes_the_position(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    ann = customer(x_server)
    sent = [x_server.add_dm(sender_id=ann, text=f"m{n}") for n in range(3)]
    fetch = make_connector(initial_backfill_pages=0).fetch_dm_events(None)
    assert fetch.events == [] and fetch.newest_id == sent[-1]["id"]


def test_empty_stream(x_server: Any, x: XConnector) -> None:
    fetch = x.fetch_dm_events(None)
    assert fetch.events == [] and fetch.newest_id is None and fetch.complete
    mentions = x.fetch_mentions(None)
    assert mentions.events == [] and mentions.newest_id is None and mentions.complete


def test_our_own_dms_move_the_cursor_but_are_not_returned(x_server: Any, x: XConnector) -> None:
    ann = customer(x_server)
    first = x_server.add_dm(sender_id=ann, text="hello")
    cursor = x.fetch_dm_events(None).newest_id
    assert cursor == first["id"]
    result = x.send(OutboundMessage(idempotency_key="u1", recipient=ann, text="Hi Ann!", thread_key="dm"))
    fetch = x.fetch_dm_events(cursor)
    assert fetch.events == []
    assert fetch.skipped == 1
    assert f"dm:{fetch.newest_id}" == result.provider_id


def test_duplicates_across_pages_are_dropped(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    ann = customer(x_server)
    sent = [x_server.add_dm(sender_id=ann, text=f"m{n}") for n in range(250)]
    x_server.duplicate_pages(True)
    fetch = make_connector(initial_backfill_pages=10).fetch_dm_events(None)
    assert ids(fetch) == sorted(int(event["id"]) for event in sent)
    author = customer(x_server, username="bob", name="Bob")
    tweets = [x_server.add_mention(author_id=author, text=f"@{x_server.me['username']} help {n}") for n in range(120)]
    mentions = make_connector(initial_backfill_pages=10).fetch_mentions(None)
    assert ids(mentions) == sorted(int(tweet["id"]) for tweet in tweets)


def test_mentions_with_since_id(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    bob = customer(x_server, username="bob", name="Bob", lang="de")
    handle = x_server.me["username"]
    first = [x_server.add_mention(author_id=bob, text=f"@{handle} frage {n}", lang="de") for n in range(130)]
    x = make_connector(initial_backfill_pages=5)
    fetch = x.fetch_mentions(None)
    assert ids(fetch) == [int(tweet["id"]) for tweet in first]
    assert fetch.complete and fetch.newest_id == first[-1]["id"]
    external_id, stored = fetch.events[-1]
    assert external_id == f"tweet:{first[-1]['id']}"
    assert stored["source"] == "mentions"
    (message,) = x.normalize(stored)
    assert message.text == "frage 129"
    assert message.thread_key == "public"
    assert message.language_hints[0] == "de"
    assert message.sender.display_name == "Bob (@bob)"

    later = [x_server.add_mention(author_id=bob, text=f"@{handle} noch {n}") for n in range(3)]
    fetch = x.fetch_mentions(fetch.newest_id)
    assert ids(fetch) == [int(tweet["id"]) for tweet in later]
    call = x_server.calls("GET", "/2/users/")[-1]
    assert str(first[-1]["id"]) in str(call)  # since_id was sent


def test_mention_reply_metadata(x_server: Any, x: XConnector) -> None:
    bob = customer(x_server, username="bob", name="Bob")
    handle = x_server.me["username"]
    ours = x_server.add_mention(author_id=bob, text=f"@{handle} first")
    reply = x_server.add_mention(author_id=bob, text=f"@{handle} second", in_reply_to=ours["id"])
    fetch = x.fetch_mentions(None)
    messages = [m for _, stored in fetch.events for m in x.normalize(stored)]
    assert [m.external_id for m in messages] == [f"tweet:{ours['id']}", f"tweet:{reply['id']}"]
    assert messages[1].metadata["x"]["in_reply_to_tweet_id"] == ours["id"]


def test_rate_limit_headers_drive_the_poll_delay(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    x_server.set_rate_limit("GET", "/2/dm_events", limit=15, window=900)
    x = make_connector(min_poll_interval=1)
    fetch = x.fetch_dm_events(None)
    assert fetch.rate is not None
    assert fetch.rate.limit == 15
    assert fetch.rate.remaining == 14
    delay = x.next_poll_delay(fetch.rate)
    assert 55 <= delay <= 900 / 14 + 1  # the window's rest spread over the 14 calls left


def test_recorded_mentions_and_dms_through_polling(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    try:
        mentions = x_server.recorded_mentions()
        ann = customer(x_server)
        dms = x_server.recorded_dms(ann)
    except FileNotFoundError as exc:
        pytest.skip(f"the recorded X responses are absent: {exc}")
    x = make_connector(initial_backfill_pages=5)
    fetched = x.fetch_mentions(None)
    assert sorted(ids(fetched)) == sorted(int(tweet["id"]) for tweet in mentions)
    for _, stored in fetched.events:
        (message,) = x.normalize(stored)
        assert message.metadata["x"]["full_text"] in {tweet["text"] for tweet in mentions}
        assert not message.text.startswith("@")
        assert message.sender.display_name.endswith(")")
    texts = [x.normalize(stored)[0].text for _, stored in x.fetch_dm_events(None).events]
    assert texts == [dm["text"] for dm in dms] == ["Testing 1", "Testing 2"]
