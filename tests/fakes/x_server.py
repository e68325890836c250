"""A fake X (Twitter) API server on loopback: the real client (tweepy) talks to it over HTTP.

It implements what the X connector relies on, with the shapes of the real API (https://docs.x.com/x-api and the
recordings in ../shared/data/twitter/tweepy/decoded_responses):

- one HTTP server for every X host: the client's transport adapter sends https://api.twitter.com/... (and api.x.com,
  upload.twitter.com, ton.twitter.com, pbs.twimg.com, video.twimg.com) to ``server.url`` + path and names the original
  host in ``X-Forwarded-Host`` (when absent, the host is guessed from the path);
- OAuth 1.0a user context: HMAC-SHA1 verified with oauthlib against the ORIGINAL https URL (form-encoded bodies are in
  the signature base string, JSON and multipart bodies are not, as requests-oauthlib signs), the consumer key, the
  access token, the timestamp window and nonce replay; OAuth 2.0 app-only bearer; per endpoint as on X (401
  "Unauthorized", 403 "Unsupported Authentication");
- GET /2/users/me, /2/users/:id, /2/users?ids=, /2/users/by/username/:username; GET /2/users/:id/mentions; GET
  /2/tweets/:id, /2/tweets?ids=; POST /2/tweets (280 weighted characters as twitter-text v3 counts them: URLs 23, CJK
  and emoji 2; duplicate content; replies to unknown tweets; media ids and their category); DELETE /2/tweets/:id;
- GET /2/dm_events, /2/dm_conversations/with/:id/dm_events, /2/dm_conversations/:id/dm_events; POST
  /2/dm_conversations/with/:id/messages and /2/dm_conversations/:id/messages (a sent DM becomes a dm_event, sender =
  us; users who do not accept DMs answer 403);
- fields, expansions and includes as X serves them (defaults, only what the page references, missing references as
  "errors"), opaque next_token / previous_token pagination, since_id / until_id / start_time / end_time, max_results
  ranges, newest first; unknown parameters, field names and malformed bodies answer 400 "Invalid Request";
- POST /1.1/media/upload.json: simple multipart (``media`` or ``media_data``) and chunked INIT / APPEND / FINALIZE
  (and GET STATUS) as tweepy.API.media_upload sends them, with media categories and size limits; uploads become
  attachable media;
- media downloads at the URLs the served media objects name, with Content-Type and Content-Length (DM media on
  ton.twitter.com / dm_video need OAuth 1.0a; pbs.twimg.com and video.twimg.com tweet media do not);
- Account Activity API v2: POST / GET / PUT / DELETE /2/webhooks (POST and PUT run a real CRC GET to the URL with the
  consumer secret), subscriptions (POST / GET .../subscriptions/all, GET .../subscriptions/all/list, DELETE
  .../subscriptions/:user_id/all); helpers build v1.1 activity payloads, sign them and post them to a webhook URL;
- x-rate-limit-limit / -remaining / -reset on every API response, per endpoint (method + path template) and token,
  generous by default (``set_rate_limit`` narrows one); injectable faults: ``fail_next`` (a 429 then holds until the
  reset, as on X; 5xx; 403 ...), ``slow_next`` (the call takes effect, the answer comes late), overlapping pages.

Every request is recorded (method, path, query, headers, body, host, status, and ``at``: ``time.time()`` once its
request was read, which bench/outbound.py times sends by). Use it as a context manager::

    with XServer() as server:
        connector = XConnector(settings={"api_base": server.url}, secrets=server.credentials())
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
import re
import secrets
import string
import struct
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint
from oauthlib.oauth1.rfc5849.utils import parse_authorization_header

from tests.fakes.telegram_server import image_size, parse_multipart

SHARED_X = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "twitter" / "tweepy"
RECORDINGS = SHARED_X / "decoded_responses"
RECORDED_MENTIONS = RECORDINGS / "dm_and_mentions" / "test_client_get_users_mentions.json"
RECORDED_DMS = RECORDINGS / "dm_and_mentions" / "test_manage_and_lookup_direct_messages.json"

FORWARDED_HOST = "X-Forwarded-Host"
SIGNATURE_HEADER = "x-twitter-webhooks-signature"
X_HOSTS = ("api.twitter.com", "api.x.com", "upload.twitter.com", "ton.twitter.com", "pbs.twimg.com", "video.twimg.com")

TWITTER_EPOCH_MS = 1288834974657  # snowflake ids: (milliseconds since this) << 22
MAX_TWEET_LENGTH = 280  # weighted, https://github.com/twitter/twitter-text (config v3)
URL_LENGTH = 23  # every URL counts as a t.co link
MAX_DM_LENGTH = 10_000
DEFAULT_LIMIT = 10_000
DEFAULT_WINDOW = 900.0
APP_ID = "3033300"
APP = {"id": APP_ID, "name": "Switchboard", "url": "https://example.invalid/switchboard"}
ACCESS_LEVEL = "read-write-directmessages"
CDN_PREFIXES = ("/media/", "/ext_tw_video", "/tweet_video", "/dm_video", "/dm_gif", "/1.1/ton/")

PROBLEM_INVALID = "https://api.twitter.com/2/problems/invalid-request"
PROBLEM_NOT_FOUND = "https://api.twitter.com/2/problems/resource-not-found"
PROBLEM_UNSUPPORTED_AUTH = "https://api.twitter.com/2/problems/unsupported-authentication"
INVALID_DETAIL = "One or more parameters to your request was invalid."
TOO_LONG = (
    "Your Tweet text is too long. For more information on how Twitter determines text length see "
    "https://github.com/twitter/twitter-text."
)
DUPLICATE = "You are not allowed to create a Tweet with duplicate content."
REPLY_UNKNOWN = "You attempted to reply to a Tweet that is deleted or not visible to you."
DM_NOT_PERMITTED = "You are not permitted to send a message to this user."
TITLES = {
    400: "Invalid Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found Error",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
V1_CODES = {401: (32, "Could not authenticate you."), 429: (88, "Rate limit exceeded"), 500: (131, "Internal error")}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# https://docs.x.com/x-api/fundamentals/fields
TWEET_FIELDS = _words(
    "article attachments author_id card_uri community_id context_annotations conversation_id created_at "
    "display_text_range edit_controls edit_history_tweet_ids entities geo id in_reply_to_user_id lang media_metadata "
    "non_public_metrics note_tweet organic_metrics possibly_sensitive promoted_metrics public_metrics "
    "referenced_tweets reply_settings scopes source text withheld"
)
USER_FIELDS = _words(
    "affiliation connection_status created_at description entities id location most_recent_tweet_id name "
    "pinned_tweet_id profile_banner_url profile_image_url protected public_metrics receives_your_dm subscription_type "
    "url username verified verified_type withheld"
)
MEDIA_FIELDS = _words(
    "alt_text duration_ms height media_key non_public_metrics organic_metrics preview_image_url promoted_metrics "
    "public_metrics type url variants width"
)
DM_EVENT_FIELDS = _words(
    "attachments created_at dm_conversation_id entities event_type id participant_ids referenced_tweets sender_id text"
)
PLACE_FIELDS = _words("contained_within country country_code full_name geo id name place_type")
POLL_FIELDS = _words("duration_minutes end_datetime id options voting_status")
FIELD_SETS = {
    "tweet.fields": TWEET_FIELDS,
    "user.fields": USER_FIELDS,
    "media.fields": MEDIA_FIELDS,
    "dm_event.fields": DM_EVENT_FIELDS,
    "place.fields": PLACE_FIELDS,
    "poll.fields": POLL_FIELDS,
}
TWEET_EXPANSIONS = _words(
    "attachments.media_keys attachments.poll_ids author_id edit_history_tweet_ids entities.mentions.username "
    "geo.place_id in_reply_to_user_id referenced_tweets.id referenced_tweets.id.author_id"
)
DM_EXPANSIONS = _words("attachments.media_keys participant_ids referenced_tweets.id sender_id")
USER_EXPANSIONS = _words("pinned_tweet_id most_recent_tweet_id affiliation.user_id")
DM_EVENT_TYPES = frozenset({"MessageCreate", "ParticipantsJoin", "ParticipantsLeave"})
# The field an expansion needs in the primary object (X adds it even when not asked for in *.fields).
EXPANSION_FIELD = {
    "author_id": "author_id",
    "in_reply_to_user_id": "in_reply_to_user_id",
    "referenced_tweets.id": "referenced_tweets",
    "referenced_tweets.id.author_id": "referenced_tweets",
    "attachments.media_keys": "attachments",
    "entities.mentions.username": "entities",
    "sender_id": "sender_id",
    "participant_ids": "participant_ids",
    "pinned_tweet_id": "pinned_tweet_id",
}
DEFAULT_FIELDS = {
    "tweet": ("id", "text", "edit_history_tweet_ids"),
    "user": ("id", "name", "username"),
    "media": ("media_key", "type"),
    "dm": ("id", "event_type", "text"),
}
TWEET_QUERY = frozenset({"expansions", "tweet.fields", "user.fields", "media.fields", "place.fields", "poll.fields"})
TIMELINE_QUERY = TWEET_QUERY | {"since_id", "until_id", "max_results", "pagination_token", "start_time", "end_time"}
DM_QUERY = frozenset(
    {"dm_event.fields", "event_types", "expansions", "max_results", "pagination_token", "media.fields", "tweet.fields"}
    | {"user.fields"}
)
USER_QUERY = frozenset({"expansions", "tweet.fields", "user.fields"})
TWEET_BODY_KEYS = _words(
    "text reply media quote_tweet_id reply_settings for_super_followers_only direct_message_deep_link geo poll "
    "nullcast card_uri community_id share_with_followers made_with_ai paid_partnership edit_options"
)

MEDIA_CATEGORIES = _words("tweet_image tweet_gif tweet_video amplify_video dm_image dm_gif dm_video subtitles")
MEDIA_TYPES = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}
# https://docs.x.com/x-api/media/quickstart/media-upload-chunked : size limits per kind
MAX_IMAGE = 5 * 1024 * 1024
MAX_GIF = 15 * 1024 * 1024
MAX_VIDEO = 512 * 1024 * 1024
MAX_SEGMENT = 5 * 1024 * 1024

# twitter-text v3: code points in these ranges weigh 100, everything else 200; scale 100.
_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
_TLDS = (
    "com|net|org|io|co|me|ly|app|dev|info|biz|edu|gov|tv|us|uk|de|fr|jp|ru|it|nl|es|br|au|in|ch|se|no|pl|ca|eu|"
    "xyz|ai|gg|so|to|be|at|dk|fi|ie|nz|cz|pt|gr|kr|cn|tw|hk|sg|mx|ar|cl|za"
)
_URL_RE = re.compile(
    r"https?://[^\s<>\"]+"
    rf"|(?<![\w@.\-/:])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:{_TLDS})(?![\w-])(?::\d+)?(?:/[^\s<>\"]*)?",
    re.IGNORECASE,
)
_MENTION_RE = re.compile(r"(?<![\w@])@(\w{1,15})")
_HASHTAG_RE = re.compile(r"(?<![\w#&])#(\w*[^\W\d_]\w*)")
_STATUS_URL_RE = re.compile(r"https?://(?:www\.|mobile\.)?(?:twitter|x)\.com/\w+/status(?:es)?/(\d+)", re.I)
_TRAILING_PUNCTUATION = ".,:;!?)'\"]"
_ALPHANUMERIC = string.ascii_letters + string.digits
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# --- small pure helpers ---------------------------------------------------------------------------------------------
def snowflake(at: datetime | float) -> int:
    """The smallest snowflake id of the millisecond ``at`` (ids carry their creation time, as X's do)."""
    seconds = at.timestamp() if isinstance(at, datetime) else at
    return max(1, (int(seconds * 1000) - TWITTER_EPOCH_MS)) << 22


def snowflake_time(value: str | int) -> datetime:
    return datetime.fromtimestamp(((int(value) >> 22) + TWITTER_EPOCH_MS) / 1000, tz=UTC)


def iso(at: datetime) -> str:
    """X v2 timestamps: 2026-11-21T10:00:00.000Z."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def v1_time(at: datetime) -> str:
    """X v1.1 timestamps: Wed Oct 10 20:19:24 +0000 2018."""
    at = at.astimezone(UTC)
    return f"{_DAYS[at.weekday()]} {_MONTHS[at.month - 1]} {at:%d %H:%M:%S} +0000 {at.year}"


def parse_v1_time(value: str) -> datetime:
    return datetime.strptime(value, "%a %b %d %H:%M:%S %z %Y").astimezone(UTC)


def url_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the URLs twitter-text would find (scheme URLs and bare domains), trailing punctuation cut."""
    spans = []
    for match in _URL_RE.finditer(text):
        start, end = match.span()
        while end > start and text[end - 1] in _TRAILING_PUNCTUATION:
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def _is_emoji(cp: int) -> bool:
    return 0x1F000 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF or 0x2B00 <= cp <= 0x2BFF or 0x2190 <= cp <= 0x21FF


def _is_emoji_modifier(cp: int) -> bool:
    return cp in (0xFE0F, 0xFE0E, 0x20E3) or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F


def _weigh(segment: str) -> int:
    total, cps, index = 0, [ord(c) for c in segment], 0
    while index < len(cps):
        cp = cps[index]
        keycap = chr(cp) in "0123456789#*" and index + 1 < len(cps) and cps[index + 1] in (0xFE0F, 0x20E3)
        if _is_emoji(cp) or keycap:
            index += 1
            if 0x1F1E6 <= cp <= 0x1F1FF and index < len(cps) and 0x1F1E6 <= cps[index] <= 0x1F1FF:
                index += 1  # a flag: two regional indicators
            while index < len(cps):
                if _is_emoji_modifier(cps[index]):
                    index += 1
                elif cps[index] == 0x200D and index + 1 < len(cps) and _is_emoji(cps[index + 1]):
                    index += 2
                else:
                    break
            total += 200  # an emoji sequence counts as 2, however many code points
            continue
        total += 100 if any(low <= cp <= high for low, high in _LIGHT_RANGES) else 200
        index += 1
    return total


def tweet_length(text: str) -> int:
    """The weighted length twitter-text v3 gives ``text`` (NFC; URLs 23; CJK, emoji and others 2; Latin 1)."""
    text = unicodedata.normalize("NFC", text)
    total, position = 0, 0
    for start, end in url_spans(text):
        total += _weigh(text[position:start]) + URL_LENGTH * 100
        position = end
    total += _weigh(text[position:])
    return total // 100


def png_bytes(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (29, 155, 240)) -> bytes:
    """A valid RGB PNG of one colour (for seeding media and preview images)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def sniff(content: bytes) -> str | None:
    """The media type of image / video bytes X accepts, from their magic numbers."""
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    if content[4:8] == b"ftyp":
        return "video/quicktime" if content[8:10] == b"qt" else "video/mp4"
    return None


def hmac_sha256(key: str, message: bytes) -> str:
    """``sha256=`` + base64(HMAC-SHA256(key, message)): CRC response tokens and webhook signatures."""
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def default_host(path: str) -> str:
    """The X host a path belongs to, when the client did not say (X-Forwarded-Host)."""
    if path.startswith("/1.1/media/upload"):
        return "upload.twitter.com"
    if path.startswith("/1.1/ton/"):
        return "ton.twitter.com"
    if path.startswith(("/ext_tw_video/", "/tweet_video/", "/dm_video/", "/dm_gif/", "/amplify_video/")):
        return "video.twimg.com"
    if path.startswith(("/media/", "/ext_tw_video_thumb/", "/tweet_video_thumb/", "/dm_video_thumb/")):
        return "pbs.twimg.com"
    if path.startswith(("/profile_images/", "/dm_gif_preview/")):
        return "pbs.twimg.com"
    return "api.twitter.com"


def _code(length: int = 10) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def _display_url(url: str) -> str:
    shown = re.sub(r"^https?://(www\.)?", "", url)
    return shown if len(shown) <= 26 else shown[:25] + "\u2026"


def _conversation_id(a: str, b: str) -> str:
    """A one-to-one DM conversation id: "<smaller id>-<larger id>" (as recorded)."""
    low, high = sorted((a, b), key=int)
    return f"{low}-{high}"


# --- errors ---------------------------------------------------------------------------------------------------------
class Problem(Exception):
    """An error answer: the status and the body X sends with it."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def problem(status: int, detail: str | None = None, *, title: str | None = None, type_: str = "about:blank") -> Problem:
    """The v2 problem shape: {"title", "detail", "type", "status"}."""
    title = title or TITLES.get(status, "Error")
    return Problem(status, {"title": title, "detail": detail or title, "type": type_, "status": status})


def invalid(message: str, parameters: dict[str, list[str]] | None = None) -> Problem:
    """400 "Invalid Request" as X answers a bad parameter or body."""
    error: dict[str, Any] = {"parameters": parameters or {}, "message": message}
    return Problem(
        400,
        {
            "errors": [error],
            "title": "Invalid Request",
            "detail": INVALID_DETAIL,
            "type": PROBLEM_INVALID,
            "status": 400,
        },
    )


def v1_error(status: int, message: str | None = None, code: int | None = None) -> Problem:
    """The v1.1 error shape: {"errors": [{"code", "message"}]}."""
    default_code, default_message = V1_CODES.get(status, (131, TITLES.get(status, "Error")))
    return Problem(status, {"errors": [{"code": code or default_code, "message": message or default_message}]})


def upload_error(message: str, status: int = 400) -> Problem:
    """The media upload endpoint's own error shape."""
    return Problem(status, {"request": "/1.1/media/upload.json", "error": message})


def not_found_error(resource: str, parameter: str, value: str) -> dict[str, Any]:
    """A partial error inside a 200 answer (a referenced tweet or user that does not exist)."""
    return {
        "value": value,
        "detail": f"Could not find {resource} with {parameter}: [{value}].",
        "title": "Not Found Error",
        "resource_type": resource,
        "parameter": parameter,
        "resource_id": value,
        "type": PROBLEM_NOT_FOUND,
    }


# --- state ----------------------------------------------------------------------------------------------------------
@dataclass
class MediaItem:
    """A photo, video or GIF attached to a tweet or DM, downloadable at ``url`` (and ``preview_url``)."""

    media_key: str
    media_id: str
    type: str  # photo | video | animated_gif
    content: bytes
    content_type: str
    url: str  # the photo, or the mp4 variant
    width: int
    height: int
    tco: str  # the t.co link the text ends with
    preview_url: str = ""
    duration_ms: int = 0

    def v2(self) -> dict[str, Any]:
        data: dict[str, Any] = {"media_key": self.media_key, "type": self.type}
        if self.type == "photo":
            data["url"] = self.url
        else:
            data["preview_image_url"] = self.preview_url
            variants: list[dict[str, Any]] = [
                {
                    "bit_rate": 0 if self.type == "animated_gif" else 2176000,
                    "content_type": "video/mp4",
                    "url": self.url,
                }
            ]
            if self.type == "video":
                data["duration_ms"] = self.duration_ms
                variants.append({"content_type": "application/x-mpegURL", "url": self.url.rsplit(".", 1)[0] + ".m3u8"})
            data["variants"] = variants
        data["width"], data["height"] = self.width, self.height
        return data

    def v1(self, *, indices: list[int], expanded_url: str) -> dict[str, Any]:
        shown = self.url if self.type == "photo" else self.preview_url
        data: dict[str, Any] = {
            "id": int(self.media_id),
            "id_str": self.media_id,
            "indices": indices,
            "media_url": shown.replace("https://", "http://", 1),
            "media_url_https": shown,
            "url": self.tco,
            "display_url": "pic.twitter.com/" + self.tco.rsplit("/", 1)[1],
            "expanded_url": expanded_url,
            "type": self.type,
            "sizes": _sizes(self.width, self.height),
        }
        if self.type != "photo":
            divisor = math.gcd(self.width, self.height) or 1
            info: dict[str, Any] = {"aspect_ratio": [self.width // divisor, self.height // divisor]}
            if self.type == "video":
                info["duration_millis"] = self.duration_ms
            info["variants"] = [
                {"bitrate": 0 if self.type == "animated_gif" else 2176000, "content_type": "video/mp4", "url": self.url}
            ]
            data["video_info"] = info
        return data


def _sizes(width: int, height: int) -> dict[str, dict[str, Any]]:
    def fit(limit: int) -> dict[str, Any]:
        scale = min(1.0, limit / max(width, height, 1))
        return {"w": max(1, round(width * scale)), "h": max(1, round(height * scale)), "resize": "fit"}

    return {"thumb": {"w": 150, "h": 150, "resize": "crop"}, "small": fit(680), "medium": fit(1200), "large": fit(2048)}


@dataclass
class _Download:
    content: bytes
    content_type: str
    auth: bool  # DM media: OAuth 1.0a user context required


@dataclass
class _Upload:
    media_id: str
    category: str
    content_type: str
    total_bytes: int
    segments: dict[int, bytes] = field(default_factory=dict)
    content: bytes = b""
    finalized: bool = False
    width: int = 0
    height: int = 0
    polls_left: int = 0

    @property
    def kind(self) -> str:
        if self.content_type == "image/gif":
            return "animated_gif"
        return "video" if self.content_type.startswith("video/") else "photo"

    @property
    def media_key(self) -> str:
        return {"photo": "3", "video": "7", "animated_gif": "16"}[self.kind] + "_" + self.media_id


@dataclass
class _Bucket:
    limit: int
    window: float
    remaining: int
    reset: float
    path: str


@dataclass
class _Fault:
    method: str
    prefix: str
    status: int | None
    times: int
    reset_in: float = 60.0
    detail: str | None = None
    delay: float = 0.0


@dataclass
class _Options:
    expansions: set[str]
    fields: dict[str, set[str]]


@dataclass
class _Req:
    method: str
    path: str
    raw_query: str
    query: dict[str, str]
    headers: Message
    body: bytes
    host: str
    args: tuple[str, ...] = ()
    auth: str = ""  # "user" (OAuth 1.0a) or "app" (bearer)

    def json_body(self) -> dict[str, Any]:
        if "application/json" not in (self.headers.get("Content-Type") or ""):
            raise invalid("The request body must be JSON (Content-Type: application/json).")
        try:
            value = json.loads(self.body or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(f"Your request body is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise invalid("The request body must be a JSON object.")
        return value

    def form(self) -> tuple[dict[str, str], dict[str, bytes], dict[str, str]]:
        """(fields, file contents, file content types) of a form or multipart body, query parameters included."""
        fields = dict(self.query)
        files: dict[str, bytes] = {}
        types: dict[str, str] = {}
        content_type = self.headers.get("Content-Type") or ""
        if content_type.startswith("multipart/form-data"):
            parts, uploads = parse_multipart(self.body, content_type)
            fields.update(parts)
            for name, upload in uploads.items():
                files[name], types[name] = upload.content, upload.content_type
        elif self.body:
            fields.update(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
        return fields, files, types


class _Validator(RequestValidator):
    """oauthlib's view of the app: one consumer, one user token; HMAC-SHA1 only; nonces are single-use."""

    def __init__(self, server: XServer) -> None:
        super().__init__()
        self.server = server
        self.seen: set[tuple[str, str, str]] = set()
        self.lock = threading.Lock()

    @property
    def allowed_signature_methods(self) -> tuple[str, ...]:
        return ("HMAC-SHA1",)

    @property
    def dummy_client(self) -> str:
        return "dummy-client-key"

    @property
    def dummy_access_token(self) -> str:
        return "dummy-access-token"

    def check_client_key(self, client_key: str) -> bool:
        return 0 < len(client_key) <= 100

    def check_access_token(self, request_token: str) -> bool:
        return 0 < len(request_token) <= 100

    def check_nonce(self, nonce: str) -> bool:
        return 0 < len(nonce) <= 100 and nonce.isprintable()

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return hmac.compare_digest(client_key.encode(), self.server.consumer_key.encode())

    def get_client_secret(self, client_key: str, request: Any) -> str:
        if hmac.compare_digest(client_key.encode(), self.server.consumer_key.encode()):
            return self.server.consumer_secret
        return "dummy-client-secret"

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        if hmac.compare_digest(token.encode(), self.server.access_token.encode()):
            return self.server.access_token_secret
        return "dummy-token-secret"

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Any,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        with self.lock:
            key = (client_key, timestamp, nonce)
            if key in self.seen:
                return False  # a replayed request
            self.seen.add(key)
            return True


# Routes: (method, path template, handler, auth: "user" | "app" | "any"); ":name" segments are numeric ids, except
# :username and :dm_conversation_id.
_ROUTE_TABLE = (
    ("GET", "/2/users/me", "users_me", "user"),
    ("GET", "/2/users/by/username/:username", "user_by_username", "any"),
    ("GET", "/2/users/:id/mentions", "mentions", "any"),
    ("GET", "/2/users/:id", "user", "any"),
    ("GET", "/2/users", "users", "any"),
    ("GET", "/2/tweets/:id", "tweet", "any"),
    ("GET", "/2/tweets", "tweets", "any"),
    ("POST", "/2/tweets", "create_tweet", "user"),
    ("DELETE", "/2/tweets/:id", "delete_tweet", "user"),
    ("GET", "/2/dm_events", "dm_events", "user"),
    ("GET", "/2/dm_conversations/with/:participant_id/dm_events", "dm_events_with", "user"),
    ("GET", "/2/dm_conversations/:dm_conversation_id/dm_events", "dm_events_in", "user"),
    ("POST", "/2/dm_conversations/with/:participant_id/messages", "send_dm_with", "user"),
    ("POST", "/2/dm_conversations/:dm_conversation_id/messages", "send_dm_in", "user"),
    ("POST", "/1.1/media/upload.json", "upload", "user"),
    ("GET", "/1.1/media/upload.json", "upload_status", "user"),
    ("POST", "/2/webhooks", "create_webhook", "app"),
    ("GET", "/2/webhooks", "list_webhooks", "app"),
    ("PUT", "/2/webhooks/:webhook_id", "validate_webhook", "app"),
    ("DELETE", "/2/webhooks/:webhook_id", "delete_webhook", "app"),
    ("POST", "/2/account_activity/webhooks/:webhook_id/subscriptions/all", "subscribe", "user"),
    ("GET", "/2/account_activity/webhooks/:webhook_id/subscriptions/all", "subscription", "user"),
    ("GET", "/2/account_activity/webhooks/:webhook_id/subscriptions/all/list", "subscriptions_list", "app"),
    ("DELETE", "/2/account_activity/webhooks/:webhook_id/subscriptions/:user_id/all", "unsubscribe", "app"),
)
_SEGMENTS = {":username": r"(\w{1,15})", ":dm_conversation_id": r"(\d{1,19}-\d{1,19}|\d{1,19})"}


def _route_pattern(template: str) -> re.Pattern[str]:
    def segment(match: re.Match[str]) -> str:
        return _SEGMENTS.get(match.group(0), r"(\d{1,19})")

    return re.compile(re.sub(r":\w+", segment, re.escape(template)))


_ROUTES = [
    (method, _route_pattern(template), template, handler, auth) for method, template, handler, auth in _ROUTE_TABLE
]


class XServer:
    def __init__(
        self,
        *,
        consumer_key: str = "ck-test",
        consumer_secret: str = "cs-test-secret",  # noqa: S107 (test credentials)
        access_token: str = "1072250532645998596-at",  # noqa: S107
        access_token_secret: str = "ats-test",  # noqa: S107
        bearer_token: str = "bearer-test",  # noqa: S107
        me_id: str = "1072250532645998596",
        me_username: str = "TweepyDev",
        me_name: str = "Tweepy Testing",
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.access_token = access_token
        self.access_token_secret = access_token_secret
        self.bearer_token = bearer_token
        self.me: dict[str, str] = {"id": me_id, "username": me_username, "name": me_name}
        # what the client did
        self.sent_dms: list[dict[str, Any]] = []
        self.tweets: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.crc_checks: list[dict[str, Any]] = []  # {"url", "ok"} for every CRC GET the fake sent
        # knobs
        self.default_limit = DEFAULT_LIMIT
        self.default_window = DEFAULT_WINDOW
        self.https_only_webhooks = False  # X requires https webhook URLs; tests on loopback keep this False
        self.max_webhooks = 3
        self.crc_timeout = 3.0  # X gives the CRC answer 3 seconds
        self.video_processing_polls = 0  # STATUS calls a video / GIF needs before "succeeded" (FINALIZE: in_progress)
        # state
        self._lock = threading.RLock()
        self._used_ids: set[int] = set()
        self._last_id = 0
        self._users: dict[str, dict[str, Any]] = {}
        self._v1_users: dict[str, dict[str, Any]] = {}
        self._tweets: dict[str, dict[str, Any]] = {}
        self._mentions_of: dict[str, set[str]] = {}  # tweet id -> mentioned user ids
        self._our_texts: set[str] = set()
        self._dms: dict[str, dict[str, Any]] = {}
        self._dm_meta: dict[str, dict[str, Any]] = {}  # event id -> {"recipient_id", "app"}
        self._media: dict[str, MediaItem] = {}
        self._downloads: dict[str, _Download] = {}
        self._upload_state: dict[str, _Upload] = {}
        self._refusing: set[str] = set()
        self._webhooks: dict[str, dict[str, Any]] = {}
        self._subscriptions: dict[str, set[str]] = {}
        self._page_tokens: dict[str, tuple[str, str, int, bool]] = {}
        self._duplicate_pages = False
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._budgets: list[tuple[str, str, int, float]] = []
        self._faults: list[_Fault] = []
        self._oauth = SignatureOnlyEndpoint(_Validator(self))
        self._recorded_users: list[dict[str, Any]] | None = None
        self.add_user(id=me_id, username=me_username, name=me_name)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-x", daemon=True
        )

    # --- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> XServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> XServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The connector's ``api_base``: every X host is served here (paths as on X)."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def credentials(self) -> dict[str, str]:
        return {
            "consumer_key": self.consumer_key,
            "consumer_secret": self.consumer_secret,
            "access_token": self.access_token,
            "access_token_secret": self.access_token_secret,
            "bearer_token": self.bearer_token,
        }

    # --- ids ---------------------------------------------------------------------------------------------------------
    def _new_id(self, at: datetime | None) -> int:
        """A unique snowflake: of ``at`` when given, else of now and above every id handed out "now" before."""
        with self._lock:
            if at is None:
                candidate = max(snowflake(time.time()), self._last_id + 1)
            else:
                candidate = snowflake(at) + secrets.randbelow(1 << 12)
            while candidate in self._used_ids:
                candidate += 1
            self._used_ids.add(candidate)
            if at is None:
                self._last_id = candidate
            return candidate

    def _claim_id(self, value: str | None, at: datetime | None) -> tuple[str, datetime]:
        """An explicit id (must be new) or a fresh one, and the creation time that goes with it."""
        with self._lock:
            if value is not None:
                if not str(value).isdigit() or int(value) in self._used_ids:
                    raise ValueError(f"id {value!r} is not a free numeric id")
                self._used_ids.add(int(value))
                return str(value), at or snowflake_time(value)
            new = self._new_id(at)
            return str(new), at or snowflake_time(new)

    # --- users -------------------------------------------------------------------------------------------------------
    def add_user(
        self, *, id: str | None = None, username: str, name: str = "", lang: str | None = None
    ) -> dict[str, Any]:
        """A user X knows (authors, DM senders, DM recipients). Returns the v2 user with every field."""
        with self._lock:
            other = self._user_by_username(username)
            if other is not None and other["id"] != str(id):
                raise ValueError(f"username @{username} is taken by {other['id']}")
            if id is None:
                user_id = str(self._new_id(None))
            else:
                user_id = str(id)
                self._used_ids.add(int(user_id))
            created = snowflake_time(user_id) if int(user_id) > (1 << 32) else datetime(2010, 6, 1, tzinfo=UTC)
            user: dict[str, Any] = {
                "id": user_id,
                "name": name or username,
                "username": username,
                "created_at": iso(created),
                "description": "",
                "protected": False,
                "verified": False,
                "profile_image_url": f"https://pbs.twimg.com/profile_images/{user_id}/avatar_normal.png",
                "public_metrics": {"followers_count": 0, "following_count": 0, "tweet_count": 0, "listed_count": 0},
            }
            self._users[user_id] = user
            self._v1_users[user_id] = self._v1_user_from(user, lang)
            self._downloads.setdefault(
                f"/profile_images/{user_id}/avatar_normal.png", _Download(png_bytes(48, 48), "image/png", False)
            )
            return copy.deepcopy(user)

    def _add_v1_user(self, v1: dict[str, Any]) -> dict[str, Any]:
        """A user from a recorded v1.1 user object (kept as is for Account Activity payloads)."""
        with self._lock:
            user_id = str(v1["id_str"])
            if user_id in self._users and user_id != self.me["id"]:
                return self._users[user_id]
            self._used_ids.add(int(user_id))
            user: dict[str, Any] = {
                "id": user_id,
                "name": v1.get("name") or v1["screen_name"],
                "username": v1["screen_name"],
                "created_at": iso(parse_v1_time(v1["created_at"])),
                "description": v1.get("description") or "",
                "protected": bool(v1.get("protected")),
                "verified": bool(v1.get("verified")),
                "profile_image_url": v1.get("profile_image_url_https") or "",
                "public_metrics": {
                    "followers_count": v1.get("followers_count", 0),
                    "following_count": v1.get("friends_count", 0),
                    "tweet_count": v1.get("statuses_count", 0),
                    "listed_count": v1.get("listed_count", 0),
                },
            }
            if v1.get("location"):
                user["location"] = v1["location"]
            if v1.get("url"):
                user["url"] = v1["url"]
            if user_id == self.me["id"]:  # keep the configured name of "me"
                user.update({"name": self.me["name"], "username": self.me["username"]})
            self._users[user_id] = user
            self._v1_users[user_id] = {k: copy.deepcopy(v) for k, v in v1.items() if k != "status"}
            return user

    def _user_by_username(self, username: str) -> dict[str, Any] | None:
        wanted = username.lower()
        return next((u for u in self._users.values() if u["username"].lower() == wanted), None)

    def _ensure_user(self, user_id: str) -> None:
        if str(user_id) not in self._users:
            self.add_user(id=str(user_id), username=f"user{str(user_id)[-8:]}", name=f"User {str(user_id)[-4:]}")

    @staticmethod
    def _v1_user_from(user: dict[str, Any], lang: str | None) -> dict[str, Any]:
        created = datetime.fromisoformat(user["created_at"].replace("Z", "+00:00"))
        image = user["profile_image_url"]
        return {
            "id": int(user["id"]),
            "id_str": user["id"],
            "name": user["name"],
            "screen_name": user["username"],
            "location": "",
            "url": None,
            "description": "",
            "translator_type": "none",
            "protected": False,
            "verified": False,
            "followers_count": 0,
            "friends_count": 0,
            "listed_count": 0,
            "favourites_count": 0,
            "statuses_count": 0,
            "created_at": v1_time(created),
            "utc_offset": None,
            "time_zone": None,
            "geo_enabled": False,
            "lang": lang,
            "contributors_enabled": False,
            "is_translator": False,
            "profile_background_color": "F5F8FA",
            "profile_link_color": "1DA1F2",
            "profile_image_url": image.replace("https://", "http://", 1),
            "profile_image_url_https": image,
            "default_profile": True,
            "default_profile_image": False,
            "following": None,
            "follow_request_sent": None,
            "notifications": None,
        }

    # --- media -------------------------------------------------------------------------------------------------------
    def _make_media(
        self, content: bytes, content_type: str, *, dm_event_id: str | None, media_id: str | None = None
    ) -> MediaItem:
        """Media attached to a DM (``dm_event_id``) or a tweet, registered for download at the URL it names."""
        content_type = sniff(content) or content_type or "application/octet-stream"
        kind = (
            "animated_gif" if content_type == "image/gif" else "video" if content_type.startswith("video/") else "photo"
        )
        media_id = media_id or str(self._new_id(None))
        key = {"photo": "3", "video": "7", "animated_gif": "16"}[kind] + "_" + media_id
        width, height = image_size(content) or ((1280, 720) if kind == "video" else (800, 600))
        name, ext = _code(15), MEDIA_TYPES.get(content_type, "bin")
        preview = ""
        if dm_event_id is not None:  # DM media: OAuth 1.0a to download
            if kind == "photo":
                url = f"https://ton.twitter.com/1.1/ton/data/dm/{dm_event_id}/{media_id}/{_code(8)}.{ext}"
            elif kind == "video":
                url = f"https://video.twimg.com/dm_video/{media_id}/vid/{width}x{height}/{name}.mp4"
                preview = f"https://pbs.twimg.com/dm_video_thumb/{media_id}/img/{name}.jpg"
            else:
                url = f"https://video.twimg.com/dm_gif/{media_id}/{name}.mp4"
                preview = f"https://pbs.twimg.com/dm_gif_preview/{media_id}/img/{name}.jpg"
        elif kind == "photo":
            url = f"https://pbs.twimg.com/media/{name}.{ext}"
        elif kind == "video":
            url = f"https://video.twimg.com/ext_tw_video/{media_id}/pu/vid/{width}x{height}/{name}.mp4"
            preview = f"https://pbs.twimg.com/ext_tw_video_thumb/{media_id}/pu/img/{name}.jpg"
        else:
            url = f"https://video.twimg.com/tweet_video/{name}.mp4"
            preview = f"https://pbs.twimg.com/tweet_video_thumb/{name}.jpg"
        auth = dm_event_id is not None
        served_type = content_type if kind == "photo" or content_type.startswith("video/") else "video/mp4"
        item = MediaItem(
            media_key=key,
            media_id=media_id,
            type=kind,
            content=content,
            content_type=served_type,
            url=url,
            width=width,
            height=height,
            tco=f"https://t.co/{_code()}",
            preview_url=preview,
            duration_ms=10_000 if kind == "video" else 0,
        )
        with self._lock:
            self._media[key] = item
            self._downloads[urllib.parse.urlsplit(url).path] = _Download(content, served_type, auth)
            if preview:
                self._downloads[urllib.parse.urlsplit(preview).path] = _Download(png_bytes(8, 8), "image/png", auth)
            if kind == "video":
                playlist = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2176000\n{url}\n".encode()
                self._downloads[urllib.parse.urlsplit(url).path.rsplit(".", 1)[0] + ".m3u8"] = _Download(
                    playlist, "application/x-mpegURL", auth
                )
        return item

    def media(self, media_key: str) -> dict[str, Any]:
        """The v2 media object for a media key (every field)."""
        with self._lock:
            return self._media[media_key].v2()

    # --- DMs ---------------------------------------------------------------------------------------------------------
    def add_dm(
        self,
        *,
        sender_id: str,
        text: str,
        created_at: datetime | None = None,
        media: Sequence[tuple[str, str, bytes]] = (),
        event_id: str | None = None,
        recipient_id: str | None = None,
    ) -> dict[str, Any]:
        """A DM event (a customer's message to us unless ``recipient_id`` says otherwise), as /2/dm_events serves it
        with every field. ``media``: at most one (filename, content_type, content), as on X."""
        sender_id = str(sender_id)
        recipient = str(recipient_id or self.me["id"])
        if self.me["id"] not in (sender_id, recipient) or sender_id == recipient:
            raise ValueError("a one-to-one DM between us and another user")
        if len(media) > 1:
            raise ValueError("X DMs carry at most one attachment")
        with self._lock:
            self._ensure_user(sender_id)
            self._ensure_user(recipient)
            event_id, at = self._claim_id(event_id, created_at)
            items = [self._make_media(content, ctype, dm_event_id=event_id) for _, ctype, content in media]
            return copy.deepcopy(self._store_dm(event_id, at, sender_id, recipient, text, items, app=False))

    def recorded_dms(self, sender_id: str) -> list[dict[str, Any]]:
        """The texts of the recorded DMs ("Testing 1", "Testing 2") as DMs from ``sender_id`` to us, with the recorded
        dm_event ids (and their times) when still free. FileNotFoundError when the shared data is absent."""
        calls = json.loads(RECORDED_DMS.read_text())
        events = []
        for call in calls:
            if call["method"] == "POST" and "/messages" in call["uri"] and call["status"] == 201:
                text = json.loads(call["request_body"]).get("text")
                event_id = call["response"]["data"]["dm_event_id"]
                if not isinstance(text, str) or "-" not in call["response"]["data"]["dm_conversation_id"]:
                    continue  # the group conversation
                with self._lock:
                    free = int(event_id) not in self._used_ids
                events.append(self.add_dm(sender_id=sender_id, text=text, event_id=event_id if free else None))
        return events

    def _store_dm(
        self, event_id: str, at: datetime, sender: str, recipient: str, text: str, items: list[MediaItem], *, app: bool
    ) -> dict[str, Any]:
        full = " ".join(part for part in (text, *(m.tco for m in items)) if part)
        event: dict[str, Any] = {
            "id": event_id,
            "event_type": "MessageCreate",
            "text": full,
            "sender_id": sender,
            "dm_conversation_id": _conversation_id(sender, recipient),
            "created_at": iso(at),
        }
        entities = self._v2_entities(full, items, lambda m: f"https://twitter.com/messages/media/{event_id}")
        if entities:
            event["entities"] = entities
        if items:
            event["attachments"] = {"media_keys": [m.media_key for m in items]}
        quoted = [m.group(1) for m in _STATUS_URL_RE.finditer(full)]
        if quoted:
            event["referenced_tweets"] = [{"id": tweet_id} for tweet_id in dict.fromkeys(quoted)]
        self._dms[event_id] = event
        self._dm_meta[event_id] = {"recipient_id": recipient, "app": app}
        return event

    def dm_events(self) -> list[dict[str, Any]]:
        """Every DM event (ours and theirs), newest first, with every field."""
        with self._lock:
            return [copy.deepcopy(e) for e in sorted(self._dms.values(), key=lambda e: -int(e["id"]))]

    def refuse_dms_from_us(self, user_id: str) -> None:
        """From now on DMs to this user answer 403 "You are not permitted to send a message to this user."."""
        with self._lock:
            self._refusing.add(str(user_id))

    # --- tweets ------------------------------------------------------------------------------------------------------
    def add_mention(
        self,
        *,
        author_id: str,
        text: str,
        lang: str = "en",
        in_reply_to: str | None = None,
        created_at: datetime | None = None,
        media: Sequence[tuple[str, str, bytes]] = (),
        tweet_id: str | None = None,
    ) -> dict[str, Any]:
        """A tweet mentioning us (served by /2/users/<me>/mentions), as v2 serves it with every field. With media its
        text ends with the media's t.co link, as on X. ``in_reply_to``: the tweet it answers (ours, usually)."""
        author_id = str(author_id)
        with self._lock:
            self._ensure_user(author_id)
            tweet_id, at = self._claim_id(tweet_id, created_at)
            items = [self._make_media(content, ctype, dm_event_id=None) for _, ctype, content in media[:4]]
            tweet = self._store_tweet(
                tweet_id, at, author_id, text, lang=lang, reply_to=in_reply_to, items=items, mentions={self.me["id"]}
            )
            return copy.deepcopy(tweet)

    def recorded_mentions(self) -> list[dict[str, Any]]:
        """The 10 mentions of test_client_get_users_mentions.json (their real ids, texts and times) as mentions of us,
        by real users of the recorded v1.1 objects (round robin). FileNotFoundError when the shared data is absent."""
        recorded = json.loads(RECORDED_MENTIONS.read_text())[0]["response"]["data"]
        authors = [u for u in self._recorded_v1_users() if u["id_str"] not in (self.me["id"], "783214")]
        tweets = []
        for index, tweet in enumerate(recorded):
            author = self._add_v1_user(authors[index % len(authors)])
            tweets.append(self.add_mention(author_id=author["id"], text=tweet["text"], tweet_id=tweet["id"]))
        return tweets

    def _recorded_v1_users(self) -> list[dict[str, Any]]:
        """Every distinct v1.1 user object in the recordings (nested ones too), in file order; all become known."""
        if self._recorded_users is None:
            found: dict[str, dict[str, Any]] = {}

            def walk(value: Any) -> None:
                if isinstance(value, dict):
                    if {"id_str", "screen_name", "followers_count", "created_at"} <= set(value):
                        found.setdefault(str(value["id_str"]), value)
                    for child in value.values():
                        walk(child)
                elif isinstance(value, list):
                    for child in value:
                        walk(child)

            for path in sorted(RECORDINGS.rglob("*.json")):
                for call in json.loads(path.read_text()):
                    walk(call.get("response"))
            self._recorded_users = list(found.values())
            for v1 in self._recorded_users:
                self._add_v1_user(v1)
        return self._recorded_users

    def _store_tweet(
        self,
        tweet_id: str,
        at: datetime,
        author_id: str,
        text: str,
        *,
        lang: str,
        reply_to: str | None,
        items: list[MediaItem],
        mentions: set[str],
        quote: str | None = None,
    ) -> dict[str, Any]:
        full = " ".join(part for part in (text, *(m.tco for m in items)) if part)
        tweet: dict[str, Any] = {
            "id": tweet_id,
            "text": full,
            "edit_history_tweet_ids": [tweet_id],
            "author_id": author_id,
            "created_at": iso(at),
            "conversation_id": tweet_id,
            "lang": lang,
            "possibly_sensitive": False,
            "reply_settings": "everyone",
            "public_metrics": {
                "retweet_count": 0,
                "reply_count": 0,
                "like_count": 0,
                "quote_count": 0,
                "bookmark_count": 0,
                "impression_count": 0,
            },
            "edit_controls": {
                "edits_remaining": 5,
                "is_edit_eligible": not items,
                "editable_until": iso(at + timedelta(hours=1)),
            },
        }
        references: list[dict[str, str]] = []
        if reply_to is not None:
            parent = self._tweets.get(str(reply_to))
            tweet["conversation_id"] = parent["conversation_id"] if parent else str(reply_to)
            tweet["in_reply_to_user_id"] = parent["author_id"] if parent else self.me["id"]
            references.append({"type": "replied_to", "id": str(reply_to)})
            mentions = mentions | {tweet["in_reply_to_user_id"]}
        if quote is not None:
            references.append({"type": "quoted", "id": str(quote)})
        if references:
            tweet["referenced_tweets"] = references
        if items:
            tweet["attachments"] = {"media_keys": [m.media_key for m in items]}
        username = self._users[author_id]["username"]
        entities = self._v2_entities(
            full, items, lambda m: f"https://twitter.com/{username}/status/{tweet_id}/{_media_path(m)}/1"
        )
        if entities:
            tweet["entities"] = entities
        mentioned = {m["id"] for m in entities.get("mentions", []) if "id" in m}
        self._tweets[tweet_id] = tweet
        self._mentions_of[tweet_id] = (mentions | mentioned) - {author_id}
        return tweet

    def tweet(self, tweet_id: str) -> dict[str, Any]:
        """A stored tweet (seeded or posted) with every field."""
        with self._lock:
            return copy.deepcopy(self._tweets[str(tweet_id)])

    # --- entities ----------------------------------------------------------------------------------------------------
    def _v2_entities(
        self, text: str, items: list[MediaItem], media_url: Callable[[MediaItem], str]
    ) -> dict[str, list[dict[str, Any]]]:
        by_tco = {m.tco: m for m in items}
        entities: dict[str, list[dict[str, Any]]] = {}
        for start, end in url_spans(text):
            url = text[start:end]
            entry: dict[str, Any] = {"start": start, "end": end, "url": url}
            if url in by_tco:
                item = by_tco[url]
                code = url.rsplit("/", 1)[1]
                entry.update({"expanded_url": media_url(item), "display_url": f"pic.x.com/{code}"})
                entry["media_key"] = item.media_key
            else:
                entry.update({"expanded_url": url, "display_url": _display_url(url)})
            entities.setdefault("urls", []).append(entry)
        for match in _MENTION_RE.finditer(text):
            mention: dict[str, Any] = {"start": match.start(), "end": match.end(), "username": match.group(1)}
            user = self._user_by_username(match.group(1))
            if user is not None:
                mention["username"], mention["id"] = user["username"], user["id"]
            entities.setdefault("mentions", []).append(mention)
        for match in _HASHTAG_RE.finditer(text):
            entities.setdefault("hashtags", []).append(
                {"start": match.start(), "end": match.end(), "tag": match.group(1)}
            )
        return entities

    def _v1_entities(
        self, text: str, items: list[MediaItem], media_url: Callable[[MediaItem], str], *, media_in_urls: bool = False
    ) -> dict[str, Any]:
        by_tco = {m.tco: m for m in items}
        entities: dict[str, Any] = {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []}
        media = []
        for start, end in url_spans(text):
            url = text[start:end]
            if url in by_tco and not media_in_urls:
                media.append(by_tco[url].v1(indices=[start, end], expanded_url=media_url(by_tco[url])))
                continue
            expanded = media_url(by_tco[url]) if url in by_tco else url
            display = "pic.twitter.com/" + url.rsplit("/", 1)[1] if url in by_tco else _display_url(url)
            entities["urls"].append(
                {"url": url, "expanded_url": expanded, "display_url": display, "indices": [start, end]}
            )
        for match in _MENTION_RE.finditer(text):
            user = self._user_by_username(match.group(1))
            if user is not None:  # v1.1 lists only mentions of existing users
                entities["user_mentions"].append(
                    {
                        "screen_name": user["username"],
                        "name": user["name"],
                        "id": int(user["id"]),
                        "id_str": user["id"],
                        "indices": [match.start(), match.end()],
                    }
                )
        for match in _HASHTAG_RE.finditer(text):
            entities["hashtags"].append({"text": match.group(1), "indices": [match.start(), match.end()]})
        if media:
            entities["media"] = media
        return entities

    # --- Account Activity helpers ------------------------------------------------------------------------------------
    def crc_response_token(self, crc_token: str) -> str:
        """What a webhook must answer to a CRC: ``sha256=`` + base64(HMAC-SHA256(consumer_secret, crc_token))."""
        return hmac_sha256(self.consumer_secret, crc_token.encode())

    def sign(self, body: bytes) -> str:
        """The x-twitter-webhooks-signature value X sends with ``body``."""
        return hmac_sha256(self.consumer_secret, body)

    def aaa_dm_payload(self, dm: dict[str, Any]) -> dict[str, Any]:
        """The Account Activity body announcing a DM event (seeded or sent): v1.1 event shape and a users map."""
        with self._lock:
            event = self._dms[str(dm["id"])]
            meta = self._dm_meta[event["id"]]
            sender, recipient = event["sender_id"], meta["recipient_id"]
            items = [self._media[k] for k in event.get("attachments", {}).get("media_keys", [])]
            expanded = f"https://twitter.com/messages/media/{event['id']}"
            at = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00"))
            message_data: dict[str, Any] = {
                "text": event["text"],
                "entities": self._v1_entities(event["text"], items, lambda _m: expanded, media_in_urls=True),
            }
            if items:
                tco = items[0].tco
                start = event["text"].rfind(tco)
                message_data["attachment"] = {
                    "type": "media",
                    "media": items[0].v1(indices=[start, start + len(tco)], expanded_url=expanded),
                }
            message_create: dict[str, Any] = {
                "target": {"recipient_id": recipient},
                "sender_id": sender,
                "message_data": message_data,
            }
            if meta["app"]:
                message_create["source_app_id"] = APP_ID
            v1_event = {
                "type": "message_create",
                "id": event["id"],
                "created_timestamp": str(int(at.timestamp() * 1000)),
                "message_create": message_create,
            }
            payload: dict[str, Any] = {
                "for_user_id": self.me["id"],
                "direct_message_events": [v1_event],
                "users": {uid: self._aaa_user(uid) for uid in (sender, recipient)},
            }
            if meta["app"]:
                payload["apps"] = {APP_ID: dict(APP)}
            return payload

    def _aaa_user(self, user_id: str) -> dict[str, Any]:
        v1 = self._v1_users[user_id]
        created = parse_v1_time(v1["created_at"])
        user = {
            "id": user_id,
            "created_timestamp": str(int(created.timestamp() * 1000)),
            "name": v1["name"],
            "screen_name": v1["screen_name"],
            "description": v1.get("description") or "",
            "protected": bool(v1.get("protected")),
            "verified": bool(v1.get("verified")),
            "followers_count": v1.get("followers_count", 0),
            "friends_count": v1.get("friends_count", 0),
            "statuses_count": v1.get("statuses_count", 0),
            "profile_image_url": v1.get("profile_image_url"),
            "profile_image_url_https": v1.get("profile_image_url_https"),
        }
        if v1.get("location"):
            user["location"] = v1["location"]
        return user

    def aaa_tweet_payload(self, tweet: dict[str, Any]) -> dict[str, Any]:
        """The Account Activity body announcing a tweet (a seeded mention, or ours): the v1.1 tweet object."""
        with self._lock:
            return {
                "for_user_id": self.me["id"],
                "user_has_blocked": False,
                "tweet_create_events": [self._v1_tweet(self._tweets[str(tweet["id"])])],
            }

    def _v1_tweet(self, tweet: dict[str, Any]) -> dict[str, Any]:
        author = copy.deepcopy(self._v1_users[tweet["author_id"]])
        full = tweet["text"]
        items = [self._media[k] for k in tweet.get("attachments", {}).get("media_keys", [])]
        tweet_id, screen_name = tweet["id"], author["screen_name"]
        at = datetime.fromisoformat(tweet["created_at"].replace("Z", "+00:00"))

        def media_url(item: MediaItem) -> str:
            return f"https://twitter.com/{screen_name}/status/{tweet_id}/{_media_path(item)}/1"

        parent = next((r["id"] for r in tweet.get("referenced_tweets", []) if r["type"] == "replied_to"), None)
        quoted = next((r["id"] for r in tweet.get("referenced_tweets", []) if r["type"] == "quoted"), None)
        reply_user = tweet.get("in_reply_to_user_id")
        start = 0
        if parent is not None:  # leading @mentions of a reply are outside the display range
            leading = re.match(r"^(?:@\w{1,15}\s+)*", full)
            start = leading.end() if leading else 0
        end = full.rfind(items[0].tco) - 1 if items else len(full)
        entities = self._v1_entities(full, items, media_url)
        v1: dict[str, Any] = {
            "created_at": v1_time(at),
            "id": int(tweet_id),
            "id_str": tweet_id,
            "text": full,
            "display_text_range": [start, max(start, end)],
            "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
            "truncated": False,
            "in_reply_to_status_id": int(parent) if parent else None,
            "in_reply_to_status_id_str": parent,
            "in_reply_to_user_id": int(reply_user) if reply_user else None,
            "in_reply_to_user_id_str": reply_user,
            "in_reply_to_screen_name": self._users[reply_user]["username"] if reply_user in self._users else None,
            "user": author,
            "geo": None,
            "coordinates": None,
            "place": None,
            "contributors": None,
            "is_quote_status": quoted is not None,
            "quote_count": 0,
            "reply_count": 0,
            "retweet_count": 0,
            "favorite_count": 0,
            "entities": entities,
            "favorited": False,
            "retweeted": False,
            "possibly_sensitive": False,
            "filter_level": "low",
            "lang": tweet.get("lang", "und"),
            "timestamp_ms": str(int(at.timestamp() * 1000)),
        }
        if quoted is not None:
            v1["quoted_status_id"], v1["quoted_status_id_str"] = int(quoted), quoted
        if items:
            v1["extended_entities"] = {"media": copy.deepcopy(entities.get("media", []))}
        if len(full) > 140:  # compatibility mode: a truncated text and the whole tweet in extended_tweet
            permalink = f"https://t.co/{_code()}"
            short = full[:113].rstrip() + "\u2026 " + permalink
            extended: dict[str, Any] = {
                "full_text": full,
                "display_text_range": v1.pop("display_text_range"),
                "entities": entities,
            }
            if items:
                extended["extended_entities"] = v1.pop("extended_entities")
            v1["text"], v1["truncated"] = short, True
            v1["entities"] = self._v1_entities(short, [], media_url)
            for url in v1["entities"]["urls"]:
                if url["url"] == permalink:
                    url["expanded_url"] = f"https://twitter.com/i/web/status/{tweet_id}"
                    url["display_url"] = f"twitter.com/i/web/status/{tweet_id[:7]}\u2026"
            v1["extended_tweet"] = extended
        return v1

    def post_webhook(
        self, url: str, payload: dict[str, Any] | bytes, *, signature: str | None = "auto", timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """POST an activity to a webhook URL as X does: JSON body and x-twitter-webhooks-signature ("auto" signs it
        correctly, None leaves the header out, any other string is sent as is). Returns (status, body)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Twitter-Webhooks/1.0"}
        if signature == "auto":
            headers[SIGNATURE_HEADER] = self.sign(body)
        elif signature is not None:
            headers[SIGNATURE_HEADER] = signature
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (test helper)
        try:
            with _direct_opener().open(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def crc_check(self, url: str, *, timeout: float | None = None) -> bool:
        """GET ``url?crc_token=<random>`` as X does and verify the answer's response_token."""
        crc_token = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        separator = "&" if urllib.parse.urlsplit(url).query else "?"
        target = f"{url}{separator}crc_token={urllib.parse.quote(crc_token)}"
        request = urllib.request.Request(target, headers={"User-Agent": "Twitter-Webhooks/1.0"})  # noqa: S310
        ok = False
        try:
            with _direct_opener().open(request, timeout=timeout or self.crc_timeout) as response:
                answer = json.loads(response.read()) if response.status == 200 else None
            token = answer.get("response_token") if isinstance(answer, dict) else None
            ok = isinstance(token, str) and hmac.compare_digest(token, self.crc_response_token(crc_token))
        except (OSError, ValueError):
            ok = False
        with self._lock:
            self.crc_checks.append({"url": url, "ok": ok})
        return ok

    def deliver(self, payload: dict[str, Any] | bytes) -> list[tuple[str, int]]:
        """POST an activity to every valid webhook that has a subscription for us; [(url, status)]."""
        with self._lock:
            urls = [
                hook["url"]
                for hook_id, hook in self._webhooks.items()
                if hook["valid"] and self.me["id"] in self._subscriptions.get(hook_id, set())
            ]
        results = []
        for url in urls:
            try:
                status, _ = self.post_webhook(url, payload)
            except OSError:
                status = 0
            results.append((url, status))
        return results

    def webhooks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(hook) for hook in self._webhooks.values()]

    # --- faults and limits -------------------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        reset_in: float = 60,
        detail: str | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` ("*" = any) on paths starting with ``path_prefix`` answer ``status``
        (v2 problem shape; v1.1 shape on /1.1). A 429 carries x-rate-limit-remaining 0 and the reset now+reset_in, and
        then holds for that endpoint and token until the reset, as on X. Faulted calls still count against the limit."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), path_prefix, status, times, reset_in, detail))

    def slow_next(self, method: str, path_prefix: str, seconds: float, *, times: int = 1) -> None:
        """Answer the next call(s) after ``seconds``; the call takes effect first (a client that timed out may have
        sent the DM or tweet all the same)."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), path_prefix, None, times, delay=seconds))

    def set_rate_limit(self, method: str, path_prefix: str, *, limit: int, window: float) -> None:
        """Endpoints of ``method`` on paths starting with ``path_prefix`` allow ``limit`` calls per ``window`` seconds
        per token (x-rate-limit-remaining counts down; 429 when exhausted until the reset). Restarts their windows."""
        with self._lock:
            self._budgets.append((method.upper(), path_prefix, limit, window))
            for key, bucket in list(self._buckets.items()):
                if (key[0] == method.upper() or method == "*") and bucket.path.startswith(path_prefix):
                    del self._buckets[key]

    def duplicate_pages(self, on: bool = True) -> None:
        """Pages overlap by one item (the last of a page comes again first on the next), as X sometimes does."""
        with self._lock:
            self._duplicate_pages = on

    def calls(self, method: str, path_prefix: str) -> list[dict[str, Any]]:
        """Recorded requests of ``method`` ("*" = any) whose path starts with ``path_prefix``."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method == "*" or r["method"] == method.upper()) and r["path"].startswith(path_prefix)
            ]

    def _budget(self, method: str, path: str) -> tuple[int, float]:
        for rule_method, prefix, limit, window in reversed(self._budgets):
            if rule_method in ("*", method) and path.startswith(prefix):
                return limit, window
        return self.default_limit, self.default_window

    def _bucket(self, key: tuple[str, str, str], path: str) -> _Bucket:
        now = time.time()
        bucket = self._buckets.get(key)
        if bucket is None or now >= bucket.reset:
            limit, window = self._budget(key[0], path)
            bucket = _Bucket(limit, window, limit, now + window, path)
            self._buckets[key] = bucket
        return bucket

    @staticmethod
    def _rate_headers(bucket: _Bucket) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(bucket.limit),
            "x-rate-limit-remaining": str(max(0, bucket.remaining)),
            "x-rate-limit-reset": str(math.ceil(bucket.reset)),
        }

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in ("*", method) and path.startswith(fault.prefix):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_body(status: int, detail: str | None, v1: bool) -> dict[str, Any]:
        if v1:
            return v1_error(status, detail).body
        return problem(status, detail).body

    # --- HTTP --------------------------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

            def do_PUT(self) -> None:
                server._handle(self)

            def do_DELETE(self) -> None:
                server._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        host = (handler.headers.get(FORWARDED_HOST) or default_host(split.path)).strip().lower()
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        record: dict[str, Any] = {
            "method": handler.command,
            "path": split.path,
            "query": query,
            "headers": dict(handler.headers.items()),
            "body": body,
            "host": host,
            "status": 0,
            "at": time.time(),
        }
        with self._lock:
            self.requests.append(record)
        req = _Req(handler.command, split.path, split.query, query, handler.headers, body, host)
        with self._lock:
            download = self._downloads.get(re.sub(r":\w+$", "", split.path)) if handler.command == "GET" else None
        if download is not None:
            status, payload, headers, delay = self._download(req, download)
        else:
            status, payload, headers, delay = self._api(req)
        if delay:
            time.sleep(delay)
        record["status"] = status
        self._reply(handler, status, payload, headers)

    def _api(self, req: _Req) -> tuple[int, dict[str, Any] | bytes | None, dict[str, str], float]:
        route = next(
            ((r, m) for r in _ROUTES if r[0] == req.method and (m := r[1].fullmatch(req.path)) is not None), None
        )
        v1 = req.path.startswith("/1.1/")
        if route is None:
            body = v1_error(404, "Sorry, that page does not exist", 34) if v1 else problem(404, "Not Found")
            return 404, body.body, {}, 0.0
        (_, _, template, name, kind), match = route
        req.args = match.groups()
        key = (req.method, template, self._claimed_token(req))
        try:
            self._authenticate(req, kind, v1)
        except Problem as exc:
            with self._lock:
                headers = self._rate_headers(self._bucket(key, req.path))
            return exc.status, exc.body, headers, 0.0
        with self._lock:
            bucket = self._bucket(key, req.path)
            if bucket.remaining <= 0:
                return 429, self._fault_body(429, None, v1), self._rate_headers(bucket), 0.0
            bucket.remaining -= 1
            fault = self._take_fault(req.method, req.path)
            if fault is not None and fault.status == 429:
                bucket.remaining, bucket.reset = 0, time.time() + fault.reset_in
            headers = self._rate_headers(bucket)
        if req.auth == "user":
            headers["x-access-level"] = ACCESS_LEVEL
        if fault is not None and fault.status is not None:
            return fault.status, self._fault_body(fault.status, fault.detail, v1), headers, fault.delay
        try:
            status, payload = getattr(self, f"_h_{name}")(req)
        except Problem as exc:
            status, payload = exc.status, exc.body
        return status, payload, headers, fault.delay if fault is not None else 0.0

    def _download(
        self, req: _Req, download: _Download
    ) -> tuple[int, dict[str, Any] | bytes | None, dict[str, str], float]:
        with self._lock:
            fault = self._take_fault(req.method, req.path)
        if download.auth:
            try:
                self._authenticate(req, "user", True)
            except Problem as exc:
                return exc.status, exc.body, {}, 0.0
        if fault is not None and fault.status is not None:
            return fault.status, self._fault_body(fault.status, fault.detail, True), {}, fault.delay
        headers = {"Content-Type": download.content_type, "Cache-Control": "max-age=604800, must-revalidate"}
        return 200, download.content, headers, fault.delay if fault is not None else 0.0

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any] | bytes | None, headers: dict[str, str]
    ) -> None:
        headers = dict(headers)
        if isinstance(payload, dict):
            body = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        else:
            body = payload or b""
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if body:
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout), as on the real network

    # --- authentication ----------------------------------------------------------------------------------------------
    @staticmethod
    def _claimed_token(req: _Req) -> str:
        """Whose rate limit a call counts against: the user token it is signed with, or the app (bearer)."""
        header = req.headers.get("Authorization") or ""
        if header.startswith("OAuth "):
            try:
                return dict(parse_authorization_header(header)).get("oauth_token", "") or "oauth"
            except ValueError:
                return "oauth"
        return "app" if header.startswith("Bearer ") else "anonymous"

    def _authenticate(self, req: _Req, kind: str, v1: bool) -> None:
        header = req.headers.get("Authorization") or ""
        unauthorized = v1_error(401) if v1 else problem(401)
        if header.startswith("OAuth "):
            if not self._oauth_valid(req):
                raise unauthorized
            if kind == "app":
                raise problem(
                    403,
                    "Authenticating with OAuth 1.0a User Context is forbidden for this endpoint.  Supported "
                    "authentication types are [OAuth 2.0 Application-Only].",
                    title="Unsupported Authentication",
                    type_=PROBLEM_UNSUPPORTED_AUTH,
                )
            req.auth = "user"
        elif header.startswith("Bearer "):
            if not hmac.compare_digest(header[7:].strip().encode(), self.bearer_token.encode()):
                raise unauthorized
            if kind == "user":
                raise problem(
                    403,
                    "Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint.  Supported "
                    "authentication types are [OAuth 1.0a User Context, OAuth 2.0 User Context].",
                    title="Unsupported Authentication",
                    type_=PROBLEM_UNSUPPORTED_AUTH,
                )
            req.auth = "app"
        else:
            raise unauthorized

    def _oauth_valid(self, req: _Req) -> bool:
        """HMAC-SHA1 over the ORIGINAL https URL (host from X-Forwarded-Host), as the client signed it."""
        query = f"?{req.raw_query}" if req.raw_query else ""
        uri = f"https://{req.host}{req.path}{query}"
        form = "application/x-www-form-urlencoded" in (req.headers.get("Content-Type") or "")
        body = req.body.decode("utf-8", "replace") if form else ""
        try:
            valid, request = self._oauth.validate_request(uri, req.method, body, dict(req.headers.items()))
        except ValueError:
            return False
        token = (request.resource_owner_key or "") if request is not None else ""
        return bool(valid) and hmac.compare_digest(token.encode(), self.access_token.encode())

    # --- parameters --------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_query(req: _Req, allowed: Iterable[str]) -> dict[str, str]:
        allowed = sorted(allowed)
        for name in req.query:
            if name not in allowed:
                raise invalid(
                    f"The query parameter [{name}] is not one of [{','.join(allowed)}]", {name: [req.query[name]]}
                )
        return req.query

    @staticmethod
    def _csv(query: dict[str, str], name: str, allowed: frozenset[str]) -> set[str]:
        if name not in query:
            return set()
        values = query[name].split(",")
        for value in values:
            if value not in allowed:
                raise invalid(
                    f"The `{name}` query parameter value [{value}] is not one of [{','.join(sorted(allowed))}]",
                    {name: [query[name]]},
                )
        return set(values)

    def _options(self, query: dict[str, str], expansions: frozenset[str]) -> _Options:
        return _Options(
            self._csv(query, "expansions", expansions),
            {name: self._csv(query, name, allowed) for name, allowed in FIELD_SETS.items()},
        )

    @staticmethod
    def _int_param(query: dict[str, str], name: str, low: int, high: int, default: int) -> int:
        if name not in query:
            return default
        value = query[name]
        if not re.fullmatch(r"\d{1,9}", value) or not low <= int(value) <= high:
            raise invalid(
                f"The `{name}` query parameter value [{value}] is not between {low} and {high}", {name: [value]}
            )
        return int(value)

    @staticmethod
    def _id_param(query: dict[str, str], name: str) -> int | None:
        if name not in query:
            return None
        value = query[name]
        if not re.fullmatch(r"\d{1,19}", value):
            raise invalid(f"The `{name}` query parameter value [{value}] is not valid", {name: [value]})
        return int(value)

    @staticmethod
    def _time_param(query: dict[str, str], name: str) -> datetime | None:
        if name not in query:
            return None
        value = query[name]
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise invalid(
                f"Invalid '{name}':'{value}'. '{name}' must be a valid RFC3339 date-time (YYYY-MM-DDTHH:mm:ssZ)",
                {name: [value]},
            )
        return parsed

    # --- rendering ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _project(obj: dict[str, Any], defaults: Iterable[str], wanted: Iterable[str]) -> dict[str, Any]:
        keys = set(defaults) | set(wanted)
        return {k: copy.deepcopy(v) for k, v in obj.items() if k in keys}

    def _render(self, objects: list[dict[str, Any]], kind: str, opts: _Options) -> dict[str, Any]:
        """{"data", "includes", "errors"} for primary objects of ``kind`` ("tweet" | "dm" | "user"): fields as asked,
        includes with exactly the users / media / tweets these objects reference."""
        field_name = {"tweet": "tweet.fields", "dm": "dm_event.fields", "user": "user.fields"}[kind]
        extra = {EXPANSION_FIELD[e] for e in opts.expansions if e in EXPANSION_FIELD}
        data = [self._project(o, DEFAULT_FIELDS[kind], opts.fields[field_name] | extra) for o in objects]
        users: dict[str, dict[str, Any]] = {}
        media: dict[str, dict[str, Any]] = {}
        tweets: dict[str, dict[str, Any]] = {}
        errors: list[dict[str, Any]] = []

        def add_user(user_id: str | None, parameter: str) -> None:
            if not user_id or user_id in users:
                return
            if user_id in self._users:
                users[user_id] = self._project(self._users[user_id], DEFAULT_FIELDS["user"], opts.fields["user.fields"])
            else:
                errors.append(not_found_error("user", parameter, user_id))

        tweet_extra = {"author_id"} if "referenced_tweets.id.author_id" in opts.expansions else set()
        for obj in objects:
            if kind == "dm":
                if "sender_id" in opts.expansions:
                    add_user(obj.get("sender_id"), "sender_id")
                if "participant_ids" in opts.expansions:
                    for user_id in obj.get("participant_ids", []):
                        add_user(user_id, "participant_ids")
            if kind == "tweet":
                if "author_id" in opts.expansions:
                    add_user(obj.get("author_id"), "author_id")
                if "in_reply_to_user_id" in opts.expansions:
                    add_user(obj.get("in_reply_to_user_id"), "in_reply_to_user_id")
                if "entities.mentions.username" in opts.expansions:
                    for mention in obj.get("entities", {}).get("mentions", []):
                        add_user(mention.get("id"), "entities.mentions.username")
            if "attachments.media_keys" in opts.expansions:
                for media_key in obj.get("attachments", {}).get("media_keys", []):
                    if media_key in self._media:
                        item = self._media[media_key].v2()
                        media[media_key] = self._project(item, DEFAULT_FIELDS["media"], opts.fields["media.fields"])
                    else:
                        errors.append(not_found_error("media", "attachments.media_keys", media_key))
            if "referenced_tweets.id" in opts.expansions or "referenced_tweets.id.author_id" in opts.expansions:
                for ref in obj.get("referenced_tweets", []):
                    referenced = self._tweets.get(ref["id"])
                    if referenced is None:
                        errors.append(not_found_error("tweet", "referenced_tweets.id", ref["id"]))
                        continue
                    if "referenced_tweets.id" in opts.expansions:
                        tweets[ref["id"]] = self._project(
                            referenced, DEFAULT_FIELDS["tweet"], opts.fields["tweet.fields"] | tweet_extra
                        )
                    if "referenced_tweets.id.author_id" in opts.expansions:
                        add_user(referenced["author_id"], "referenced_tweets.id.author_id")
        answer: dict[str, Any] = {"data": data}
        includes = {
            name: list(values.values())
            for name, values in (("users", users), ("tweets", tweets), ("media", media))
            if values
        }
        if includes:
            answer["includes"] = includes
        if errors:
            answer["errors"] = errors
        return answer

    def _page(
        self, items: list[dict[str, Any]], query: dict[str, str], *, scope: str, max_results: int, dm: bool
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One page of ``items`` (newest first) and its pagination tokens. Tokens are opaque and bound to ``scope``;
        a next page holds what is older than the last item served (inclusive when pages overlap)."""
        token = query.get("pagination_token")
        if token is not None:
            entry = self._page_tokens.get(token)
            if entry is None or entry[0] != scope:
                raise invalid(
                    f"The `pagination_token` query parameter value [{token}] is not valid",
                    {"pagination_token": [token]},
                )
            _, direction, boundary, inclusive = entry
            if direction == "next":
                page = [i for i in items if int(i["id"]) < boundary or (inclusive and int(i["id"]) == boundary)]
                page = page[:max_results]
            else:
                page = [i for i in items if int(i["id"]) > boundary][-max_results:]
        else:
            page = items[:max_results]
        meta: dict[str, Any] = {}
        if page:
            last = int(page[-1]["id"])
            if any(int(i["id"]) < last for i in items):
                overlap = self._duplicate_pages and len(page) > 1
                meta["next_token"] = self._new_page_token(scope, "next", last, overlap, dm)
            if token is not None or dm:
                meta["previous_token"] = self._new_page_token(scope, "previous", int(page[0]["id"]), False, dm)
        return page, meta

    def _new_page_token(self, scope: str, direction: str, boundary: int, inclusive: bool, dm: bool) -> str:
        if dm:  # recorded: "18LAA5G1SL0NR5OG0G00ZZZZ"
            token = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(20)) + "ZZZZ"
        else:  # recorded: "7140dibdnow9c7btw423i3sy3u5zupmkcpofxcsmxj48j"
            token = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(45))
        self._page_tokens[token] = (scope, direction, boundary, inclusive)
        return token

    # --- endpoints: users --------------------------------------------------------------------------------------------
    def _h_users_me(self, req: _Req) -> tuple[int, dict[str, Any]]:
        query = self._check_query(req, USER_QUERY)
        opts = self._options(query, USER_EXPANSIONS)
        with self._lock:
            answer = self._render([self._users[self.me["id"]]], "user", opts)
        answer["data"] = answer["data"][0]
        return 200, answer

    def _h_user(self, req: _Req) -> tuple[int, dict[str, Any]]:
        return self._users_answer(req, [req.args[0]], "id", single=True)

    def _h_users(self, req: _Req) -> tuple[int, dict[str, Any]]:
        query = self._check_query(req, USER_QUERY | {"ids"})
        ids = [i for i in query.get("ids", "").split(",") if i]
        if not ids or len(ids) > 100 or not all(i.isdigit() for i in ids):
            raise invalid("The `ids` query parameter value is not valid", {"ids": [query.get("ids", "")]})
        return self._users_answer(req, ids, "ids", single=False)

    def _h_user_by_username(self, req: _Req) -> tuple[int, dict[str, Any]]:
        with self._lock:
            user = self._user_by_username(req.args[0])
        if user is None:
            self._check_query(req, USER_QUERY)
            return 200, {"errors": [not_found_error("user", "username", req.args[0])]}
        return self._users_answer(req, [user["id"]], "username", single=True)

    def _users_answer(self, req: _Req, ids: list[str], parameter: str, *, single: bool) -> tuple[int, dict[str, Any]]:
        query = self._check_query(req, USER_QUERY | ({"ids"} if parameter == "ids" else set()))
        opts = self._options(query, USER_EXPANSIONS)
        with self._lock:
            found = [self._users[i] for i in ids if i in self._users]
            answer = self._render(found, "user", opts) if found else {}
        missing = [not_found_error("user", parameter, i) for i in ids if i not in self._users]
        if missing:
            answer["errors"] = answer.get("errors", []) + missing
        if single and "data" in answer:
            answer["data"] = answer["data"][0]
        return 200, answer

    # --- endpoints: tweets -------------------------------------------------------------------------------------------
    def _h_mentions(self, req: _Req) -> tuple[int, dict[str, Any]]:
        user_id = req.args[0]
        query = self._check_query(req, TIMELINE_QUERY)
        opts = self._options(query, TWEET_EXPANSIONS)
        max_results = self._int_param(query, "max_results", 5, 100, 10)
        since_id, until_id = self._id_param(query, "since_id"), self._id_param(query, "until_id")
        start_time, end_time = self._time_param(query, "start_time"), self._time_param(query, "end_time")
        if since_id is not None and until_id is not None and since_id >= until_id:
            raise invalid("since_id must be smaller than until_id", {"since_id": [str(since_id)]})
        with self._lock:
            items = []
            for tweet_id, tweet in self._tweets.items():
                if user_id not in self._mentions_of.get(tweet_id, set()):
                    continue
                if since_id is not None and int(tweet_id) <= since_id:
                    continue
                if until_id is not None and int(tweet_id) >= until_id:
                    continue
                created = datetime.fromisoformat(tweet["created_at"].replace("Z", "+00:00"))
                if (start_time and created < start_time) or (end_time and created >= end_time):
                    continue
                items.append(tweet)
            items.sort(key=lambda t: -int(t["id"]))
            page, tokens = self._page(items, query, scope=f"mentions:{user_id}", max_results=max_results, dm=False)
            if not page:
                return 200, {"meta": {"result_count": 0}}
            answer = self._render(page, "tweet", opts)
        answer["meta"] = {
            "result_count": len(page),
            "newest_id": page[0]["id"],
            "oldest_id": page[-1]["id"],
            **tokens,
        }
        return 200, answer

    def _h_tweet(self, req: _Req) -> tuple[int, dict[str, Any]]:
        query = self._check_query(req, TWEET_QUERY)
        opts = self._options(query, TWEET_EXPANSIONS)
        with self._lock:
            tweet = self._tweets.get(req.args[0])
            if tweet is None:
                return 200, {"errors": [not_found_error("tweet", "id", req.args[0])]}
            answer = self._render([tweet], "tweet", opts)
        answer["data"] = answer["data"][0]
        return 200, answer

    def _h_tweets(self, req: _Req) -> tuple[int, dict[str, Any]]:
        query = self._check_query(req, TWEET_QUERY | {"ids"})
        ids = [i for i in query.get("ids", "").split(",") if i]
        if not ids or len(ids) > 100 or not all(i.isdigit() for i in ids):
            raise invalid("The `ids` query parameter value is not valid", {"ids": [query.get("ids", "")]})
        opts = self._options(query, TWEET_EXPANSIONS)
        with self._lock:
            found = [self._tweets[i] for i in ids if i in self._tweets]
            answer = self._render(found, "tweet", opts) if found else {}
            missing = [not_found_error("tweet", "ids", i) for i in ids if i not in self._tweets]
        if missing:
            answer["errors"] = answer.get("errors", []) + missing
        return 200, answer

    def _h_create_tweet(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        body = req.json_body()
        for name in body:
            if name not in TWEET_BODY_KEYS:
                raise invalid(
                    f"$.{name}: is not defined in the schema and the schema does not allow additional properties"
                )
        text = body.get("text", "")
        if not isinstance(text, str):
            raise invalid("$.text: must be a string")
        reply = body.get("reply")
        reply_to: str | None = None
        if reply is not None:
            if not isinstance(reply, dict) or not isinstance(reply.get("in_reply_to_tweet_id"), str):
                raise invalid("$.reply.in_reply_to_tweet_id: is missing but it is required")
            reply_to = reply["in_reply_to_tweet_id"]
        media_ids = self._media_ids(body.get("media"))
        quote = body.get("quote_tweet_id")
        if quote is not None and (not isinstance(quote, str) or not quote.isdigit()):
            raise invalid("$.quote_tweet_id: does not match the regex pattern ^[0-9]{1,19}$")
        if not text and not media_ids and quote is None and "poll" not in body and "card_uri" not in body:
            raise invalid(
                "Your request must include at least one of text, media, poll, card_uri, quote_tweet_id, or "
                "direct_message_deep_link."
            )
        if tweet_length(text) > MAX_TWEET_LENGTH:
            raise problem(403, TOO_LONG)
        with self._lock:
            if reply_to is not None and reply_to not in self._tweets:
                raise problem(403, REPLY_UNKNOWN)
            if quote is not None and quote not in self._tweets:
                raise invalid(f"quote_tweet_id [{quote}] does not exist", {"quote_tweet_id": [quote]})
            if text and text.strip() in self._our_texts:
                raise problem(403, DUPLICATE)
            uploads = self._attachable(media_ids, dm=False)
            tweet_id, at = self._claim_id(None, None)
            items = [
                self._make_media(u.content, u.content_type, dm_event_id=None, media_id=u.media_id) for u in uploads
            ]
            mentioned = {m["id"] for m in self._v2_entities(text, [], str).get("mentions", []) if "id" in m}
            tweet = self._store_tweet(
                tweet_id,
                at,
                self.me["id"],
                text,
                lang="en",
                reply_to=reply_to,
                items=items,
                mentions=mentioned,
                quote=quote,
            )
            if text:
                self._our_texts.add(text.strip())
            self.tweets.append(
                {"id": tweet_id, "text": text, "in_reply_to_tweet_id": reply_to, "media_ids": list(media_ids)}
            )
        return 201, {"data": {"id": tweet_id, "text": tweet["text"], "edit_history_tweet_ids": [tweet_id]}}

    def _h_delete_tweet(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        with self._lock:
            tweet = self._tweets.get(req.args[0])
            if tweet is None or tweet["author_id"] != self.me["id"]:
                raise problem(403, "You are not allowed to delete this Tweet.") if tweet else problem(404)
            del self._tweets[req.args[0]]
            self._mentions_of.pop(req.args[0], None)
        return 200, {"data": {"deleted": True}}

    @staticmethod
    def _media_ids(media: Any) -> list[str]:
        if media is None:
            return []
        ids = media.get("media_ids") if isinstance(media, dict) else None
        if not isinstance(ids, list) or not 1 <= len(ids) <= 4:
            raise invalid("$.media.media_ids: must have between 1 and 4 items")
        if not all(isinstance(i, str) and i.isdigit() for i in ids):
            raise invalid("$.media.media_ids[0]: does not match the regex pattern ^[0-9]{1,19}$")
        return ids

    def _attachable(self, media_ids: list[str], *, dm: bool) -> list[_Upload]:
        """Finished uploads of ours, of a category that fits (dm_* for DMs, tweet_* for tweets), as X requires."""
        uploads = []
        for media_id in media_ids:
            upload = self._upload_state.get(media_id)
            if upload is None or not upload.finalized:
                raise invalid(f"Your media IDs are invalid. [{media_id}]", {"media_ids": [media_id]})
            if upload.category.startswith("dm_") != dm:
                wanted = "dm_image, dm_gif or dm_video" if dm else "tweet_image, tweet_gif or tweet_video"
                raise invalid(
                    f"Media {media_id} was uploaded with media_category {upload.category}; use {wanted}",
                    {"media_ids": [media_id]},
                )
            uploads.append(upload)
        return uploads

    # --- endpoints: DMs ----------------------------------------------------------------------------------------------
    def _h_dm_events(self, req: _Req) -> tuple[int, dict[str, Any]]:
        return self._dm_events_answer(req, None, "dm_events")

    def _h_dm_events_with(self, req: _Req) -> tuple[int, dict[str, Any]]:
        return self._dm_events_answer(req, _conversation_id(self.me["id"], req.args[0]), "with")

    def _h_dm_events_in(self, req: _Req) -> tuple[int, dict[str, Any]]:
        return self._dm_events_answer(req, req.args[0], "in")

    def _dm_events_answer(self, req: _Req, conversation: str | None, scope: str) -> tuple[int, dict[str, Any]]:
        query = self._check_query(req, DM_QUERY)
        opts = self._options(query, DM_EXPANSIONS)
        event_types = self._csv(query, "event_types", DM_EVENT_TYPES) or set(DM_EVENT_TYPES)
        max_results = self._int_param(query, "max_results", 1, 100, 100)
        with self._lock:
            items = [
                e
                for e in self._dms.values()
                if e["event_type"] in event_types and (conversation is None or e["dm_conversation_id"] == conversation)
            ]
            items.sort(key=lambda e: -int(e["id"]))
            page, tokens = self._page(
                items, query, scope=f"{scope}:{conversation or ''}", max_results=max_results, dm=True
            )
            if not page:
                return 200, {"meta": {"result_count": 0}}
            answer = self._render(page, "dm", opts)
        answer["meta"] = {"result_count": len(page), **tokens}
        return 200, answer

    def _h_send_dm_with(self, req: _Req) -> tuple[int, dict[str, Any]]:
        return self._send_dm(req, req.args[0])

    def _h_send_dm_in(self, req: _Req) -> tuple[int, dict[str, Any]]:
        parts = req.args[0].split("-")
        if len(parts) != 2 or self.me["id"] not in parts:
            raise problem(403, "You are not a participant of this conversation.")
        return self._send_dm(req, parts[0] if parts[1] == self.me["id"] else parts[1])

    def _send_dm(self, req: _Req, participant: str) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        body = req.json_body()
        for name in body:
            if name not in ("text", "attachments"):
                raise invalid(
                    f"$.{name}: is not defined in the schema and the schema does not allow additional properties"
                )
        text = body.get("text", "")
        attachments = body.get("attachments")
        if not isinstance(text, str):
            raise invalid("$.text: must be a string")
        media_ids: list[str] = []
        if attachments is not None:
            valid = isinstance(attachments, list) and len(attachments) == 1 and isinstance(attachments[0], dict)
            media_id = attachments[0].get("media_id") if valid else None
            if not isinstance(media_id, str) or not media_id.isdigit():
                raise invalid('$.attachments: must hold exactly one {"media_id": "<digits>"}')
            media_ids = [media_id]
        if not text and not media_ids:
            raise invalid("One of text or attachments must be provided.")
        if len(text) > MAX_DM_LENGTH:
            raise invalid(f"$.text: may only be {MAX_DM_LENGTH} characters long")
        with self._lock:
            if participant not in self._users:
                raise invalid(f"The participant_id [{participant}] does not exist", {"participant_id": [participant]})
            if participant in self._refusing:
                raise problem(403, DM_NOT_PERMITTED)
            uploads = self._attachable(media_ids, dm=True)
            event_id, at = self._claim_id(None, None)
            items = [
                self._make_media(u.content, u.content_type, dm_event_id=event_id, media_id=u.media_id) for u in uploads
            ]
            event = self._store_dm(event_id, at, self.me["id"], participant, text, items, app=True)
            record = {
                "participant_id": participant,
                "text": text,
                "media_ids": media_ids,
                "dm_event_id": event_id,
                "dm_conversation_id": event["dm_conversation_id"],
            }
            self.sent_dms.append(record)
        return 201, {"data": {"dm_conversation_id": event["dm_conversation_id"], "dm_event_id": event_id}}

    # --- endpoints: media upload -------------------------------------------------------------------------------------
    def _h_upload(self, req: _Req) -> tuple[int, dict[str, Any] | None]:
        try:
            fields, files, types = req.form()
        except (ValueError, UnicodeDecodeError) as exc:
            raise upload_error(f"Bad multipart body: {exc}") from exc
        if "media_data" in fields and "media" not in files:
            try:
                files["media"] = base64.b64decode(fields.pop("media_data"), validate=True)
            except ValueError as exc:
                raise upload_error("media_data is not valid base64.") from exc
        command = fields.get("command")
        if command is None:
            return self._simple_upload(fields, files, types)
        if command == "INIT":
            return self._upload_init(fields)
        if command == "APPEND":
            return self._upload_append(fields, files)
        if command == "FINALIZE":
            return self._upload_finalize(fields)
        raise upload_error(f"Invalid command {command!r}.")

    def _simple_upload(
        self, fields: dict[str, str], files: dict[str, bytes], types: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        content = files.get("media")
        if content is None:
            raise upload_error("media parameter is missing.")
        content_type = sniff(content) or types.get("media", "")
        if content_type not in MEDIA_TYPES:
            raise upload_error("media type unrecognized.")
        if content_type.startswith("video/"):
            raise upload_error("Videos must be uploaded with the chunked upload commands (INIT/APPEND/FINALIZE).")
        category = self._category(fields.get("media_category"), content_type)
        with self._lock:
            upload = _Upload(str(self._new_id(None)), category, content_type, len(content))
            upload.segments[0] = content
            self._upload_state[upload.media_id] = upload
        return 200, self._finish_upload(upload)

    def _category(self, category: str | None, content_type: str) -> str:
        if category is None:
            kind = "gif" if content_type == "image/gif" else "video" if content_type.startswith("video/") else "image"
            return f"tweet_{kind}"
        if category.lower() not in MEDIA_CATEGORIES:
            raise upload_error(f"Invalid media_category {category!r}.")
        return category.lower()

    def _upload_init(self, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        total, media_type = fields.get("total_bytes", ""), fields.get("media_type", "")
        if not total.isdigit() or int(total) <= 0:
            raise upload_error("total_bytes is missing or not a positive integer.")
        if media_type not in MEDIA_TYPES:
            raise upload_error("media type unrecognized.")
        limit = MAX_GIF if media_type == "image/gif" else MAX_VIDEO if media_type.startswith("video/") else MAX_IMAGE
        if int(total) > limit:
            raise upload_error(f"File size exceeds {limit} bytes.")
        category = self._category(fields.get("media_category"), media_type)
        with self._lock:
            upload = _Upload(str(self._new_id(None)), category, media_type, int(total))
            self._upload_state[upload.media_id] = upload
        return 202, {
            "media_id": int(upload.media_id),
            "media_id_string": upload.media_id,
            "media_key": upload.media_key,
            "expires_after_secs": 86399,
        }

    def _upload_session(self, fields: dict[str, str]) -> _Upload:
        upload = self._upload_state.get(fields.get("media_id", ""))
        if upload is None:
            raise upload_error("Invalid or expired media_id.")
        return upload

    def _upload_append(self, fields: dict[str, str], files: dict[str, bytes]) -> tuple[int, None]:
        index = fields.get("segment_index", "")
        if not index.isdigit() or int(index) > 999:
            raise upload_error("segment_index must be between 0 and 999.")
        chunk = files.get("media")
        if chunk is None:
            raise upload_error("media parameter is missing.")
        if len(chunk) > MAX_SEGMENT:
            raise upload_error(f"Segment size exceeds {MAX_SEGMENT} bytes.")
        with self._lock:
            upload = self._upload_session(fields)
            if upload.finalized:
                raise upload_error("This media has already been finalized.")
            upload.segments[int(index)] = chunk
        return 204, None

    def _upload_finalize(self, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            upload = self._upload_session(fields)
            if not upload.finalized:
                size = sum(len(s) for s in upload.segments.values())
                if size != upload.total_bytes:
                    raise upload_error(f"File size mismatch: total_bytes was {upload.total_bytes}, got {size}.")
                content = b"".join(upload.segments[i] for i in sorted(upload.segments))
                found = sniff(content)
                if found is not None and found != upload.content_type:
                    raise upload_error(f"media_type {upload.content_type} does not match the content ({found}).")
            return 201, self._finish_upload(upload)

    def _finish_upload(self, upload: _Upload) -> dict[str, Any]:
        with self._lock:
            if not upload.finalized:
                upload.content = b"".join(upload.segments[i] for i in sorted(upload.segments))
                upload.segments.clear()
                upload.finalized = True
                upload.width, upload.height = image_size(upload.content) or (1280, 720)
                upload.polls_left = self.video_processing_polls if upload.kind != "photo" else 0
                self.uploads.append(
                    {
                        "media_id": upload.media_id,
                        "media_category": upload.category,
                        "content_type": upload.content_type,
                        "content": upload.content,
                    }
                )
            answer: dict[str, Any] = {
                "media_id": int(upload.media_id),
                "media_id_string": upload.media_id,
                "media_key": upload.media_key,
                "size": len(upload.content),
                "expires_after_secs": 86400,
            }
            if upload.kind == "photo":
                answer["image"] = {"image_type": upload.content_type, "w": upload.width, "h": upload.height}
            else:
                answer["video"] = {"video_type": "video/mp4" if upload.kind == "video" else "image/gif"}
                answer["processing_info"] = self._processing_info(upload)
            return answer

    @staticmethod
    def _processing_info(upload: _Upload) -> dict[str, Any]:
        if upload.polls_left > 0:
            return {"state": "in_progress", "check_after_secs": 1, "progress_percent": 50}
        return {"state": "succeeded", "progress_percent": 100}

    def _h_upload_status(self, req: _Req) -> tuple[int, dict[str, Any]]:
        if req.query.get("command") != "STATUS":
            raise upload_error("Invalid command.")
        with self._lock:
            upload = self._upload_session(req.query)
            if not upload.finalized:
                raise upload_error("The media has not been finalized.")
            upload.polls_left = max(0, upload.polls_left - 1)
            info = self._processing_info(upload)
        return 200, {"media_id": int(upload.media_id), "media_id_string": upload.media_id, "processing_info": info}

    # --- endpoints: webhooks -----------------------------------------------------------------------------------------
    def _h_create_webhook(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        body = req.json_body()
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise invalid("$.url: is missing but it is required")
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https") or (self.https_only_webhooks and scheme != "https"):
            raise invalid("The webhook URL must use https.", {"url": [url]})
        with self._lock:
            if any(hook["url"] == url for hook in self._webhooks.values()):
                raise invalid("DuplicateUrlFailed: a webhook with this URL already exists.", {"url": [url]})
            if len(self._webhooks) >= self.max_webhooks:
                raise problem(403, "TooManyWebhooks: the application has reached its webhook limit.")
        if not self.crc_check(url):  # outside the lock: the webhook may call us back
            raise Problem(
                400,
                {
                    "errors": [{"message": "CRC check failed", "parameters": {"url": [url]}}],
                    "title": "Invalid Request",
                    "detail": "CRC check failed",
                    "type": PROBLEM_INVALID,
                    "status": 400,
                },
            )
        with self._lock:
            hook_id = str(self._new_id(None))
            hook = {"id": hook_id, "url": url, "valid": True, "created_at": iso(datetime.now(UTC))}
            self._webhooks[hook_id] = hook
        return 200, {"data": dict(hook)}

    def _h_list_webhooks(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, {"webhook_config.fields"})
        hooks = self.webhooks()
        return 200, {"data": hooks, "meta": {"result_count": len(hooks)}}

    def _h_validate_webhook(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        with self._lock:
            hook = self._webhooks.get(req.args[0])
        if hook is None:
            raise problem(404, f"Could not find webhook with id: [{req.args[0]}].", type_=PROBLEM_NOT_FOUND)
        valid = self.crc_check(hook["url"])
        with self._lock:
            hook["valid"] = valid
        return 200, {"data": {"attempted": True}}

    def _h_delete_webhook(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        with self._lock:
            if self._webhooks.pop(req.args[0], None) is None:
                raise problem(404, f"Could not find webhook with id: [{req.args[0]}].", type_=PROBLEM_NOT_FOUND)
            self._subscriptions.pop(req.args[0], None)
        return 200, {"data": {"deleted": True}}

    def _hook(self, hook_id: str) -> dict[str, Any]:
        hook = self._webhooks.get(hook_id)
        if hook is None:
            raise invalid(f"Webhook id [{hook_id}] is invalid (WebhookIdInvalid).", {"webhook_id": [hook_id]})
        return hook

    def _h_subscribe(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        with self._lock:
            hook = self._hook(req.args[0])
            if not hook["valid"]:
                raise invalid("The webhook is not valid: its last CRC check failed.", {"webhook_id": [hook["id"]]})
            self._subscriptions.setdefault(hook["id"], set()).add(self.me["id"])
        return 200, {"data": {"subscribed": True}}

    def _h_subscription(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        with self._lock:
            hook = self._hook(req.args[0])
            subscribed = self.me["id"] in self._subscriptions.get(hook["id"], set())
        return 200, {"data": {"subscribed": subscribed}}

    def _h_subscriptions_list(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        with self._lock:
            hook = self._hook(req.args[0])
            users = sorted(self._subscriptions.get(hook["id"], set()))
        return 200, {
            "data": {
                "application_id": APP_ID,
                "webhook_id": hook["id"],
                "webhook_url": hook["url"],
                "subscriptions": [{"user_id": user_id} for user_id in users],
            }
        }

    def _h_unsubscribe(self, req: _Req) -> tuple[int, dict[str, Any]]:
        self._check_query(req, ())
        with self._lock:
            hook = self._hook(req.args[0])
            self._subscriptions.get(hook["id"], set()).discard(req.args[1])
        return 200, {"data": {"subscribed": False}}


def _media_path(item: MediaItem) -> str:
    return "photo" if item.type == "photo" else "video"


def _direct_opener() -> urllib.request.OpenerDirector:
    """urllib without environment proxies: webhooks under test are on loopback."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))
