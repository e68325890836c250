"""X API calls through tweepy, from synchronous code, with our error types, timeouts and rate-limit bookkeeping.

- API v2 (users/me, DM events, mentions, posting, DMs, webhooks): ``tweepy.Client`` with ``return_type=
  requests.Response`` so we get the raw JSON and the headers; endpoints tweepy has no method for go through
  ``Client.request``. User context is OAuth 1.0a (the four keys); the webhook endpoints are app-only (bearer).
- Media upload (v1.1, ``upload.twitter.com``): ``tweepy.API`` with an ``OAuth1UserHandler``.
- tweepy builds every URL on the real hosts. A ``requests`` transport adapter mounted on both sessions for each X
  host applies our default timeout (tweepy's Client passes none) and, when ``api_base`` is set (tests, a proxy),
  sends the request to ``api_base + path + query`` with the original host in ``X-Forwarded-Host``. OAuth 1.0a
  signatures are computed before the adapter runs, on the original https URL, as X would verify them.

Secrets never reach an error message: errors are built from X's own answer (status, "detail") and the call's name.
tweepy's Client logs request headers (with ``Bearer <token>``) at DEBUG; a logging filter redacts them. oauthlib and
requests-oauthlib log the consumer key and access token at DEBUG; those records are dropped.
"""

from __future__ import annotations

import io
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import tweepy
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError

from connectors.base import AuthError, ConnectorError, PermanentError, RateLimited, TransientError

DEFAULT_TIMEOUT = 20.0
CONNECT_TIMEOUT = 10.0
# A 429 without x-rate-limit-reset: X's windows are 15 minutes (https://docs.x.com/x-api/fundamentals/rate-limits).
DEFAULT_RETRY_AFTER = 900.0
# Hosts tweepy and the media links use; requests to them go through our adapter.
API_HOSTS = ("api.twitter.com", "api.x.com", "upload.twitter.com")
MEDIA_HOSTS = ("ton.twitter.com", "pbs.twimg.com", "video.twimg.com")
X_HOSTS = API_HOSTS + MEDIA_HOSTS
FORWARDED_HOST = "X-Forwarded-Host"
REDACTED = "<redacted>"

_BEARER_IN_TEXT = re.compile(r"(Bearer\s+)[^\s'\",}]+")


class _RedactBearer(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's problem, not ours
            return True
        cleaned = _BEARER_IN_TEXT.sub(rf"\1{REDACTED}", message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class _DropDebug(logging.Filter):
    """OAuth 1.0a's DEBUG records are signature internals: the consumer key and access token in the client's repr,
    the Authorization header, the collected and normalised parameters, the signature base string. Dropped; INFO and
    above pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


# A filter on a logger only sees the records created on that very logger: each module that signs requests.
OAUTH_LOGGERS = (
    "requests_oauthlib.oauth1_auth",
    "requests_oauthlib.oauth1_session",
    "oauthlib.oauth1.rfc5849",
    "oauthlib.oauth1.rfc5849.signature",
)


def _install_log_filter() -> None:
    logger = logging.getLogger("tweepy.client")
    if not any(isinstance(f, _RedactBearer) for f in logger.filters):
        logger.addFilter(_RedactBearer())
    for name in OAUTH_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropDebug) for f in logger.filters):
            logger.addFilter(_DropDebug())


_install_log_filter()


# --- rate limits -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateInfo:
    """One endpoint's rate-limit window as X reported it (x-rate-limit-limit / -remaining / -reset)."""

    limit: int
    remaining: int
    reset_at: float  # epoch seconds

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> RateInfo | None:
        if not headers:
            return None
        try:
            return cls(
                limit=int(headers["x-rate-limit-limit"]),
                remaining=int(headers["x-rate-limit-remaining"]),
                reset_at=float(headers["x-rate-limit-reset"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        return f"{self.remaining}/{self.limit} calls left, window resets at {hhmm(self.reset_at)}"


def hhmm(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M UTC")


def _reset_from(headers: Mapping[str, str]) -> float | None:
    """When a 429 ends: the endpoint window's reset, or the later 24-hour (posting) reset when that one is spent."""
    candidates: list[float] = []
    for prefix in ("x-rate-limit", "x-user-limit-24hour", "x-app-limit-24hour"):
        reset = headers.get(f"{prefix}-reset")
        remaining = headers.get(f"{prefix}-remaining")
        if reset is None or (prefix != "x-rate-limit" and remaining not in ("0", None)):
            continue
        try:
            candidates.append(float(reset))
        except ValueError:
            continue
    return max(candidates) if candidates else None


# --- transport ---------------------------------------------------------------------------------------------------
class XTransportAdapter(HTTPAdapter):
    """Applies a default timeout to every request, and (with ``api_base``) sends X hosts' requests there."""

    def __init__(self, *, api_base: str = "", timeout: float | tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        if timeout is None:
            timeout = self.timeout
        if self.api_base and request.url:
            parts = urllib.parse.urlsplit(request.url)
            if parts.hostname in X_HOSTS:
                request = request.copy()
                request.url = self.api_base + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                request.headers[FORWARDED_HOST] = parts.netloc
                proxies = requests.utils.get_environ_proxies(request.url)
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


def mount(session: requests.Session, adapter: HTTPAdapter) -> None:
    for host in X_HOSTS:
        session.mount(f"https://{host}/", adapter)


# --- errors ------------------------------------------------------------------------------------------------------
def _detail(response: requests.Response | None) -> str:
    """X's explanation: the problem's "detail" (v2), else its errors' messages (v1.1), else the reason phrase."""
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        detail = body.get("detail")
        if isinstance(detail, str) and detail:
            return detail
        errors = body.get("errors")
        if isinstance(errors, list):
            messages = [str(e.get("message") or e.get("detail")) for e in errors if isinstance(e, Mapping)]
            messages = [m for m in messages if m and m != "None"]
            if messages:
                return "; ".join(messages)
        title = body.get("title")
        if isinstance(title, str) and title:
            return title
    return str(response.reason or "")


def _possibly_sent(exc: requests.ConnectionError) -> bool:
    """A connection error after the request went out ("Connection aborted": the server hung up before answering)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    return bool(exc.args) and isinstance(exc.args[0], ProtocolError)


def map_error(exc: BaseException, *, what: str, sending: bool = False, bearer: bool = False) -> ConnectorError:
    """tweepy's / requests' exception -> our error type. ``what`` is "METHOD /path" for the messages.

    ``sending``: the call publishes something (a post, a DM), so a timeout after the request left means it may
    have been published (TransientError(maybe_delivered=True)).
    """
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, tweepy.TooManyRequests):
        headers = exc.response.headers if exc.response is not None else {}
        reset = _reset_from(headers) or (float(exc.reset_time) if exc.reset_time else None)
        if reset is None:
            return RateLimited(
                f"X rate limit reached for {what}; retrying in {DEFAULT_RETRY_AFTER / 60:g} minutes",
                retry_after=DEFAULT_RETRY_AFTER,
            )
        return RateLimited(
            f"X rate limit reached for {what}; resets at {hhmm(reset)}", retry_after=max(1.0, reset - time.time())
        )
    if isinstance(exc, tweepy.Unauthorized):
        if bearer:
            return AuthError(
                f"X refused the bearer token on {what} (401): copy the app's bearer token again from the developer "
                "portal"
            )
        return AuthError(
            f"X refused the credentials on {what} (401): check the four keys (API key and secret, access token "
            "and secret), and that the access token has Read+Write+Direct Messages permission (regenerate it after "
            "changing the app's permissions)"
        )
    if isinstance(exc, tweepy.HTTPException):
        response = exc.response if isinstance(exc.response, requests.Response) else None
        status = response.status_code if response is not None else 0
        detail = _detail(response)
        if isinstance(exc, tweepy.TwitterServerError):
            # 500/502/503: X did not process the request. 504: a gateway gave up waiting, X may still have done it.
            return TransientError(
                f"X server error on {what} ({status}): {detail}", maybe_delivered=sending and status == 504
            )
        if isinstance(exc, tweepy.Forbidden):
            return PermanentError(f"X refused {what} (403): {detail}")
        return PermanentError(f"X rejected {what} ({status}): {detail}")
    if isinstance(exc, tweepy.TweepyException) and isinstance(exc.__context__, requests.RequestException):
        exc = exc.__context__  # tweepy.API wraps transport errors: "Failed to send request: ..."
    if isinstance(exc, requests.ConnectionError):
        maybe = sending and _possibly_sent(exc)
        return TransientError(f"could not reach X on {what}: {exc.__class__.__name__}", maybe_delivered=maybe)
    if isinstance(exc, requests.Timeout):
        return TransientError(
            f"X did not answer in time on {what}" + (" (it may have been published)" if sending else ""),
            maybe_delivered=sending,
        )
    if isinstance(exc, requests.RequestException):
        return TransientError(f"error talking to X on {what}: {exc.__class__.__name__}", maybe_delivered=sending)
    return TransientError(f"unexpected error on {what}: {exc.__class__.__name__}", maybe_delivered=sending)


# --- the client --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """One answer: its JSON body, its rate-limit window and headers."""

    body: dict[str, Any]
    rate: RateInfo | None
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Keys:
    consumer_key: str = ""
    consumer_secret: str = ""
    access_token: str = ""
    access_token_secret: str = ""
    bearer_token: str = ""

    USER_CONTEXT = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")

    def missing(self, *, bearer: bool = False) -> list[str]:
        names = [*self.USER_CONTEXT, "bearer_token"] if bearer else list(self.USER_CONTEXT)
        return [name for name in names if not getattr(self, name)]

    def __repr__(self) -> str:
        return f"Keys(set={[name for name in (*self.USER_CONTEXT, 'bearer_token') if getattr(self, name)]})"


class XClient:
    """tweepy's v2 Client and v1.1 API on one set of keys; every call raises only ConnectorError subclasses."""

    def __init__(self, keys: Keys, *, api_base: str = "", timeout: float = DEFAULT_TIMEOUT) -> None:
        self.keys = keys
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.timeouts = (min(CONNECT_TIMEOUT, timeout), timeout)
        self.client = tweepy.Client(
            bearer_token=keys.bearer_token or None,
            consumer_key=keys.consumer_key,
            consumer_secret=keys.consumer_secret,
            access_token=keys.access_token,
            access_token_secret=keys.access_token_secret,
            return_type=requests.Response,
            wait_on_rate_limit=False,
        )
        self.auth = tweepy.OAuth1UserHandler(
            keys.consumer_key, keys.consumer_secret, keys.access_token, keys.access_token_secret
        )
        self.api = tweepy.API(self.auth, timeout=self.timeouts, wait_on_rate_limit=False, retry_count=0)  # type: ignore[arg-type]
        self.adapter = XTransportAdapter(api_base=self.api_base, timeout=self.timeouts)
        mount(self.client.session, self.adapter)
        mount(self.api.session, self.adapter)
        self.rates: dict[str, RateInfo] = {}

    def __repr__(self) -> str:
        return f"XClient(api_base={self.api_base!r}, keys={self.keys!r})"

    @property
    def session(self) -> requests.Session:
        return self.client.session

    def require(self, *, bearer: bool = False) -> None:
        missing = self.keys.missing(bearer=bearer)
        if missing:
            raise AuthError(f"this X channel is missing secrets: {', '.join(missing)}")

    def _record(self, what: str, headers: Mapping[str, str] | None) -> RateInfo | None:
        rate = RateInfo.from_headers(headers)
        if rate is not None:
            self.rates[what] = rate
        return rate

    def call(
        self,
        what: str,
        request: Callable[[], Any],
        *,
        sending: bool = False,
        bearer: bool = False,
    ) -> Reply:
        """Run one tweepy call (returning a requests.Response) as ``what`` ("GET /2/users/me"); errors mapped."""
        self.require(bearer=bearer)
        try:
            response = request()
        except Exception as exc:
            error_response = getattr(exc, "response", None)
            if isinstance(error_response, requests.Response):
                self._record(what, error_response.headers)
            mapped = map_error(exc, what=what, sending=sending, bearer=bearer)
        else:
            rate = self._record(what, response.headers)
            if not response.content:
                return Reply({}, rate, response.headers)
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise TransientError(f"unexpected answer from X on {what}: not a JSON object")
            return Reply(body, rate, response.headers)
        raise mapped  # outside the except block: not chained to tweepy's exception

    def request(
        self, method: str, route: str, *, what: str, json: Any = None, params: Any = None, user_auth: bool = True
    ) -> Reply:
        """An endpoint tweepy has no method for (webhooks), through ``Client.request``."""
        return self.call(
            what,
            lambda: self.client.request(method, route, params=params, json=json, user_auth=user_auth),
            sending=method in ("POST", "PUT", "DELETE"),
            bearer=not user_auth,
        )

    def upload(self, filename: str, content: bytes, *, media_category: str) -> str:
        """POST upload.twitter.com/1.1/media/upload.json (simple upload) -> the media id string."""
        what = "POST /1.1/media/upload.json"
        self.require()
        try:
            media = self.api.simple_upload(filename, file=io.BytesIO(content), media_category=media_category)
        except Exception as exc:
            mapped = map_error(exc, what=what)
        else:
            media_id = getattr(media, "media_id_string", None) or getattr(media, "media_id", None)
            if not media_id:
                raise TransientError(f"unexpected answer from X on {what}: no media_id")
            return str(media_id)
        raise mapped

    def oauth1(self) -> Any:
        """A requests auth object signing with the four keys (OAuth 1.0a user context)."""
        return self.auth.apply_auth()
