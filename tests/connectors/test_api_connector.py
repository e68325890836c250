"""The API channel connector against a real loopback HTTP server: every provider answer maps to the right error."""

from __future__ import annotations

import pytest

from connectors.api import SIGNATURE_HEADER, ApiConnector, sign, verify
from connectors.base import (
    AuthError,
    ConnectorContext,
    OutboundMessage,
    PermanentError,
    RateLimited,
    TransientError,
)
from tests.fakes.callback_server import CallbackServer

SECRET = "s3cret"


def connector(url: str) -> ApiConnector:
    return ApiConnector(settings={"callback_url": url}, secrets={"signing_secret": SECRET}, context=ConnectorContext())


def message(key: str = "k-1") -> OutboundMessage:
    return OutboundMessage(idempotency_key=key, recipient="user-7", text="Hola")


def test_send_signs_the_body_and_returns_the_provider_id() -> None:
    with CallbackServer() as server:
        result = connector(server.url).send(message())
    assert result.provider_id == "cb-1"
    request = server.requests[0]
    assert request.json() == {"id": "k-1", "recipient": "user-7", "text": "Hola"}
    assert request.headers["Idempotency-Key"] == "k-1"
    assert verify(SECRET, request.body, request.headers[SIGNATURE_HEADER])
    assert not verify(SECRET, request.body + b" ", request.headers[SIGNATURE_HEADER])
    assert not verify("", request.body, sign("", request.body))  # an unconfigured secret never verifies


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (500, {}, TransientError, None),
        (503, {}, TransientError, None),
        (429, {"Retry-After": "7"}, RateLimited, 7.0),
        (429, {}, RateLimited, 60.0),
        (401, {}, AuthError, None),
        (403, {}, AuthError, None),
        (400, {}, PermanentError, None),
        (404, {}, PermanentError, None),
    ],
)
def test_status_codes_map_to_connector_errors(
    status: int, headers: dict[str, str], error: type[Exception], retry_after: float | None
) -> None:
    with CallbackServer() as server:
        server.then(status, headers)
        with pytest.raises(error) as excinfo:
            connector(server.url).send(message())
    if retry_after is not None:
        assert excinfo.value.retry_after == retry_after  # type: ignore[attr-defined]
    if error is TransientError:
        assert not excinfo.value.maybe_delivered  # type: ignore[attr-defined]


def test_unreachable_callback_is_transient() -> None:
    with CallbackServer() as server:
        url = server.url
    with pytest.raises(TransientError) as excinfo:
        connector(url).send(message())
    assert not isinstance(excinfo.value, RateLimited)


def test_normalize_rejects_malformed_events_with_a_reason() -> None:
    conn = connector("http://127.0.0.1:9/")
    with pytest.raises(PermanentError, match="sender"):
        conn.normalize({"id": "1", "text": "hi"})
    with pytest.raises(PermanentError, match="'text'"):
        conn.normalize({"id": "1", "sender": {"id": "u"}, "text": 5})
    [msg] = conn.normalize({"id": "1", "sender": {"id": "u", "name": "Uma"}, "text": "hi", "language": "pt-BR"})
    assert (msg.external_id, msg.sender.handle, msg.sender.display_name, msg.language_hints) == (
        "1",
        "u",
        "Uma",
        ("pt-BR",),
    )
