"""The fake X API server (tests/fakes/x_server.py) behaves like X for the real tweepy client.

tweepy builds every URL on https://api.twitter.com (and https://upload.twitter.com for tweepy.API); a small transport
adapter mounted on the client's session sends those requests to the fake on loopback and names the original host in
X-Forwarded-Host, so tweepy's own code (OAuth 1.0a signing included) runs unchanged. No database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import io
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import tweepy
from requests.adapters import HTTPAdapter
from requests_oauthlib import OAuth1

from tests.fakes.x_server import (
    DM_NOT_PERMITTED,
    DUPLICATE,
    RECORDED_MENTIONS,
    RECORDINGS,
    REPLY_UNKNOWN,
    TOO_LONG,
    X_HOSTS,
    XServer,
    png_bytes,
)

DM_FIELDS = ["id", "text", "event_type", "created_at", "dm_conversation_id", "sender_id", "attachments"]


class Loopback(HTTPAdapter):
    """Sends https://<X host>/<path>?<query> to the fake server at ``base``, naming the host in X-Forwarded-Host."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urllib.parse.urlsplit(str(request.url))
        request.headers["X-Forwarded-Host"] = parts.netloc
        request.url = self.base + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().send(request, *args, **kwargs)


def route(session: requests.Session, base: str) -> requests.Session:
    session.trust_env = False  # no environment proxies between us and loopback
    adapter = Loopback(base)
    for host in X_HOSTS:
        session.mount(f"https://{host}/", adapter)
    return session


def make_client(server: XServer, **overrides: str) -> tweepy.Client:
    client = tweepy.Client(**{**server.credentials(), **overrides}, return_type=requests.Response)
    route(client.session, server.url)
    return client


def oauth_session(server: XServer) -> requests.Session:
    """A plain requests session signing with the user's OAuth 1.0a credentials (for calls tweepy does not make)."""
    session = route(requests.Session(), server.url)
    session.auth = OAuth1(server.consumer_key, server.consumer_secret, server.access_token, server.access_token_secret)
    return session


def bearer_session(server: XServer) -> requests.Session:
    session = route(requests.Session(), server.url)
    session.headers["Authorization"] = f"Bearer {server.bearer_token}"
    return session


@pytest.fixture
def server() -> Iterator[XServer]:
    with XServer() as fake:
        yield fake


@pytest.fixture
def client(server: XServer) -> tweepy.Client:
    return make_client(server)


def test_get_me_signed_for_the_original_url(server: XServer, client: tweepy.Client) -> None:
    response = client.get_me(user_auth=True)
    assert response.status_code == 200
    assert response.json() == {"data": server.me}
    assert response.headers["x-rate-limit-limit"] == "10000"
    assert response.headers["x-rate-limit-remaining"] == "9999"
    assert int(response.headers["x-rate-limit-reset"]) >= time.time() + 890
    (call,) = server.calls("GET", "/2/users/me")
    assert call["host"] == "api.twitter.com" and call["headers"]["Authorization"].startswith("OAuth ")
    assert call["status"] == 200

    # The signature covers the host: the same request claimed for another host fails.
    session = oauth_session(server)
    prepared = session.prepare_request(requests.Request("GET", "https://api.twitter.com/2/users/me"))
    prepared.url = server.url + "/2/users/me"
    prepared.headers["X-Forwarded-Host"] = "api.x.com"
    assert requests.Session().send(prepared).status_code == 401


def test_wrong_credentials_and_auth_types(server: XServer) -> None:
    with pytest.raises(tweepy.Unauthorized) as caught:
        make_client(server, consumer_secret="not-the-secret").get_me(user_auth=True)
    assert caught.value.response.json() == {
        "title": "Unauthorized",
        "detail": "Unauthorized",
        "type": "about:blank",
        "status": 401,
    }
    with pytest.raises(tweepy.Unauthorized):
        make_client(server, access_token="someone-else").get_me(user_auth=True)
    with pytest.raises(tweepy.Unauthorized):
        make_client(server, bearer_token="wrong").get_users_mentions(server.me["id"])
    # app-only bearer is not enough for a user-context endpoint
    with pytest.raises(tweepy.Forbidden) as forbidden:
        make_client(server).get_direct_message_events(user_auth=False)
    assert forbidden.value.response.json()["title"] == "Unsupported Authentication"
    # a replayed request (same nonce and timestamp) is refused
    session = oauth_session(server)
    prepared = session.prepare_request(requests.Request("GET", "https://api.twitter.com/2/users/me"))
    assert session.send(prepared).status_code == 200
    assert session.send(prepared).status_code == 401


def test_dm_events_paginate_150_without_loss_or_repeat(server: XServer, client: tweepy.Client) -> None:
    senders = [server.add_user(username=f"customer{i}", name=f"Customer {i}") for i in range(3)]
    seeded = []
    for i in range(150):
        media = [("p.png", "image/png", png_bytes(3, 2))] if i % 40 == 0 else ()
        seeded.append(server.add_dm(sender_id=senders[i % 3]["id"], text=f"message {i}", media=media))
    newest_first = [dm["id"] for dm in sorted(seeded, key=lambda dm: -int(dm["id"]))]

    def pages() -> list[dict[str, Any]]:
        paginator = tweepy.Paginator(
            client.get_direct_message_events,
            expansions=["sender_id", "attachments.media_keys"],
            dm_event_fields=DM_FIELDS,
            user_fields=["username"],
            media_fields=["url", "type", "width", "height"],
            event_types="MessageCreate",
            max_results=40,
        )
        return [response.json() for response in paginator]

    bodies = pages()
    assert [len(body["data"]) for body in bodies] == [40, 40, 40, 30]
    assert [event["id"] for body in bodies for event in body["data"]] == newest_first
    for body in bodies:
        # includes hold exactly what the page references
        senders_on_page = {event["sender_id"] for event in body["data"]}
        assert {user["id"] for user in body["includes"]["users"]} == senders_on_page
        keys = {key for event in body["data"] for key in event.get("attachments", {}).get("media_keys", [])}
        assert {m["media_key"] for m in body["includes"].get("media", [])} == keys
        assert "previous_token" in body["meta"] and body["meta"]["result_count"] == len(body["data"])
    assert "next_token" not in bodies[-1]["meta"]
    first = bodies[0]["data"][-1]
    assert set(first) == {"id", "text", "event_type", "created_at", "dm_conversation_id", "sender_id"}

    server.duplicate_pages(True)
    ids = [event["id"] for body in pages() for event in body["data"]]
    assert len(ids) > 150 and sorted(set(ids), key=lambda i: -int(i)) == newest_first


def test_dm_events_defaults_and_bad_parameters(server: XServer, client: tweepy.Client) -> None:
    assert client.get_direct_message_events().json() == {"meta": {"result_count": 0}}  # the recorded empty shape
    dm = server.add_dm(sender_id=server.add_user(username="ann")["id"], text="hi")
    assert client.get_direct_message_events().json()["data"] == [
        {"id": dm["id"], "event_type": "MessageCreate", "text": "hi"}
    ]
    with pytest.raises(tweepy.BadRequest) as bad:
        client.get_direct_message_events(max_results=101)
    assert bad.value.response.json()["title"] == "Invalid Request"
    assert "max_results" in bad.value.api_messages[0]
    with pytest.raises(tweepy.BadRequest):
        client.get_direct_message_events(dm_event_fields=["no_such_field"])
    with pytest.raises(tweepy.BadRequest):
        client.get_direct_message_events(pagination_token="not-a-token")


def test_mentions_since_id_returns_only_newer(server: XServer, client: tweepy.Client) -> None:
    author = server.add_user(username="ada", name="Ada Lovelace")
    older = [server.add_mention(author_id=author["id"], text=f"@TweepyDev help {i}") for i in range(3)]
    newer = [server.add_mention(author_id=author["id"], text=f"@TweepyDev more {i}") for i in range(6)]
    response = client.get_users_mentions(
        server.me["id"],
        since_id=older[-1]["id"],
        expansions=["author_id"],
        tweet_fields=["created_at", "conversation_id", "lang"],
        user_fields=["username"],
        max_results=5,
        user_auth=True,
    )
    body = response.json()
    assert [t["id"] for t in body["data"]] == [t["id"] for t in reversed(newer)][:5]
    assert body["includes"] == {"users": [{"id": author["id"], "name": "Ada Lovelace", "username": "ada"}]}
    assert body["meta"]["newest_id"] == newer[-1]["id"] and body["meta"]["oldest_id"] == newer[1]["id"]
    page_two = client.get_users_mentions(
        server.me["id"], since_id=older[-1]["id"], max_results=5, pagination_token=body["meta"]["next_token"]
    ).json()
    assert [t["id"] for t in page_two["data"]] == [newer[0]["id"]] and "next_token" not in page_two["meta"]
    # app-only (bearer), as tweepy's get_users_mentions defaults to; nothing newer -> the recorded empty shape
    assert client.get_users_mentions(server.me["id"], since_id=newer[-1]["id"]).json() == {"meta": {"result_count": 0}}
    until = client.get_users_mentions(server.me["id"], until_id=newer[0]["id"]).json()
    assert [t["id"] for t in until["data"]] == [t["id"] for t in reversed(older)]
    with pytest.raises(tweepy.BadRequest):
        client.get_users_mentions(server.me["id"], max_results=3)


def test_dm_and_reply_are_recorded_and_visible(server: XServer, client: tweepy.Client) -> None:
    grace = server.add_user(username="grace", name="Grace Hopper")
    mention = server.add_mention(author_id=grace["id"], text="@TweepyDev my order is late")

    sent = client.create_direct_message(participant_id=grace["id"], text="Hello Grace")
    assert sent.status_code == 201
    data = sent.json()["data"]
    conversation = "-".join(sorted((server.me["id"], grace["id"]), key=int))
    assert data["dm_conversation_id"] == conversation
    assert server.sent_dms == [
        {
            "participant_id": grace["id"],
            "text": "Hello Grace",
            "media_ids": [],
            "dm_event_id": data["dm_event_id"],
            "dm_conversation_id": conversation,
        }
    ]
    events = client.get_direct_message_events(dm_event_fields=DM_FIELDS).json()["data"]
    assert events[0]["id"] == data["dm_event_id"] and events[0]["sender_id"] == server.me["id"]
    assert events[0]["text"] == "Hello Grace" and events[0]["dm_conversation_id"] == conversation
    again = client.create_direct_message(dm_conversation_id=conversation, text="Anything else?").json()["data"]
    assert again["dm_conversation_id"] == conversation and int(again["dm_event_id"]) > int(data["dm_event_id"])

    reply = client.create_tweet(text="@grace sorry, looking into it", in_reply_to_tweet_id=mention["id"])
    assert reply.status_code == 201
    tweet_id = reply.json()["data"]["id"]
    assert reply.json()["data"] == {
        "id": tweet_id,
        "text": "@grace sorry, looking into it",
        "edit_history_tweet_ids": [tweet_id],
    }
    assert server.tweets == [
        {
            "id": tweet_id,
            "text": "@grace sorry, looking into it",
            "in_reply_to_tweet_id": mention["id"],
            "media_ids": [],
        }
    ]
    got = client.get_tweet(
        tweet_id,
        tweet_fields=["referenced_tweets", "in_reply_to_user_id", "conversation_id", "author_id"],
        expansions=["referenced_tweets.id"],
        user_auth=True,
    ).json()
    assert got["data"]["referenced_tweets"] == [{"type": "replied_to", "id": mention["id"]}]
    assert got["data"]["in_reply_to_user_id"] == grace["id"] and got["data"]["conversation_id"] == mention["id"]
    assert got["includes"]["tweets"][0]["id"] == mention["id"]
    assert [t["id"] for t in client.get_users_mentions(grace["id"]).json()["data"]] == [tweet_id]

    with pytest.raises(tweepy.Forbidden) as duplicate:
        client.create_tweet(text="@grace sorry, looking into it")
    assert duplicate.value.response.json() == {
        "detail": DUPLICATE,
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
    }
    with pytest.raises(tweepy.Forbidden) as unknown:
        client.create_tweet(text="to nowhere", in_reply_to_tweet_id="1234567890123456789")
    assert unknown.value.response.json()["detail"] == REPLY_UNKNOWN
    server.refuse_dms_from_us(grace["id"])
    with pytest.raises(tweepy.Forbidden) as refused:
        client.create_direct_message(participant_id=grace["id"], text="hello?")
    assert refused.value.response.json()["detail"] == DM_NOT_PERMITTED
    assert len(server.sent_dms) == 2 and len(server.tweets) == 1


def test_tweet_length_is_weighted(server: XServer, client: tweepy.Client) -> None:
    with pytest.raises(tweepy.Forbidden) as long:
        client.create_tweet(text="a" * 281)
    assert long.value.response.json()["detail"] == TOO_LONG
    assert client.create_tweet(text="a" * 280).status_code == 201
    assert client.create_tweet(text="あ" * 140).status_code == 201  # CJK counts 2
    with pytest.raises(tweepy.Forbidden):
        client.create_tweet(text="い" * 141)
    url = "https://example.com/" + "x" * 200  # any URL counts 23
    assert client.create_tweet(text="b" * 256 + " " + url).status_code == 201
    with pytest.raises(tweepy.Forbidden):
        client.create_tweet(text="c" * 257 + " " + url)
    assert client.create_tweet(text="🙂" * 140).status_code == 201  # emoji count 2
    assert len(server.tweets) == 4


def test_429_raises_with_reset_then_holds_until_reset(server: XServer, client: tweepy.Client) -> None:
    server.fail_next("GET", "/2/users/me", 429, reset_in=1.5)
    started = time.time()
    with pytest.raises(tweepy.TooManyRequests) as caught:
        client.get_me(user_auth=True)
    assert caught.value.response.json() == {
        "title": "Too Many Requests",
        "detail": "Too Many Requests",
        "type": "about:blank",
        "status": 429,
    }
    reset = int(caught.value.response.headers["x-rate-limit-reset"])
    assert caught.value.reset_time == reset and started < reset <= started + 3
    assert caught.value.response.headers["x-rate-limit-remaining"] == "0"
    with pytest.raises(tweepy.TooManyRequests):  # the window holds, although the fault was for one call
        client.get_me(user_auth=True)
    assert client.get_direct_message_events().status_code == 200  # other endpoints are not affected
    while time.time() < reset:
        time.sleep(0.05)
    assert client.get_me(user_auth=True).status_code == 200


def test_rate_limit_headers_count_down_per_endpoint_and_token(server: XServer, client: tweepy.Client) -> None:
    server.set_rate_limit("GET", "/2/users/me", limit=3, window=60)
    remaining = [client.get_me(user_auth=True).headers["x-rate-limit-remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    with pytest.raises(tweepy.TooManyRequests):
        client.get_me(user_auth=True)
    assert client.get_direct_message_events().headers["x-rate-limit-remaining"] == "9999"
    user = client.get_users_mentions(server.me["id"], user_auth=True).headers["x-rate-limit-remaining"]
    app = client.get_users_mentions(server.me["id"]).headers["x-rate-limit-remaining"]
    assert (user, app) == ("9999", "9999")  # the user token and the app have separate budgets


def test_slow_answer_still_takes_effect(server: XServer) -> None:
    grace = server.add_user(username="grace")
    server.slow_next("POST", "/2/dm_conversations", 1.0)
    session = oauth_session(server)
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(
            f"https://api.twitter.com/2/dm_conversations/with/{grace['id']}/messages", json={"text": "hi"}, timeout=0.3
        )
    assert [dm["text"] for dm in server.sent_dms] == ["hi"]


def test_malformed_requests_get_the_problem_shape(server: XServer) -> None:
    session = oauth_session(server)
    answer = session.post(
        "https://api.twitter.com/2/tweets", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    assert {"title", "detail", "type", "errors"} <= set(answer.json())
    assert answer.json()["type"] == "https://api.twitter.com/2/problems/invalid-request"
    answer = session.get("https://api.twitter.com/2/users/me", params={"bogus": "1"})
    assert answer.status_code == 400 and "bogus" in answer.json()["errors"][0]["message"]
    answer = session.post("https://api.twitter.com/2/tweets", json={"text": "x", "surprise": True})
    assert answer.status_code == 400
    assert session.get("https://api.twitter.com/2/no/such/thing").status_code == 404
    assert [call["status"] for call in server.calls("*", "/2/")] == [400, 400, 400, 404]


@pytest.mark.langdata
def test_recorded_mentions_are_served_with_real_ids_and_texts(server: XServer, client: tweepy.Client) -> None:
    if not RECORDED_MENTIONS.is_file():
        pytest.skip(f"the recorded X responses are absent ({RECORDED_MENTIONS.resolve()})")
    recorded = json.loads(RECORDED_MENTIONS.read_text())[0]["response"]["data"]
    seeded = server.recorded_mentions()
    assert [(t["id"], t["text"]) for t in seeded] == [(t["id"], t["text"]) for t in recorded]
    body = client.get_users_mentions(
        server.me["id"], expansions=["author_id"], tweet_fields=["created_at", "author_id"], user_fields=["username"]
    ).json()
    assert [{k: t[k] for k in ("id", "text", "edit_history_tweet_ids")} for t in body["data"]] == recorded
    assert body["data"][0]["created_at"].startswith("2022-10-07T22:4")  # the snowflake's real time
    assert body["meta"]["newest_id"] == recorded[0]["id"] and body["meta"]["oldest_id"] == recorded[-1]["id"]
    real_authors = set()
    for path in RECORDINGS.rglob("*.json"):
        for call in json.loads(path.read_text()):
            text = json.dumps(call["response"])
            real_authors |= {u["id"] for u in body["includes"]["users"] if f'"id_str": "{u["id"]}"' in text}
    assert real_authors == {u["id"] for u in body["includes"]["users"]} and len(real_authors) > 1
    # the Account Activity form of a recorded mention carries the recorded v1.1 user object
    payload = server.aaa_tweet_payload(seeded[0])
    event = payload["tweet_create_events"][0]
    assert event["id_str"] == recorded[0]["id"] and event["user"]["id_str"] == seeded[0]["author_id"]
    assert "followers_count" in event["user"] and event["created_at"].endswith("+0000 2022")
    dms = server.recorded_dms(seeded[0]["author_id"])
    assert [dm["text"] for dm in dms] == ["Testing 1", "Testing 2"]
    assert [dm["id"] for dm in dms] == ["1585800613253812228", "1585800613752881156"]


def test_webhook_helpers_agree_with_an_independent_hmac(server: XServer) -> None:
    secret = server.consumer_secret.encode()

    def expected(message: bytes) -> str:
        return "sha256=" + base64.b64encode(hmac.new(secret, message, hashlib.sha256).digest()).decode()

    assert server.crc_response_token("abc123") == expected(b"abc123")
    body = json.dumps(server.aaa_dm_payload(server.add_dm(sender_id="42424242", text="hello"))).encode()
    assert server.sign(body) == expected(body)

    received: list[tuple[str, bytes, str | None]] = []
    wrong_crc = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            token = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["crc_token"][0]
            answer = {"response_token": expected((token + ("x" if wrong_crc.is_set() else "")).encode())}
            self._send(200, json.dumps(answer).encode())

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            signature = self.headers.get("x-twitter-webhooks-signature")
            received.append(("POST", raw, signature))
            ok = signature is not None and hmac.compare_digest(signature, expected(raw))
            self._send(200 if ok else 401, b"")

        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/webhooks/x"
    try:
        assert server.crc_check(url) is True
        payload = {"for_user_id": server.me["id"], "favorite_events": []}
        assert server.post_webhook(url, payload)[0] == 200
        assert server.post_webhook(url, payload, signature=None)[0] == 401
        assert server.post_webhook(url, payload, signature="sha256=AAAA")[0] == 401
        assert received[0][1] == json.dumps(payload, separators=(",", ":")).encode()

        # POST /2/webhooks runs the CRC for real before answering; subscriptions need the user context
        app = bearer_session(server)
        created = app.post("https://api.twitter.com/2/webhooks", json={"url": url})
        assert created.status_code == 200
        hook = created.json()["data"]
        assert hook["url"] == url and hook["valid"] is True
        assert app.get("https://api.twitter.com/2/webhooks").json() == {"data": [hook], "meta": {"result_count": 1}}
        user = oauth_session(server)
        subscription = f"https://api.twitter.com/2/account_activity/webhooks/{hook['id']}/subscriptions/all"
        assert user.get(subscription).json() == {"data": {"subscribed": False}}
        assert user.post(subscription).json() == {"data": {"subscribed": True}}
        assert user.get(subscription).json() == {"data": {"subscribed": True}}
        assert app.post(subscription).status_code == 403  # app-only is not accepted there
        assert server.deliver(server.aaa_tweet_payload(server.add_mention(author_id="42424242", text="hey"))) == [
            (url, 200)
        ]
        wrong_crc.set()
        assert server.crc_check(url) is False
        failed = app.post("https://api.twitter.com/2/webhooks", json={"url": url + "/other"})
        assert failed.status_code == 400 and failed.json()["detail"] == "CRC check failed"
        assert app.delete(f"https://api.twitter.com/2/webhooks/{hook['id']}").json() == {"data": {"deleted": True}}
        assert [check["ok"] for check in server.crc_checks] == [True, True, False, False]
    finally:
        endpoint.shutdown()
        endpoint.server_close()


def test_media_upload_with_tweepy_api_and_download(server: XServer, client: tweepy.Client) -> None:
    auth = tweepy.OAuth1UserHandler(
        server.consumer_key, server.consumer_secret, server.access_token, server.access_token_secret
    )
    api = tweepy.API(auth)
    route(api.session, server.url)
    picture = png_bytes(4, 3)
    simple = api.media_upload("photo.png", file=io.BytesIO(picture), media_category="dm_image")
    chunked = api.media_upload("photo.png", file=io.BytesIO(picture), chunked=True, media_category="tweet_image")
    assert simple.image == {"image_type": "image/png", "w": 4, "h": 3}
    assert [(u["media_id"], u["media_category"], u["content_type"], u["content"]) for u in server.uploads] == [
        (simple.media_id_string, "dm_image", "image/png", picture),
        (chunked.media_id_string, "tweet_image", "image/png", picture),
    ]
    calls = server.calls("POST", "/1.1/media/upload.json")
    assert [c["host"] for c in calls] == ["upload.twitter.com"] * 4  # simple, then INIT / APPEND / FINALIZE
    assert b"command=INIT" in calls[1]["body"] and b"command=FINALIZE" in calls[3]["body"]

    grace = server.add_user(username="grace")
    sent = client.create_direct_message(participant_id=grace["id"], media_id=simple.media_id_string, text="see")
    assert sent.status_code == 201
    assert server.sent_dms[0]["media_ids"] == [simple.media_id_string]
    with pytest.raises(tweepy.BadRequest):  # tweet media cannot go in a DM, as on X
        client.create_direct_message(participant_id=grace["id"], media_id=chunked.media_id_string)
    body = client.get_direct_message_events(
        dm_event_fields=DM_FIELDS, expansions=["attachments.media_keys"], media_fields=["url", "type"]
    ).json()
    (media,) = body["includes"]["media"]
    assert media["type"] == "photo" and media["url"].startswith("https://ton.twitter.com/1.1/ton/data/dm/")
    assert body["data"][0]["text"].startswith("see https://t.co/")
    # DM media needs OAuth 1.0a
    assert route(requests.Session(), server.url).get(media["url"]).status_code == 401
    download = oauth_session(server).get(media["url"])
    assert download.status_code == 200 and download.content == picture
    assert download.headers["Content-Type"] == "image/png" and download.headers["Content-Length"] == str(len(picture))

    tweeted = client.create_tweet(text="a picture", media_ids=[chunked.media_id_string]).json()["data"]
    shown = client.get_tweet(tweeted["id"], expansions=["attachments.media_keys"], media_fields=["url"]).json()
    url = shown["includes"]["media"][0]["url"]
    assert url.startswith("https://pbs.twimg.com/media/")
    assert route(requests.Session(), server.url).get(url).content == picture  # pbs needs no auth
