"""RFC 3834 loop detection and signed reply tokens."""

from __future__ import annotations

import pytest

from connectors.email.loops import is_automatic
from connectors.email.tokens import find_tokens, make_message_id, make_token, read_token, reply_address

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Auto-Submitted": "auto-replied"}, "Auto-Submitted: auto-replied"),
        ({"Auto-Submitted": "auto-generated (failure)"}, "Auto-Submitted: auto-generated (failure)"),
        ({"Auto-Submitted": "auto-notified; owner-email=x@y"}, "Auto-Submitted: auto-notified"),
        ({"Precedence": "bulk"}, "Precedence: bulk"),
        ({"Precedence": "List"}, "Precedence: list"),
        ({"Precedence": "junk"}, "Precedence: junk"),
        ({"X-Loop": "support@example.test"}, "X-Loop: support@example.test"),
        ({"List-Id": "Users <users.lists.example.org>"}, "List-Id: Users <users.lists.example.org>"),
        ({"Return-Path": "<>"}, "empty Return-Path (<>)"),
        ({"X-Autoreply": "yes"}, "X-Autoreply: yes"),
        ({"X-Autorespond": "Out of office"}, "X-Autorespond: Out of office"),
        ({"X-Auto-Response-Suppress": "All"}, "X-Auto-Response-Suppress: All"),
        ({"Content-Type": "multipart/report; report-type=delivery-status"}, "report: multipart/report"),
        ({"Content-Type": "message/disposition-notification"}, "report: message/disposition-notification"),
        ({"From": "Mail Delivery System <MAILER-DAEMON@mx.example.org>"}, "From: mailer-daemon@mx.example.org"),
    ],
)
def test_automatic_messages(headers: dict[str, str], reason: str) -> None:
    assert is_automatic(headers, our_addresses=["support@example.test"]) == reason


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "no"},
        {"Precedence": "first-class"},
        {"X-Loop": "someone-else@example.org"},
        {"Return-Path": "<customer@example.com>"},
        {"Content-Type": "text/plain"},
        {"From": "Customer <customer@example.com>"},
    ],
)
def test_human_messages(headers: dict[str, str]) -> None:
    assert is_automatic(headers, our_addresses=["support@example.test"]) is None


def test_any_x_loop_counts_without_our_addresses() -> None:
    assert is_automatic([("X-Loop", "whoever@example.org")]) == "X-Loop: whoever@example.org"


def test_token_round_trip() -> None:
    token = make_token(42, KEY)
    assert token.startswith("sb.42.") and len(token.split(".")[2]) == 24
    assert read_token(token, KEY) == 42
    assert read_token(token.upper().replace("SB.", "sb."), KEY) == 42  # case-folded by an MTA


def test_tampered_or_foreign_tokens_are_refused() -> None:
    token = make_token(42, KEY)
    mac = token.split(".")[2]
    flipped = mac[:-1] + ("a" if mac[-1] != "a" else "b")
    assert read_token(f"sb.42.{flipped}", KEY) is None
    assert read_token(f"sb.43.{mac}", KEY) is None  # the mac of 42 does not open 43
    assert read_token(token, b"another key") is None
    assert read_token("", KEY) is None
    assert read_token("sb.42.", KEY) is None
    assert read_token("no token here", KEY) is None


def test_token_in_message_id_and_address() -> None:
    message_id = make_message_id(7, KEY, domain="example.test", unique="0f8e-uuid")
    assert message_id.startswith("<sb.7.") and message_id.endswith(".0f8e-uuid@example.test>")
    assert read_token(message_id, KEY) == 7
    assert message_id == make_message_id(7, KEY, domain="example.test", unique="0f8e-uuid")  # stable on retry
    address = reply_address("support@example.test", 7, KEY)
    assert address.startswith("support+sb.7.") and address.endswith("@example.test")
    assert read_token(address, KEY) == 7
    assert reply_address("support+old@example.test", 7, KEY).startswith("support+sb.7.")


def test_find_tokens() -> None:
    a, b = make_token(1, KEY), make_token(2, KEY)
    found = find_tokens([f"<{a}.x@example.test>", f"support+{b}@example.test", f"<{a}.y@example.test>", "plain"])
    assert found == [a, b]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_token(-1, KEY)
    with pytest.raises(ValueError):
        make_token(1, b"")
    with pytest.raises(ValueError):
        make_message_id(1, KEY, domain="bad domain", unique="u")
