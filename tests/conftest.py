"""Test set-up: real PostgreSQL, real Redis, a real Celery worker process. No mocks of our own database or broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection

from inbox.cli import worker_command

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        raise pytest.UsageError(
            "the tests run against PostgreSQL: set DATABASE_URL=postgres://... (make test does this)"
        )
    _hash_each_password_once()


def _hash_each_password_once() -> None:
    """Argon2 costs ~0.1-0.3 s a hash by design, and most tests create the same few users with the same password.
    The real Argon2 hash of each password is computed once and reused (same salt: fine for test users), so the
    web server under test still verifies real Argon2 hashes. An explicit salt or hasher is never cached."""
    import functools

    from django.contrib.auth import base_user, hashers

    real = hashers.make_password

    @functools.cache
    def once(password: str) -> str:
        return real(password)

    def make_password(password: str | None, salt: str | None = None, hasher: str = "default") -> str:
        if isinstance(password, str) and salt is None and hasher == "default":
            return once(password)
        return real(password, salt, hasher)

    base_user.make_password = make_password  # type: ignore[assignment]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until predicate() is truthy; fail with what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@pytest.fixture(scope="session", autouse=True)
def _clean_redis() -> None:
    """The tests own their Redis database number (REDIS_URL, /13 by default): start from empty."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


def worker_env(**extra: str) -> dict[str, str]:
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        SWITCHBOARD_RETRY_BASE_SECONDS="0.5",
        SWITCHBOARD_ROUTING_CACHE_SECONDS="0",
        # Work whose broker message was lost is due for the sweeper after 2 s (production: 60 s).
        SWITCHBOARD_SWEEP_AFTER_SECONDS="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(self, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            worker_command(concurrency=2, name=f"test-{os.getpid()}@%h", quiet=True),
            cwd=ROOT,
            env=worker_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text()[-n:]


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real Celery worker process (prefork, 2 children) on the test database and the test Redis."""
    with django_db_blocker.unblock():
        connection.ensure_connection()  # the test database exists from here on
    worker = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        yield worker
    finally:
        worker.stop()


class WebProcess:
    """The ASGI app under uvicorn (HTTP + websockets), as `make run` starts it, on a free loopback port."""

    def __init__(self, log_path: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = log_path.open("w")
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "inbox.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=worker_env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "Uvicorn running" not in log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.log.close()


@pytest.fixture(scope="session")
def web_server(celery_worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    web = WebProcess(tmp_path_factory.mktemp("web") / "web.log")
    try:
        yield web
    finally:
        web.stop()


def broker_idle() -> bool:
    """No task waiting in our queues and none taken but unacknowledged (Celery's Redis transport keeps those in
    the `unacked` hash until the task returns, acks_late)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    waiting = sum(client.llen(queue) for queue in ("ingest", "routing", "outbound"))
    return waiting == 0 and client.hlen("unacked") == 0


@pytest.fixture
def live_worker(celery_worker: WorkerProcess, transactional_db: None) -> Iterator[WorkerProcess]:
    """A test that hands work to the worker: its rows must be committed for the worker to see them.

    Afterwards it waits for the worker to finish what the test started, so the database flush between tests
    never races a task still holding row locks (TRUNCATE would deadlock with it).
    """
    yield celery_worker
    deadline = time.monotonic() + 30
    while not broker_idle() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def demo(db: None) -> Any:
    """Queues for 12 languages + the fallback, two online agents (es, en), a manager, a web chat channel."""
    from tests.factories import make_demo

    return make_demo()


@pytest.fixture
def demo_committed(transactional_db: None) -> Any:
    from tests.factories import make_demo

    return make_demo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that start the worker (or the web server, which needs it) run last. Once started, the session's worker
    # takes every task the later tests enqueue: a test that processes its events itself, in its own threads, must
    # not have a worker racing it for them (and a test's table flush must not race the worker's writes).
    # Last also because they are slower, so quick failures show first.
    live = ("live_worker", "celery_worker", "web_server")
    items.sort(key=lambda item: any(name in getattr(item, "fixturenames", ()) for name in live))
