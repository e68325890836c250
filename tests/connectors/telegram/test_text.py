"""split_text: parts of at most 4096 UTF-16 units, cut at paragraph / line / sentence / word boundaries."""

from __future__ import annotations

import pytest

from connectors.telegram.text import split_text, utf16_len, utf16_slice


def long_text(chars: int) -> str:
    paragraphs: list[str] = []
    n = 0
    while sum([len(p) + 2 for p in paragraphs]) < chars:
        sentences = [f"Sentence {n + i} explains one more detail of the refund policy." for i in range(7)]
        n += 7
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)[:chars].rsplit(" ", 1)[0] + "."


def test_short_text_is_one_part_and_is_trimmed() -> None:
    assert split_text("  Hello\n") == ["Hello"]
    assert split_text("   ") == []


def test_ten_thousand_characters_give_three_parts_at_paragraph_breaks() -> None:
    text = long_text(10_000)
    parts = split_text(text)
    assert len(parts) == 3
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert all(p.endswith(".") for p in parts)  # each part ends a paragraph
    assert "\n\n".join(parts) == text


def test_line_then_sentence_then_word_boundaries() -> None:
    lines = "\n".join(f"line {i:04d} of a long log" for i in range(400))  # no paragraph break
    parts = split_text(lines, limit=1000)
    assert all(len(p) <= 1000 for p in parts)
    assert "\n".join(parts) == lines

    sentences = " ".join(f"This is sentence {i}." for i in range(200))  # no line break
    parts = split_text(sentences, limit=500)
    assert all(p.endswith(".") and len(p) <= 500 for p in parts)
    assert " ".join(parts) == sentences

    words = " ".join(f"word{i}" for i in range(500))  # no sentence end
    parts = split_text(words, limit=300)
    assert " ".join(parts) == words
    assert all(not p.startswith(" ") and len(p) <= 300 for p in parts)


def test_emoji_are_counted_in_utf16_and_never_cut() -> None:
    text = "😀" * 5000  # 10,000 UTF-16 units, no boundary at all
    parts = split_text(text)
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert "".join(parts) == text
    assert [len(p) for p in parts] == [2048, 2048, 904]


def test_grapheme_clusters_are_not_split() -> None:
    family = "👩\u200d👩\u200d👧"  # ZWJ sequence: 5 code points, 8 UTF-16 units
    text = family * 600
    parts = split_text(text, limit=100)
    assert "".join(parts) == text
    assert all(p.startswith("👩") and p.endswith("👧") for p in parts)
    accented = "e\u0301" * 300  # e + combining acute
    parts = split_text(accented, limit=51)
    assert all(not p.startswith("\u0301") for p in parts)
    assert "".join(parts) == accented
    flags = "🇫🇷🇩🇪" * 100
    parts = split_text(flags, limit=30)
    assert "".join(parts) == flags
    assert all(len(p) % 2 == 0 for p in parts)


def test_utf16_slice_matches_entity_offsets() -> None:
    assert utf16_slice("a😀b", 1, 2) == "😀"
    assert utf16_slice("a😀b", 3, 1) == "b"


def test_limit_must_be_sane() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_text("x", limit=1)
