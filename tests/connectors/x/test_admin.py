"""diagnose() and the Account Activity webhook registration against the fake X API (CRC to a loopback endpoint)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connectors.base import AuthError, PermanentError
from connectors.x import XConnector
from tests.connectors.x.conftest import WebhookEndpoint


def names(steps: list[Any]) -> list[str]:
    return [step.name for step in steps]


def test_diagnose_happy_path(x_server: Any, x: XConnector) -> None:
    steps = x.diagnose()
    assert names(steps) == ["keys", "users/me", "access level", "mentions", "DM events"]
    assert all(step.ok for step in steps), steps
    assert steps[1].detail == f"@{x_server.me['username']} ({x_server.me['id']})"
    assert steps[2].detail == "read-write-directmessages"
    assert "calls left, window resets at" in steps[3].detail
    for step in steps:
        for secret in x_server.credentials().values():
            assert secret not in step.detail


def test_diagnose_wrong_keys(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    secrets = {**x_server.credentials(), "consumer_secret": "wrong"}
    steps = make_connector(secrets=secrets).diagnose()
    assert names(steps) == ["keys", "users/me"]
    assert not steps[-1].ok
    assert "wrong or were regenerated" in steps[-1].detail


def test_diagnose_missing_keys(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    secrets = {**x_server.credentials(), "access_token": "", "access_token_secret": ""}
    (step,) = make_connector(secrets=secrets).diagnose()
    assert not step.ok and "access_token, access_token_secret" in step.detail
    assert x_server.requests == []


def test_diagnose_forbidden_dm_events(x_server: Any, x: XConnector) -> None:
    x_server.fail_next("GET", "/2/dm_events", 403, detail="This app is not permitted to read DMs.")
    steps = x.diagnose()
    assert names(steps)[-1] == "DM events" and not steps[-1].ok
    assert "not permitted to read DMs" in steps[-1].detail and "Direct message" in steps[-1].detail


def test_diagnose_rate_limited_mentions(x_server: Any, x: XConnector) -> None:
    x_server.fail_next("GET", f"/2/users/{x_server.me['id']}/mentions", 429, reset_in=600)
    steps = x.diagnose()
    assert names(steps)[-1] == "mentions" and not steps[-1].ok
    assert "rate limit" in steps[-1].detail


def test_register_webhook_and_receive_events(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    x = make_connector()
    with WebhookEndpoint(x) as endpoint:
        result = x.register_webhook(endpoint.url)
        assert result["url"] == endpoint.url and result["valid"] and result["subscribed"]
        assert result["webhook_id"].isdigit()
        assert len(endpoint.crc_tokens) == 1
        assert [hook["url"] for hook in x.webhooks()] == [endpoint.url]
        # POST /2/webhooks went with the bearer token, the subscription with OAuth 1.0a.
        (create,) = x_server.calls("POST", "/2/webhooks")
        assert create["headers"]["Authorization"] == f"Bearer {x_server.bearer_token}"
        (subscribe,) = x_server.calls("POST", "/2/account_activity/")
        assert subscribe["headers"]["Authorization"].startswith("OAuth ")

        # Registering again reuses it.
        assert x.register_webhook(endpoint.url)["webhook_id"] == result["webhook_id"]
        assert len(x_server.calls("POST", "/2/webhooks")) == 1

        # diagnose in webhook mode finds it and the subscription.
        hooked = make_connector(mode="webhook", webhook_url=endpoint.url)
        steps = hooked.diagnose()
        assert names(steps)[-3:] == ["bearer token", "webhook", "subscription"]
        assert all(step.ok for step in steps), steps

        # X pushes a DM and a mention: signed, split, and the same ids polling gives.
        ann = str(x_server.add_user(username="ann_ex", name="Ann Example", lang="fr")["id"])
        dm = x_server.add_dm(sender_id=ann, text="Bonjour & merci")
        tweet = x_server.add_mention(author_id=ann, text=f"@{x_server.me['username']} aide svp", lang="fr")
        for payload in (x_server.aaa_dm_payload(dm), x_server.aaa_tweet_payload(tweet)):
            status, _ = x_server.post_webhook(endpoint.url, payload)
            assert status == 200
        status, _ = x_server.post_webhook(endpoint.url, x_server.aaa_dm_payload(dm), signature="sha256=bad")
        assert status == 403 and endpoint.rejected == 1
        assert [external_id for external_id, _ in endpoint.received] == [f"dm:{dm['id']}", f"tweet:{tweet['id']}"]
        polled = [external_id for external_id, _ in x.fetch_dm_events(None).events + x.fetch_mentions(None).events]
        assert polled == [f"dm:{dm['id']}", f"tweet:{tweet['id']}"]
        messages = [m for _, stored in endpoint.received for m in x.normalize(stored)]
        assert [m.thread_key for m in messages] == ["dm", "public"]
        assert messages[0].sender.display_name == "Ann Example (@ann_ex)"
        assert messages[0].text == "Bonjour & merci"
        assert messages[0].language_hints == ()  # Account Activity user objects carry no lang
        assert messages[1].text == "aide svp"
        assert messages[1].language_hints == ("fr",)


def test_register_webhook_with_a_failing_crc(x_server: Any, x: XConnector) -> None:
    with WebhookEndpoint(x, wrong_crc=True) as endpoint, pytest.raises(PermanentError, match="CRC check failed"):
        x.register_webhook(endpoint.url)
    assert x.webhooks() == []


def test_diagnose_webhook_mode_without_a_webhook(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    steps = make_connector(mode="webhook", webhook_url="http://127.0.0.1:9/hook").diagnose()
    assert names(steps)[-1] == "webhook" and not steps[-1].ok
    assert "X has no webhook for http://127.0.0.1:9/hook" in steps[-1].detail


def test_webhook_mode_needs_the_bearer_token(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    secrets = {**x_server.credentials(), "bearer_token": ""}
    x = make_connector(secrets=secrets, mode="webhook", webhook_url="http://127.0.0.1:9/hook")
    steps = x.diagnose()
    assert names(steps)[-1] == "bearer token" and not steps[-1].ok
    with pytest.raises(AuthError, match="bearer_token"):
        x.webhooks()


def test_wrong_bearer_token(x_server: Any, make_connector: Callable[..., XConnector]) -> None:
    x = make_connector(secrets={**x_server.credentials(), "bearer_token": "wrong"})
    with pytest.raises(AuthError, match="bearer token"):
        x.webhooks()


def test_delete_webhook(x_server: Any, x: XConnector) -> None:
    with WebhookEndpoint(x) as endpoint:
        webhook_id = x.register_webhook(endpoint.url)["webhook_id"]
    assert x.delete_webhook(webhook_id)
    assert x.webhooks() == []
