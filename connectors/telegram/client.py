"""Bot API calls through python-telegram-bot (PTB 22), from synchronous code, with our error types.

PTB is asyncio-only. The connector is called from Celery worker processes and from a listener thread, so every
public call here runs its coroutine on a fresh event loop (``asyncio.run``) with a fresh ``Bot`` and httpx client
that are closed before returning: nothing async outlives the call, nothing is shared between threads or forked
processes. A multi-part send runs in one loop (one connection), paced inside it. Cost: one new HTTP connection per
call, which is negligible next to the 1 message/s per chat that Telegram allows.

The bot token is part of every Bot API URL (https://core.telegram.org/bots/api#making-requests). It must never reach
a log line or an exception message: errors are rebuilt from scrubbed text (and not chained to PTB's exceptions),
and a logging filter redacts ``bot<token>`` (and setWebhook's secret_token) from the records of httpx (which logs
every request URL at INFO) and
of PTB's Bot (which logs its base URL at DEBUG).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import ssl
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from telegram import Bot, File
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning, PTBUserWarning

from connectors.base import AuthError, ConnectorError, PermanentError, RateLimited, TransientError

T = TypeVar("T")

DEFAULT_API_BASE = "https://api.telegram.org"
# https://core.telegram.org/bots/api#making-requests : https://api.telegram.org/bot<token>/METHOD_NAME
API_PATH = "/bot"
# https://core.telegram.org/bots/api#getfile : https://api.telegram.org/file/bot<token>/<file_path>
FILE_PATH = "/file/bot"

# Method names, each with its reference.
GET_ME = "getMe"  # https://core.telegram.org/bots/api#getme
GET_UPDATES = "getUpdates"  # https://core.telegram.org/bots/api#getupdates
SET_WEBHOOK = "setWebhook"  # https://core.telegram.org/bots/api#setwebhook
DELETE_WEBHOOK = "deleteWebhook"  # https://core.telegram.org/bots/api#deletewebhook
GET_WEBHOOK_INFO = "getWebhookInfo"  # https://core.telegram.org/bots/api#getwebhookinfo
SEND_MESSAGE = "sendMessage"  # https://core.telegram.org/bots/api#sendmessage
SEND_PHOTO = "sendPhoto"  # https://core.telegram.org/bots/api#sendphoto
SEND_DOCUMENT = "sendDocument"  # https://core.telegram.org/bots/api#senddocument
GET_FILE = "getFile"  # https://core.telegram.org/bots/api#getfile
ANSWER_CALLBACK_QUERY = "answerCallbackQuery"  # https://core.telegram.org/bots/api#answercallbackquery

# Timeouts (seconds). Every request has all four; getUpdates adds its long-poll timeout to the read timeout.
CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 5.0
WRITE_TIMEOUT = 15.0
MEDIA_WRITE_TIMEOUT = 60.0  # uploads of up to 50 MB (https://core.telegram.org/bots/api#sending-files)
DEFAULT_READ_TIMEOUT = 15.0
LONG_POLL_MARGIN = 10.0

# https://core.telegram.org/bots#how-do-i-create-a-bot : "<bot id>:<35 characters>"; be lenient on the length.
TOKEN_RE = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{20,}$")
# Also URL-encoded: PTB's File download quotes the URL, so ":" appears as "%3A" in httpx's log line.
_TOKEN_IN_TEXT = re.compile(r"\d{3,}(?::|%3[Aa])[A-Za-z0-9_-]{20,}")
REDACTED = "<redacted>"


# We ask PTB for the raw JSON of some methods (getUpdates: the update is stored exactly as received; getFile: PTB's
# File object would rewrite file_path into a URL containing the token). PTB's do_api_request warns when a typed
# method exists; that advice does not apply here.
# PTB 22.2+ also warns inside RetryAfter itself that retry_after will become a timedelta; retry_after_seconds()
# reads either form, so that warning is noise in our logs too.
def silence_ptb_warnings() -> None:
    """Install the two warning filters (done at import; test runners that reset filters call it again)."""
    warnings.filterwarnings("ignore", message=r"Please use 'Bot\.\w+' instead of", category=PTBUserWarning)
    warnings.filterwarnings(
        "ignore",
        message=r"Deprecated since version v22\.2: In a future major version attribute `retry_after`",
        category=PTBDeprecationWarning,
    )


silence_ptb_warnings()


def scrub(text: str, token: str = "") -> str:
    """Remove a bot token (the given one, and anything shaped like one) from ``text``."""
    if token:
        text = text.replace(token, REDACTED).replace(urllib.parse.quote(token, safe=""), REDACTED)
    return _TOKEN_IN_TEXT.sub(REDACTED, text)


# PTB logs every Bot API call's parameters at DEBUG, setWebhook's secret_token among them.
_SECRET_PARAM = re.compile(r"""(['"]secret_token['"]\s*:\s*['"])[^'"]*""")


class _RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's problem, not ours
            return True
        cleaned = _SECRET_PARAM.sub(rf"\1{REDACTED}", scrub(message))
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def _install_log_filter() -> None:
    # A filter on a logger only sees records created on that very logger, so we name each one that logs URLs.
    for name in ("httpx", "httpcore", Bot._LOGGER.name, "telegram.request.BaseRequest", "telegram.Bot"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokens) for f in logger.filters):
            logger.addFilter(_RedactTokens())


_install_log_filter()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The system's CA bundle with hostname checks, built once per process and shared by every Bot's clients."""
    return ssl.create_default_context()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code.

    In a thread without a running event loop (Celery workers, the listener thread) this is ``asyncio.run``. Called
    from inside a running loop (an async caller), the coroutine runs on a fresh loop in a helper thread, so the
    caller's loop is never re-entered.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def retry_after_seconds(exc: RetryAfter) -> float:
    """RetryAfter's wait in seconds. PTB 22.2+ stores a timedelta and warns (PTBDeprecationWarning) when the public
    ``retry_after`` is read as an int, so read the stored value when present."""
    stored = getattr(exc, "_retry_after", None)
    if isinstance(stored, timedelta):
        return stored.total_seconds()
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _definitely_not_sent(exc: BaseException) -> bool:
    """True when the failure happened before the request reached the server."""
    cause = exc.__cause__
    return isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol)


def map_error(exc: Exception, *, what: str, token: str, sending: bool = False) -> ConnectorError:
    """PTB's exception -> our error type, with a scrubbed message (Telegram's description kept: agents read it).

    ``sending``: the call creates something visible (a message), so a timeout after the request left means the
    customer may have received it (TransientError(maybe_delivered=True)).
    """
    detail = scrub(str(exc), token)
    if isinstance(exc, RetryAfter):
        # https://core.telegram.org/bots/api#responseparameters : retry_after, in seconds.
        seconds = retry_after_seconds(exc)
        return RateLimited(f"Telegram flood control on {what}: retry after {seconds:g} s", retry_after=float(seconds))
    if isinstance(exc, InvalidToken):
        return AuthError(f"Telegram rejected the bot token on {what} ({detail}): check the token from @BotFather")
    if isinstance(exc, Forbidden):
        # "Forbidden: bot was blocked by the user", "Forbidden: user is deactivated", "Forbidden: bot can't initiate
        # conversation with a user", "Forbidden: bot was kicked from the group chat": the agent must see which.
        reason = detail.removeprefix("Forbidden: ")
        return PermanentError(f"Telegram refused {what}: {reason} (403)")
    if isinstance(exc, ChatMigrated):
        return PermanentError(f"the group became a supergroup; its new chat id is {exc.new_chat_id}")
    if isinstance(exc, Conflict):
        return PollingConflict(f"Telegram refused {what} (409 Conflict): {detail}")
    if isinstance(exc, EndPointNotFound):
        return PermanentError(f"Telegram does not know the method of {what}: {detail}")
    if isinstance(exc, BadRequest):
        return PermanentError(f"Telegram rejected {what} (400): {detail}")
    if isinstance(exc, TimedOut):
        if _definitely_not_sent(exc):
            return TransientError(f"Telegram did not answer in time on {what} (no connection): {detail}")
        return TransientError(
            f"Telegram timed out on {what} after the request was sent: {detail}", maybe_delivered=sending
        )
    if isinstance(exc, NetworkError):
        if detail.startswith("Too Many Requests"):
            # A 429 without parameters.retry_after (PTB raises NetworkError then): wait a conservative while.
            return RateLimited(f"Telegram flood control on {what}: {detail}", retry_after=DEFAULT_RETRY_AFTER)
        if exc.__cause__ is None:  # Telegram (or a proxy) answered with an HTTP error status: 5xx
            return TransientError(f"Telegram server error on {what}: {detail}")
        maybe = sending and not _definitely_not_sent(exc)
        return TransientError(f"network error talking to Telegram on {what}: {detail}", maybe_delivered=maybe)
    if isinstance(exc, TelegramError):  # e.g. an unparsable answer
        return TransientError(f"unexpected Telegram answer on {what}: {detail}", maybe_delivered=sending)
    return TransientError(f"error talking to Telegram on {what}: {exc.__class__.__name__}: {detail}")


DEFAULT_RETRY_AFTER = 30.0


class PollingConflict(PermanentError):
    """409 from getUpdates: a webhook is set, or another process polls the same bot. Polling must stop."""


class BotClient:
    """One bot token and API base; every method is synchronous and raises only ConnectorError subclasses."""

    def __init__(self, token: str, *, api_base: str = DEFAULT_API_BASE, timeout: float = DEFAULT_READ_TIMEOUT) -> None:
        self._token = token
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"BotClient(api_base={self.api_base!r}, token={REDACTED})"

    @property
    def file_base(self) -> str:
        """The file download base, without the token: ``{api_base}/file/bot<token>``."""
        return f"{self.api_base}{FILE_PATH}{REDACTED}"

    def _build(self) -> tuple[Bot, tuple[HTTPXRequest, HTTPXRequest]]:
        if not self._token:
            raise AuthError("this Telegram channel has no bot token configured")

        def request(pool: int) -> HTTPXRequest:
            return HTTPXRequest(
                connection_pool_size=pool,
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=self.timeout,
                write_timeout=WRITE_TIMEOUT,
                pool_timeout=POOL_TIMEOUT,
                media_write_timeout=MEDIA_WRITE_TIMEOUT,
                # One TLS context per process: httpx would load the CA bundle for each client (~20 ms, two
                # clients per call), most of a send's cost.
                httpx_kwargs={"verify": tls_context()},
            )

        requests = (request(1), request(2))
        bot = Bot(
            self._token,
            base_url=f"{self.api_base}{API_PATH}",
            base_file_url=f"{self.api_base}{FILE_PATH}",
            get_updates_request=requests[0],
            request=requests[1],
        )
        return bot, requests

    async def _session(self, body: Callable[[Bot], Awaitable[T]], *, what: str, sending: bool) -> T:
        bot, requests = self._build()
        # Not ``async with bot``: Bot.initialize() calls getMe and, on a bad token, raises an error whose message
        # contains the token. The HTTPX clients are ready from construction; we only close them.
        try:
            return await body(bot)
        except ConnectorError:
            raise
        except Exception as exc:
            mapped = map_error(exc, what=what, token=self._token, sending=sending)
        finally:
            await asyncio.gather(*(r.shutdown() for r in requests), return_exceptions=True)
        raise mapped  # outside the except block: not chained to PTB's exception (whose text we scrubbed)

    def run(self, body: Callable[[Bot], Awaitable[T]], *, what: str, sending: bool = False) -> T:
        """Run ``body(bot)`` on a fresh Bot; PTB errors become ConnectorErrors. ``what`` names the call in errors."""
        return run_sync(self._session(body, what=what, sending=sending))

    def map(self, exc: Exception, *, what: str, sending: bool = False) -> ConnectorError:
        return map_error(exc, what=what, token=self._token, sending=sending)

    def scrub(self, text: str) -> str:
        return scrub(text, self._token)

    # --- raw calls (JSON exactly as Telegram answered) --------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None, *, read_timeout: float | None = None) -> Any:
        async def body(bot: Bot) -> Any:
            return await bot.do_api_request(
                method,
                api_kwargs=params or {},
                read_timeout=self.timeout if read_timeout is None else read_timeout,
            )

        return self.run(body, what=method)

    def download(self, file_info: dict[str, Any], *, read_timeout: float | None = None) -> bytes:
        """Download a file getFile described (``{api_base}/file/bot<token>/<file_path>``) with PTB's File."""

        async def body(bot: Bot) -> bytes:
            file = File(
                file_id=str(file_info.get("file_id") or ""),
                file_unique_id=str(file_info.get("file_unique_id") or ""),
                file_size=file_info.get("file_size"),
                file_path=f"{bot.base_file_url}/{file_info['file_path']}",
            )
            file.set_bot(bot)
            try:
                return bytes(
                    await file.download_as_bytearray(
                        read_timeout=self.timeout if read_timeout is None else read_timeout
                    )
                )
            except InvalidToken as exc:
                # The token just worked for getFile: a 404 here means the file is gone, not a bad token.
                raise PermanentError(f"Telegram no longer has this file ({scrub(str(exc), self._token)})") from None

        return self.run(body, what="file download")
