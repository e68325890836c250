"""Text helpers: Telegram counts lengths and entity offsets in UTF-16 code units.

https://core.telegram.org/bots/api#messageentity : "offset ... in UTF-16 code units". The 4096 limit of sendMessage
(https://core.telegram.org/bots/api#sendmessage) is measured the same way here, which is never more lenient than
counting code points: a text of 4096 emoji (8192 UTF-16 units) would be refused by Telegram, so we split it.

We send plain text (no ``parse_mode``), so there are no escapes to keep intact when splitting; the splitter
never cuts inside a code point (a Python ``str`` holds whole code points, so no surrogate pair is ever split)
and avoids cutting inside a grapheme cluster (combining marks, ZWJ emoji sequences, variation selectors,
skin-tone modifiers, flag pairs).
"""

from __future__ import annotations

import re
import unicodedata

MAX_MESSAGE_UTF16 = 4096  # https://core.telegram.org/bots/api#sendmessage  "1-4096 characters"
MAX_CAPTION_UTF16 = 1024  # https://core.telegram.org/bots/api#sendphoto  "0-1024 characters"

_SENTENCE_END = re.compile(r"[.!?…。！？](?:[\"'”’»)\]]*)\s")
_ZWJ = "\u200d"


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (what Telegram counts)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def utf16_slice(text: str, offset: int, length: int) -> str:
    """``text[offset:offset+length]`` with offset and length in UTF-16 code units (MessageEntity)."""
    encoded = text.encode("utf-16-le", "surrogatepass")
    return encoded[offset * 2 : (offset + length) * 2].decode("utf-16-le", "replace")


def _prefix_fitting(text: str, limit: int) -> int:
    """The largest index i such that utf16_len(text[:i]) <= limit."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _joins_previous(char: str) -> bool:
    """True for a code point that belongs to the grapheme cluster before it."""
    code = ord(char)
    return (
        unicodedata.combining(char) != 0
        or char == _ZWJ
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF
        or 0x1F3FB <= code <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (subdivision flags)
        or unicodedata.category(char) in ("Mn", "Me", "Mc")
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _safe_hard_cut(text: str, cut: int) -> int:
    """Move a forced cut back so it does not fall inside a grapheme cluster (never to 0)."""
    original = cut
    while cut > 0 and cut < len(text) and (_joins_previous(text[cut]) or text[cut - 1] == _ZWJ):
        cut -= 1
    if 0 < cut < len(text) and _is_regional_indicator(text[cut]) and _is_regional_indicator(text[cut - 1]):
        # Flags are pairs of regional indicators: count the run to know whether we are between two flags.
        start = cut
        while start > 0 and _is_regional_indicator(text[start - 1]):
            start -= 1
        if (cut - start) % 2:
            cut -= 1
    return cut if cut > 0 else original


def _best_cut(window: str, *, minimum: int) -> int:
    """Where to end a part inside ``window`` (which fits): the last paragraph break, else line break, else
    sentence end, else whitespace, as long as it leaves at least ``minimum`` characters; 0 when none."""
    for pattern in ("\n\n", "\n"):
        index = window.rfind(pattern)
        if index >= minimum:
            return index + len(pattern)
    best = 0
    for match in _SENTENCE_END.finditer(window):
        if match.end() >= minimum:
            best = match.end()
    if best:
        return best
    for index in range(len(window) - 1, minimum - 1, -1):
        if window[index].isspace():
            return index + 1
    return 0


def split_text(text: str, limit: int = MAX_MESSAGE_UTF16) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 units, at the cleanest boundary available.

    Parts are stripped of the whitespace at the cut (Telegram trims message text anyway); blank parts are dropped.
    Joining the parts with the separators that were cut away gives back the text.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    parts: list[str] = []
    rest = text.strip()
    while rest:
        if utf16_len(rest) <= limit:
            parts.append(rest)
            break
        fit = _prefix_fitting(rest, limit)
        # Prefer a boundary in the later part of the window so parts stay large; a cut is "clean" only if the
        # part keeps at least a quarter of the limit.
        cut = _best_cut(rest[:fit], minimum=max(1, fit // 4))
        if cut == 0:
            cut = _safe_hard_cut(rest, fit)
        part = rest[:cut].rstrip()
        if part:
            parts.append(part)
        rest = rest[cut:].lstrip()
    return parts
