"""Account Activity webhooks: the CRC answer, the signature check, and splitting a body into stored events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from connectors.base import AuthError, PermanentError
from connectors.x import XConnector
from connectors.x.webhook import crc_response, crc_response_token, sign, split_webhook, verify_signature

SECRET = "consumer-secret-" + "s" * 30
US = "1072250532645998596"
CUSTOMER = "750362064426721281"


def reference_hmac(key: str, message: bytes) -> str:
    """The algorithm as X documents it, written out independently."""
    return "sha256=" + base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def connector(consumer_secret: str = SECRET) -> XConnector:
    return XConnector(settings={}, secrets={"consumer_secret": consumer_secret, "consumer_key": "ck"})


def test_crc_response() -> None:
    token = "UEPwyG0MfSjvbLpBmsCDDn4z7phjsUM1nWn7UykvMsR3YxtJ"
    expected = reference_hmac(SECRET, token.encode())
    assert crc_response_token(SECRET, token) == expected
    assert crc_response(SECRET, token) == {"response_token": expected}
    assert connector().crc_response(token) == {"response_token": expected}
    assert expected.startswith("sha256=") and len(base64.b64decode(expected[7:])) == 32


def test_crc_without_a_consumer_secret_is_refused() -> None:
    with pytest.raises(AuthError, match="consumer_secret"):
        connector("").crc_response("token")


def test_signature_right_wrong_missing_tampered() -> None:
    body = json.dumps({"for_user_id": US, "favorite_events": []}).encode()
    header = reference_hmac(SECRET, body)
    assert sign(SECRET, body) == header
    assert verify_signature(SECRET, body, header)
    assert verify_signature(SECRET, body, f"  {header}\n")  # whitespace around the header value
    assert not verify_signature(SECRET, body, reference_hmac("another secret", body))
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, "")
    assert not verify_signature(SECRET, body + b" ", header)  # tampered body
    assert not verify_signature(SECRET, body.replace(US.encode(), b"1"), header)
    assert not verify_signature(SECRET, body, header.removeprefix("sha256="))
    assert not verify_signature(SECRET, body, "sha256=" + "A" * 44)
    assert not verify_signature("", body, header)  # no secret configured: nothing verifies
    assert not verify_signature(SECRET, body, "sha256=ünïcode")


def test_connector_verify_signature() -> None:
    body = b'{"for_user_id": "1"}'
    assert connector().verify_signature(body, reference_hmac(SECRET, body))
    assert not connector().verify_signature(body, reference_hmac("x", body))
    assert not connector("").verify_signature(body, reference_hmac("", body))


def v1_dm(event_id: str, sender: str, recipient: str, text: str = "hello") -> dict[str, Any]:
    return {
        "type": "message_create",
        "id": event_id,
        "created_timestamp": "1563133949197",
        "message_create": {
            "target": {"recipient_id": recipient},
            "sender_id": sender,
            "message_data": {
                "text": text,
                "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
            },
        },
    }


def test_split_dm_body() -> None:
    users = {
        CUSTOMER: {"id": CUSTOMER, "name": "Ann", "screen_name": "ann"},
        US: {"id": US, "name": "Brand", "screen_name": "brand"},
        "42": {"id": "42", "name": "Other", "screen_name": "other"},
    }
    body = {
        "for_user_id": US,
        "direct_message_events": [
            v1_dm("1150493286110552068", CUSTOMER, US),
            v1_dm("1150493286110552069", US, CUSTOMER),
        ],
        "users": users,
        "apps": {"268278": {"id": "268278", "name": "web"}},
    }
    items, ignored = split_webhook(body)
    assert ignored == []
    assert [external_id for external_id, _ in items] == ["dm:1150493286110552068", "dm:1150493286110552069"]
    stored = items[0][1]
    assert stored["source"] == "account_activity"
    assert stored["for_user_id"] == US
    assert stored["direct_message_event"] == body["direct_message_events"][0]
    assert set(stored["users"]) == {CUSTOMER, US}  # only the sender and the recipient


def test_split_tweet_body_with_v1_integer_ids() -> None:
    tweet = {"id": 1149914662164684800, "id_str": "1149914662164684800", "text": "@brand hi", "user": {"id_str": "5"}}
    legacy = {"id": 1149914662164684801, "text": "@brand hi again", "user": {"id": 5}}
    items, ignored = split_webhook({"for_user_id": int(US), "tweet_create_events": [tweet, legacy]})
    assert [external_id for external_id, _ in items] == ["tweet:1149914662164684800", "tweet:1149914662164684801"]
    assert items[0][1] == {"source": "account_activity", "for_user_id": US, "tweet_create_event": tweet}
    assert ignored == []


@pytest.mark.parametrize(
    "kind",
    [
        "favorite_events",
        "follow_events",
        "direct_message_indicate_typing_events",
        "direct_message_mark_read_events",
        "tweet_delete_events",
    ],
)
def test_other_event_kinds_are_listed_as_ignored(kind: str) -> None:
    items, ignored = split_webhook({"for_user_id": US, kind: [{"id": "1"}], "users": {}})
    assert items == []
    assert ignored == [kind]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ("text", "must be a JSON object"),
        ({"for_user_id": US, "direct_message_events": {"id": "1"}}, "'direct_message_events' must be a list"),
        ({"for_user_id": US, "tweet_create_events": ["x"]}, r"tweet_create_events\[0\] must be an object"),
        ({"for_user_id": US, "tweet_create_events": [{"text": "no id"}]}, r"tweet_create_events\[0\].id"),
        ({"for_user_id": US, "direct_message_events": [{"id": "abc"}]}, r"direct_message_events\[0\].id"),
    ],
)
def test_malformed_bodies(body: Any, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        split_webhook(body)


def test_connector_split_webhook_delegates() -> None:
    items, _ = connector().split_webhook({"for_user_id": US, "direct_message_events": [v1_dm("7", CUSTOMER, US)]})
    assert items[0][0] == "dm:7"
    (message,) = connector().normalize(items[0][1])
    assert message.external_id == "dm:7"
