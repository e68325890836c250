"""Stored X events -> InboundMessage values, and the stored shapes built from API v2 pages.

Four stored shapes (docs: /work/x_spec.md, "Identifiers the inbox relies on"), one message each:

- ``{"source": "dm_events", "for_user_id", "event": <v2 DM event>, "includes": {...}}``          polling, DMs
- ``{"source": "mentions", "for_user_id", "tweet": <v2 tweet>, "includes": {...}}``              polling, mentions
- ``{"source": "account_activity", "for_user_id", "direct_message_event": <v1.1>, "users": {}}``  webhook, DMs
- ``{"source": "account_activity", "for_user_id", "tweet_create_event": <v1.1 tweet>}``          webhook, tweets

The customer's identity handle is their numeric X user id (a username can change). DMs thread under ``"dm"``,
public posts under ``"public"``. Nothing here downloads anything: media are referenced by URL in
``metadata["files"]`` and fetched later with ``XConnector.download_file`` (DM media need the OAuth 1.0a keys).

Ignored (``[]``, with the reason in ``describe_payload``): our own posts and DMs (author / sender == for_user_id),
retweets, and DM events other than a message (participants joining or leaving a group, ...).

Text: a reply's leading run of @mentions (X's reply prefix) is removed from tweets (the full text stays in
``metadata["x"]["full_text"]``); DMs keep their text as written. Tweet text is HTML-escaped by X (``&amp; &lt;
&gt;``, in v1.1 and in v2 alike) and is unescaped here, as is v1.1 DM text. The t.co link X appends for attached
media is removed from the text when the media are listed as files.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from connectors.base import InboundMessage, PermanentError, Sender
from connectors.x.text import strip_reply_prefix, unescape_v1

DM_THREAD = "dm"
PUBLIC_THREAD = "public"
SOURCE_DM_EVENTS = "dm_events"
SOURCE_MENTIONS = "mentions"
SOURCE_ACCOUNT_ACTIVITY = "account_activity"

# X's "lang" values that name no language (https://docs.x.com, tweet object "lang"): undetermined, no linguistic
# content, media / hashtag / cashtag / mention-only posts, and "art" (artificial).
NOT_LANGUAGES = frozenset({"und", "zxx", "qme", "qam", "qct", "qht", "qst", "art"})
# Old ISO 639 codes X still uses -> the current ones (BCP 47).
_LANG_ALIASES = {"in": "id", "iw": "he", "ji": "yi"}

_SPACES = re.compile(r"[ \t]{2,}")
_V1_DATE = "%a %b %d %H:%M:%S %z %Y"  # "Wed Oct 10 20:19:24 +0000 2018"


# --- validation helpers -----------------------------------------------------------------------------------------
def _fail(where: str, key: str, expected: str, value: Any) -> PermanentError:
    return PermanentError(f"malformed X event: {where}.{key} must be {expected}, got {type(value).__name__}")


def _obj(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, Mapping):
        raise _fail(where, key, "an object", value)
    return value


def _opt_obj(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    return {} if obj.get(key) is None else _obj(obj, key, where)


def _opt_list(obj: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, key, "a list", value)
    return value


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(where, key, "a string", value)
    return value


def _id(obj: Mapping[str, Any], key: str, where: str) -> str:
    """A numeric X id (a decimal string; v1.1 integers are accepted and turned into strings)."""
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if not isinstance(value, str) or not value.isdigit():
        raise PermanentError(f"malformed X event: {where}.{key} must be a numeric id, got {value!r}")
    return value


def _opt_id(obj: Mapping[str, Any], key: str, where: str) -> str:
    return "" if obj.get(key) in (None, "") else _id(obj, key, where)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None and value != ""}


def _iso_date(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise PermanentError(f"malformed X event: {where} must be an ISO 8601 date, got {value!r}")


def _v1_date(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            return datetime.strptime(value, _V1_DATE).astimezone(UTC)
        except ValueError:
            pass
    raise PermanentError(f"malformed X event: {where} must be a date like 'Wed Oct 10 20:19:24 +0000 2018'")


def _ms_date(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    raise PermanentError(f"malformed X event: {where} must be milliseconds since the epoch, got {value!r}")


# --- small pieces -------------------------------------------------------------------------------------------------
def real_language(value: Any) -> str:
    """X's ``lang`` as a language tag, or "" when it names no language (und, zxx, qme, ...)."""
    if not isinstance(value, str):
        return ""
    tag = value.strip().replace("_", "-")
    if not tag or tag.lower() in NOT_LANGUAGES:
        return ""
    primary, _, rest = tag.partition("-")
    primary = _LANG_ALIASES.get(primary.lower(), primary.lower())
    return f"{primary}-{rest}" if rest else primary


def _hints(*values: Any) -> tuple[str, ...]:
    result: list[str] = []
    for value in values:
        tag = real_language(value)
        if tag and tag.lower() not in (seen.lower() for seen in result):
            result.append(tag)
    return tuple(result)


def display_name(name: str, username: str) -> str:
    """ "Name (@username)", or whichever of the two is known."""
    if name and username:
        return f"{name} (@{username})"
    if username:
        return f"@{username}"
    return name


def _file(url: str, mime_type: str = "") -> dict[str, str]:
    path = urllib.parse.urlsplit(url).path
    name = posixpath.basename(path) or "media"
    return {
        "file_id": url,
        "file_name": name,
        "mime_type": mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
    }


def _best_mp4(variants: Iterable[Any], rate_key: str) -> str:
    best_url, best_rate = "", -1
    for variant in variants:
        if not isinstance(variant, Mapping) or variant.get("content_type") != "video/mp4":
            continue
        rate = variant.get(rate_key)
        rate = rate if isinstance(rate, int) and not isinstance(rate, bool) else 0
        url = variant.get("url")
        if isinstance(url, str) and url and rate > best_rate:
            best_url, best_rate = url, rate
    return best_url


def _v2_media_file(media: Mapping[str, Any]) -> dict[str, str] | None:
    kind = media.get("type")
    if kind == "photo" and isinstance(media.get("url"), str) and media["url"]:
        return _file(media["url"])
    if kind in ("video", "animated_gif"):
        url = _best_mp4(media.get("variants") or [], "bit_rate")
        if url:
            return _file(url, "video/mp4")
    preview = media.get("preview_image_url")
    return _file(preview) if isinstance(preview, str) and preview else None


def _v1_media_file(media: Mapping[str, Any]) -> dict[str, str] | None:
    kind = media.get("type")
    if kind in ("video", "animated_gif"):
        url = _best_mp4(_mapping(media.get("video_info")).get("variants") or [], "bitrate")
        if url:
            return _file(url, "video/mp4")
    photo = media.get("media_url_https") or media.get("media_url")
    return _file(photo) if isinstance(photo, str) and photo else None


def _remove_links(text: str, links: Iterable[str]) -> str:
    removed = False
    for link in links:
        if link and link in text:
            text = text.replace(link, "")
            removed = True
    return _SPACES.sub(" ", text).strip() if removed else text.strip()


def _v2_media_links(obj: Mapping[str, Any], where: str) -> list[str]:
    """The t.co links X appends to a v2 text for its attached media (entities.urls[] with a media_key)."""
    entities = _opt_obj(obj, "entities", where)
    return [
        str(url.get("url") or "")
        for url in _opt_list(entities, "urls", f"{where}.entities")
        if isinstance(url, Mapping) and url.get("media_key")
    ]


def _by_id(items: Any, key: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(items, list):
        return {}
    return {str(item[key]): item for item in items if isinstance(item, Mapping) and item.get(key) is not None}


def _media_keys(obj: Mapping[str, Any], where: str) -> list[str]:
    attachments = _opt_obj(obj, "attachments", where)
    keys = _opt_list(attachments, "media_keys", f"{where}.attachments")
    return [str(key) for key in keys]


# --- building the stored shapes from API v2 pages ---------------------------------------------------------------
def pick_includes(
    includes: Mapping[str, Any], *, users: Iterable[str], media: Iterable[str], tweets: Iterable[str]
) -> dict[str, list[Any]]:
    """The part of a page's ``includes`` one item refers to (users by id, media by key, tweets by id)."""
    wanted = {"users": ("id", set(users)), "media": ("media_key", set(media)), "tweets": ("id", set(tweets))}
    result: dict[str, list[Any]] = {}
    for name, (key, ids) in wanted.items():
        items = includes.get(name) if isinstance(includes, Mapping) else None
        if not ids or not isinstance(items, list):
            continue
        chosen = [item for item in items if isinstance(item, Mapping) and str(item.get(key)) in ids]
        if chosen:
            result[name] = chosen
    return result


def _referenced_ids(obj: Mapping[str, Any]) -> list[str]:
    refs = obj.get("referenced_tweets")
    if not isinstance(refs, list):
        return []
    return [str(ref.get("id")) for ref in refs if isinstance(ref, Mapping) and ref.get("id") is not None]


def _raw_media_keys(obj: Mapping[str, Any]) -> list[str]:
    attachments = obj.get("attachments")
    keys = attachments.get("media_keys") if isinstance(attachments, Mapping) else None
    return [str(key) for key in keys] if isinstance(keys, list) else []


def dm_event_item(event: Mapping[str, Any], includes: Mapping[str, Any], for_user_id: str) -> dict[str, Any]:
    """A v2 DM event of a GET /2/dm_events page -> the stored payload (with only the includes it refers to)."""
    participants = event.get("participant_ids")
    participants = participants if isinstance(participants, list) else []
    return {
        "source": SOURCE_DM_EVENTS,
        "for_user_id": for_user_id,
        "event": dict(event),
        "includes": pick_includes(
            includes,
            users=[str(event.get("sender_id")), *map(str, participants)],
            media=_raw_media_keys(event),
            tweets=_referenced_ids(event),
        ),
    }


def mention_item(tweet: Mapping[str, Any], includes: Mapping[str, Any], for_user_id: str) -> dict[str, Any]:
    """A v2 tweet of a GET /2/users/:id/mentions page -> the stored payload (with only the includes it refers to)."""
    return {
        "source": SOURCE_MENTIONS,
        "for_user_id": for_user_id,
        "tweet": dict(tweet),
        "includes": pick_includes(
            includes,
            users=[str(tweet.get("author_id")), str(tweet.get("in_reply_to_user_id"))],
            media=_raw_media_keys(tweet),
            tweets=_referenced_ids(tweet),
        ),
    }


# --- reading the four shapes --------------------------------------------------------------------------------------
Read = tuple[InboundMessage | None, str]


def _message(
    *,
    external_id: str,
    author: str,
    name: str,
    username: str,
    text: str,
    full_text: str,
    sent_at: datetime | None,
    hints: tuple[str, ...],
    thread_key: str,
    x: Mapping[str, Any],
    files: list[dict[str, str]],
) -> InboundMessage:
    metadata: dict[str, Any] = {"x": _compact({**x, "username": username, "full_text": full_text})}
    if files:
        metadata["files"] = files
    if not text and not files:
        text = full_text.strip()  # a post of mentions only: better the mentions than an empty message
    return InboundMessage(
        external_id=external_id,
        sender=Sender(handle=author, display_name=display_name(name, username)),
        text=text,
        sent_at=sent_at,
        language_hints=hints,
        thread_key=thread_key,
        metadata=metadata,
    )


def _who(author: str, username: str) -> str:
    return f"@{username} ({author})" if username else author


def _read_v2_dm(payload: Mapping[str, Any], for_user_id: str) -> Read:
    event = _obj(payload, "event", "payload")
    event_id = _id(event, "id", "event")
    kind = _opt_str(event, "event_type", "event") or "MessageCreate"
    if kind != "MessageCreate":
        return None, f"ignored: DM event {event_id} of type {kind} (not a message)"
    sender = _id(event, "sender_id", "event")
    if for_user_id and sender == for_user_id:
        return None, f"ignored: our own DM {event_id}"
    includes = _opt_obj(payload, "includes", "payload")
    user = _by_id(includes.get("users"), "id").get(sender, {})
    media = _by_id(includes.get("media"), "media_key")
    files = [f for key in _media_keys(event, "event") if key in media and (f := _v2_media_file(media[key]))]
    full_text = _opt_str(event, "text", "event")
    username = str(user.get("username") or "")
    message = _message(
        external_id=f"dm:{event_id}",
        author=sender,
        name=str(user.get("name") or ""),
        username=username,
        text=_remove_links(full_text, _v2_media_links(event, "event") if files else []),
        full_text=full_text,
        sent_at=_iso_date(event.get("created_at"), "event.created_at"),
        hints=_hints(user.get("lang")),
        thread_key=DM_THREAD,
        x={"kind": "dm", "dm_conversation_id": _opt_str(event, "dm_conversation_id", "event")},
        files=files,
    )
    return message, f"DM {event_id} from {_who(sender, username)}"


def _read_v2_tweet(payload: Mapping[str, Any], for_user_id: str) -> Read:
    tweet = _obj(payload, "tweet", "payload")
    tweet_id = _id(tweet, "id", "tweet")
    author = _id(tweet, "author_id", "tweet")
    if for_user_id and author == for_user_id:
        return None, f"ignored: our own post {tweet_id}"
    refs = _opt_list(tweet, "referenced_tweets", "tweet")
    kinds = {str(ref.get("type")): str(ref.get("id")) for ref in refs if isinstance(ref, Mapping)}
    if "retweeted" in kinds:
        return None, f"ignored: retweet {tweet_id} by {author}"
    includes = _opt_obj(payload, "includes", "payload")
    user = _by_id(includes.get("users"), "id").get(author, {})
    media = _by_id(includes.get("media"), "media_key")
    files = [f for key in _media_keys(tweet, "tweet") if key in media and (f := _v2_media_file(media[key]))]
    note = _opt_obj(tweet, "note_tweet", "tweet")  # a long post (over 280) keeps its whole text here
    full_text = unescape_v1(_opt_str(note, "text", "tweet.note_tweet") or _opt_str(tweet, "text", "tweet"))
    lang = _opt_str(tweet, "lang", "tweet")
    username = str(user.get("username") or "")
    message = _message(
        external_id=f"tweet:{tweet_id}",
        author=author,
        name=str(user.get("name") or ""),
        username=username,
        text=_remove_links(strip_reply_prefix(full_text), _v2_media_links(tweet, "tweet") if files else []),
        full_text=full_text,
        sent_at=_iso_date(tweet.get("created_at"), "tweet.created_at"),
        hints=_hints(lang, user.get("lang")),
        thread_key=PUBLIC_THREAD,
        x={
            "kind": "mention",
            "tweet_id": tweet_id,
            "conversation_id": _opt_str(tweet, "conversation_id", "tweet"),
            "in_reply_to_tweet_id": kinds.get("replied_to", ""),
            "lang": lang,
        },
        files=files,
    )
    return message, f"mention {tweet_id} by {_who(author, username)}"


def _read_v1_dm(payload: Mapping[str, Any], for_user_id: str) -> Read:
    event = _obj(payload, "direct_message_event", "payload")
    event_id = _id(event, "id", "direct_message_event")
    kind = _opt_str(event, "type", "direct_message_event") or "message_create"
    if kind != "message_create":
        return None, f"ignored: DM event {event_id} of type {kind} (not a message)"
    create = _obj(event, "message_create", "direct_message_event")
    where = "direct_message_event.message_create"
    sender = _id(create, "sender_id", where)
    if for_user_id and sender == for_user_id:
        return None, f"ignored: our own DM {event_id}"
    recipient = _opt_id(_opt_obj(create, "target", where), "recipient_id", f"{where}.target")
    data = _obj(create, "message_data", where)
    full_text = unescape_v1(_opt_str(data, "text", f"{where}.message_data"))
    attachment = _opt_obj(data, "attachment", f"{where}.message_data")
    media = _opt_obj(attachment, "media", f"{where}.message_data.attachment")
    files = [f for f in [_v1_media_file(media) if media else None] if f]
    users = _opt_obj(payload, "users", "payload")
    user = _mapping(users.get(sender))
    username = str(user.get("screen_name") or "")
    conversation = "-".join(sorted((sender, recipient), key=int)) if recipient else ""
    message = _message(
        external_id=f"dm:{event_id}",
        author=sender,
        name=str(user.get("name") or ""),
        username=username,
        text=_remove_links(full_text, [str(media.get("url") or "")] if files else []),
        full_text=full_text,
        sent_at=_ms_date(event.get("created_timestamp"), "direct_message_event.created_timestamp"),
        hints=_hints(user.get("lang")),
        thread_key=DM_THREAD,
        x={"kind": "dm", "dm_conversation_id": conversation},
        files=files,
    )
    return message, f"DM {event_id} from {_who(sender, username)}"


def _read_v1_tweet(payload: Mapping[str, Any], for_user_id: str) -> Read:
    tweet = _obj(payload, "tweet_create_event", "payload")
    where = "tweet_create_event"
    tweet_id = _id(tweet, "id_str" if tweet.get("id_str") is not None else "id", where)
    user = _obj(tweet, "user", where)
    author = _id(user, "id_str" if user.get("id_str") is not None else "id", f"{where}.user")
    username = _opt_str(user, "screen_name", f"{where}.user")
    if for_user_id and author == for_user_id:
        return None, f"ignored: our own post {tweet_id}"
    if tweet.get("retweeted_status") is not None:
        return None, f"ignored: retweet {tweet_id} by {_who(author, username)}"
    extended = _opt_obj(tweet, "extended_tweet", where)
    source = extended or tweet
    full_text = unescape_v1(
        _opt_str(extended, "full_text", f"{where}.extended_tweet")
        or _opt_str(tweet, "full_text", where)
        or _opt_str(tweet, "text", where)
    )
    media_list = _opt_list(
        _opt_obj(source, "extended_entities", where), "media", f"{where}.extended_entities"
    ) or _opt_list(_opt_obj(source, "entities", where), "media", f"{where}.entities")
    files: list[dict[str, str]] = []
    media_links: list[str] = []
    for media in media_list:
        if isinstance(media, Mapping) and (found := _v1_media_file(media)):
            files.append(found)
            media_links.append(str(media.get("url") or ""))
    lang = _opt_str(tweet, "lang", where)
    in_reply_to = tweet.get("in_reply_to_status_id_str") or tweet.get("in_reply_to_status_id")
    message = _message(
        external_id=f"tweet:{tweet_id}",
        author=author,
        name=_opt_str(user, "name", f"{where}.user"),
        username=username,
        text=_remove_links(strip_reply_prefix(full_text), media_links),
        full_text=full_text,
        sent_at=_v1_date(tweet.get("created_at"), f"{where}.created_at"),
        hints=_hints(lang, user.get("lang")),
        thread_key=PUBLIC_THREAD,
        x={
            "kind": "mention",
            "tweet_id": tweet_id,
            "in_reply_to_tweet_id": str(in_reply_to) if in_reply_to else "",
            "lang": lang,
            # A compat-mode text cut at 140 with no extended_tweet: the full post is only on X.
            "truncated": True if tweet.get("truncated") is True and not extended else None,
        },
        files=files,
    )
    return message, f"mention {tweet_id} by {_who(author, username)}"


def _read(payload: Mapping[str, Any]) -> Read:
    if not isinstance(payload, Mapping):
        raise PermanentError(f"malformed X event: the payload must be an object, got {type(payload).__name__}")
    source = payload.get("source")
    raw_for_user = payload.get("for_user_id")
    if raw_for_user is not None and not isinstance(raw_for_user, str | int):
        raise _fail("payload", "for_user_id", "a numeric id", raw_for_user)
    for_user_id = str(raw_for_user or "")
    if source == SOURCE_DM_EVENTS:
        return _read_v2_dm(payload, for_user_id)
    if source == SOURCE_MENTIONS:
        return _read_v2_tweet(payload, for_user_id)
    if source == SOURCE_ACCOUNT_ACTIVITY:
        if payload.get("direct_message_event") is not None:
            return _read_v1_dm(payload, for_user_id)
        if payload.get("tweet_create_event") is not None:
            return _read_v1_tweet(payload, for_user_id)
        raise PermanentError(
            "malformed X event: an account_activity payload needs 'direct_message_event' or 'tweet_create_event'"
        )
    raise PermanentError(
        f"malformed X event: field 'source' must be one of dm_events, mentions, account_activity, got {source!r}"
    )


def normalize_payload(payload: Mapping[str, Any]) -> list[InboundMessage]:
    """One stored event -> [message], or [] for our own posts, retweets and non-message DM events.

    PermanentError (naming the field) when the payload is malformed."""
    message, _ = _read(payload)
    return [message] if message is not None else []


def describe_payload(payload: Mapping[str, Any]) -> str:
    """A log line for a stored event, saying why it was ignored when normalize returned []."""
    try:
        return _read(payload)[1]
    except PermanentError as exc:
        return str(exc)
