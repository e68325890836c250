"""A fake Telegram Bot API server on loopback: the real client (python-telegram-bot) talks to it over HTTP.

It implements the behaviour the tests rely on, with the response shapes of the real API
(https://core.telegram.org/bots/api and ../shared/data/telegram/nutgram/Responses):

- routing per token: ``/bot<token>/<method>`` and ``/file/bot<token>/<file_path>``; an unknown token answers
  401 {"ok": false, "error_code": 401, "description": "Unauthorized"}, an unknown method 404 "Not Found";
  method names are case-insensitive, as Telegram's are;
- parameters as query string, application/x-www-form-urlencoded, application/json or multipart/form-data (uploads);
- getMe; getUpdates long polling (waits up to ``timeout`` for an update >= offset, confirms updates below the
  offset, honours ``limit``, negative offsets and ``allowed_updates``; 409 while a webhook is set, and 409 for the
  older of two concurrent pollers); setWebhook / deleteWebhook / getWebhookInfo (with drop_pending_updates and the
  secret token's alphabet); sendMessage / sendPhoto / sendDocument (text limits in UTF-16 units, reply_parameters
  with allow_sending_without_reply, uploads stored as files) answering a realistic Message with an increasing
  message_id per chat; getFile (20 MB limit) and file downloads; answerCallbackQuery;
- injectable faults for the next N calls of a method (or "*"): 429 with parameters.retry_after (by default the
  flood-control window then holds for retry_after seconds, as on Telegram), 5xx, 403 blocked, 401, a slow answer
  (the call still takes effect: a client timing out may have delivered), a dropped connection;
- duplicate updates (``queue_update(..., times=2)``), helpers to build updates, to read the shared fixtures, and to
  POST an update to a webhook URL with the secret header (``post_update``, ``deliver_webhook``).

Every call is recorded (method, decoded params, uploaded files, headers, and ``at``: ``time.time()`` once its
request was read, which bench/outbound.py times sends by). Use it as a context manager::

    with TelegramServer() as server:
        connector = TelegramConnector(settings={"api_base": server.api_base}, secrets={"bot_token": server.token})
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import secrets
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from email.parser import HeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SHARED_UPDATES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "telegram" / "nutgram" / "Updates"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

MAX_TEXT = 4096  # https://core.telegram.org/bots/api#sendmessage
MAX_CAPTION = 1024
MAX_UPLOAD = 50 * 1024 * 1024  # https://core.telegram.org/bots/api#sending-files
MAX_DOWNLOAD = 20 * 1024 * 1024  # https://core.telegram.org/bots/api#getfile
SECRET_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

# How each parameter is decoded from a form field (everything else stays a string, as "text" must).
_INT_PARAMS = {
    "offset",
    "limit",
    "timeout",
    "message_id",
    "reply_to_message_id",
    "max_connections",
    "cache_time",
    "message_thread_id",
}
_BOOL_PARAMS = {
    "drop_pending_updates",
    "allow_sending_without_reply",
    "disable_notification",
    "protect_content",
    "show_alert",
    "disable_web_page_preview",
}
_JSON_PARAMS = {
    "allowed_updates",
    "reply_parameters",
    "reply_markup",
    "entities",
    "caption_entities",
    "link_preview_options",
}


def new_token(bot_id: int | None = None) -> str:
    """A token shaped like BotFather's: <bot id>:<35 characters>."""
    return f"{bot_id or secrets.randbelow(9 * 10**9) + 10**9}:AA{secrets.token_urlsafe(33)[:33]}"


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@dataclass
class Upload:
    field: str
    filename: str
    content_type: str
    content: bytes


@dataclass
class Call:
    method: str  # as the API names it, e.g. "sendMessage"
    params: dict[str, Any]
    files: dict[str, Upload]
    headers: dict[str, str]
    at: float
    status: int = 200
    fault: str = ""


@dataclass
class Fault:
    status: int | None  # None: answer normally (after ``delay``)
    description: str = ""
    retry_after: int | None = None
    delay: float = 0.0
    count: int = 1
    drop: bool = False  # close the connection without answering (after the call took effect)
    window: bool = False  # a 429 that holds: every call of the method answers 429 until retry_after has passed


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes
    mime_type: str = ""
    file_name: str = ""


@dataclass
class FakeBot:
    token: str
    id: int
    username: str
    first_name: str
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 100_000_001
    webhook: dict[str, Any] = field(default_factory=dict)
    webhook_error: tuple[int, str] | None = None
    allowed_updates: list[str] | None = None
    message_ids: dict[int, int] = field(default_factory=dict)
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    files: dict[str, StoredFile] = field(default_factory=dict)
    poll_generation: int = 0
    flood_until: dict[str, float] = field(default_factory=dict)  # method (lowercase, or "*") -> time.time()

    @property
    def user(self) -> dict[str, Any]:
        return {"id": self.id, "is_bot": True, "first_name": self.first_name, "username": self.username}


class TelegramServer:
    def __init__(self, *, token: str | None = None, username: str = "switchboard_test_bot") -> None:
        self.bots: dict[str, FakeBot] = {}
        self.calls: list[Call] = []
        self.faults: dict[tuple[str, str], deque[Fault]] = {}
        self.https_only_webhooks = False  # Telegram requires HTTPS; tests posting to loopback keep this False
        self._cond = threading.Condition()
        self._closing = False
        self._file_counter = itertools.count(1)
        self.token = token or new_token()
        self.add_bot(self.token, username=username)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-telegram", daemon=True
        )

    # --- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> TelegramServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> TelegramServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        """What the connector's ``api_base`` setting takes (PTB appends /bot<token> and /file/bot<token>)."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- bots and chats --------------------------------------------------------------------------------------------
    def add_bot(self, token: str, *, username: str = "second_test_bot", first_name: str = "Support") -> FakeBot:
        bot = FakeBot(token=token, id=int(token.partition(":")[0]), username=username, first_name=first_name)
        with self._cond:
            self.bots[token] = bot
        return bot

    def bot(self, token: str | None = None) -> FakeBot:
        return self.bots[token or self.token]

    def add_chat(self, chat: dict[str, Any], *, token: str | None = None) -> None:
        with self._cond:
            self.bot(token).chats[int(chat["id"])] = dict(chat)

    def block_chat(self, chat_id: int, *, token: str | None = None) -> None:
        """From now on the user has blocked the bot: sends to this chat answer 403."""
        with self._cond:
            self.bot(token).blocked.add(int(chat_id))

    # --- updates ---------------------------------------------------------------------------------------------------
    def queue_update(
        self, update: dict[str, Any], *, token: str | None = None, renumber: bool = True, times: int = 1
    ) -> dict[str, Any]:
        """Queue an Update for getUpdates (or deliver_webhook). ``renumber`` gives it the next update_id (the shared
        fixtures reuse ids); ``times=2`` queues the very same update twice (a duplicate delivery)."""
        update = copy.deepcopy(update)
        with self._cond:
            bot = self.bot(token)
            if renumber or not isinstance(update.get("update_id"), int):
                update["update_id"] = bot.next_update_id
            bot.next_update_id = max(bot.next_update_id, update["update_id"] + 1)
            self._remember(bot, update)
            for _ in range(times):
                bot.updates.append(update)
            self._cond.notify_all()
        return update

    def queue_message(
        self,
        text: str = "Hello",
        *,
        chat_id: int = 424242,
        first_name: str = "Ada",
        last_name: str = "Lovelace",
        username: str = "ada",
        language_code: str = "en",
        token: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Queue a private-chat text message from a customer (extra Message fields in ``fields``)."""
        return self.queue_update(
            self.build_message_update(
                text,
                chat_id=chat_id,
                first_name=first_name,
                last_name=last_name,
                username=username,
                language_code=language_code,
                token=token,
                **fields,
            ),
            token=token,
            renumber=False,
        )

    def build_message_update(
        self,
        text: str | None = "Hello",
        *,
        chat_id: int = 424242,
        first_name: str = "Ada",
        last_name: str = "Lovelace",
        username: str = "ada",
        language_code: str = "en",
        kind: str = "message",
        token: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """An Update as Telegram sends it for a private chat: a fresh update_id and the chat's next message_id (so
        updates built for webhook posts are distinct; post the same dict twice for a duplicate)."""
        user = {
            "id": chat_id,
            "is_bot": False,
            "first_name": first_name,
            "last_name": last_name,
            "username": username,
            "language_code": language_code,
        }
        chat = {"id": chat_id, "first_name": first_name, "last_name": last_name, "username": username}
        chat["type"] = "private"
        with self._cond:
            bot = self.bot(token)
            message_id = self._next_message_id(bot, chat_id)
            update_id = bot.next_update_id  # each built update has its own id, as on Telegram
            bot.next_update_id += 1
        message: dict[str, Any] = {"message_id": message_id, "from": user, "chat": chat, "date": int(time.time())}
        if text is not None:
            message["text"] = text
        message.update(fields)
        return {"update_id": update_id, kind: message}

    @staticmethod
    def shared_update(name: str) -> dict[str, Any]:
        """One of ../shared/data/telegram/nutgram/Updates/<name>.json (FileNotFoundError when the data is absent)."""
        data: dict[str, Any] = json.loads((SHARED_UPDATES / f"{name}.json").read_text())
        return data

    def pending_updates(self, token: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [copy.deepcopy(u) for u in self.bot(token).updates]

    def _remember(self, bot: FakeBot, update: dict[str, Any]) -> None:
        """Chats and messages seen in updates become known, so replies to them work as on Telegram."""
        for value in update.values():
            if isinstance(value, dict) and isinstance(value.get("chat"), dict) and "message_id" in value:
                chat = value["chat"]
                if isinstance(chat.get("id"), int):
                    bot.chats.setdefault(chat["id"], dict(chat))
                    bot.messages[(chat["id"], value["message_id"])] = value
                    if isinstance(value["message_id"], int):
                        bot.message_ids[chat["id"]] = max(bot.message_ids.get(chat["id"], 0), value["message_id"])

    # --- files -----------------------------------------------------------------------------------------------------
    def add_file(
        self,
        content: bytes,
        *,
        file_name: str = "file.bin",
        mime_type: str = "application/octet-stream",
        folder: str = "documents",
        token: str | None = None,
    ) -> dict[str, Any]:
        """Store a file the customer "sent"; returns its Document object (file_id etc.) for building updates."""
        with self._cond:
            stored = self._store_file(self.bot(token), content, file_name=file_name, mime_type=mime_type, folder=folder)
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": len(content),
        }

    def _store_file(self, bot: FakeBot, content: bytes, *, file_name: str, mime_type: str, folder: str) -> StoredFile:
        number = next(self._file_counter)
        extension = file_name.rpartition(".")[2] if "." in file_name else "bin"
        stored = StoredFile(
            file_id=f"BQACAgIAAxkBAAI{number:06d}{secrets.token_urlsafe(12)}",
            file_unique_id=f"AgAD{number:06d}",
            file_path=f"{folder}/file_{number}.{extension}",
            content=content,
            mime_type=mime_type,
            file_name=file_name,
        )
        bot.files[stored.file_id] = stored
        return stored

    # --- faults ----------------------------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        *,
        status: int | None,
        description: str = "",
        retry_after: int | None = None,
        count: int = 1,
        delay: float = 0.0,
        drop: bool = False,
        window: bool = False,
        token: str | None = None,
    ) -> None:
        """The next ``count`` calls of ``method`` ("*" = any; "download" = file downloads) answer ``status``."""
        with self._cond:
            key = (token or self.token, method.lower())
            self.faults.setdefault(key, deque()).append(
                Fault(status, description, retry_after, delay, count, drop, window)
            )

    def rate_limit_next(self, method: str, *, retry_after: int = 14, count: int = 1, window: bool = True) -> None:
        """429 as in nutgram/Responses/too_many_requests.json. As on Telegram, flood control then holds: every call
        of ``method`` answers 429 (with the remaining seconds) until ``retry_after`` has passed, unless
        ``window=False`` (only the next ``count`` calls fail)."""
        self.fail_next(
            method,
            status=429,
            description=f"Too Many Requests: retry after {retry_after}",
            retry_after=retry_after,
            count=count,
            window=window,
        )

    def _flooded(self, bot: FakeBot, method: str) -> int | None:
        """Seconds left of a flood-control window covering ``method``, if any."""
        now = time.time()
        left = [until - now for key, until in bot.flood_until.items() if key in (method.lower(), "*") and until > now]
        return max(1, math.ceil(max(left))) if left else None

    def server_error_next(self, method: str, *, status: int = 500, count: int = 1) -> None:
        self.fail_next(method, status=status, description="Internal Server Error", count=count)

    def block_next(
        self, method: str, *, description: str = "Forbidden: bot was blocked by the user", count: int = 1
    ) -> None:
        self.fail_next(method, status=403, description=description, count=count)

    def unauthorized_next(self, method: str, *, count: int = 1) -> None:
        self.fail_next(method, status=401, description="Unauthorized", count=count)

    def slow_next(self, method: str, *, delay: float, count: int = 1) -> None:
        """Answer normally after ``delay`` seconds (the call takes effect: a client that timed out may have sent)."""
        self.fail_next(method, status=None, delay=delay, count=count)

    def drop_next(self, method: str, *, count: int = 1) -> None:
        """Perform the call, then close the connection without an answer."""
        self.fail_next(method, status=None, drop=True, count=count)

    def _take_fault(self, token: str, method: str) -> tuple[Fault, str] | tuple[None, None]:
        """The next fault for this call and the scope it was registered for (the method, or "*")."""
        for key in ((token, method.lower()), (token, "*")):
            queue = self.faults.get(key)
            if queue:
                fault = queue[0]
                fault.count -= 1
                if fault.count <= 0:
                    queue.popleft()
                return fault, key[1]
        return None, None

    # --- inspection ------------------------------------------------------------------------------------------------
    def calls_of(self, method: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method.lower() == method.lower()]

    def sent_messages(self, chat_id: int | None = None, *, token: str | None = None) -> list[dict[str, Any]]:
        """Messages the bot sent (successful send* calls), in order."""
        with self._cond:
            bot = self.bot(token)
            return [
                m
                for (chat, _), m in sorted(bot.messages.items(), key=lambda item: item[1].get("_seq", 0))
                if m.get("from", {}).get("id") == bot.id and (chat_id is None or chat == chat_id)
            ]

    # --- webhooks --------------------------------------------------------------------------------------------------
    @staticmethod
    def post_update(
        url: str, update: dict[str, Any], *, secret: str | None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """POST one Update to a webhook URL as Telegram does (JSON body, the secret header when given)."""
        body = json.dumps(update).encode()
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (test helper)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def deliver_webhook(self, *, token: str | None = None, timeout: float = 10.0) -> int:
        """POST the queued updates to the bot's webhook, in order, until one is refused (recorded as the webhook's
        last error, as getWebhookInfo reports it). Returns how many were accepted (2xx) and removed."""
        delivered = 0
        while True:
            with self._cond:
                bot = self.bot(token)
                if not bot.webhook.get("url") or not bot.updates:
                    return delivered
                update, url, secret = bot.updates[0], bot.webhook["url"], bot.webhook.get("secret_token")
            try:
                status, _ = self.post_update(url, update, secret=secret, timeout=timeout)
                error = "" if 200 <= status < 300 else f"Wrong response from the webhook: {status}"
            except OSError as exc:
                status, error = 0, f"Connection failed: {exc}"
            with self._cond:
                if error:
                    bot.webhook_error = (int(time.time()), error)
                    return delivered
                if bot.updates and bot.updates[0] is update:
                    bot.updates.pop(0)
                delivered += 1

    # --- HTTP ------------------------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        file_match = re.match(r"^/file/bot([^/]+)/(.+)$", parsed.path)
        api_match = re.match(r"^/bot([^/]+)/([A-Za-z]+)$", parsed.path)
        route = file_match or api_match
        token = urllib.parse.unquote(route.group(1)) if route else ""
        with self._cond:
            bot = self.bots.get(token)
        if bot is None:
            if route is None:
                self._reply(handler, 404, self._error(404, "Not Found"))
            else:  # https://core.telegram.org/bots/api#making-requests : a wrong token answers 401 Unauthorized.
                self._reply(handler, 401, self._error(401, "Unauthorized"))
            return
        if file_match:
            self._download(handler, bot, urllib.parse.unquote(file_match.group(2)))
            return
        assert api_match is not None
        method_name = api_match.group(2)
        try:
            params, files = self._params(handler, parsed.query, body)
        except ValueError as exc:
            self._reply(handler, 400, self._error(400, f"Bad Request: {exc}"))
            return
        call = Call(canonical(method_name), params, files, dict(handler.headers.items()), time.time())
        with self._cond:
            self.calls.append(call)
            flooded = self._flooded(bot, call.method)
            fault, scope = (None, None) if flooded else self._take_fault(token, call.method)
            if fault is not None and scope is not None and fault.window and fault.status == 429 and fault.retry_after:
                bot.flood_until[scope] = time.time() + fault.retry_after
        if flooded is not None:
            call.status, call.fault = 429, "flood"
            error = self._error(429, f"Too Many Requests: retry after {flooded}", retry_after=flooded)
            self._reply(handler, 429, error)
            return
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                call.status, call.fault = fault.status, "fault"
                error = self._error(fault.status, fault.description or "Error", retry_after=fault.retry_after)
                self._reply(handler, fault.status, error)
                return
        status, answer = self._dispatch(bot, call)
        call.status = status
        if fault is not None and fault.drop:
            call.fault = "dropped"
            handler.close_connection = True
            return  # no answer at all: the client sees the connection close
        self._reply(handler, status, answer)

    @staticmethod
    def _error(code: int, description: str, *, retry_after: int | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            error["parameters"] = {"retry_after": retry_after}
        return error

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any] | bytes) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header(
                "Content-Type", "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            )
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): as on the real network

    def _params(
        self, handler: BaseHTTPRequestHandler, query: str, body: bytes
    ) -> tuple[dict[str, Any], dict[str, Upload]]:
        raw: dict[str, Any] = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        files: dict[str, Upload] = {}
        content_type = handler.headers.get("Content-Type") or ""
        if content_type.startswith("application/json"):
            loaded = json.loads(body or b"{}")
            if not isinstance(loaded, dict):
                raise ValueError("the JSON body must be an object")
            return loaded, files
        if content_type.startswith("multipart/form-data"):
            fields, files = parse_multipart(body, content_type)
            raw.update(fields)
        elif body:
            raw.update(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, str) and value.startswith("attach://") and value[9:] in files:
                files[key] = files.pop(value[9:])
                continue
            params[key] = decode_param(key, value)
        return params, files

    def _download(self, handler: BaseHTTPRequestHandler, bot: FakeBot, path: str) -> None:
        call = Call("download", {"file_path": path}, {}, dict(handler.headers.items()), time.time())
        with self._cond:
            self.calls.append(call)
            fault, _ = self._take_fault(bot.token, "download")
            stored = next((f for f in bot.files.values() if f.file_path == path), None)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                call.status = fault.status
                self._reply(handler, fault.status, self._error(fault.status, fault.description or "Error"))
                return
        if stored is None:
            call.status = 404
            self._reply(handler, 404, self._error(404, "Not Found"))
            return
        self._reply(handler, 200, stored.content)

    # --- Bot API methods -------------------------------------------------------------------------------------------
    def _dispatch(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        handler = getattr(self, f"_m_{call.method}", None)
        if handler is None:
            return 404, self._error(404, "Not Found")
        try:
            result: tuple[int, dict[str, Any]] = handler(bot, call)
        except ApiError as exc:
            return exc.code, self._error(exc.code, exc.description)
        return result

    @staticmethod
    def _ok(result: Any, description: str | None = None) -> tuple[int, dict[str, Any]]:
        answer: dict[str, Any] = {"ok": True, "result": result}
        if description:
            answer["description"] = description
        return 200, answer

    def _m_getMe(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        return self._ok(
            {
                **bot.user,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        )

    def _m_getUpdates(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        offset = int(call.params.get("offset") or 0)
        limit = min(100, max(1, int(call.params.get("limit") or 100)))
        timeout = max(0, int(call.params.get("timeout") or 0))
        deadline = time.monotonic() + timeout
        with self._cond:
            if bot.webhook.get("url"):
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
                    "delete the webhook first",
                )
            if "allowed_updates" in call.params:
                bot.allowed_updates = list(call.params["allowed_updates"]) or None
            bot.poll_generation += 1
            generation = bot.poll_generation
            self._cond.notify_all()  # an older poller of this bot is terminated (below)
            while True:
                self._confirm(bot, offset)
                ready = [u for u in bot.updates if self._allowed(bot, u) and (offset <= 0 or u["update_id"] >= offset)]
                if ready or self._closing:
                    return self._ok(copy.deepcopy(ready[:limit]))
                if bot.webhook.get("url"):
                    raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active")
                if bot.poll_generation != generation:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that only one bot "
                        "instance is running",
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._ok([])
                self._cond.wait(remaining)

    @staticmethod
    def _confirm(bot: FakeBot, offset: int) -> None:
        """https://core.telegram.org/bots/api#getupdates : "An update is considered confirmed as soon as getUpdates
        is called with an offset higher than its update_id"; a negative offset keeps only the last -offset."""
        if offset > 0:
            bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
        elif offset < 0:
            bot.updates = bot.updates[offset:]
        # Updates of types the bot no longer asks for are dropped, as Telegram does.
        bot.updates = [u for u in bot.updates if TelegramServer._allowed(bot, u)]

    @staticmethod
    def _allowed(bot: FakeBot, update: dict[str, Any]) -> bool:
        if not bot.allowed_updates:
            return True
        kind = next((k for k in update if k != "update_id"), "")
        return kind in bot.allowed_updates

    def _m_setWebhook(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        url = str(call.params.get("url") or "")
        with self._cond:
            if not url:
                return self._m_deleteWebhook(bot, call)
            scheme = urllib.parse.urlsplit(url).scheme
            if scheme not in ("http", "https") or (self.https_only_webhooks and scheme != "https"):
                raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
            secret = call.params.get("secret_token")
            if secret is not None and not SECRET_TOKEN_RE.match(str(secret)):
                raise ApiError(400, "Bad Request: secret token contains unallowed characters")
            max_connections = int(call.params.get("max_connections") or 40)
            if not 1 <= max_connections <= 100:
                raise ApiError(400, "Bad Request: bad webhook: max_connections must be between 1 and 100")
            if call.params.get("drop_pending_updates"):
                bot.updates.clear()
            same = bot.webhook.get("url") == url and bot.webhook.get("secret_token") == secret
            bot.webhook = {"url": url, "secret_token": secret, "max_connections": max_connections}
            if "allowed_updates" in call.params:
                bot.allowed_updates = list(call.params["allowed_updates"]) or None
            bot.webhook_error = None
            self._cond.notify_all()  # a waiting getUpdates now conflicts
        return self._ok(True, "Webhook is already set" if same else "Webhook was set")

    def _m_deleteWebhook(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        with self._cond:
            had = bool(bot.webhook.get("url"))
            bot.webhook = {}
            bot.webhook_error = None
            if call.params.get("drop_pending_updates"):
                bot.updates.clear()
        return self._ok(True, "Webhook was deleted" if had else "Webhook is already deleted")

    def _m_getWebhookInfo(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        with self._cond:
            info: dict[str, Any] = {
                "url": bot.webhook.get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(bot.updates),
            }
            if bot.webhook.get("url"):
                info["max_connections"] = bot.webhook.get("max_connections", 40)
                info["ip_address"] = "127.0.0.1"
                if bot.allowed_updates:
                    info["allowed_updates"] = list(bot.allowed_updates)
                if bot.webhook_error:
                    info["last_error_date"], info["last_error_message"] = bot.webhook_error
        return self._ok(info)

    def _chat_for_send(self, bot: FakeBot, chat_id: Any) -> dict[str, Any]:
        if isinstance(chat_id, str) and re.fullmatch(r"-?\d+", chat_id):
            chat_id = int(chat_id)
        if not isinstance(chat_id, int):
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in bot.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        # Unknown positive ids are treated as private chats of users who started the bot.
        return bot.chats.get(chat_id) or {"id": chat_id, "first_name": "Customer", "type": "private"}

    def _reply_to(self, bot: FakeBot, chat: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
        reply = params.get("reply_parameters")
        if reply is None and params.get("reply_to_message_id") is not None:
            reply = {
                "message_id": params["reply_to_message_id"],
                "allow_sending_without_reply": params.get("allow_sending_without_reply"),
            }
        if reply is None:
            return None
        if not isinstance(reply, dict) or not isinstance(reply.get("message_id"), int):
            raise ApiError(400, "Bad Request: can't parse reply parameters JSON object")
        original = bot.messages.get((chat["id"], reply["message_id"]))
        if original is None:
            if reply.get("allow_sending_without_reply"):
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        return {k: v for k, v in original.items() if k not in ("reply_to_message", "_seq")}

    def _new_message(
        self, bot: FakeBot, chat: dict[str, Any], params: dict[str, Any], **content: Any
    ) -> dict[str, Any]:
        reply = self._reply_to(bot, chat, params)
        message: dict[str, Any] = {
            "message_id": self._next_message_id(bot, chat["id"]),
            "from": bot.user,
            "chat": chat,
            "date": int(time.time()),
        }
        if reply is not None:
            message["reply_to_message"] = reply
        message.update(content)
        stored = dict(message)
        stored["_seq"] = len(bot.messages)
        bot.messages[(chat["id"], message["message_id"])] = stored
        return message

    @staticmethod
    def _next_message_id(bot: FakeBot, chat_id: int) -> int:
        bot.message_ids[chat_id] = bot.message_ids.get(chat_id, 0) + 1
        return bot.message_ids[chat_id]

    def _m_sendMessage(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        text = call.params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if call.params.get("parse_mode") not in (None, "", "HTML", "Markdown", "MarkdownV2"):
            raise ApiError(400, "Bad Request: unsupported parse_mode")
        # Telegram trims the text; the limit applies after that (and after entity parsing, which we do not do).
        text = text.strip()
        if utf16_len(text) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        with self._cond:
            chat = self._chat_for_send(bot, call.params.get("chat_id"))
            return self._ok(self._new_message(bot, chat, call.params, text=text))

    def _caption(self, call: Call) -> dict[str, Any]:
        caption = call.params.get("caption")
        if caption is None or caption == "":
            return {}
        if utf16_len(str(caption)) > MAX_CAPTION:
            raise ApiError(400, "Bad Request: message caption is too long")
        return {"caption": str(caption)}

    def _upload(self, call: Call, name: str) -> Upload | str:
        if name in call.files:
            upload = call.files[name]
            if len(upload.content) > MAX_UPLOAD:
                raise ApiError(413, "Request Entity Too Large")
            return upload
        value = call.params.get(name)
        if isinstance(value, str) and value:
            return value  # a file_id sent before
        raise ApiError(400, f"Bad Request: there is no {name} in the request")

    def _m_sendPhoto(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        source = self._upload(call, "photo")
        caption = self._caption(call)
        with self._cond:
            chat = self._chat_for_send(bot, call.params.get("chat_id"))
            if isinstance(source, str):
                if source not in bot.files:
                    raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
                stored = bot.files[source]
            else:
                if image_size(source.content) is None:
                    raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED")
                stored = self._store_file(
                    bot, source.content, file_name=source.filename, mime_type="image/jpeg", folder="photos"
                )
            width, height = image_size(stored.content) or (800, 600)
            scale = min(1.0, 90 / max(width, height))
            thumb = self._store_file(
                bot, stored.content[:1024], file_name="thumb.jpg", mime_type="image/jpeg", folder="photos"
            )
            sizes = [
                {
                    "file_id": thumb.file_id,
                    "file_unique_id": thumb.file_unique_id,
                    "file_size": len(thumb.content),
                    "width": max(1, int(width * scale)),
                    "height": max(1, int(height * scale)),
                },
                {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.file_unique_id,
                    "file_size": len(stored.content),
                    "width": width,
                    "height": height,
                },
            ]
            return self._ok(self._new_message(bot, chat, call.params, photo=sizes, **caption))

    def _m_sendDocument(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        source = self._upload(call, "document")
        caption = self._caption(call)
        with self._cond:
            chat = self._chat_for_send(bot, call.params.get("chat_id"))
            if isinstance(source, str):
                if source not in bot.files:
                    raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
                stored = bot.files[source]
            else:
                stored = self._store_file(
                    bot,
                    source.content,
                    file_name=source.filename,
                    mime_type=source.content_type or "application/octet-stream",
                    folder="documents",
                )
            document = {
                "file_name": stored.file_name,
                "mime_type": stored.mime_type,
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.content),
            }
            return self._ok(self._new_message(bot, chat, call.params, document=document, **caption))

    def _m_getFile(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        with self._cond:
            stored = bot.files.get(str(call.params.get("file_id") or ""))
        if stored is None:
            # nutgram/Responses/wrong_file_id.json
            raise ApiError(400, "Bad Request: wrong file_id or the file is temporarily unavailable")
        if len(stored.content) > MAX_DOWNLOAD:
            raise ApiError(400, "Bad Request: file is too big")
        return self._ok(
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.content),
                "file_path": stored.file_path,
            }
        )

    def _m_answerCallbackQuery(self, bot: FakeBot, call: Call) -> tuple[int, dict[str, Any]]:
        if not call.params.get("callback_query_id"):
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        return self._ok(True)


class ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


_CANONICAL = {
    name.lower(): name
    for name in (
        "getMe",
        "getUpdates",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "getFile",
        "answerCallbackQuery",
    )
}


def canonical(method: str) -> str:
    """Bot API method names are case-insensitive (https://core.telegram.org/bots/api#making-requests)."""
    return _CANONICAL.get(method.lower(), method)


def decode_param(key: str, value: Any) -> Any:
    """A form field's string -> the value Telegram would understand (PTB JSON-encodes non-string parameters)."""
    if not isinstance(value, str):
        return value
    if key in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"can't parse {key} JSON object") from exc
    if key in _INT_PARAMS:
        try:
            return int(value)
        except ValueError as exc:
            raise ValueError(f"{key} must be an integer") from exc
    if key in _BOOL_PARAMS:
        return value.lower() in ("true", "1")
    return value


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, Upload]]:
    """multipart/form-data (RFC 7578) -> (fields, files), byte-exact for file contents."""
    header = HeaderParser().parsestr(f"Content-Type: {content_type}\r\n\r\n")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("multipart body without boundary")
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    delimiter = b"--" + boundary.encode()
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, _, content = chunk.partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = HeaderParser().parsestr(head.decode("utf-8", "replace"))
        name = headers.get_param("name", header="content-disposition")
        filename = headers.get_param("filename", header="content-disposition")
        if not isinstance(name, str):
            continue
        if isinstance(filename, str):
            files[name] = Upload(name, filename, headers.get_content_type(), content)
        else:
            fields[name] = content.decode("utf-8")
    return fields, files


def image_size(content: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF, WebP or JPEG; None when the bytes are not one of those images."""
    if content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return int(width), int(height)
    if content[:6] in (b"GIF87a", b"GIF89a") and len(content) >= 10:
        width, height = struct.unpack("<HH", content[6:10])
        return int(width), int(height)
    if content.startswith(b"RIFF") and content[8:12] == b"WEBP":
        return 800, 600  # good enough for a fake: the VP8 header is not parsed
    if content.startswith(b"\xff\xd8"):
        index = 2
        while index + 9 < len(content):
            if content[index] != 0xFF:
                return None
            marker = content[index + 1]
            segment = struct.unpack(">H", content[index + 2 : index + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                height, width = struct.unpack(">HH", content[index + 5 : index + 9])
                return int(width), int(height)
            index += 2 + segment
    return None
