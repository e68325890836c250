"""Tests of the routing language detector (inbox/routing/langid.py). No database: plain functions.

The accuracy floors read ../shared/data/langid and skip with a reason when it is absent; every other test
uses only the strings written here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inbox.routing.langid import Detection, Hints, detect, parse_language_tags

LANGID_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "langid"
DEFAULT = frozenset(["en", "es", "zh", "ru", "de", "fr", "pt", "it", "ar", "tr", "ja", "ko", "uk", "vi"])

# Sentence accuracy floors of detect() without hints, per language: measured values (docs/benchmarks.md,
# 500 sentences each) minus a margin, so a regression fails but a library patch release does not.
SENTENCE_FLOORS = {
    "en": 0.97,
    "es": 0.97,
    "zh": 0.97,
    "ru": 0.97,
    "de": 0.97,
    "fr": 0.97,
    "pt": 0.97,
    "it": 0.97,
    "ar": 0.97,
    "tr": 0.95,  # the data holds some mojibake (Windows-1254 read as Latin-1) that reads as Czech
    "ja": 0.97,
    "ko": 0.97,
    "uk": 0.95,  # short Ukrainian sentences are often also valid Russian
    "vi": 0.97,
}


def _samples(category: str, lang: str) -> list[str]:
    path = LANGID_DATA / category / f"{lang}.txt"
    if not path.exists():
        pytest.skip(f"language test data not found: {path.resolve()} (../shared/data/langid is absent)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.langdata
@pytest.mark.parametrize("lang", sorted(SENTENCE_FLOORS))
def test_sentence_accuracy_floor(lang: str) -> None:
    texts = _samples("sentences", lang)
    wrong = [t for t in texts if detect(t, languages=DEFAULT).language != lang]
    accuracy = 1 - len(wrong) / len(texts)
    assert accuracy >= SENTENCE_FLOORS[lang], f"{lang}: {accuracy:.3f}; e.g. {wrong[:3]}"


@pytest.mark.langdata
def test_unconfigured_language_sentences_mostly_fall_back() -> None:
    texts = _samples("sentences", "pl")[:200] + _samples("sentences", "fi")[:200]
    fallback = sum(detect(t, languages=DEFAULT).language is None for t in texts)
    assert fallback / len(texts) >= 0.9


# --- text alone ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hola, no puedo entrar en mi cuenta desde ayer", "es"),
        ("Hello, I cannot log in to my account since yesterday", "en"),
        ("Guten Tag, meine Bestellung ist noch nicht angekommen", "de"),
        ("Здравствуйте, я не могу войти в свой аккаунт", "ru"),
        ("Добрий день, я не можу увійти до свого облікового запису", "uk"),
        ("我的订单什么时候发货？", "zh"),
        ("注文した商品がまだ届きません", "ja"),
        ("주문한 상품이 아직 도착하지 않았습니다", "ko"),
        ("مرحبا، لا أستطيع تسجيل الدخول إلى حسابي", "ar"),
        ("Xin chào, tôi không thể đăng nhập vào tài khoản của mình", "vi"),
        ("HELLO I NEED HELP WITH MY ORDER PLEASE", "en"),
    ],
)
def test_confident_text_detection(text: str, expected: str) -> None:
    result = detect(text, languages=DEFAULT)
    assert result == Detection(expected, result.confidence, "text")
    assert result.confidence >= 0.9


@pytest.mark.parametrize("text", ["", "   \n\t ", "👍🙂🎉", "12345 678", "?!...", "https://example.com/x @bob"])
def test_no_text_evidence_goes_to_fallback(text: str) -> None:
    assert detect(text, languages=DEFAULT) == Detection(None, 0.0, "fallback")


def test_no_text_evidence_follows_the_hints() -> None:
    assert detect("👍", Hints(conversation="de"), languages=DEFAULT) == Detection("de", 0.6, "conversation")
    assert detect("", Hints(declared=("pt-br",)), languages=DEFAULT) == Detection("pt", 0.4, "hint")


def test_text_wins_over_hints_when_confident() -> None:
    result = detect(
        "Bonjour, je n'arrive pas à me connecter à mon compte",
        Hints(declared=("en-US",), conversation="en"),
        languages=DEFAULT,
    )
    assert (result.language, result.source) == ("fr", "text")


def test_unconfigured_language_falls_back() -> None:
    polish = "Dzień dobry, mam problem z moim zamówieniem, paczka nie dotarła"
    assert detect(polish, languages=DEFAULT).source == "fallback"
    # ... unless a hint says otherwise
    assert detect(polish, Hints(declared=("de",)), languages=DEFAULT) == Detection("de", 0.4, "hint")
    assert detect(polish, Hints(conversation="en"), languages=DEFAULT).language == "en"


def test_detected_language_must_be_configured() -> None:
    result = detect("Hola, no puedo entrar en mi cuenta desde ayer", languages=frozenset({"en", "de"}))
    assert result.language in {None, "en", "de"}
    assert result.source != "text" or result.confidence < 0.9


# --- short messages and hints ------------------------------------------------------------------------------


def test_short_ok_keeps_the_conversation_language() -> None:
    for text in ("ok", "OK!!", "ok 👍", "lol"):
        result = detect(text, Hints(conversation="es"), languages=DEFAULT)
        assert result.language == "es", text
        assert result.source in {"conversation", "text+hint"}


def test_short_ok_without_hints_is_fallback() -> None:
    assert detect("ok", languages=DEFAULT).source == "fallback"


def test_short_text_agreeing_with_a_hint_is_boosted() -> None:
    alone = detect("gracias", languages=DEFAULT)
    hinted = detect("gracias", Hints(declared=("es-MX",)), languages=DEFAULT)
    assert hinted.language == "es"
    assert hinted.source in {"text", "text+hint"}
    assert hinted.confidence >= alone.confidence


def test_unsure_text_prefers_conversation_over_declared_hint() -> None:
    result = detect("ok", Hints(declared=("fr",), conversation="de"), languages=DEFAULT)
    assert result == Detection("de", 0.6, "conversation")


def test_declared_hint_outside_configured_languages_is_ignored() -> None:
    assert detect("ok", Hints(declared=("pl", "de")), languages=DEFAULT) == Detection("de", 0.4, "hint")
    assert detect("ok", Hints(declared=("pl",)), languages=DEFAULT).source == "fallback"
    assert detect("ok", Hints(conversation="pl"), languages=DEFAULT).source == "fallback"


def test_accept_language_header_as_hint() -> None:
    result = detect("ok", Hints(declared=("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5",)), languages=DEFAULT)
    assert result == Detection("fr", 0.4, "hint")


# --- tags -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("es-ES,es;q=0.9,en;q=0.8", ("es", "en")),
        ("en;q=0.5, de", ("de", "en")),
        ("zh-Hant-TW", ("zh",)),
        ("zh-CN,zh;q=0.9", ("zh",)),
        ("de, en", ("de", "en")),
        ("pt-br", ("pt",)),
        ("pt_BR", ("pt",)),
        ("*", ()),
        ("", ()),
        ("fr;q=0, en", ("en",)),
        ("en;q=abc, de;q=0.1", ("de",)),
        ("iw-IL", ("he",)),
        ("nb-NO,no;q=0.9,nn;q=0.8", ("nb", "no", "nn")),
        ("x-klingon, i-default, und, en", ("en",)),
    ],
)
def test_parse_language_tags(value: str, expected: tuple[str, ...]) -> None:
    assert parse_language_tags(value) == expected


def test_chinese_variants() -> None:
    for tag in ("zh", "zh-CN", "zh-TW", "zh-Hant", "zh-Hans-CN", "cmn", "yue-HK"):
        assert detect("ok", Hints(declared=(tag,)), languages=DEFAULT).language == "zh", tag
    assert detect("請問我的訂單什麼時候到", languages=DEFAULT).language == "zh"  # Traditional
    assert detect("请问我的订单什么时候到", languages=DEFAULT).language == "zh"  # Simplified
    assert detect("请问我的订单什么时候到", languages=frozenset({"zh-TW", "en"})).language == "zh"


def test_norwegian_variants() -> None:
    text = "Hei, jeg har et spørsmål om bestillingen min som ikke har kommet"
    for configured in ({"en", "no"}, {"en", "nb"}, {"en", "nn"}):
        result = detect(text, languages=frozenset(configured))
        assert result.language in configured - {"en"}, configured
    assert detect("ok", Hints(declared=("nb-NO",)), languages=frozenset({"en", "no"})).language == "no"
    assert detect("ok", Hints(declared=("no",)), languages=frozenset({"en", "nb"})).language == "nb"


def test_single_configured_language() -> None:
    only = frozenset({"en"})
    assert detect("Hello, I cannot log in to my account since yesterday", languages=only).language == "en"
    assert detect("Hola, no puedo entrar en mi cuenta desde ayer", languages=only).language is None


def test_broken_unicode_does_not_raise() -> None:
    detect("caf\ud800 au lait, s'il vous plaît, merci beaucoup", languages=DEFAULT)


def test_confidence_is_a_probability() -> None:
    for text in ("ok", "gracias", "Hola, no puedo entrar en mi cuenta", "谢谢", "x" * 5000):
        result = detect(text, Hints(declared=("es",)), languages=DEFAULT)
        assert 0.0 <= result.confidence <= 1.0
