"""Telegram channel: a bot (token from @BotFather) receives customers' messages and sends the agents' replies.

Modules (plain Python, no Django, no Celery):

- ``normalize``  Update dict -> InboundMessage (text, media by file_id, location, contact, edits, button presses)
- ``text``       UTF-16 lengths, splitting long replies at clean boundaries
- ``client``     python-telegram-bot calls from sync code; PTB errors -> connector errors; token scrubbing
- ``webhook``    the webhook secret header check

Inbound arrives either by webhook (the inbox's view checks ``verify_webhook_secret`` and stores the Update) or by
long polling (``get_updates`` with the stored offset). Settings, secrets and metadata keys are documented in
docs/channels/telegram.md.
"""

from __future__ import annotations

import asyncio
import mimetypes
import posixpath
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from telegram import Bot, Message, ReplyParameters
from telegram.error import RetryAfter

from connectors.base import (
    ConnectorContext,
    DiagnosticStep,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    SendResult,
    TransientError,
)
from connectors.telegram.client import (
    ANSWER_CALLBACK_QUERY,
    DEFAULT_API_BASE,
    DEFAULT_READ_TIMEOUT,
    GET_FILE,
    GET_ME,
    GET_UPDATES,
    GET_WEBHOOK_INFO,
    LONG_POLL_MARGIN,
    SEND_DOCUMENT,
    SEND_MESSAGE,
    SEND_PHOTO,
    TOKEN_RE,
    BotClient,
    PollingConflict,
    retry_after_seconds,
    scrub,
)
from connectors.telegram.normalize import (
    HANDLED_UPDATE_TYPES,
    describe_update,
    message_content_type,
    normalize_update,
    update_type,
)
from connectors.telegram.text import MAX_MESSAGE_UTF16, split_text, utf16_len
from connectors.telegram.webhook import (
    SECRET_HEADER,
    SECRET_META_KEY,
    generate_webhook_secret,
    is_valid_secret_token,
    verify_webhook_secret,
)

__all__ = [
    "DEFAULT_ALLOWED_UPDATES",
    "DEFAULT_API_BASE",
    "DEFAULT_MAX_FILE_BYTES",
    "HANDLED_UPDATE_TYPES",
    "MODES",
    "PER_CHAT_INTERVAL_SECONDS",
    "SECRET_HEADER",
    "SECRET_META_KEY",
    "BotClient",
    "PollingConflict",
    "TelegramConnector",
    "describe_update",
    "generate_webhook_secret",
    "is_valid_secret_token",
    "message_content_type",
    "normalize_update",
    "scrub",
    "split_text",
    "update_type",
    "utf16_len",
    "verify_webhook_secret",
]

# https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this : "avoid sending more than one
# message per second" in a single chat. The inbox enforces it across workers; the parts of one split reply are
# paced here.
PER_CHAT_INTERVAL_SECONDS = 1.0
# A flood-control wait this short between the parts of one reply is waited out inline (once) rather than failing
# a half-delivered reply.
INLINE_RETRY_MAX_SECONDS = 5.0
# https://core.telegram.org/bots/api#getfile : "bots can download files of up to 20MB in size".
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
# https://core.telegram.org/bots/api#sending-files : "10 MB max size for photos, 50 MB for other files".
MAX_PHOTO_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
PHOTO_CONTENT_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
# The update types normalize() turns into messages; asking only for them spares traffic (allowed_updates in
# https://core.telegram.org/bots/api#getupdates and #setwebhook; Telegram remembers the last list given).
DEFAULT_ALLOWED_UPDATES: tuple[str, ...] = HANDLED_UPDATE_TYPES
MODES = ("polling", "webhook")
DEFAULT_POLL_TIMEOUT = 30

_CHAT_ID_RE = re.compile(r"^-?\d+$")
_USERNAME_RE = re.compile(r"^@[A-Za-z0-9_]{4,}$")
_EXTERNAL_ID_RE = re.compile(r"^(-?\d+):(\d+)$")


def _number_setting(settings: Mapping[str, Any], key: str, default: float) -> float:
    value: Any = settings.get(key)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"setting {key!r} must be a number, got {value!r}") from exc


def _bool_setting(settings: Mapping[str, Any], key: str) -> bool:
    value = settings.get(key)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def parse_chat_id(recipient: str) -> int | str:
    """An identity handle -> sendMessage's chat_id (an integer, or "@channelusername")."""
    value = recipient.strip()
    if _CHAT_ID_RE.match(value):
        return int(value)
    if _USERNAME_RE.match(value):
        return value
    raise PermanentError(f"{recipient!r} is not a Telegram chat id")


def parse_external_id(external_id: str) -> tuple[int, int] | None:
    """ "chat:message" -> (chat_id, message_id); None for anything else (a callback query's "cb:...")."""
    match = _EXTERNAL_ID_RE.match(external_id.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _outbound_attachments(metadata: Mapping[str, Any]) -> list[tuple[str, str, bytes]]:
    raw = metadata.get("attachments") or []
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise PermanentError("metadata 'attachments' must be a list of {filename, content_type, content}")
    result = []
    for index, item in enumerate(raw, start=1):
        content = item.get("content") if isinstance(item, Mapping) else None
        if not isinstance(content, bytes | bytearray):
            raise PermanentError(f"attachment {index} has no content bytes")
        if len(content) > MAX_UPLOAD_BYTES:
            raise PermanentError(
                f"attachment {index} is {len(content)} bytes; Telegram bots can send at most {MAX_UPLOAD_BYTES}"
            )
        filename = str(item.get("filename") or f"attachment-{index}")
        content_type = str(item.get("content_type") or mimetypes.guess_type(filename)[0] or "application/octet-stream")
        result.append((filename, content_type.lower(), bytes(content)))
    return result


def _result(sent: Message) -> SendResult:
    return SendResult(provider_id=f"{sent.chat.id}:{sent.message_id}", sent_at=sent.date)


Step = Callable[[Bot, ReplyParameters | None], Awaitable[Message]]


class TelegramConnector:
    kind: ClassVar[str] = "telegram"
    label: ClassVar[str] = "Telegram"
    # Longer replies are split cleanly into 4,096-character messages (send); past this the agent is asked to shorten.
    max_text_length: ClassVar[int] = 8 * MAX_MESSAGE_UTF16
    secret_fields: ClassVar[tuple[str, ...]] = ("bot_token", "webhook_secret")
    # "Avoid sending more than one message per second" to a chat (https://core.telegram.org/bots/faq).
    per_chat_interval: ClassVar[float] = PER_CHAT_INTERVAL_SECONDS

    def __init__(
        self,
        *,
        settings: Mapping[str, Any],
        secrets: Mapping[str, Any],
        context: ConnectorContext | None = None,
    ) -> None:
        self.settings = settings
        self.context = context or ConnectorContext()
        self.api_base = str(settings.get("api_base") or DEFAULT_API_BASE).strip().rstrip("/")
        self.mode = str(settings.get("mode") or "polling").strip().lower()
        if self.mode not in MODES:
            raise PermanentError(f"setting 'mode' must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.webhook_url = str(settings.get("webhook_url") or "").strip()
        self.allow_groups = _bool_setting(settings, "allow_groups")
        self.max_file_bytes = int(_number_setting(settings, "max_file_bytes", DEFAULT_MAX_FILE_BYTES))
        self.timeout = _number_setting(settings, "timeout", DEFAULT_READ_TIMEOUT)
        self.poll_timeout = int(_number_setting(settings, "poll_timeout", DEFAULT_POLL_TIMEOUT))
        self.webhook_secret = str(secrets.get("webhook_secret") or "")
        self._token = str(secrets.get("bot_token") or "").strip()
        self.client = BotClient(self._token, api_base=self.api_base, timeout=self.timeout)
        # Seconds between the parts of one split reply (and its attachments) in the same chat.
        self.part_interval = PER_CHAT_INTERVAL_SECONDS

    def __repr__(self) -> str:
        return f"TelegramConnector(api_base={self.api_base!r}, mode={self.mode!r})"

    # --- inbound -------------------------------------------------------------------------------------------------
    def normalize(self, payload: Mapping[str, Any]) -> list[InboundMessage]:
        """One Update (webhook body or getUpdates item) -> [] or [message]. PermanentError when malformed."""
        return normalize_update(payload, allow_groups=self.allow_groups)

    def describe(self, payload: Mapping[str, Any]) -> str:
        """A log line for an update, saying why it was ignored when normalize() returned []."""
        return describe_update(payload, allow_groups=self.allow_groups)

    def verify_webhook(self, received: str | None) -> bool:
        """The webhook view's check of the X-Telegram-Bot-Api-Secret-Token header."""
        return verify_webhook_secret(self.webhook_secret, received)

    def get_updates(
        self,
        offset: int,
        *,
        timeout: int,
        limit: int = 100,
        allowed_updates: Sequence[str] | None = DEFAULT_ALLOWED_UPDATES,
    ) -> list[dict[str, Any]]:
        """Long polling (https://core.telegram.org/bots/api#getupdates): updates with update_id >= offset, waiting
        up to ``timeout`` seconds for the first one. Calling with a higher offset confirms (and makes Telegram
        forget) every update below it, so store the updates before asking with ``last update_id + 1``.

        Returns the update dicts exactly as received. PollingConflict when a webhook is set or another process
        polls the same bot.
        """
        if not 1 <= limit <= 100:
            raise ValueError("limit must be between 1 and 100")
        params: dict[str, Any] = {"offset": offset, "timeout": max(0, int(timeout)), "limit": limit}
        if allowed_updates is not None:
            params["allowed_updates"] = list(allowed_updates)
        result = self.client.call(GET_UPDATES, params, read_timeout=max(0, timeout) + LONG_POLL_MARGIN)
        if not isinstance(result, list) or not all(isinstance(item, dict) for item in result):
            raise TransientError(f"unexpected getUpdates answer: {type(result).__name__}")
        return result

    def download_file(
        self,
        file_id: str,
        *,
        max_bytes: int | None = None,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> tuple[bytes, str, str]:
        """getFile + download -> (content, filename, content_type). Refuses files over ``max_bytes`` (default: the
        max_file_bytes setting) with PermanentError, before downloading when Telegram states the size.
        ``filename`` / ``content_type``: what the message said (metadata files[].file_name / mime_type)."""
        limit = self.max_file_bytes if max_bytes is None else max_bytes
        info = self.client.call(GET_FILE, {"file_id": file_id})
        if not isinstance(info, dict) or not info.get("file_path"):
            raise PermanentError("Telegram gave no download path for this file (it may be unavailable)")
        size = info.get("file_size")
        if isinstance(size, int) and size > limit:
            raise PermanentError(f"the file is {size} bytes, over the limit of {limit} bytes")
        content = self.client.download(info)
        if len(content) > limit:
            raise PermanentError(f"the file is {len(content)} bytes, over the limit of {limit} bytes")
        name = filename or posixpath.basename(str(info["file_path"])) or file_id
        ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return content, name, ctype

    def answer_callback_query(self, callback_query_id: str, *, text: str = "") -> bool:
        """Stop the button's loading spinner in the customer's app (https://core.telegram.org/bots/api#answercallbackquery).
        Telegram accepts an answer only for a short while after the press; an error here is harmless."""
        params: dict[str, Any] = {"callback_query_id": callback_query_id}
        if text:
            params["text"] = text[:200]
        return bool(self.client.call(ANSWER_CALLBACK_QUERY, params))

    # --- outbound ------------------------------------------------------------------------------------------------
    def send(self, message: OutboundMessage) -> SendResult:
        """sendMessage (split over 4096 UTF-16 units, parts paced) then sendPhoto / sendDocument per attachment.

        Returns the first message's id ("chat:message_id"); ``send_all`` returns every part's result. Plain text, no
        parse_mode: nothing to escape, and what the agent typed is what the customer reads.
        """
        return self.send_all(message)[0]

    def send_all(self, message: OutboundMessage) -> list[SendResult]:
        chat_id = parse_chat_id(message.recipient)
        reply_to = parse_external_id(message.reply_to_external_id) if message.reply_to_external_id else None
        reply_message_id = reply_to[1] if reply_to and str(reply_to[0]) == str(chat_id) else None
        parts = split_text(message.text)
        attachments = _outbound_attachments(message.metadata)
        if not parts and not attachments:
            raise PermanentError("nothing to send: the reply has no text and no attachments")

        steps: list[tuple[str, Step]] = []
        for part in parts:
            steps.append((SEND_MESSAGE, self._text_step(chat_id, part)))
        for filename, content_type, content in attachments:
            steps.append(self._attachment_step(chat_id, filename, content_type, content))

        async def body(bot: Bot) -> list[SendResult]:
            results: list[SendResult] = []
            for index, (method, step) in enumerate(steps):
                if index:
                    await asyncio.sleep(self.part_interval)
                reply = (
                    ReplyParameters(message_id=reply_message_id, allow_sending_without_reply=True)
                    if index == 0 and reply_message_id is not None
                    else None
                )
                try:
                    results.append(_result(await self._attempt(bot, step, reply, inline_retry=index > 0)))
                except Exception as exc:
                    mapped = self.client.map(exc, what=method, sending=True)
                    if not results:
                        raise mapped from None
                    raise self._partial(mapped, delivered=len(results), total=len(steps)) from None
            return results

        return self.client.run(body, what=SEND_MESSAGE, sending=True)

    @staticmethod
    async def _attempt(bot: Bot, step: Step, reply: ReplyParameters | None, *, inline_retry: bool) -> Message:
        try:
            return await step(bot, reply)
        except RetryAfter as exc:
            wait = retry_after_seconds(exc)
            if not inline_retry or wait > INLINE_RETRY_MAX_SECONDS:
                raise
            await asyncio.sleep(float(wait))
            return await step(bot, reply)

    @staticmethod
    def _partial(error: Exception, *, delivered: int, total: int) -> Exception:
        note = f"{delivered} of {total} parts were already delivered"
        if isinstance(error, TransientError):
            # A retry would send the delivered parts again: let the inbox mark the reply uncertain instead.
            return TransientError(f"{error} ({note}; retrying would repeat them)", maybe_delivered=True)
        return type(error)(f"{error} ({note})")

    def _text_step(self, chat_id: int | str, text: str) -> Step:
        async def step(bot: Bot, reply: ReplyParameters | None) -> Message:
            return await bot.send_message(chat_id=chat_id, text=text, reply_parameters=reply)

        return step

    def _attachment_step(
        self, chat_id: int | str, filename: str, content_type: str, content: bytes
    ) -> tuple[str, Step]:
        if content_type in PHOTO_CONTENT_TYPES and len(content) <= MAX_PHOTO_UPLOAD_BYTES:

            async def photo(bot: Bot, reply: ReplyParameters | None) -> Message:
                return await bot.send_photo(chat_id=chat_id, photo=content, filename=filename, reply_parameters=reply)

            return SEND_PHOTO, photo

        async def document(bot: Bot, reply: ReplyParameters | None) -> Message:
            return await bot.send_document(chat_id=chat_id, document=content, filename=filename, reply_parameters=reply)

        return SEND_DOCUMENT, document

    # --- administration ------------------------------------------------------------------------------------------
    def get_me(self) -> dict[str, Any]:
        """The bot's User (https://core.telegram.org/bots/api#getme), as Telegram sent it."""
        result = self.client.call(GET_ME)
        if not isinstance(result, dict):
            raise TransientError(f"unexpected getMe answer: {type(result).__name__}")
        return result

    def get_webhook_info(self) -> dict[str, Any]:
        """https://core.telegram.org/bots/api#webhookinfo : url ("" when polling), pending_update_count,
        last_error_date / last_error_message, allowed_updates ..."""
        result = self.client.call(GET_WEBHOOK_INFO)
        if not isinstance(result, dict):
            raise TransientError(f"unexpected getWebhookInfo answer: {type(result).__name__}")
        return result

    def set_webhook(
        self,
        url: str,
        *,
        secret_token: str,
        allowed_updates: Sequence[str] | None = DEFAULT_ALLOWED_UPDATES,
        drop_pending_updates: bool = False,
        max_connections: int | None = None,
    ) -> bool:
        """https://core.telegram.org/bots/api#setwebhook . Telegram then POSTs every update to ``url`` (HTTPS, ports
        443, 80, 88 or 8443) with ``secret_token`` in the X-Telegram-Bot-Api-Secret-Token header."""
        if not is_valid_secret_token(secret_token):
            raise PermanentError("the webhook secret must be 1-256 characters of A-Z, a-z, 0-9, _ and -")

        async def body(bot: Bot) -> bool:
            return await bot.set_webhook(
                url=url,
                secret_token=secret_token,
                allowed_updates=list(allowed_updates) if allowed_updates is not None else None,
                drop_pending_updates=drop_pending_updates,
                max_connections=max_connections,
            )

        return self.client.run(body, what="setWebhook")

    def delete_webhook(self, *, drop_pending_updates: bool = False) -> bool:
        """https://core.telegram.org/bots/api#deletewebhook (needed before getUpdates can be used)."""

        async def body(bot: Bot) -> bool:
            return await bot.delete_webhook(drop_pending_updates=drop_pending_updates)

        return self.client.run(body, what="deleteWebhook")

    def diagnose(self) -> list[DiagnosticStep]:
        """The admin's "test connection": token format, getMe, then the webhook state for the chosen mode.
        Stops at the first failing step."""
        if not self._token:
            return [DiagnosticStep("token format", False, "no bot token: create a bot with @BotFather (/newbot)")]
        if not TOKEN_RE.match(self._token):
            return [
                DiagnosticStep(
                    "token format", False, "the token does not look like 123456789:AA... (copy it from @BotFather)"
                )
            ]
        steps = [DiagnosticStep("token format", True, f"bot id {self._token.partition(':')[0]}")]
        try:
            me = self.get_me()
        except PermanentError as exc:
            return [*steps, DiagnosticStep("getMe", False, str(exc))]
        except TransientError as exc:
            return [*steps, DiagnosticStep("getMe", False, f"{exc} (is {self.api_base} reachable?)")]
        steps.append(
            DiagnosticStep("getMe", True, f"@{me.get('username')} ({me.get('first_name')}, id {me.get('id')})")
        )
        try:
            info = self.get_webhook_info()
        except (PermanentError, TransientError) as exc:
            return [*steps, DiagnosticStep("webhook info", False, str(exc))]
        steps.append(self._webhook_step(info))
        if self.mode == "webhook" and steps[-1].ok:
            steps.append(
                DiagnosticStep("webhook secret", True, "configured")
                if self.webhook_secret
                else DiagnosticStep(
                    "webhook secret", False, "no webhook_secret: every webhook request would be refused"
                )
            )
        return steps

    def _webhook_step(self, info: Mapping[str, Any]) -> DiagnosticStep:
        url = str(info.get("url") or "")
        pending = info.get("pending_update_count", 0)
        if self.mode == "polling":
            if url:
                return DiagnosticStep(
                    "webhook info",
                    False,
                    f"a webhook is set ({url}), so getUpdates answers 409 Conflict: delete it or use mode webhook",
                )
            return DiagnosticStep("webhook info", True, f"no webhook (polling); {pending} updates waiting")
        if not url:
            return DiagnosticStep("webhook info", False, "no webhook is set: register it (set_webhook)")
        if self.webhook_url and url != self.webhook_url:
            return DiagnosticStep("webhook info", False, f"the webhook points to {url}, expected {self.webhook_url}")
        error_date = info.get("last_error_date")
        if isinstance(error_date, int) and time.time() - error_date < 3600:
            when = datetime.fromtimestamp(error_date, UTC).strftime("%Y-%m-%d %H:%M UTC")
            return DiagnosticStep(
                "webhook info",
                False,
                f"{url}: Telegram's last delivery failed at {when}: {info.get('last_error_message')}; "
                f"{pending} updates waiting",
            )
        return DiagnosticStep("webhook info", True, f"{url}; {pending} updates waiting")
