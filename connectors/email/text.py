"""Plain-text helpers for e-mail bodies: HTML to text, and the new part of a reply vs. quoted history.

Both are linear in the input and never raise on odd input: customer content is hostile and often malformed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

MAX_HTML_CHARS = 4_000_000  # beyond this the text rendering is cut (the raw HTML is still kept)

_BLOCK = {
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
    "p", "pre", "section", "table", "tbody", "thead", "tfoot", "tr", "ul",
}  # fmt: skip
_SKIP = {"head", "script", "style", "title", "template", "noscript", "svg", "object", "iframe"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TextRenderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip_depth = 0
        self.quote_depth = 0
        self.pre_depth = 0
        self.href: str | None = None
        self.link_text: list[str] = []

    # a line break that keeps the current quote prefix
    def _newline(self, *, blank: bool = False) -> None:
        line = "".join(self.current)
        if self.pre_depth == 0:
            line = re.sub(r"[ \t\r\n\f\v\u00a0]+", " ", line).strip()
        prefix = "> " * self.quote_depth
        if (line or not blank) and (line or (self.lines and self.lines[-1].strip("> "))):
            self.lines.append((prefix + line).rstrip())
        if blank and self.lines and self.lines[-1].strip("> "):
            self.lines.append(prefix.rstrip())
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            if tag not in _VOID:
                self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if tag == "br":
            self._newline()
        elif tag in _BLOCK:
            self._newline(blank=tag in {"p", "blockquote", "table", "h1", "h2", "h3", "h4", "h5", "h6"})
            if tag == "blockquote":
                self.quote_depth += 1
            elif tag == "pre":
                self.pre_depth += 1
            elif tag == "li":
                self.current.append("- ")
            elif tag == "hr":
                self.current.append("----")
                self._newline()
        elif tag in {"td", "th"}:
            self.current.append(" ")
        elif tag == "a":
            self.href = dict(attrs).get("href") or None
            self.link_text = []
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.current.append(f"[{alt}]")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            if tag not in _VOID:
                self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag == "blockquote":
            self._newline()
            self.quote_depth = max(0, self.quote_depth - 1)
            self._newline(blank=True)
        elif tag in _BLOCK:
            self._newline(blank=tag in {"p", "table", "h1", "h2", "h3", "h4", "h5", "h6"})
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)
        elif tag == "a":
            text = "".join(self.link_text).strip()
            href = self.href or ""
            # Show where a link goes when its text does not: agents must see phishing-style links for what they are.
            if href.startswith(("http://", "https://")) and href.rstrip("/") != text.rstrip("/"):
                self.current.append(f" <{href}>")
            self.href = None

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            parts = data.split("\n")
            for index, part in enumerate(parts):
                if index:
                    self._newline()
                self.current.append(part)
        else:
            self.current.append(data)
        if self.href is not None:
            self.link_text.append(data)

    def render(self) -> str:
        self._newline()
        return "\n".join(self.lines).strip("\n")


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of an HTML body (blockquotes become "> " lines, links show their target)."""
    renderer = _TextRenderer()
    try:
        renderer.feed(html[:MAX_HTML_CHARS])
        renderer.close()
    except (AssertionError, ValueError):  # HTMLParser on pathological markup; keep what was rendered
        pass
    text = renderer.render()
    return re.sub(r"\n{3,}", "\n\n", text)


# --- Quoted history and signatures ---------------------------------------------------------------------
# Each pattern matches the line a mail client writes above the history it quotes. Only the first
# MAX_SCAN_LINES lines are scanned, and lines longer than 400 characters are not considered headers.
_WROTE_PATTERNS = [
    r"^on\b.{0,300}\bwrote:?\s*$",  # Gmail, Apple Mail, Thunderbird: "On Mon, 1 Jan 2024 at 10:00, X <x@y> wrote:"
    r"^am\b.{0,300}\bschrieb\b.{0,200}:\s*$",  # German: "Am 01.01.2024 um 10:00 schrieb X:"
    r"^le\b.{0,300}\ba\s+écrit\s*:\s*$",  # French: "Le lun. 1 janv. 2024 à 10:00, X a écrit :"
    r"^el\b.{0,300}\bescribi[oó]\s*:\s*$",  # Spanish: "El lun, 1 ene 2024 a las 10:00, X escribió:"
    r"^em\b.{0,300}\bescreveu\s*:\s*$",  # Portuguese
    r"^il\b.{0,300}\bha\s+scritto\s*:\s*$",  # Italian
    r"^op\b.{0,300}\bschreef\b.{0,200}:\s*$",  # Dutch
    r"^.{0,300}\b(написал|написала|написал\(а\)|пишет)\s*:\s*$",  # Russian: "1 янв. 2024 г., в 10:00, X написал(а):"
    r"^(在|於).{0,300}(写道|寫道)\s*[:：]\s*$",  # Chinese: "在 2024年1月1日 10:00，X 写道："
    r"^.{0,300}(写道|寫道)\s*[:：]\s*$",
]
_SEPARATOR_PATTERNS = [
    r"^-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|mensaje original|mensagem original"
    r"|messaggio originale|oorspronkelijk bericht|исходное сообщение|原始邮件|原始郵件|原始信件)\s*-{2,}\s*$",
    r"^_{10,}\s*$",  # Outlook's rule above the "From: / Sent:" block
]
# Outlook writes a header block: "From: X" then within a few lines "Sent: ..." (localised).
_FROM_LABELS = r"(from|von|de|от|发件人|寄件者|van|da|od|från|fra)"
_SENT_LABELS = (
    r"(sent|date|gesendet|datum|envoyé|enviado|fecha|отправлено|дата|发送时间|日期|寄件日期|verzonden|inviato"
    r"|data|skickat|sendt)"
)
_FROM_RE = re.compile(rf"^\*?{_FROM_LABELS}\s*\*?\s*[:：]", re.IGNORECASE)
_SENT_RE = re.compile(rf"^\*?{_SENT_LABELS}\s*\*?\s*[:：]", re.IGNORECASE)
_WROTE_RES = [re.compile(p, re.IGNORECASE) for p in _WROTE_PATTERNS]
_SEPARATOR_RES = [re.compile(p, re.IGNORECASE) for p in _SEPARATOR_PATTERNS]
# RFC 3676 §4.3: the signature separator is "-- " (dash dash space); many clients drop the space.
_SIGNATURE_RE = re.compile(r"^--\s?$")
_MOBILE_SIGNATURE_RE = re.compile(
    r"^(sent from my \w[\w ]{0,40}|sent from (outlook|mail) for \w+|get outlook for \w+"
    r"|von meinem \w[\w ]{0,40} gesendet|envoyé de mon \w[\w ]{0,40}|enviado desde mi \w[\w ]{0,40}"
    r"|отправлено с \w[\w ]{0,40}|发自我的\w{1,20})\s*$",
    re.IGNORECASE,
)
MAX_SCAN_LINES = 5_000


@dataclass(frozen=True)
class SplitText:
    new: str  # what the sender wrote in this message
    quoted: str  # the quoted history and the signature that followed it ("" when none)
    signature: str  # the signature block alone ("" when none)


def _is_quote_header(lines: list[str], i: int) -> bool:
    line = lines[i].strip()
    if len(line) > 400 or not line:
        return False
    if any(p.match(line) for p in _SEPARATOR_RES):
        # "____" alone is a rule, a header only when an Outlook block follows
        if line.startswith("_"):
            return i + 1 < len(lines) and bool(_FROM_RE.match(_next_nonblank(lines, i + 1)))
        return True
    if any(p.match(line) for p in _WROTE_RES):
        return True
    # Gmail wraps long attributions over two lines: "On Mon, ... <a@b>" / "wrote:"
    if i + 1 < len(lines) and len(line) < 300:
        joined = line + " " + lines[i + 1].strip()
        if lines[i + 1].strip() and any(p.match(joined) for p in _WROTE_RES[:1] + _WROTE_RES[7:]):
            return True
    if _FROM_RE.match(line):
        for j in range(i + 1, min(i + 5, len(lines))):
            if _SENT_RE.match(lines[j].strip()):
                return True
    return False


def _next_nonblank(lines: list[str], start: int) -> str:
    for j in range(start, min(start + 3, len(lines))):
        if lines[j].strip():
            return lines[j].strip()
    return ""


def normalise_text(text: str) -> str:
    """NFC, LF line ends, no trailing spaces, no leading/trailing blank lines: for hashing and comparing."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def split_reply(text: str) -> SplitText:
    """Separate the new text of a reply from the quoted history and the signature.

    Top-posting: the history starts at the first attribution line ("On ... wrote:", "-----Original Message-----",
    an Outlook "From: / Sent:" block, or their German/French/Spanish/Russian/Chinese... forms) or at a trailing
    block of "> " lines. The signature starts at the last "-- " line (RFC 3676 §4.3) before that. When nothing
    new would remain (a bottom-posted or inline answer), the unquoted lines are the new text.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = len(lines)
    for i in range(min(len(lines), MAX_SCAN_LINES)):
        if _is_quote_header(lines, i):
            cut = i
            break
    else:
        # a trailing block of "> " lines (and blank lines) without an attribution
        j = len(lines)
        while j > 0 and (not lines[j - 1].strip() or lines[j - 1].lstrip().startswith(">")):
            j -= 1
        if j < len(lines) and any(line.lstrip().startswith(">") for line in lines[j:]):
            cut = j
    head, history = lines[:cut], lines[cut:]

    signature: list[str] = []
    for i in range(len(head) - 1, -1, -1):
        if _SIGNATURE_RE.match(head[i]) and len(head) - i <= 30:
            signature, head = head[i:], head[:i]
            break
    else:
        for i in range(len(head) - 1, max(-1, len(head) - 4), -1):
            if _MOBILE_SIGNATURE_RE.match(head[i].strip()):
                signature, head = head[i:], head[:i]
                break

    new = "\n".join(head).strip()
    if not new and history:
        # Bottom-posting or inline answers: keep every line that is not quoted and not an attribution.
        kept = [
            line
            for i, line in enumerate(lines)
            if not line.lstrip().startswith(">") and not (line.strip() and _is_quote_header(lines, i))
        ]
        candidate = "\n".join(kept).strip()
        if candidate and candidate != "\n".join(signature).strip():
            rest = [line for line in lines if line.lstrip().startswith(">")]
            return SplitText(new=candidate, quoted="\n".join(rest).strip(), signature="")
    if not new:
        # Nothing but a signature or a forwarded block: the whole text is what the agent must read.
        return SplitText(new=text.strip(), quoted="", signature="")
    quoted = "\n".join(signature + history).strip()
    return SplitText(new=new, quoted=quoted, signature="\n".join(signature).strip())
