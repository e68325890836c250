"""Text helpers: X counts a post's length in *weighted* characters (twitter-text v3), and threads long replies.

twitter-text v3 (https://github.com/twitter/twitter-text, config/v3.json; "Counting characters" in the X developer
docs): the text is NFC-normalized and counted in code points; code points in the ranges 0-4351 (Latin, Greek,
Cyrillic, Hebrew, Arabic, Devanagari, ... up to Georgian), 8192-8205, 8208-8223 and 8242-8247 (spaces, dashes,
quotes, primes) weigh 1, every other code point weighs 2 (CJK, Hangul, most emoji ...); every URL weighs 23
(``transformedURLLength``, t.co wrapping) whatever its length; an emoji weighs 2 whatever its code point count
(``emojiParsingEnabled``). A post may weigh at most 280.

Approximations (documented because the real library uses a generated TLD list and the full emoji regex):

- URLs: ``http(s)://`` followed by non-space characters; or a bare domain (``name.tld``) whose TLD is a common
  generic one from ``GENERIC_TLDS`` (path optional), or any two-letter country TLD *followed by a path*
  (``bit.ly/x`` counts, ``file.py`` does not: twitter-text links bare ccTLD domains only with a path too). Trailing
  punctuation (``.,;:!?'"`` and an unbalanced ``)``) is not part of the URL.
- Emoji sequences: a pictographic code point (U+1F000-U+1FAFF, U+2300-U+23FF, U+2600-U+27BF, U+2B00-U+2BFF), or any
  code point followed by U+FE0F (emoji presentation) or U+20E3 (keycap), with what follows it inside the sequence
  (variation selectors, skin-tone modifiers, tag characters, keycap, and ZWJ + the next pictograph); a pair of
  regional indicators (a flag). Each such sequence weighs 2. A pictograph *without* a following FE0F in the 0-4351
  range (e.g. a bare ``©``) weighs 1, as a text character.

The error of these approximations goes both ways only for exotic input (unlisted TLDs, rare emoji); X itself
refuses a post that is too long (400/403), which ``send`` reports to the agent.
"""

from __future__ import annotations

import re
import unicodedata

from connectors.base import PermanentError

MAX_POST_WEIGHT = 280  # https://docs.x.com/resources/fundamentals/counting-characters
MAX_DM_LENGTH = 10_000  # POST /2/dm_conversations/.../messages: "Text messages support up to 10,000 characters"
URL_WEIGHT = 23  # twitter-text v3 transformedURLLength
DEFAULT_MAX_THREAD_PARTS = 25

# twitter-text v3: weight 100 (= 1 character) for these ranges, 200 (= 2) for everything else.
_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))

_TLD_WORDS = (
    "com net org edu gov mil int info biz name pro aero coop museum mobi asia tel travel jobs cat app dev xyz "
    "online site shop store tech blog cloud news live art page link club space website world today help support "
    "email digital media agency studio design games social network solutions services company group global"
)
GENERIC_TLDS = frozenset(_TLD_WORDS.split(" "))

_URL_WITH_SCHEME = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_BARE_DOMAIN = re.compile(
    r"(?<![\w@.$#/:-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,24}))(?![a-z0-9-])([/?#][^\s<>\"'`]*)?",
    re.IGNORECASE,
)
_TRAILING_PUNCTUATION = ".,;:!?'\"*"

_PICTOGRAPH_RANGES = ((0x1F000, 0x1FAFF), (0x2300, 0x23FF), (0x2600, 0x27BF), (0x2B00, 0x2BFF))
_ZWJ = 0x200D
_VS16 = 0xFE0F
_KEYCAP = 0x20E3
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"[.!?…](?:[\"'”’»)\]]*)\s+|[。！？](?:[」』”’）]*)\s*")
_REPLY_SUFFIX = " ({index}/{total})"


def _is_pictograph(code: int) -> bool:
    return (
        0x1F000 <= code <= 0x1FAFF or 0x2300 <= code <= 0x23FF or 0x2600 <= code <= 0x27BF or 0x2B00 <= code <= 0x2BFF
    )


def _is_regional_indicator(code: int) -> bool:
    return 0x1F1E6 <= code <= 0x1F1FF


def _is_emoji_modifier(code: int) -> bool:
    """Code points that continue an emoji sequence: variation selectors, skin tones, tags, the keycap mark."""
    return 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F or code == _KEYCAP


def char_weight(char: str) -> int:
    code = ord(char)
    return 1 if any(low <= code <= high for low, high in _LIGHT_RANGES) else 2


def _trim_url(url: str) -> str:
    while url and url[-1] in _TRAILING_PUNCTUATION:
        url = url[:-1]
    while url.endswith(")") and url.count(")") > url.count("("):
        url = url[:-1]
    return url


def url_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each URL in ``text`` as the weighting counts them (see the module docstring)."""
    spans: list[tuple[int, int]] = []
    for match in _URL_WITH_SCHEME.finditer(text):
        url = _trim_url(match.group(0))
        if url.partition("://")[2]:  # more than the bare scheme
            spans.append((match.start(), match.start() + len(url)))
    taken = list(spans)
    for match in _BARE_DOMAIN.finditer(text):
        start = match.start()
        if any(low <= start < high for low, high in taken):
            continue
        tld, path = match.group(2).lower(), match.group(3) or ""
        if tld in GENERIC_TLDS or (len(tld) == 2 and path.startswith("/")):
            url = _trim_url(match.group(0))
            spans.append((start, start + len(url)))
    return sorted(spans)


def _emoji_end(text: str, index: int) -> int:
    """The end of the emoji sequence starting at ``index``, or ``index`` when none starts there."""
    code = ord(text[index])
    size = len(text)
    if _is_regional_indicator(code):
        if index + 1 < size and _is_regional_indicator(ord(text[index + 1])):
            return index + 2
        return index + 1  # a lone regional indicator still displays as an emoji-like letter
    following = ord(text[index + 1]) if index + 1 < size else -1
    if not (_is_pictograph(code) or following in (_VS16, _KEYCAP)):
        return index
    end = index + 1
    while end < size:
        current = ord(text[end])
        if _is_emoji_modifier(current):
            end += 1
        elif current == _ZWJ and end + 1 < size and not text[end + 1].isspace():
            end += 2  # the joined pictograph
        else:
            break
    return end


def atoms(text: str) -> list[tuple[int, int, int]]:
    """``text`` (already NFC) as indivisible pieces (start, end, weight): URLs, emoji sequences, code points.

    A part of a thread always ends on an atom boundary, so no URL or emoji is ever cut.
    """
    result: list[tuple[int, int, int]] = []
    spans = iter(url_spans(text))
    next_url = next(spans, None)
    index = 0
    size = len(text)
    while index < size:
        while next_url is not None and next_url[1] <= index:
            next_url = next(spans, None)
        if next_url is not None and next_url[0] == index:
            result.append((index, next_url[1], URL_WEIGHT))
            index = next_url[1]
            continue
        end = _emoji_end(text, index)
        if end > index:
            result.append((index, end, 2))
            index = end
            continue
        result.append((index, index + 1, char_weight(text[index])))
        index += 1
    return result


def weighted_length(text: str) -> int:
    """The length X counts for a post (twitter-text v3, see the module docstring). A post may weigh at most 280."""
    return sum(weight for _, _, weight in atoms(unicodedata.normalize("NFC", text)))


def _best_cut(window: str, *, minimum: int) -> int:
    """Where to end a part inside ``window`` (which fits): the last paragraph break, else the last line break,
    else the last sentence end, else the last whitespace, as long as the part keeps ``minimum`` characters."""
    best = 0
    for match in _PARAGRAPH.finditer(window):
        if match.start() >= minimum:
            best = match.end()
    if best:
        return best
    index = window.rfind("\n")
    if index >= minimum:
        return index + 1
    for match in _SENTENCE_END.finditer(window):
        if match.start() >= minimum:
            best = match.end()
    if best:
        return best
    for index in range(len(window) - 1, minimum - 1, -1):
        if window[index].isspace():
            return index + 1
    return 0


def _split(text: str, budget: int) -> list[str]:
    parts: list[str] = []
    rest = text
    while rest:
        pieces = atoms(rest)
        total = sum(weight for _, _, weight in pieces)
        if total <= budget:
            parts.append(rest)
            break
        fit = 0
        used = 0
        for _, end, weight in pieces:
            if used + weight > budget:
                break
            used += weight
            fit = end
        cut = _best_cut(rest[:fit], minimum=max(1, fit // 4)) or fit
        part = rest[:cut].rstrip()
        if weighted_length(part) > budget:  # a boundary changed how a URL is recognised: cut at the atom instead
            cut = fit
            part = rest[:cut].rstrip()
        if part:
            parts.append(part)
        rest = rest[cut:].lstrip()
    return parts


def split_thread(text: str, *, limit: int = MAX_POST_WEIGHT, max_parts: int = DEFAULT_MAX_THREAD_PARTS) -> list[str]:
    """Split ``text`` into posts of at most ``limit`` weighted characters for a thread.

    One part (the text itself, stripped) when it fits. Otherwise parts cut at the cleanest boundary available
    (paragraph, line, sentence, word; never inside a URL or an emoji), each followed by `` (i/n)``, the suffix
    counted in the limit. PermanentError when more than ``max_parts`` posts would be needed. ``[]`` for blank text.
    """
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        return []
    if weighted_length(text) <= limit:
        return [text]
    parts: list[str] = []
    for digits in (1, 2, 3, 4):
        widest = 10**digits - 1
        budget = limit - len(_REPLY_SUFFIX.format(index=widest, total=widest))
        if budget <= URL_WEIGHT:
            raise ValueError(f"limit {limit} is too small to split a thread")
        parts = _split(text, budget)
        if len(parts) <= widest or len(parts) > max_parts:
            break
    total = len(parts)
    if total > max_parts:
        raise PermanentError(
            f"this reply would need {total} posts of {limit} characters; a thread on X is limited to {max_parts} "
            "here. Shorten it or move the conversation to DM."
        )
    return [part + _REPLY_SUFFIX.format(index=index, total=total) for index, part in enumerate(parts, start=1)]


# A mention ends at whitespace or the end; "…" ends one that a truncated (compat mode) v1.1 text cut short.
_LEADING_MENTIONS = re.compile(r"^(?:\s*[@＠][A-Za-z0-9_]{1,15}(?:…|(?=\s|$)))+\s*")


def strip_reply_prefix(text: str) -> str:
    """Remove the leading run of @mentions X puts before a reply ("@brand @other thanks!" -> "thanks!")."""
    return _LEADING_MENTIONS.sub("", text, count=1)


def unescape_v1(text: str) -> str:
    """v1.1 tweet text escapes exactly these three (https://developer.x.com/en/docs/x-api/v1/data-dictionary)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
