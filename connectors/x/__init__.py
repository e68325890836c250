"""X (Twitter) channel: customers' DMs and public mentions of our account; agents answer by DM or public reply.

Modules (plain Python, no Django, no Celery):

- ``normalize``  stored event (v2 polling item or v1.1 webhook event) -> InboundMessage; v2 pages -> stored items
- ``text``       weighted length (twitter-text v3: URLs 23, CJK/emoji 2), splitting a long public reply into a thread
- ``client``     tweepy calls with timeouts, the api_base transport adapter, rate-limit headers, error mapping
- ``webhook``    Account Activity: CRC answer, signature check, splitting a body into stored events

Inbound arrives by polling (``fetch_dm_events`` / ``fetch_mentions`` with a stored cursor, ``next_poll_delay``
spacing the calls within X's rate limits) or by the Account Activity webhook (``verify_signature``, then
``split_webhook``); both give the same external ids (``dm:<id>``, ``tweet:<id>``), so they dedupe each other.

Conversations: DMs under thread key ``"dm"`` (private), public mentions under ``"public"`` (replies are public
posts of at most 280 weighted characters, optionally a thread; ``reply_mode`` tells the agent which).
"""

from __future__ import annotations

import functools
import mimetypes
import posixpath
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests

from connectors.base import (
    AuthError,
    ConnectorContext,
    DiagnosticStep,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    RateLimited,
    ReplyMode,
    SendResult,
    TransientError,
)
from connectors.x.client import (
    DEFAULT_TIMEOUT,
    MEDIA_HOSTS,
    Keys,
    RateInfo,
    Reply,
    XClient,
    XTransportAdapter,
    map_error,
)
from connectors.x.normalize import (
    DM_THREAD,
    PUBLIC_THREAD,
    describe_payload,
    dm_event_item,
    mention_item,
    normalize_payload,
)
from connectors.x.text import (
    DEFAULT_MAX_THREAD_PARTS,
    MAX_DM_LENGTH,
    MAX_POST_WEIGHT,
    split_thread,
    weighted_length,
)
from connectors.x.webhook import (
    SIGNATURE_HEADER,
    SIGNATURE_META_KEY,
    crc_response_token,
    split_webhook,
    verify_signature,
)

__all__ = [
    "DEFAULT_MAX_MEDIA_BYTES",
    "DM_THREAD",
    "MODES",
    "PUBLIC_THREAD",
    "SIGNATURE_HEADER",
    "SIGNATURE_META_KEY",
    "Fetch",
    "RateInfo",
    "XConnector",
    "XTransportAdapter",
    "describe_payload",
    "normalize_payload",
    "split_thread",
    "split_webhook",
    "weighted_length",
]

MODES = ("polling", "webhook")
DEFAULT_MAX_MEDIA_BYTES = 15 * 1024 * 1024  # X's videos and GIFs in DMs reach 15 MB; photos are at most 5 MB
DEFAULT_MIN_POLL_INTERVAL = 60.0
DEFAULT_BACKFILL_PAGES = 1
MAX_RESULTS = 100
# https://docs.x.com/x-api/media/quickstart/media-upload-chunked ("Image: 5 MB"); the formats X accepts for images.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MAX_TWEET_IMAGES = 4
MAX_DM_IMAGES = 1
ACCESS_LEVEL_HEADER = "x-access-level"
DM_ACCESS_LEVEL = "read-write-directmessages"
_DOWNLOAD_CHUNK = 64 * 1024

DM_EVENT_FIELDS = (
    "id,text,event_type,created_at,dm_conversation_id,sender_id,participant_ids,referenced_tweets,attachments,entities"
)
DM_EXPANSIONS = "sender_id,referenced_tweets.id,attachments.media_keys,participant_ids"
MENTION_EXPANSIONS = "author_id,referenced_tweets.id,attachments.media_keys,in_reply_to_user_id"
# note_tweet: the whole text of a post longer than 280 (X cuts "text" short for those).
TWEET_FIELDS = (
    "created_at,author_id,conversation_id,lang,in_reply_to_user_id,referenced_tweets,attachments,entities,note_tweet"
)
USER_FIELDS = "username,name"
MEDIA_FIELDS = "url,type,media_key,preview_image_url,variants,width,height"

# Names of the calls, as in errors and in ``XClient.rates``.
GET_ME = "GET /2/users/me"
GET_DM_EVENTS = "GET /2/dm_events"
GET_MENTIONS = "GET /2/users/:id/mentions"
POST_DM = "POST /2/dm_conversations/with/:participant_id/messages"
POST_TWEET = "POST /2/tweets"
GET_WEBHOOKS = "GET /2/webhooks"
POST_WEBHOOK = "POST /2/webhooks"
PUT_WEBHOOK = "PUT /2/webhooks/:id"
DELETE_WEBHOOK = "DELETE /2/webhooks/:id"
SUBSCRIPTION = "/2/account_activity/webhooks/:id/subscriptions/all"

_NUMERIC = re.compile(r"^\d+$")
_TWEET_REF = re.compile(r"^tweet:(\d+)$")


@dataclass(frozen=True)
class Fetch:
    """One polling round: the new events, oldest first, and where the stream stands now.

    ``newest_id`` is the cursor to store with the events (the newest id seen, our own DMs included; the given
    cursor when nothing newer came; None only when the stream is empty and had no cursor). ``complete`` is False
    when ``max_pages`` (or, on a first poll, ``initial_backfill_pages``) stopped the paging before it reached the
    cursor or the end of the list: older events than the ones returned were not fetched (X pages newest first, so
    they cannot be fetched later by this cursor). ``skipped``: our own DMs / posts seen and left out.
    """

    events: list[tuple[str, dict[str, Any]]]
    newest_id: str | None
    rate: RateInfo | None
    complete: bool
    skipped: int = 0
    pages: int = 0


# --- settings ------------------------------------------------------------------------------------------------------
def _number(settings: Mapping[str, Any], key: str, default: float, *, minimum: float = 0.0) -> float:
    value: Any = settings.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"setting {key!r} must be a number, got {value!r}") from exc
    if isinstance(value, bool) or number != number or number < minimum:
        raise PermanentError(f"setting {key!r} must be a number of at least {minimum:g}, got {value!r}")
    return number


def _integer(settings: Mapping[str, Any], key: str, default: int, *, minimum: int = 0) -> int:
    number = _number(settings, key, default, minimum=minimum)
    if number != int(number):
        raise PermanentError(f"setting {key!r} must be a whole number, got {settings.get(key)!r}")
    return int(number)


def _api_base(settings: Mapping[str, Any]) -> str:
    value = str(settings.get("api_base") or "").strip().rstrip("/")
    if value and not re.match(r"^https?://[^/\s]+$", value):
        raise PermanentError(f"setting 'api_base' must be like http://host:port (no path), got {value!r}")
    return value


def _attachments(metadata: Mapping[str, Any], *, most: int, where: str) -> list[tuple[str, str, bytes]]:
    raw = metadata.get("attachments") or []
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise PermanentError("metadata 'attachments' must be a list of {filename, content_type, content}")
    result: list[tuple[str, str, bytes]] = []
    for index, item in enumerate(raw, start=1):
        content = item.get("content") if isinstance(item, Mapping) else None
        if not isinstance(content, bytes | bytearray):
            raise PermanentError(f"attachment {index} has no content bytes")
        filename = str(item.get("filename") or f"attachment-{index}")
        content_type = str(item.get("content_type") or mimetypes.guess_type(filename)[0] or "").lower()
        content_type = content_type.partition(";")[0].strip()
        if content_type not in IMAGE_TYPES:
            raise PermanentError(
                f"attachment {filename!r} is {content_type or 'of unknown type'}: X replies carry only images "
                "(JPEG, PNG, GIF, WebP)"
            )
        if len(content) > MAX_IMAGE_BYTES:
            raise PermanentError(
                f"attachment {filename!r} is {len(content)} bytes: X accepts images up to 5 MB ({MAX_IMAGE_BYTES} "
                "bytes)"
            )
        result.append((filename, content_type, bytes(content)))
    if len(result) > most:
        raise PermanentError(
            f"{where} on X carries at most {most} image{'s' if most > 1 else ''}; this one has {len(result)}"
        )
    return result


def _data(reply: Reply) -> Mapping[str, Any]:
    data = reply.body.get("data")
    return data if isinstance(data, Mapping) else {}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _partial(error: Exception, *, delivered: int, total: int) -> Exception:
    note = f"{delivered} of {total} posts were already published"
    if isinstance(error, TransientError):
        # A retry would publish the first posts again: let the inbox mark the reply uncertain instead.
        return TransientError(f"{error} ({note}; retrying would repeat them)", maybe_delivered=True)
    return type(error)(f"{error} ({note})")


class XConnector:
    kind: ClassVar[str] = "x"
    label: ClassVar[str] = "X (Twitter)"
    max_text_length: ClassVar[int] = MAX_DM_LENGTH  # a DM; public replies: reply_mode("public")
    per_chat_interval: ClassVar[float] = 0.0
    secret_fields: ClassVar[tuple[str, ...]] = (
        "consumer_key",
        "consumer_secret",
        "access_token",
        "access_token_secret",
        "bearer_token",
    )

    def __init__(
        self,
        *,
        settings: Mapping[str, Any],
        secrets: Mapping[str, Any],
        context: ConnectorContext | None = None,
    ) -> None:
        self.settings = settings
        self.context = context or ConnectorContext()
        self.api_base = _api_base(settings)
        self.mode = str(settings.get("mode") or "polling").strip().lower()
        if self.mode not in MODES:
            raise PermanentError(f"setting 'mode' must be one of {', '.join(MODES)}, got {self.mode!r}")
        user_id = str(settings.get("user_id") or "").strip()
        if user_id and not _NUMERIC.match(user_id):
            raise PermanentError(f"setting 'user_id' must be the account's numeric X id, got {user_id!r}")
        self._user_id = user_id
        self.max_media_bytes = _integer(settings, "max_media_bytes", DEFAULT_MAX_MEDIA_BYTES, minimum=1)
        self.timeout = _number(settings, "timeout", DEFAULT_TIMEOUT, minimum=0.001)
        self.min_poll_interval = _number(settings, "min_poll_interval", DEFAULT_MIN_POLL_INTERVAL)
        self.initial_backfill_pages = _integer(settings, "initial_backfill_pages", DEFAULT_BACKFILL_PAGES)
        self.webhook_url = str(settings.get("webhook_url") or "").strip()
        keys = Keys(**{name: str(secrets.get(name) or "").strip() for name in self.secret_fields})
        self._consumer_secret = keys.consumer_secret
        self.client = XClient(keys, api_base=self.api_base, timeout=self.timeout)
        self._me: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"XConnector(api_base={self.api_base!r}, mode={self.mode!r}, user_id={self._user_id!r})"

    # --- identity ------------------------------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """Our account (GET /2/users/me): {"id", "name", "username"}; asked once per connector instance."""
        if self._me is None:
            reply = self._me_reply()
            data = reply.body.get("data")
            if not isinstance(data, dict) or not _NUMERIC.match(str(data.get("id") or "")):
                raise TransientError(f"unexpected answer from X on {GET_ME}: no user id")
            self._me = data
        return self._me

    def _me_reply(self) -> Reply:
        return self.client.call(GET_ME, lambda: self.client.client.get_me(user_auth=True))

    @property
    def user_id(self) -> str:
        """Our numeric X id: the ``user_id`` setting, else discovered with ``me()``."""
        if not self._user_id:
            self._user_id = str(self.me()["id"])
        return self._user_id

    # --- inbound -------------------------------------------------------------------------------------------------
    def normalize(self, payload: Mapping[str, Any]) -> list[InboundMessage]:
        """One stored event (see connectors.x.normalize) -> [] or [message]. PermanentError when malformed."""
        return normalize_payload(payload)

    def describe(self, payload: Mapping[str, Any]) -> str:
        """A log line for a stored event, saying why it was ignored when normalize() returned []."""
        return describe_payload(payload)

    def split_webhook(self, payload: Mapping[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
        """An Account Activity body -> ([(external_id, stored payload)], [event kinds ignored])."""
        return split_webhook(payload)

    def crc_response(self, crc_token: str) -> dict[str, str]:
        """The JSON answer to X's CRC GET: {"response_token": "sha256=..."}."""
        if not self._consumer_secret:
            raise AuthError("this X channel has no consumer_secret: it cannot answer X's CRC check")
        return {"response_token": crc_response_token(self._consumer_secret, crc_token)}

    def verify_signature(self, body: bytes, header: str | None) -> bool:
        """The x-twitter-webhooks-signature check on the raw body (constant time; False without a secret)."""
        return verify_signature(self._consumer_secret, body, header)

    def fetch_dm_events(self, after_id: str | None, *, max_pages: int = 50) -> Fetch:
        """DM events newer than ``after_id`` (GET /2/dm_events, MessageCreate only), oldest first. No side effects:
        store the events and ``newest_id`` together. Our own DMs are left out (counted in ``skipped``) but move
        ``newest_id``. With no ``after_id`` only ``initial_backfill_pages`` pages are read (0: none, just the
        position)."""
        me = self.user_id

        def page(token: str | None) -> Reply:
            return self.client.call(
                GET_DM_EVENTS,
                lambda: self.client.client.get_direct_message_events(
                    dm_event_fields=DM_EVENT_FIELDS,
                    event_types="MessageCreate",
                    expansions=DM_EXPANSIONS,
                    user_fields=USER_FIELDS,
                    media_fields=MEDIA_FIELDS,
                    max_results=MAX_RESULTS,
                    user_auth=True,
                    **({"pagination_token": token} if token else {}),
                ),
            )

        def item(event: Mapping[str, Any], includes: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
            own = str(event.get("sender_id") or "") == me
            return dm_event_item(event, includes, me), own

        return self._fetch(page, item, after_id, max_pages=max_pages, prefix="dm")

    def fetch_mentions(self, since_id: str | None, *, max_pages: int = 50) -> Fetch:
        """Posts mentioning us newer than ``since_id`` (GET /2/users/:id/mentions), oldest first; as fetch_dm_events
        (our own posts are left out; retweets are kept and normalize to nothing)."""
        me = self.user_id

        def page(token: str | None) -> Reply:
            return self.client.call(
                GET_MENTIONS,
                lambda: self.client.client.get_users_mentions(
                    me,
                    expansions=MENTION_EXPANSIONS,
                    tweet_fields=TWEET_FIELDS,
                    user_fields=USER_FIELDS,
                    media_fields=MEDIA_FIELDS,
                    max_results=MAX_RESULTS,
                    user_auth=True,
                    **({"since_id": since_id} if since_id else {}),
                    **({"pagination_token": token} if token else {}),
                ),
            )

        def item(tweet: Mapping[str, Any], includes: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
            own = str(tweet.get("author_id") or "") == me
            return mention_item(tweet, includes, me), own

        return self._fetch(page, item, since_id, max_pages=max_pages, prefix="tweet")

    def _fetch(self, page: Any, item: Any, cursor: str | None, *, max_pages: int, prefix: str) -> Fetch:
        if cursor is not None and not _NUMERIC.match(str(cursor)):
            raise PermanentError(f"the stored X position must be a numeric id, got {cursor!r}")
        floor = int(cursor) if cursor else -1
        limit = max(1, max_pages) if cursor else max(1, self.initial_backfill_pages)
        found: dict[int, tuple[str, dict[str, Any]]] = {}
        newest = floor
        skipped = 0
        rate: RateInfo | None = None
        token: str | None = None
        complete = False
        pages = 0
        while pages < limit:
            reply = page(token)
            pages += 1
            rate = reply.rate or rate
            data = reply.body.get("data") or []
            includes = _mapping(reply.body.get("includes"))
            meta = _mapping(reply.body.get("meta"))
            if not isinstance(data, list):
                raise TransientError("unexpected answer from X: 'data' is not a list")
            reached = False
            for entry in data:
                raw_id = str(entry.get("id") or "") if isinstance(entry, Mapping) else ""
                if not _NUMERIC.match(raw_id):
                    raise TransientError(f"unexpected answer from X: an item without a numeric id ({raw_id!r})")
                number = int(raw_id)
                if number <= floor:
                    reached = True
                    continue
                newest = max(newest, number)
                if number in found:
                    continue
                stored, own = item(entry, includes)
                if own:
                    skipped += 1
                    found[number] = ("", {})
                    continue
                found[number] = (f"{prefix}:{raw_id}", stored)
            token = meta.get("next_token") if isinstance(meta.get("next_token"), str) else None
            if reached or not token:
                complete = True
                break
        if cursor is None and self.initial_backfill_pages == 0:
            found = {}
            complete = True
        events = [found[number] for number in sorted(found) if found[number][0]]
        newest_id = str(newest) if newest >= 0 else cursor
        return Fetch(events=events, newest_id=newest_id, rate=rate, complete=complete, skipped=skipped, pages=pages)

    def next_poll_delay(self, rate: RateInfo | None, *, now: float | None = None) -> float:
        """Seconds until the next poll of the endpoint ``rate`` describes: the calls left spread over what remains
        of the window, never under ``min_poll_interval``; when none is left, until the reset (+1 s)."""
        if rate is None:
            return self.min_poll_interval
        current = time.time() if now is None else now
        until_reset = max(0.0, rate.reset_at - current)
        if rate.remaining <= 0:
            return max(self.min_poll_interval, until_reset + 1.0)
        return max(self.min_poll_interval, until_reset / max(rate.remaining, 1))

    def download_file(
        self,
        file_id: str,
        *,
        max_bytes: int | None = None,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> tuple[bytes, str, str]:
        """Download a media URL from metadata files[].file_id -> (content, filename, content_type).

        Only https URLs on X's media hosts (ton.twitter.com and video.twimg.com/dm_* with OAuth 1.0a for DM
        media, pbs.twimg.com, video.twimg.com) are fetched. Refuses files over ``max_bytes`` (default: the
        max_media_bytes setting) with PermanentError: before downloading when Content-Length says so, else while
        streaming."""
        limit = self.max_media_bytes if max_bytes is None else max_bytes
        parts = urllib.parse.urlsplit(str(file_id))
        if parts.scheme != "https" or parts.hostname not in MEDIA_HOSTS:
            raise PermanentError(
                f"refusing to download {parts.hostname or file_id!r}: only X media hosts ({', '.join(MEDIA_HOSTS)}) "
                "are fetched"
            )
        what = f"GET {parts.hostname} media"
        # DM media (ton.twitter.com, and DM videos / GIFs on video.twimg.com) is private: OAuth 1.0a user context.
        private = parts.hostname == "ton.twitter.com" or parts.path.startswith(("/dm_video/", "/dm_gif/"))
        auth = self.client.oauth1() if private else None
        if auth is not None:
            self.client.require()
        chunks: list[bytes] = []
        try:
            with self.client.session.get(str(file_id), auth=auth, stream=True) as response:
                self.client._record(what, response.headers)
                if response.status_code == 404:
                    raise PermanentError("X no longer has this file (404)")
                if response.status_code == 429:
                    reset = RateInfo.from_headers(response.headers)
                    wait = max(1.0, reset.reset_at - time.time()) if reset else 60.0
                    raise RateLimited(f"X rate limit reached for {what}", retry_after=wait)
                if response.status_code in (401, 403):
                    raise PermanentError(f"X refused the download ({response.status_code})")
                if response.status_code >= 500:
                    raise TransientError(f"X server error on {what} ({response.status_code})")
                if response.status_code != 200:
                    raise PermanentError(f"X answered {response.status_code} on {what}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise PermanentError(f"the file is {int(declared)} bytes, over the limit of {limit} bytes")
                size = 0
                for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PermanentError(f"the file is over the limit of {limit} bytes")
                    chunks.append(chunk)
                header_type = response.headers.get("Content-Type", "").partition(";")[0].strip()
        except (PermanentError, TransientError):
            raise
        except requests.RequestException as exc:
            mapped = map_error(exc, what=what)
        else:
            name = filename or posixpath.basename(parts.path) or "media"
            ctype = content_type or header_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
            return b"".join(chunks), name, ctype
        raise mapped

    # --- outbound ------------------------------------------------------------------------------------------------
    def reply_mode(self, thread_key: str) -> ReplyMode:
        if thread_key == PUBLIC_THREAD:
            return ReplyMode(
                visibility="public",
                label="Public reply on X — everyone can see it",
                max_text_length=MAX_POST_WEIGHT,
                max_thread_parts=DEFAULT_MAX_THREAD_PARTS,
                private_thread_key=DM_THREAD,
            )
        return ReplyMode("private", "Private DM on X — only the customer sees it", MAX_DM_LENGTH)

    def text_length(self, text: str) -> int:
        """The weighted length (twitter-text v3: URLs 23, CJK and emoji 2). It is what limits a public post; a DM's
        10,000 limit counts characters, and a DM's weighted length is never smaller, so the inbox's check against
        the DM mode's 10,000 is at worst stricter for CJK-heavy DMs (which ``send`` itself checks with len)."""
        return weighted_length(text)

    def send(self, message: OutboundMessage) -> SendResult:
        """A DM (thread key "dm" or anything not "public") or a public reply (thread key "public"). The first
        post's id; ``send_all`` returns every post of a thread."""
        return self.send_all(message)[0]

    def send_all(self, message: OutboundMessage) -> list[SendResult]:
        if message.thread_key == PUBLIC_THREAD:
            return self._send_public(message)
        return [self._send_dm(message)]

    def _send_dm(self, message: OutboundMessage) -> SendResult:
        recipient = message.recipient.strip()
        if not _NUMERIC.match(recipient):
            raise PermanentError(f"{message.recipient!r} is not an X user id")
        text = message.text.strip()
        images = _attachments(message.metadata, most=MAX_DM_IMAGES, where="a DM")
        if not text and not images:
            raise PermanentError("nothing to send: the reply has no text and no image")
        if len(text) > MAX_DM_LENGTH:
            raise PermanentError(f"X allows {MAX_DM_LENGTH} characters in a DM; this one has {len(text)}")
        media_id = None
        if images:
            filename, _, content = images[0]
            media_id = self.client.upload(filename, content, media_category="dm_image")
        reply = self.client.call(
            POST_DM,
            lambda: self.client.client.create_direct_message(
                participant_id=recipient, text=text or None, media_id=media_id, user_auth=True
            ),
            sending=True,
        )
        data = _data(reply)
        event_id = str(data.get("dm_event_id") or "")
        if not event_id:
            raise TransientError(f"X accepted {POST_DM} without a dm_event_id", maybe_delivered=True)
        return SendResult(provider_id=f"dm:{event_id}", sent_at=datetime.now(UTC))

    def _send_public(self, message: OutboundMessage) -> list[SendResult]:
        match = _TWEET_REF.match(message.reply_to_external_id.strip())
        if not match:
            raise PermanentError(
                "a public reply on X answers a post, and there is none to answer here (reply_to_external_id "
                f"{message.reply_to_external_id!r}); send it as a DM instead"
            )
        text = message.text.strip()
        images = _attachments(message.metadata, most=MAX_TWEET_IMAGES, where="a post")
        if not text and not images:
            raise PermanentError("nothing to send: the reply has no text and no image")
        length = weighted_length(text)
        if length <= MAX_POST_WEIGHT:
            parts = [text]
        elif message.metadata.get("thread"):
            parts = split_thread(text, limit=MAX_POST_WEIGHT, max_parts=DEFAULT_MAX_THREAD_PARTS)
        else:
            raise PermanentError(
                f"X allows {MAX_POST_WEIGHT} characters in a public reply; this one counts {length}. Shorten it, "
                "send it as a thread, or move the conversation to DM."
            )
        media_ids = [self.client.upload(name, content, media_category="tweet_image") for name, _, content in images]
        results: list[SendResult] = []
        previous = match.group(1)
        for index, part in enumerate(parts):
            ids = media_ids if index == 0 and media_ids else None
            try:
                reply = self.client.call(
                    POST_TWEET,
                    functools.partial(
                        self.client.client.create_tweet,
                        text=part or None,
                        in_reply_to_tweet_id=previous,
                        media_ids=ids,
                        user_auth=True,
                    ),
                    sending=True,
                )
                data = _data(reply)
                tweet_id = str(data.get("id") or "")
                if not tweet_id:
                    raise TransientError(f"X accepted {POST_TWEET} without an id", maybe_delivered=True)
            except (PermanentError, TransientError) as exc:
                if not results:
                    raise
                raise _partial(exc, delivered=len(results), total=len(parts)) from None
            results.append(SendResult(provider_id=f"tweet:{tweet_id}", sent_at=datetime.now(UTC)))
            previous = tweet_id
        return results

    # --- webhooks ------------------------------------------------------------------------------------------------
    def webhooks(self) -> list[dict[str, Any]]:
        """The app's registered webhooks (GET /2/webhooks, bearer token): [{"id", "url", "valid", ...}]."""
        reply = self.client.request("GET", "/2/webhooks", what=GET_WEBHOOKS, user_auth=False)
        data = reply.body.get("data")
        return [dict(hook) for hook in data if isinstance(hook, Mapping)] if isinstance(data, list) else []

    def register_webhook(self, url: str) -> dict[str, Any]:
        """Register ``url`` (X first sends it a CRC GET, answered with ``crc_response``) with the bearer token, or
        reuse the app's webhook for that url (asking X to re-check it when it is marked invalid), then subscribe our
        account (user context).
        -> {"webhook_id", "url", "valid", "subscribed"}."""
        if not re.match(r"^https?://", url):
            raise PermanentError(f"the webhook url must be an http(s) URL, got {url!r}")
        existing = next((hook for hook in self.webhooks() if hook.get("url") == url), None)
        if existing is None:
            reply = self.client.request("POST", "/2/webhooks", what=POST_WEBHOOK, json={"url": url}, user_auth=False)
            hook = _data(reply)
        else:
            hook = existing
            if hook.get("valid") is False:
                # Its last CRC failed: PUT /2/webhooks/:id asks X to check it again (subscribing needs it valid).
                self.client.request(
                    "PUT", f"/2/webhooks/{hook.get('id')}", what=PUT_WEBHOOK, json=None, user_auth=False
                )
                hook = next((h for h in self.webhooks() if h.get("id") == hook.get("id")), hook)
        webhook_id = str(hook.get("id") or "")
        if not webhook_id:
            raise TransientError(f"X answered {POST_WEBHOOK} without a webhook id")
        route = f"/2/account_activity/webhooks/{webhook_id}/subscriptions/all"
        reply = self.client.request("POST", route, what=f"POST {SUBSCRIPTION}", user_auth=True)
        data = _data(reply)
        return {
            "webhook_id": webhook_id,
            "url": str(hook.get("url") or url),
            "valid": bool(hook.get("valid")),
            "subscribed": bool(data.get("subscribed")),
        }

    def delete_webhook(self, webhook_id: str) -> bool:
        """DELETE /2/webhooks/:id (bearer token)."""
        if not _NUMERIC.match(str(webhook_id)):
            raise PermanentError(f"not an X webhook id: {webhook_id!r}")
        reply = self.client.request("DELETE", f"/2/webhooks/{webhook_id}", what=DELETE_WEBHOOK, user_auth=False)
        data = _data(reply)
        return bool(data.get("deleted"))

    def subscribed(self, webhook_id: str) -> bool:
        """GET /2/account_activity/webhooks/:id/subscriptions/all (user context): is our account subscribed?"""
        route = f"/2/account_activity/webhooks/{webhook_id}/subscriptions/all"
        reply = self.client.request("GET", route, what=f"GET {SUBSCRIPTION}", user_auth=True)
        data = _data(reply)
        return bool(data.get("subscribed"))

    # --- administration --------------------------------------------------------------------------------------------
    def diagnose(self) -> list[DiagnosticStep]:
        """The admin's "test connection": keys, users/me, access level, mentions, DM events, then (webhook mode)
        the bearer token, the registered webhook and the subscription. Stops at the first failing step."""
        missing = self.client.keys.missing()
        if missing:
            return [
                DiagnosticStep(
                    "keys",
                    False,
                    f"missing: {', '.join(missing)}. Copy them from the X developer portal (the app's Keys and tokens)",
                )
            ]
        bearer = "bearer token set" if self.client.keys.bearer_token else "no bearer token (needed only for webhooks)"
        steps = [DiagnosticStep("keys", True, f"API key and secret, access token and secret set; {bearer}")]
        try:
            reply = self._me_reply()
        except AuthError:
            return [
                *steps,
                DiagnosticStep(
                    "users/me",
                    False,
                    "X refused the keys (401): the API key/secret or the access token/secret are wrong or were "
                    "regenerated; copy all four again from the developer portal",
                ),
            ]
        except PermanentError as exc:
            return [
                *steps,
                DiagnosticStep(
                    "users/me",
                    False,
                    f"{exc}. Check the app's access level (it must belong to a Project with API v2 access) and its "
                    "permissions (Read and write and Direct message)",
                ),
            ]
        except TransientError as exc:
            return [*steps, DiagnosticStep("users/me", False, f"{exc} (is {self.api_base or 'api.x.com'} reachable?)")]
        data = _data(reply)
        if self._me is None and _NUMERIC.match(str(data.get("id") or "")):
            self._me = dict(data)
        steps.append(DiagnosticStep("users/me", True, f"@{data.get('username')} ({data.get('id')})"))
        level = str(reply.headers.get(ACCESS_LEVEL_HEADER) or "")
        if not level:
            steps.append(DiagnosticStep("access level", True, "not reported by X; DM access is checked below"))
        elif level != DM_ACCESS_LEVEL:
            return [
                *steps,
                DiagnosticStep(
                    "access level",
                    False,
                    f"the access token is {level!r}; DMs need {DM_ACCESS_LEVEL!r}. In the developer portal set the "
                    "app's permissions to 'Read and write and Direct message', then regenerate the access token "
                    "and secret and save them here",
                ),
            ]
        else:
            steps.append(DiagnosticStep("access level", True, level))
        if self._user_id and data.get("id") and str(data.get("id")) != self._user_id:
            return [
                *steps,
                DiagnosticStep(
                    "user id",
                    False,
                    f"the setting user_id is {self._user_id} but the access token belongs to {data.get('id')}",
                ),
            ]
        me = str(data.get("id") or self.user_id)
        for name, call in (
            (
                "mentions",
                lambda: self.client.call(
                    GET_MENTIONS,
                    lambda: self.client.client.get_users_mentions(me, max_results=5, user_auth=True),
                ),
            ),
            (
                "DM events",
                lambda: self.client.call(
                    GET_DM_EVENTS,
                    lambda: self.client.client.get_direct_message_events(
                        event_types="MessageCreate", max_results=1, user_auth=True
                    ),
                ),
            ),
        ):
            try:
                checked = call()
            except (PermanentError, TransientError) as exc:
                return [*steps, DiagnosticStep(name, False, self._fix_hint(name, exc))]
            rate = checked.rate
            steps.append(DiagnosticStep(name, True, f"reachable; {rate.describe()}" if rate else "reachable"))
        if self.mode == "webhook":
            steps.extend(self._webhook_steps())
        return steps

    @staticmethod
    def _fix_hint(name: str, exc: Exception) -> str:
        if isinstance(exc, RateLimited):
            return f"{exc} (the connection works; polling waits for the reset)"
        if isinstance(exc, AuthError):
            return str(exc)
        if isinstance(exc, PermanentError) and name == "DM events":
            return f"{exc}: DMs need an access token with 'Read and write and Direct message' permission"
        if isinstance(exc, PermanentError):
            return f"{exc}: reading mentions needs API v2 access at a level that includes them (Basic or higher)"
        return str(exc)

    def _webhook_steps(self) -> list[DiagnosticStep]:
        if not self.client.keys.bearer_token:
            return [
                DiagnosticStep(
                    "bearer token",
                    False,
                    "webhook mode needs the app's bearer token (Keys and tokens) to manage webhooks",
                )
            ]
        steps = [DiagnosticStep("bearer token", True, "set")]
        if not self.webhook_url:
            return [*steps, DiagnosticStep("webhook", False, "no webhook_url setting: register the webhook first")]
        try:
            hooks = self.webhooks()
        except (PermanentError, TransientError) as exc:
            return [*steps, DiagnosticStep("webhook", False, str(exc))]
        hook = next((h for h in hooks if h.get("url") == self.webhook_url), None)
        if hook is None:
            listed = ", ".join(str(h.get("url")) for h in hooks) or "none"
            return [
                *steps,
                DiagnosticStep(
                    "webhook", False, f"X has no webhook for {self.webhook_url} (registered: {listed}): register it"
                ),
            ]
        if hook.get("valid") is False:
            return [
                *steps,
                DiagnosticStep(
                    "webhook",
                    False,
                    f"X marked {self.webhook_url} invalid (its CRC check failed): make sure the URL is reachable "
                    "from the internet and answers the CRC, then register it again",
                ),
            ]
        steps.append(DiagnosticStep("webhook", True, f"{self.webhook_url} (id {hook.get('id')})"))
        try:
            subscribed = self.subscribed(str(hook.get("id")))
        except (PermanentError, TransientError) as exc:
            return [*steps, DiagnosticStep("subscription", False, str(exc))]
        if not subscribed:
            return [
                *steps,
                DiagnosticStep("subscription", False, "this account is not subscribed to the webhook: register again"),
            ]
        return [*steps, DiagnosticStep("subscription", True, "this account's events are sent to the webhook")]
