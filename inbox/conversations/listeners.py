"""Long-running channel listeners (IMAP IDLE, Telegram long polling): one thread per active account, each
reconnecting with backoff and reporting the account's health. Used by `manage.py listen_mail` and
`manage.py listen_telegram`; never inside a Celery task (a listener lives for hours).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from django.db import close_old_connections, connection

from connectors.base import AuthError, ConnectorError
from inbox.conversations.mail import account_health
from inbox.conversations.models import ChannelAccount

logger = logging.getLogger("inbox.listeners")

# session(account, stop): connect, catch up, then wait for more until stop is set; raises to reconnect.
Session = Callable[[ChannelAccount, threading.Event], None]


def run_account(account_id: int, kind: str, session: Session, stop: threading.Event) -> None:
    backoff = 1.0
    while not stop.is_set():
        close_old_connections()
        account = ChannelAccount.objects.filter(pk=account_id, kind=kind, is_active=True).first()
        if account is None:
            return
        try:
            session(account, stop)
            backoff = 1.0
        except AuthError as exc:
            logger.error("%s %s: credentials refused: %s", kind, account.name, exc)
            account_health(account=account, health=ChannelAccount.Health.DOWN, detail=f"credentials refused: {exc}")
            stop.wait(60)
        except (ConnectorError, OSError) as exc:
            logger.warning("%s %s: %s; reconnecting in %.0f s", kind, account.name, exc, backoff)
            account_health(account=account, health=ChannelAccount.Health.DEGRADED, detail=str(exc))
            stop.wait(backoff)
            backoff = min(backoff * 2, 60.0)
        except Exception:
            logger.exception("%s %s: unexpected error; reconnecting in %.0f s", kind, account.name, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 60.0)
    connection.close()


def supervise(*, kind: str, session: Session, account_id: int | None = None, rescan_seconds: float = 30.0) -> None:
    """Run a session thread per active account of this kind until SIGINT/SIGTERM; pick up new accounts."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads: dict[int, threading.Thread] = {}
    logger.info("%s listener started", kind)
    while not stop.is_set():
        accounts = ChannelAccount.objects.filter(kind=kind, is_active=True)
        if account_id:
            accounts = accounts.filter(pk=account_id)
        for pk in accounts.values_list("pk", flat=True):
            thread = threads.get(pk)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=run_account, args=(pk, kind, session, stop), name=f"{kind}-{pk}", daemon=True
                )
                thread.start()
                threads[pk] = thread
                logger.info("listening to %s account %s", kind, pk)
        close_old_connections()
        stop.wait(rescan_seconds)
    logger.info("%s listener stopping", kind)
    for thread in threads.values():
        thread.join(timeout=10)
