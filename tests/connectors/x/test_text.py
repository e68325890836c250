"""Weighted length (twitter-text v3) and thread splitting."""

from __future__ import annotations

import re

import pytest

from connectors.base import PermanentError
from connectors.x.text import split_thread, strip_reply_prefix, unescape_v1, url_spans, weighted_length

SENTENCE = "the parcel left our warehouse on monday and should reach you within three working days"
SUFFIX = re.compile(r" \((\d+)/(\d+)\)$")


def long_text(length: int) -> str:
    """Sentences of plain words, about ``length`` characters."""
    words = SENTENCE.split()
    out: list[str] = []
    size = 0
    index = 0
    while size < length:
        word = words[index % len(words)]
        if index % 11 == 10:
            word += "."
        out.append(word)
        size += len(word) + 1
        index += 1
    return " ".join(out).strip()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", 5),
        ("", 0),
        ("Ünïcödé ßtraße", 14),  # Latin-1 and Latin Extended: inside 0-4351
        ("Привет, мир", 11),  # Cyrillic
        ("שלום", 4),  # Hebrew
        ("日本語", 6),  # CJK weighs 2
        ("안녕", 4),  # Hangul
        ("—“”‘’", 5),  # dashes and quotes: 8208-8223
        ("′″", 2),  # primes: 8242-8247
        ("…", 2),  # U+2026 is outside the light ranges
        ("\u2003", 1),  # em space: 8192-8205
    ],
)
def test_character_weights(text: str, expected: int) -> None:
    assert weighted_length(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("👍", 2),
        ("👍🏽", 2),  # skin tone modifier
        ("👨\u200d👩\u200d👧\u200d👦", 2),  # ZWJ family: 7 code points
        ("🏳️\u200d🌈", 2),  # rainbow flag: VS16 + ZWJ
        ("🇫🇷🇩🇪", 4),  # two flags
        ("1️⃣", 2),  # keycap
        ("❤️", 2),  # heart + VS16
        ("ok 👍 ok", 8),
    ],
)
def test_emoji_sequences_weigh_two(text: str, expected: int) -> None:
    assert weighted_length(text) == expected


def test_nfc_normalization() -> None:
    assert weighted_length("e\u0301") == 1  # composes to é
    assert weighted_length("é") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://example.com/" + "a" * 200, 23),
        ("http://x.co", 23),
        ("see https://example.com/a?b=1#c now", 4 + 23 + 4),
        ("example.com", 23),  # a bare domain with a generic TLD
        ("go to shop.example.org/path.", 6 + 23 + 1),  # the final period is not part of the URL
        ("(see https://example.com/x)", 5 + 23 + 1),  # nor the unbalanced closing parenthesis
        ("bit.ly/abc", 23),  # a country TLD with a path
        ("file.py", 7),  # a country TLD without a path is no URL
        ("e.g. this", 9),
        ("mail me: someone@example.com", 9 + 19),  # an e-mail address is no URL
        ("https://a.com https://b.com", 23 + 1 + 23),
    ],
)
def test_urls_weigh_23(text: str, expected: int) -> None:
    assert weighted_length(text) == expected


def test_url_spans() -> None:
    text = "a https://x.com/p, b example.net c"
    spans = url_spans(text)
    assert [text[start:end] for start, end in spans] == ["https://x.com/p", "example.net"]


def test_exact_280_boundary() -> None:
    assert split_thread("a" * 280) == ["a" * 280]
    assert weighted_length("字" * 140) == 280
    assert split_thread("字" * 140) == ["字" * 140]
    parts = split_thread("字" * 141)
    assert len(parts) == 2
    assert all(weighted_length(part) <= 280 for part in parts)
    parts = split_thread("a" * 281)  # no boundary at all: a hard cut
    assert [SUFFIX.search(part).group(0) for part in parts] == [" (1/2)", " (2/2)"]  # type: ignore[union-attr]
    assert "".join(SUFFIX.sub("", part) for part in parts) == "a" * 281


def test_seven_hundred_characters_become_three_numbered_parts() -> None:
    text = long_text(700)
    parts = split_thread(text)
    assert len(parts) == 3
    for index, part in enumerate(parts, start=1):
        assert weighted_length(part) <= 280
        assert part.endswith(f" ({index}/3)")
    bodies = [SUFFIX.sub("", part) for part in parts]
    assert " ".join(bodies).split() == text.split()  # nothing lost, nothing repeated
    assert all(body.endswith(".") for body in bodies[:-1])  # cut at sentence ends


def test_paragraph_breaks_are_preferred() -> None:
    first = long_text(150)
    second = long_text(200)
    parts = split_thread(f"{first}\n\n{second}")
    assert [SUFFIX.sub("", part) for part in parts] == [first, second]


def test_words_when_there_is_no_sentence() -> None:
    text = " ".join(["word"] * 120)  # 599 characters, no punctuation
    parts = split_thread(text)
    assert all(weighted_length(part) <= 280 for part in parts)
    assert all(not SUFFIX.sub("", part).endswith(" ") and "wor " not in part for part in parts)
    assert " ".join(SUFFIX.sub("", part) for part in parts).split() == text.split()


def test_never_cuts_inside_a_url() -> None:
    urls = [f"https://example.com/{'x' * 60}/{index}" for index in range(30)]
    text = " ".join(urls)  # each weighs 23 but is 80 characters long
    parts = split_thread(text)
    found = [word for part in parts for word in SUFFIX.sub("", part).split()]
    assert found == urls
    assert all(weighted_length(part) <= 280 for part in parts)


def test_cjk_and_emoji_parts_fit() -> None:
    text = "您好，我们已经收到您的订单。" * 30 + "🎉" * 50
    parts = split_thread(text)
    assert all(weighted_length(part) <= 280 for part in parts)
    assert "".join(SUFFIX.sub("", part) for part in parts) == text
    assert not any("\u200d" in part[-8:] for part in parts)


def test_two_digit_thread_suffixes_fit() -> None:
    text = long_text(3000)
    parts = split_thread(text)
    assert len(parts) >= 10
    assert parts[0].endswith(f" (1/{len(parts)})")
    assert all(weighted_length(part) <= 280 for part in parts)


def test_max_parts() -> None:
    text = long_text(1000)
    assert len(split_thread(text, max_parts=5)) <= 5
    with pytest.raises(PermanentError, match=r"would need 4 posts.*limited to 3"):
        split_thread(text, max_parts=3)


def test_blank_and_limit() -> None:
    assert split_thread("   ") == []
    assert all(weighted_length(part) <= 100 for part in split_thread(long_text(500), limit=100))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@brand @other_one thanks!", "thanks!"),
        ("@brand\n@other thanks", "thanks"),
        ("thanks @brand", "thanks @brand"),
        ("@brand's reply", "@brand's reply"),
        ("email@brand", "email@brand"),
        ("＠brand hi", "hi"),
        ("@brand", ""),
        ("@a @agarcod… https://t.co/x", "https://t.co/x"),  # a truncated v1.1 text
    ],
)
def test_strip_reply_prefix(text: str, expected: str) -> None:
    assert strip_reply_prefix(text) == expected


def test_unescape_v1() -> None:
    assert unescape_v1("a &amp; b &lt;c&gt; &amp;lt;") == "a & b <c> &lt;"
