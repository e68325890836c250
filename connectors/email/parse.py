"""Raw RFC 5322 bytes -> :class:`InboundMessage`, and delivery status notifications -> :class:`BounceInfo`.

Customer mail is hostile and often broken. The rules here:

- every charset Python knows is decoded (with aliases for the labels mail clients really write), and bytes that
  do not decode become U+FFFD: a message is never lost to a charset;
- limits bound time and memory (message size, header count, nesting depth, part count, attachment sizes); a
  message beyond them raises :class:`PermanentError` with the reason, so the inbox quarantines it with its bytes;
- the stdlib ``email`` package parses with ``policy.default`` (RFC 2231 parameters, address groups) and falls
  back to ``compat32`` when the modern policy chokes; header text is decoded here, chunk by chunk, so an unknown
  charset in one RFC 2047 encoded word spoils only that word.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import quopri
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import filetype

from connectors.base import InboundAttachment, InboundMessage, PermanentError, Sender
from connectors.email.loops import is_automatic
from connectors.email.text import SplitText, html_to_text, normalise_text, split_reply
from connectors.email.tokens import find_tokens

DEFAULT_MAX_ATTACHMENT_BYTES = 25 * 2**20
DEFAULT_MAX_TOTAL_BYTES = 50 * 2**20  # all kept attachments together
DEFAULT_MAX_MESSAGE_BYTES = 100 * 2**20  # the raw message; beyond it we refuse to parse at all
MAX_HEADER_FIELDS = 1_000  # per header block; real mail has at most a few hundred (long Received chains)
MAX_HEADER_CHARS = 16_384  # a longer header value is cut before decoding
MAX_DEPTH = 20  # multipart nesting
MAX_PARTS = 500
MAX_BODY_CHARS = 2_000_000  # text kept for the agent; the rest is cut with a note
MAX_REFERENCES = 50  # the root plus the most recent ones (RFC 5322 §3.6.4 only ever needs root and parent)
SYNTHETIC_DOMAIN = "synthetic.switchboard.invalid"  # RFC 2606 .invalid: can never collide with a real domain

# Labels mail clients write -> the Python codec that decodes them best (supersets where the label is a lie:
# Windows clients label cp1252 as iso-8859-1, cp949 as ks_c_5601-1987, GBK/GB18030 as gb2312, cp932 as
# shift_jis). WHATWG's encoding standard makes the same choices.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    # ISO-2022-JP as written by Windows clients carries NEC/IBM extensions (CP50220); iso2022_jp_ext decodes
    # JIS X 0201 kana as well; see _decode_bytes for the fall-back chain.
    "iso-2022-jp": "iso2022_jp_ext",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "big5-hkscs": "big5hkscs",
    "x-user-defined": "cp1252",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
    "unknown": "utf-8",
}
_CHARSET_FALLBACKS = {"iso2022_jp_ext": ("iso2022_jp_2", "iso2022_jp_3")}

_MSGID_RE = re.compile(r"<([^<>]{1,900})>")
_MSGID_CFWS_RE = re.compile(r"\([^()]*\)|\s+")  # RFC 5322 §4.5.4 obsolete syntax allows CFWS inside msg-id
_BARE_MSGID_RE = re.compile(r"[^\s<>\"(),;]{1,900}@[^\s<>\"(),;]{1,900}")
_LOOSE_ADDRESS_RE = re.compile(
    r"[^\s<>()\[\],;:\"@]{1,64}@[A-Za-z0-9\u00a0-\uffff.-]{1,255}\.[A-Za-z\u00a0-\uffff]{2,63}"
)
_HEADER_LINE_RE = re.compile(rb"^[^ \t\r\n]", re.MULTILINE)
_FILENAME_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


# --- Results -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipientStatus:
    recipient: str  # the failed (or delayed) address, lower-cased
    action: str  # RFC 3464 §2.3.3: failed, delayed, delivered, relayed, expanded
    status: str  # RFC 3463 enhanced status code, e.g. "5.1.1"
    diagnostic: str = ""  # the remote server's words (Diagnostic-Code), e.g. "550 5.1.1 No such user"


@dataclass(frozen=True)
class BounceInfo:
    """What a delivery status notification (RFC 3464) says about a message we sent."""

    original_message_id: str  # without <>; "" when the report does not carry it
    recipient: str  # the first failed recipient (or the first listed, when none failed)
    status: str
    diagnostic: str
    action: str
    recipients: tuple[RecipientStatus, ...] = field(default_factory=tuple)

    @property
    def permanent(self) -> bool:
        """True when the delivery failed for good (action failed, status 5.x.x)."""
        return self.action == "failed" and not self.status.startswith("4")

    def as_dict(self) -> dict[str, Any]:
        return {
            "original_message_id": self.original_message_id,
            "recipient": self.recipient,
            "status": self.status,
            "diagnostic": self.diagnostic,
            "action": self.action,
            "permanent": self.permanent,
            "recipients": [vars(r) for r in self.recipients],
        }


# --- Decoding helpers --------------------------------------------------------------------------------------
def codec_for(charset: str | None) -> str | None:
    """The Python codec name for a MIME charset label, or None when Python knows no such charset."""
    import codecs

    if not charset:
        return None
    label = charset.strip().strip("\"'").strip().lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode text in ``charset``; unknown or lying labels fall back to UTF-8, then replacement characters."""
    codec = codec_for(charset)
    candidates: list[str] = []
    if codec:
        candidates.append(codec)
        candidates.extend(_CHARSET_FALLBACKS.get(codec, ()))
    if "utf-8" not in candidates:
        candidates.append("utf-8")
    for name in candidates:
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    # Nothing decodes cleanly: the declared charset with U+FFFD for the bad bytes (or cp1252, which maps all but
    # five bytes, when there was no usable label).
    return data.decode(codec or "cp1252", errors="replace")


def _to_bytes(value: str) -> bytes:
    # BytesParser keeps undecodable bytes as lone surrogates (surrogateescape); this gives the bytes back.
    return value.encode("utf-8", "surrogateescape")


def _raw_header_text(value: str, fallback_charset: str | None) -> str:
    """An unfolded raw header value with 8-bit bytes decoded (UTF-8 per RFC 6532, else the body's charset)."""
    value = re.sub(r"\r?\n[ \t]", " ", value[:MAX_HEADER_CHARS]).replace("\r", "").replace("\n", " ")
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        raw = _to_bytes(value)
        try:
            # Valid UTF-8 first: legacy 8-bit text (Latin-1, KOI8-R...) almost never is, and a UTF-8 header in a
            # mail whose body declares ISO-8859-1 would otherwise come out as mojibake ("GA.comÃ´").
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value = decode_bytes(raw, fallback_charset or "utf-8")
    return value


def decode_header_value(value: str, *, fallback_charset: str | None = None) -> str:
    """RFC 2047 encoded words decoded, whitespace collapsed; never raises."""
    text = _raw_header_text(value, fallback_charset)
    if "=?" not in text:
        return " ".join(text.split())
    try:
        chunks = decode_header(text)
    except (binascii.Error, ValueError, LookupError, AssertionError, IndexError):
        return " ".join(text.split())
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:
            # email.header.decode_header gives unencoded runs back as raw-unicode-escape bytes
            out.append(chunk.decode("raw-unicode-escape", errors="replace"))
        else:
            out.append(decode_bytes(chunk, charset))
    return " ".join("".join(out).split())


def normalise_message_id(value: str | None) -> str:
    """``" <Abc@Example.com> (comment)"`` -> ``"Abc@Example.com"``; "" when there is none."""
    if not value:
        return ""
    for match in _MSGID_RE.finditer(value):
        cleaned = _MSGID_CFWS_RE.sub("", match.group(1))
        if cleaned:
            return cleaned
    bare = _BARE_MSGID_RE.search(value)
    return bare.group(0) if bare else ""


def message_ids(value: str | None, *, limit: int = 10_000) -> list[str]:
    """Every message id in a References / In-Reply-To value, in order, deduplicated."""
    if not value:
        return []
    found = [c for c in (_MSGID_CFWS_RE.sub("", m) for m in _MSGID_RE.findall(value)) if c]
    found = found or _BARE_MSGID_RE.findall(value)
    unique: list[str] = []
    seen: set[str] = set()
    for item in found:
        if item not in seen:
            seen.add(item)
            unique.append(item)
        if len(unique) >= limit:
            break
    return unique


def sniff_content_type(content: bytes, declared: str) -> str:
    """The content type decided by the content's magic bytes, not by the sender's header.

    Types with a signature (images, PDF, archives, office files, media) must match it; text-like types without
    one are kept when the content is text (no NUL bytes); anything else is application/octet-stream.
    """
    declared = (declared or "application/octet-stream").lower()
    kind = filetype.guess(content[:8192]) if content else None
    if kind is not None:
        sniffed = kind.mime
        # Office Open XML files are ZIPs; filetype tells them apart, but keep the sender's subtype when it is
        # one of the ZIP-based formats and the content is indeed a ZIP.
        if sniffed == "application/zip" and (declared.endswith("+zip") or "openxmlformats" in declared):
            return declared
        return sniffed
    head = content[:8192]
    looks_textual = b"\x00" not in head
    if declared.startswith(("image/", "audio/", "video/", "font/")) and declared != "image/svg+xml":
        return "application/octet-stream"  # claims a media type whose signature is not there
    if declared in _SIGNED_TYPES:
        return "application/octet-stream"
    if looks_textual and (
        declared.startswith(("text/", "message/"))
        or declared in {"application/json", "application/xml", "image/svg+xml", "application/pgp-signature",
                        "application/pgp-encrypted", "application/pgp-keys", "application/ics"}
    ):  # fmt: skip
        return declared
    return "application/octet-stream"


_SIGNED_TYPES = {t.mime for t in filetype.types} - {"application/octet-stream"}


def _parse_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 5322 §3.3: "-0000" means UTC with no information about the local zone
        when = when.replace(tzinfo=UTC)
    return when


def _safe_filename(name: str, index: int, content_type: str) -> str:
    name = _FILENAME_UNSAFE.sub("_", name).strip(" ._")[:200]
    if name:
        return name
    known = filetype.get_type(mime=content_type) if content_type != "application/octet-stream" else None
    ext = known.extension if known else ""
    if not ext and content_type.startswith("text/"):
        ext = "txt"
    if content_type == "message/rfc822":
        ext = "eml"
    return f"attachment-{index}" + (f".{ext}" if ext else "")


# --- The parser --------------------------------------------------------------------------------------------
def _parse_message(raw: bytes) -> tuple[Message, str]:
    try:
        return BytesParser(policy=email_policy.default).parsebytes(raw), "default"
    except RecursionError as exc:
        raise PermanentError(f"MIME structure nested too deeply to parse ({exc})") from exc
    except Exception:
        try:
            return BytesParser(policy=email_policy.compat32).parsebytes(raw), "compat32"
        except RecursionError as exc:
            raise PermanentError(f"MIME structure nested too deeply to parse ({exc})") from exc
        except Exception as exc:
            raise PermanentError(f"not a parseable RFC 5322 message: {exc.__class__.__name__}: {exc}") from exc


_VALID_FIELD_RE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_OBS_FIELD_RE = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_BLOCK_END_RE = re.compile(rb"\r?\n\r?\n")


def repair_header_block(raw: bytes) -> tuple[bytes, list[str]]:
    """Fix what the stdlib parser would misread as the start of the body, with a note for each fix:

    - a leading mbox "From " line (messages exported from mbox files);
    - "Name  : value" (RFC 5322 §4.5 obsolete syntax allows white space before the colon);
    - a junk line between two header fields (dropped when it looks like a broken field, else kept as a
      continuation), so the fields after it are not lost to the body.
    """
    match = _BLOCK_END_RE.search(raw, 0, 1_048_576)
    if match is None:
        return raw, []
    end = match.start()
    lines = raw[:end].split(b"\n")
    notes: list[str] = []
    if lines and lines[0].startswith(b"From ") and not _OBS_FIELD_RE.match(lines[0]):
        lines = lines[1:]
        notes.append("leading mbox 'From ' line removed")
    if not lines or not (_VALID_FIELD_RE.match(lines[0]) or _OBS_FIELD_RE.match(lines[0])):
        return (raw if not notes else b"\n".join(lines) + raw[end:]), notes
    last_field = max(i for i, line in enumerate(lines) if _VALID_FIELD_RE.match(line) or _OBS_FIELD_RE.match(line))
    out: list[bytes] = []
    for i, line in enumerate(lines):
        if _VALID_FIELD_RE.match(line) or line[:1] in {b" ", b"\t"} or i > last_field:
            out.append(line)
        elif obs := _OBS_FIELD_RE.match(line):
            out.append(obs.group(1) + b":" + line[obs.end() :])
            notes.append(f"white space before the colon of {obs.group(1).decode('ascii', 'replace')!r} removed")
        elif b":" in line:
            notes.append(f"malformed header line dropped: {line[:80].decode('utf-8', 'replace')!r}")
        else:
            out.append(b" " + line)
            notes.append("stray header line joined to the previous field")
    if not notes:
        return raw, notes
    return b"\n".join(out) + raw[end:], notes[:20]


_NON_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/=\r\n]")
_ELIDED_RE = re.compile(r"!SB-ELIDED-(\d+)!")
_KEEP = 4096  # bytes kept at both ends of an elided run, so the part's structure stays intact


def elide_large_runs(raw: bytes, min_run: int) -> tuple[bytes, dict[int, int]]:
    """Cut the middle out of base64 runs longer than ``min_run`` bytes before the stdlib parser sees them.

    Such a run is an attachment over the size limits: it will be dropped, so there is no point in letting the
    parser split it into a million line objects (a 68 MB message cost over 500 MB of memory that way). The cut
    is marked with ``!SB-ELIDED-<n>!`` ("!" is not base64) and its length is remembered, so the attachment is
    still listed in metadata["dropped_attachments"] with its real size.
    """
    if len(raw) <= min_run:
        return raw, {}
    pieces: list[bytes] = []
    elided: dict[int, int] = {}
    last = 0
    run_start = 0

    def cut(start: int, end: int) -> None:
        nonlocal last
        head = raw.find(b"\n", start + _KEEP, end)
        tail = raw.rfind(b"\n", start, end - _KEEP)
        if 0 <= head < tail:
            pieces.append(raw[last : head + 1])
            pieces.append(b"!SB-ELIDED-%d!\n" % len(elided))
            elided[len(elided)] = tail + 1 - (head + 1)
            last = tail + 1

    for match in _NON_BASE64_RE.finditer(raw):
        if match.start() - run_start > min_run:
            cut(run_start, match.start())
        run_start = match.end()
    if len(raw) - run_start > min_run:
        cut(run_start, len(raw))
    if not elided:
        return raw, {}
    pieces.append(raw[last:])
    return b"".join(pieces), elided


def _header_block_field_count(raw: bytes) -> int:
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\r\n\r\n")) if i >= 0]
    block = raw[: min(ends)] if ends else raw
    return len(_HEADER_LINE_RE.findall(block))


class _Headers:
    """Header access that never raises: raw values (as stored), decoded on demand."""

    def __init__(self, msg: Message, fallback_charset: str | None) -> None:
        self.msg = msg
        self.fallback_charset = fallback_charset
        self.raw: dict[str, list[str]] = {}
        for name, value in _raw_items(msg):
            self.raw.setdefault(str(name).strip().lower(), []).append(str(value))

    def first_raw(self, name: str) -> str:
        values = self.raw.get(name.lower())
        return values[0] if values else ""

    def text(self, name: str) -> str:
        value = self.first_raw(name)
        return decode_header_value(value, fallback_charset=self.fallback_charset) if value else ""

    def pairs(self) -> list[tuple[str, str]]:
        return [(n, _raw_header_text(v, self.fallback_charset)) for n, vs in self.raw.items() for v in vs]

    def addresses(self, name: str) -> list[tuple[str, str]]:
        """(display name, lower-cased address) for every valid address in every ``name`` header."""
        found: list[tuple[str, str]] = []
        for value in self.raw.get(name.lower(), []):
            found.extend(self._addresses_of(name, value))
        unique: list[tuple[str, str]] = []
        seen: set[str] = set()
        for display, address in found:
            if address not in seen:
                seen.add(address)
                unique.append((display, address))
        return unique

    def _addresses_of(self, name: str, value: str) -> list[tuple[str, str]]:
        result: list[tuple[str, str]] = []
        # policy.default understands groups, comments and quoted local parts; its parser is costly on
        # pathological input, so only short values go through it.
        if len(value) <= 4_096 and isinstance(self.msg.policy, email_policy.EmailPolicy):
            try:
                header = self.msg.policy.header_factory(name, value)
                for addr in getattr(header, "addresses", ()):
                    spec = _raw_header_text(str(addr.addr_spec), "utf-8").strip()
                    display = str(addr.display_name or "")
                    if _valid_address(spec):
                        if any("\udc80" <= ch <= "\udcff" for ch in display) or "=?" in display:
                            display = decode_header_value(display, fallback_charset=self.fallback_charset)
                        result.append((display.strip(), spec.lower()))
            except Exception:
                result = []
        if not result:
            unfolded = re.sub(r"\r?\n[ \t]", " ", value[:MAX_HEADER_CHARS])
            for display, spec in getaddresses([unfolded]):
                spec = _raw_header_text(spec, self.fallback_charset).strip()
                if _valid_address(spec):
                    name_text = decode_header_value(display, fallback_charset=self.fallback_charset)
                    result.append((name_text.strip(), spec.lower()))
        if not result:
            # Last resort for "Big Bug bb@bug.com" (no angle brackets) or obsolete comments inside the address
            # ("<jdoe@machine(comment).  example>", RFC 5322 §4.4): the first address-shaped token.
            text = decode_header_value(value, fallback_charset=self.fallback_charset)
            bracketed = re.search(r"<([^<>]{3,320})>", text)
            candidate = _MSGID_CFWS_RE.sub("", bracketed.group(1)) if bracketed else ""
            if not _valid_address(candidate):
                loose = _LOOSE_ADDRESS_RE.search(text)
                candidate = loose.group(0) if loose else ""
            if _valid_address(candidate):
                display = text.split("<", 1)[0] if bracketed else text.replace(candidate, "")
                display = _MSGID_CFWS_RE.sub(" ", display).strip(" \"',")
                result.append((" ".join(display.split()), candidate.lower()))
        return result


def _valid_address(spec: str) -> bool:
    if not spec or spec.count("@") < 1 or len(spec) > 320:
        return False
    local, _, domain = spec.rpartition("@")
    return bool(local) and bool(domain) and not any(c.isspace() or c in "<>,;" or ord(c) < 32 for c in spec)


@dataclass
class _Walk:
    max_attachment_bytes: int
    max_total_bytes: int
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[InboundAttachment] = field(default_factory=list)
    attachment_info: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    attached_messages: list[Message] = field(default_factory=list)
    kept_bytes: int = 0
    parts: int = 0
    elided: dict[int, int] = field(default_factory=dict)


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except Exception:
        return None
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value) under compat32
        from email.utils import collapse_rfc2231_value

        return collapse_rfc2231_value(value)
    return str(value) if value is not None else None


def _disposition(part: Message) -> str:
    value = str(part.get("Content-Disposition", "") or "")
    return value.split(";", 1)[0].strip().lower()


def _filename(part: Message, fallback_charset: str | None) -> str:
    name: str | None = None
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        name = _param(part, "name")
    # "filename=This is a test.txt" (unquoted, with spaces: invalid, common): the parser stops at the space.
    for header in ("Content-Disposition", "Content-Type"):
        raw_value = " ".join(_raw_header(part, header).split())
        loose = re.search(r"\b(?:file)?name\s*=\s*([^\s\";][^;\"]*)", raw_value, re.IGNORECASE)
        if loose and name and loose.group(1).strip().startswith(str(name)) and len(loose.group(1).strip()) > len(name):
            name = loose.group(1).strip()
            break
    if not name:
        return ""
    name = str(name)
    if "=?" in name or any("\udc80" <= ch <= "\udcff" for ch in name):
        name = decode_header_value(name, fallback_charset=fallback_charset)
    return name


def _transfer_encoding(part: Message) -> str:
    value = str(part.get("Content-Transfer-Encoding", "") or "")
    return value.split(";", 1)[0].strip().strip("\"'").lower()


def _estimated_size(part: Message, elided: dict[int, int]) -> tuple[int, bool]:
    """(decoded size estimate, whether a run of it was elided) from the stored, still encoded payload
    (get_payload() would decode a large 8-bit body just to measure it)."""
    payload = getattr(part, "_payload", None)
    length = len(payload) if isinstance(payload, str | bytes) else 0
    was_elided = False
    if isinstance(payload, str) and "!SB-ELIDED-" in payload:
        for match in _ELIDED_RE.finditer(payload):
            length += elided.get(int(match.group(1)), 0)
            was_elided = True
    return (length * 3 // 4 if _transfer_encoding(part) == "base64" else length), was_elided


def _payload_bytes(part: Message) -> bytes:
    """The decoded body of a leaf part; lenient with misspelled transfer encodings ("quoted-printable;")."""
    # get_payload(decode=True) gives the original bytes back for encodings Python does not decode (7bit, 8bit,
    # binary, junk); get_payload() would already have decoded 8-bit text with the declared charset.
    decoded = part.get_payload(decode=True)
    data = decoded if isinstance(decoded, bytes) else b""
    python_cte = str(part.get("Content-Transfer-Encoding", "") or "").strip().lower()
    if python_cte in {"base64", "quoted-printable", "x-uuencode", "uuencode", "uue", "x-uue"}:
        return data
    cte = _transfer_encoding(part)
    if cte == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except binascii.Error:
            return data
    if cte in {"quoted-printable", "quoted_printable", "qp"}:
        return quopri.decodestring(data)
    return data


_BOUNDARY_RE = re.compile(r'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE)


def _recover_multipart(part: Message, ctype: str) -> Message | None:
    """Re-read a multipart whose boundary the parser missed, e.g. ``boundary=----=_Part_1`` left unquoted
    although "=" must be quoted (RFC 2045 §5.1 tspecials)."""
    raw_ct = _raw_header(part, "Content-Type")
    match = _BOUNDARY_RE.search(raw_ct)
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or match is None:
        return None
    boundary = (match.group(1) or match.group(2)).strip()
    if f"--{boundary}".encode("utf-8", "surrogateescape") not in payload:
        return None
    head = f'Content-Type: {ctype}; boundary="{boundary}"\r\n\r\n'.encode("utf-8", "surrogateescape")
    try:
        recovered = BytesParser(policy=email_policy.default).parsebytes(head + payload)
    except Exception:
        return None
    return recovered if isinstance(recovered.get_payload(), list) else None


def _raw_items(msg: Message) -> list[tuple[str, Any]]:
    raw_items = getattr(msg, "raw_items", None)
    return list(raw_items()) if callable(raw_items) else list(msg._headers)  # type: ignore[attr-defined]


def _raw_header(part: Message, name: str) -> str:
    lowered = name.lower()
    return next((str(v) for k, v in _raw_items(part) if str(k).lower() == lowered), "")


def _walk(root: Message, state: _Walk, *, fallback_charset: str | None) -> None:
    # Iterative, depth-first, in document order: a deep or huge tree costs bounded stack and time.
    stack: list[tuple[Message, int, str, bool]] = [(root, 0, "", False)]
    while stack:
        part, depth, parent, reparsed = stack.pop()
        state.parts += 1
        if state.parts > MAX_PARTS:
            state.notes.append(f"more than {MAX_PARTS} MIME parts: the rest were ignored")
            return
        ctype = _content_type(part)
        language = str(part.get("Content-Language", "") or "")
        if language and part is not root:
            state.languages.extend(t.strip() for t in language.split(",") if t.strip())
        payload = part.get_payload() if part.is_multipart() else None
        if ctype.startswith("multipart/") and isinstance(payload, list):
            if depth >= MAX_DEPTH:
                state.notes.append(f"MIME parts nested deeper than {MAX_DEPTH} levels were ignored")
                continue
            stack.extend((child, depth + 1, ctype, False) for child in reversed(payload) if isinstance(child, Message))
            continue
        if ctype.startswith("multipart/") and not reparsed and (recovered := _recover_multipart(part, ctype)):
            state.notes.append("multipart boundary recovered from an unquoted Content-Type parameter")
            stack.append((recovered, depth, parent, True))
            continue
        if ctype == "message/rfc822" and isinstance(payload, list):
            inner = payload[0] if payload and isinstance(payload[0], Message) else None
            if inner is not None:
                state.attached_messages.append(inner)
                _attach_message(part, inner, state, fallback_charset)
            continue
        disposition = _disposition(part)
        filename = _filename(part, fallback_charset)
        is_body_text = ctype in {"text/plain", "text/html"} and disposition != "attachment" and not filename
        # A multipart whose boundary is missing arrives as one text payload: read it as text rather than lose it.
        if ctype.startswith("multipart/") and not isinstance(payload, list):
            is_body_text, ctype = True, "text/plain"
            state.notes.append("multipart without a usable boundary read as text")
        if is_body_text:
            charset = _param(part, "charset") or fallback_charset
            text = decode_bytes(_payload_bytes(part), charset)
            (state.html if ctype == "text/html" else state.plain).append(text)
            continue
        _attach_leaf(part, ctype, disposition, filename, parent, state)


def _keep(state: _Walk, filename: str, declared: str, size: int, content: bytes | None, **info: Any) -> None:
    reason = ""
    if size > state.max_attachment_bytes:
        reason = f"larger than the {state.max_attachment_bytes} bytes limit for one attachment"
    elif state.kept_bytes + size > state.max_total_bytes:
        reason = f"over the {state.max_total_bytes} bytes limit for all attachments of a message"
    if reason or content is None:
        state.dropped.append(
            {"filename": filename, "content_type": declared, "size": size, "reason": reason or "unreadable"}
        )
        return
    sniffed = sniff_content_type(content, declared)
    name = _safe_filename(filename, len(state.attachments) + 1, sniffed)
    state.kept_bytes += len(content)
    state.attachments.append(InboundAttachment(filename=name, content_type=sniffed, content=content))
    state.attachment_info.append(
        {"filename": name, "content_type": sniffed, "declared_type": declared, "size": len(content), **info}
    )


def _attach_leaf(part: Message, ctype: str, disposition: str, filename: str, parent: str, state: _Walk) -> None:
    content_id = normalise_message_id(str(part.get("Content-ID", "") or ""))
    inline = disposition == "inline" or (parent == "multipart/related" and bool(content_id))
    estimate, was_elided = _estimated_size(part, state.elided)
    # Decide on the encoded size first: a 50 MB attachment is never decoded just to be dropped.
    if was_elided or estimate > state.max_attachment_bytes or state.kept_bytes + estimate > state.max_total_bytes:
        _keep(state, filename, ctype, estimate, None, content_id=content_id, inline=inline)
        return
    content = _payload_bytes(part)
    _keep(state, filename, ctype, len(content), content, content_id=content_id, inline=inline)


def _attach_message(part: Message, inner: Message, state: _Walk, fallback_charset: str | None) -> None:
    try:
        content = inner.as_bytes()
    except Exception:
        try:
            content = inner.as_bytes(policy=email_policy.compat32)
        except Exception:
            content = b""
    subject = decode_header_value(str(inner.get("Subject", "") or ""), fallback_charset=fallback_charset)
    filename = _filename(part, fallback_charset) or (subject[:100] + ".eml" if subject else "message.eml")
    _keep(state, filename, "message/rfc822", len(content), content or None, content_id="", inline=False)


def _forwarded_text(inner: Message, state: _Walk, fallback_charset: str | None) -> str:
    sub = _Walk(max_attachment_bytes=0, max_total_bytes=0)
    sub.parts = state.parts
    _walk(inner, sub, fallback_charset=fallback_charset)
    state.parts = sub.parts
    body = "\n\n".join(t for t in sub.plain if t.strip()) or html_to_text("\n".join(sub.html))
    headers = _Headers(inner, fallback_charset)
    intro = [
        "---------- Forwarded message ----------",
        f"From: {headers.text('From')}",
        f"Date: {headers.text('Date')}",
        f"Subject: {headers.text('Subject')}",
        "",
    ]
    return "\n".join(intro) + body if body.strip() else ""


def parse_email(
    raw: bytes,
    *,
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    our_addresses: Iterable[str] = (),
) -> InboundMessage:
    """Parse one message. Raises :class:`PermanentError` (with the reason) for input that is not a message or is
    beyond the limits; never another exception type for bad input."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise PermanentError(f"raw message must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw.strip():
        raise PermanentError("empty message")
    if len(raw) > max_message_bytes:
        raise PermanentError(f"message is {len(raw)} bytes, over the {max_message_bytes} bytes limit")
    count = _header_block_field_count(raw)
    if count > MAX_HEADER_FIELDS:
        raise PermanentError(f"message has {count} header fields (limit {MAX_HEADER_FIELDS}): refusing to parse")

    repaired, repairs = repair_header_block(raw)
    # A run this long decodes to more than either limit allows (base64 is 4/3 of the data, plus line ends).
    slimmed, elided = elide_large_runs(repaired, min(max_attachment_bytes, max_total_bytes) * 3 // 2 + _KEEP * 2)
    msg, parsed_with = _parse_message(slimmed)
    del slimmed, repaired
    root_charset = _param(msg, "charset")
    headers = _Headers(msg, codec_for(root_charset) and root_charset)
    if not headers.raw:
        raise PermanentError("no header fields: not an RFC 5322 message")

    state = _Walk(max_attachment_bytes=max_attachment_bytes, max_total_bytes=max_total_bytes, elided=elided)
    state.notes.extend(repairs)
    try:
        _walk(msg, state, fallback_charset=root_charset)
    except RecursionError as exc:
        raise PermanentError("MIME structure nested too deeply") from exc

    plain = "\n\n".join(t for t in state.plain if t.strip())
    html = "\n".join(t for t in state.html if t.strip())
    full_text = plain or (html_to_text(html) if html else "")
    full_text = full_text.replace("\r\n", "\n").replace("\r", "\n")
    if len(full_text) > MAX_BODY_CHARS:
        state.notes.append(f"text cut at {MAX_BODY_CHARS} characters")
        full_text = full_text[:MAX_BODY_CHARS]
    split = split_reply(full_text)
    if not full_text.strip() and state.attached_messages:
        # Forwarded as an attachment with no words of its own: the agent reads the forwarded message.
        full_text = _forwarded_text(state.attached_messages[0], state, root_charset)
        split = SplitText(new=full_text.strip(), quoted="", signature="")

    # Sender: From, else Sender / Reply-To / Return-Path (RFC 5322 §3.6.2).
    from_list = headers.addresses("From")
    candidates = from_list or headers.addresses("Sender") or headers.addresses("Reply-To")
    if not candidates:
        path = normalise_message_id(headers.first_raw("Return-Path"))
        candidates = [("", path.lower())] if _valid_address(path) else []
    if not candidates:
        raise PermanentError("no sender address in From, Sender, Reply-To or Return-Path")
    display_name, address = candidates[0]

    own_id = normalise_message_id(headers.first_raw("Message-ID"))
    synthetic = not own_id
    if synthetic:
        # Stable across re-fetches (UIDVALIDITY change, a second mailbox): a hash of the bytes, line ends normalised.
        digest = hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()[:40]
        own_id = f"{digest}@{SYNTHETIC_DOMAIN}"
    references_all = message_ids(headers.first_raw("References")[:65_536])
    references = references_all[:1] + references_all[1:][-(MAX_REFERENCES - 1) :] if references_all else []
    in_reply_to_ids = message_ids(headers.first_raw("In-Reply-To"), limit=5)
    in_reply_to = in_reply_to_ids[0] if in_reply_to_ids else ""
    thread_key = references[0] if references else (in_reply_to or own_id)

    subject = headers.text("Subject")
    date_text = headers.text("Date")
    languages = [t.strip() for t in headers.text("Content-Language").split(",") if t.strip()]
    languages += [t for t in state.languages if t not in languages]

    automatic = is_automatic(headers.pairs(), our_addresses=our_addresses)
    to = [a for _, a in headers.addresses("To")]
    cc = [a for _, a in headers.addresses("Cc")]
    delivered = [a for n in ("Delivered-To", "X-Original-To", "Envelope-To") for _, a in headers.addresses(n)]
    token_sources = [in_reply_to, *references_all, *to, *cc, *delivered]
    tokens = find_tokens(token_sources)
    return_path_raw = headers.first_raw("Return-Path")
    return_path: str | None = None
    if return_path_raw:
        return_path = normalise_message_id(return_path_raw).lower() if "@" in return_path_raw else ""
    list_id = headers.text("List-Id") or None

    hasher = hashlib.sha256(normalise_text(full_text).encode("utf-8", "surrogatepass"))
    for attachment in state.attachments:
        hasher.update(b"\0" + hashlib.sha256(attachment.content).digest())

    bounce = _bounce_of(msg)
    defects = [type(d).__name__ for d in getattr(msg, "defects", [])][:20]
    metadata: dict[str, Any] = {
        "message_id": own_id,
        "synthetic_id": synthetic,
        "in_reply_to": in_reply_to,
        "references": references,
        "from": address,
        "to": to,
        "cc": cc,
        "reply_to": [a for _, a in headers.addresses("Reply-To")],
        "delivered_to": delivered,
        "date": date_text,
        "auto_submitted": automatic is not None,
        "auto_reason": automatic,
        "list_id": list_id,
        "return_path": return_path,
        "content_hash": hasher.hexdigest(),
        "reply_tokens": tokens,
        "quoted": split.quoted,
        "signature": split.signature,
        "attachments": state.attachment_info,
        "dropped_attachments": state.dropped,
        "notes": state.notes,
        "defects": defects,
        "parsed_with": parsed_with,
        "bounce": bounce.as_dict() if bounce else None,
    }
    return InboundMessage(
        external_id=own_id,
        sender=Sender(handle=address, display_name=display_name, email=address),
        text=split.new,
        html=html,
        subject=subject,
        sent_at=_parse_date(date_text) if date_text else None,
        language_hints=tuple(languages[:5]),
        thread_key=thread_key,
        reply_token=tokens[0] if tokens else "",
        attachments=tuple(state.attachments),
        metadata=metadata,
    )


# --- Delivery status notifications (RFC 3464 / RFC 6522) ---------------------------------------------------
def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status part: per-message first, then one per recipient."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                blocks.append({str(k).lower(): " ".join(str(v).split()) for k, v in block.items()})
        return blocks
    text = decode_bytes(_payload_bytes(part), "utf-8")
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in chunk.splitlines():
            if line[:1] in {" ", "\t"} and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                name, _, value = line.partition(":")
                last = name.strip().lower()
                fields[last] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _typed_address(value: str) -> str:
    # RFC 3464 §2.3.2: "Final-Recipient: rfc822; user@example.com"
    address = value.split(";", 1)[1] if ";" in value else value
    return address.strip().strip("<>").lower()


def _bounce_of(msg: Message) -> BounceInfo | None:
    if _content_type(msg) != "multipart/report":
        return None
    status_part: Message | None = None
    original_id = ""
    for part in msg.walk():
        ctype = _content_type(part)
        if ctype in {"message/delivery-status", "message/global-delivery-status"} and status_part is None:
            status_part = part
        elif ctype in {"message/rfc822", "message/global"} and not original_id:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                original_id = normalise_message_id(str(inner[0].get("Message-ID", "") or ""))
        elif ctype in {"text/rfc822-headers", "message/global-headers"} and not original_id:
            headers_text = decode_bytes(_payload_bytes(part), "utf-8")
            match = re.search(r"(?im)^message-id:\s*(.+(?:\r?\n[ \t].+)*)", headers_text)
            if match:
                original_id = normalise_message_id(match.group(1))
    if status_part is None:
        return None
    recipients: list[RecipientStatus] = []
    for block in _field_blocks(status_part):
        recipient = block.get("final-recipient") or block.get("original-recipient")
        if not recipient:
            continue
        diagnostic = block.get("diagnostic-code", "")
        diagnostic = diagnostic.split(";", 1)[1].strip() if ";" in diagnostic else diagnostic
        recipients.append(
            RecipientStatus(
                recipient=_typed_address(recipient),
                action=block.get("action", "").strip().lower(),
                status=block.get("status", "").split()[0] if block.get("status", "").split() else "",
                diagnostic=diagnostic,
            )
        )
    if not recipients:
        return None
    if not original_id:  # some MTAs only thread the report to the original
        original_id = normalise_message_id(str(msg.get("In-Reply-To", "") or ""))
    first = next((r for r in recipients if r.action == "failed"), recipients[0])
    return BounceInfo(
        original_message_id=original_id,
        recipient=first.recipient,
        status=first.status,
        diagnostic=first.diagnostic,
        action=first.action,
        recipients=tuple(recipients),
    )


def parse_bounce(raw: bytes) -> BounceInfo | None:
    """The failed delivery a multipart/report; report-type=delivery-status message describes, else None.

    Raises :class:`PermanentError` only for bytes that are not a message at all.
    """
    if not raw or not raw.strip():
        raise PermanentError("empty message")
    if _header_block_field_count(raw) > MAX_HEADER_FIELDS:
        raise PermanentError("too many header fields")
    msg, _ = _parse_message(bytes(raw))
    try:
        return _bounce_of(msg)
    except RecursionError as exc:
        raise PermanentError("MIME structure nested too deeply") from exc
