"""Settings, 12-factor: everything comes from the environment, with embedded defaults when nothing is set.

With no DATABASE_URL the project runs on SQLite (WAL) under ``var/``; with no REDIS_URL it expects the
embedded Redis that ``make run`` starts (see ``inbox/cli.py``). Every setting is listed with its default
and meaning in ``deploy/env.example``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SWITCHBOARD_VAR_DIR", BASE_DIR / "var"))


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _dev_secret_key() -> str:
    """A per-install key kept in var/, so a fresh clone needs no configuration and sessions survive restarts."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = _env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or _dev_secret_key()
# Fernet keys for channel secrets at rest, newest first (MultiFernet: old keys still decrypt during rotation).
# When unset, one key is derived from SECRET_KEY (inbox/common/crypto.py).
FIELD_ENCRYPTION_KEYS = [k.strip() for k in os.environ.get("FIELD_ENCRYPTION_KEYS", "").split(",") if k.strip()]

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "inbox.conversations",
    "inbox.routing",
    "inbox.agents",
    "inbox.webchat",
    "inbox.metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the inbox's CSS/JS, the widget, the admin's) served by the app itself: no web server needed in
    # the default set-up; compressed, with far-future caching for hashed names.
    "inbox.common.static.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "inbox.common.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "inbox.urls"
ASGI_APPLICATION = "inbox.asgi.application"
WSGI_APPLICATION = "inbox.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "inbox.agents.context.agent",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # No persistent connections (CONN_MAX_AGE=0): under ASGI each request may run on another executor thread, and a
    # persistent connection per thread piles up until PostgreSQL refuses clients (seen at 8 concurrent webhook
    # clients in bench/telegram.py). Web processes (inbox/asgi.py, inbox/wsgi.py set DB_POOL=1) borrow connections
    # from a psycopg pool per process instead: bounded (DB_POOL_MAX_SIZE), shared by the executor threads, and no
    # connect per request. Workers connect once per task (a batch) and are forked, so they keep plain connections.
    # For many web processes, size the pools against max_connections or put PgBouncer in front (docs/scaling.md).
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=_env_int("DB_CONN_MAX_AGE", 0))}
    if os.environ.get("DB_POOL", "0") == "1" and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django requires it with a pool
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": _env_int("DB_POOL_MIN_SIZE", 1),
            "max_size": _env_int("DB_POOL_MAX_SIZE", 8),
            "timeout": _env_int("DB_POOL_TIMEOUT", 10),  # seconds a request waits for a free connection
        }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "switchboard.sqlite3"),
            "OPTIONS": {
                # WAL lets the web process read while a worker writes; IMMEDIATE takes the write lock at BEGIN
                # so two writers queue on the busy timeout instead of failing with "database is locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, Celery, Channels ------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Celery: the database is the source of truth, Redis only a transport (docs/architecture.md).
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task that runs longer than the visibility timeout is delivered again; our limits stay far below it.
CELERY_BROKER_VISIBILITY_TIMEOUT = _env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT}
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "routing"
CELERY_TASK_ROUTES = {
    "switchboard.ingest.*": {"queue": "ingest"},
    "switchboard.routing.*": {"queue": "routing"},
    "switchboard.outbound.*": {"queue": "outbound"},
    "switchboard.maintenance.*": {"queue": "routing"},
}
CELERY_BEAT_SCHEDULE = {
    "sweep-stuck-work": {"task": "switchboard.maintenance.sweep", "schedule": 10.0},
    # Rewrites the current hour's metric snapshot (inbox/metrics/services.py); a run older than a minute is moot.
    "metrics-snapshot": {
        "task": "switchboard.maintenance.metrics_snapshot",
        "schedule": 60.0,
        "options": {"expires": 55.0},
    },
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30},
    }
}

# --- Switchboard ----------------------------------------------------------------------------------------
# Inbound events: a batch per ingest task when a poller or the sweeper hands over many at once.
SWITCHBOARD_INGEST_BATCH = _env_int("SWITCHBOARD_INGEST_BATCH", 200)
# After this many failed attempts an inbound event or outbound delivery is dead-lettered ("failed").
SWITCHBOARD_MAX_ATTEMPTS = _env_int("SWITCHBOARD_MAX_ATTEMPTS", 8)
# A claim on an event or delivery is held this long before the sweeper assumes its worker died.
SWITCHBOARD_CLAIM_LEASE_SECONDS = _env_int("SWITCHBOARD_CLAIM_LEASE_SECONDS", CELERY_TASK_TIME_LIMIT + 60)
# Work older than this and still not picked up is re-enqueued by the sweeper (a lost broker message).
SWITCHBOARD_SWEEP_AFTER_SECONDS = _env_int("SWITCHBOARD_SWEEP_AFTER_SECONDS", 60)
# First retry delay of a failed send or event; doubles per attempt, capped at one hour.
SWITCHBOARD_RETRY_BASE_SECONDS = float(os.environ.get("SWITCHBOARD_RETRY_BASE_SECONDS", "30"))
# How long a process trusts its copy of the queue table (a queue change applies within this time).
SWITCHBOARD_ROUTING_CACHE_SECONDS = float(os.environ.get("SWITCHBOARD_ROUTING_CACHE_SECONDS", "5"))
# Visitor / API text longer than this is refused with 413.
SWITCHBOARD_MAX_MESSAGE_CHARS = _env_int("SWITCHBOARD_MAX_MESSAGE_CHARS", 10_000)
# Web chat rate limits (a channel's settings["rate_limits"] overrides them): messages per minute per visitor and per
# IP address, new visitors (conversations) per minute per IP address.
SWITCHBOARD_WEBCHAT_MESSAGES_PER_MINUTE = _env_int("SWITCHBOARD_WEBCHAT_MESSAGES_PER_MINUTE", 30)
SWITCHBOARD_WEBCHAT_MESSAGES_PER_MINUTE_PER_IP = _env_int("SWITCHBOARD_WEBCHAT_MESSAGES_PER_MINUTE_PER_IP", 300)
SWITCHBOARD_WEBCHAT_SESSIONS_PER_MINUTE_PER_IP = _env_int("SWITCHBOARD_WEBCHAT_SESSIONS_PER_MINUTE_PER_IP", 30)
# Behind a reverse proxy: the client address is the last X-Forwarded-For entry (the one the proxy appended).
SWITCHBOARD_TRUST_X_FORWARDED_FOR = _env_bool("SWITCHBOARD_TRUST_X_FORWARDED_FOR", False)
# Extra connectors, "kind=package.module:Class" comma-separated (plug-ins; the built-ins are in connectors/registry.py).
SWITCHBOARD_EXTRA_CONNECTORS = os.environ.get("SWITCHBOARD_EXTRA_CONNECTORS", "")

# --- Auth, i18n, static -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"  # `manage.py collectstatic` target for a web server / CDN in front (optional)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/inbox/"
# Argon2id first (OWASP's first choice); the others only verify older hashes, which are upgraded at the next sign-in.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
# Sign-in throttling: failed attempts per username and per client address in a sliding minute window (Redis).
SWITCHBOARD_LOGIN_FAILURES_PER_USER = _env_int("SWITCHBOARD_LOGIN_FAILURES_PER_USER", 5)
SWITCHBOARD_LOGIN_FAILURES_PER_IP = _env_int("SWITCHBOARD_LOGIN_FAILURES_PER_IP", 20)
SWITCHBOARD_LOGIN_LOCKOUT_SECONDS = _env_int("SWITCHBOARD_LOGIN_LOCKOUT_SECONDS", 300)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# Prometheus scrape endpoint /metrics: a bearer token (Authorization: Bearer <token>). Unset: /metrics answers 404.
SWITCHBOARD_METRICS_TOKEN = os.environ.get("SWITCHBOARD_METRICS_TOKEN", "")
# The inbox: conversations per page of the list.
SWITCHBOARD_INBOX_PAGE_SIZE = _env_int("SWITCHBOARD_INBOX_PAGE_SIZE", 50)
# The conversation page shows the contact's latest messages; older ones a click away.
SWITCHBOARD_TIMELINE_PAGE_SIZE = _env_int("SWITCHBOARD_TIMELINE_PAGE_SIZE", 50)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# Static files from the apps' static/ folders, found at start-up (no collectstatic step for `make run`).
WHITENOISE_USE_FINDERS = True
