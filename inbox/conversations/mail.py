"""E-mail intake: mailbox sync (IMAP cursor + events in one transaction) and bulk import of mail files."""

from __future__ import annotations

import base64
import hashlib
import logging
import mailbox
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.utils import timezone

from inbox.conversations.channels import connector_for
from inbox.conversations.models import ChannelAccount, InboundEvent
from inbox.conversations.services import inbound_events_process, inbound_events_record

logger = logging.getLogger(__name__)


def mail_payload(raw: bytes, **extra: Any) -> dict[str, Any]:
    """The raw event of one mail: the exact bytes (base64) and where they came from."""
    return {"raw_b64": base64.b64encode(raw).decode("ascii"), **extra}


def account_health(*, account: ChannelAccount, health: str, detail: str = "") -> None:
    ChannelAccount.objects.filter(pk=account.pk).update(
        health=health, health_detail=detail[:2000], health_checked_at=timezone.now()
    )


def mailbox_reader_for(account: ChannelAccount) -> Any:
    """The IMAP reader of an e-mail channel account (connectors.email.imap.Mailbox), not yet connected."""
    return connector_for(account).mailbox()  # type: ignore[attr-defined]


def mailbox_sync(*, account: ChannelAccount, mailbox_reader: Any, batch: int = 200) -> int:
    """Fetch everything after the stored cursor, in batches; each batch's events and the new cursor commit together.

    A UIDVALIDITY change means the server renumbered the folder (RFC 3501 §2.3.1.1): the cursor restarts at 0
    and the folder is read again; messages already stored are dropped by Message-ID + content hash.
    Returns how many mails were fetched.
    """
    cursor = ChannelAccount.objects.values_list("cursor", flat=True).get(pk=account.pk) or {}
    uidvalidity = int(mailbox_reader.uidvalidity)
    last_uid = int(cursor.get("last_uid", 0))
    if cursor.get("uidvalidity") not in (None, uidvalidity):
        logger.warning(
            "mailbox %s: UIDVALIDITY changed from %s to %s; re-reading the folder (duplicates are dropped)",
            account.name,
            cursor.get("uidvalidity"),
            uidvalidity,
        )
        last_uid = 0
    fetched = 0
    folder = getattr(mailbox_reader, "folder", "INBOX")
    for chunk in mailbox_reader.fetch_since(last_uid, batch=batch):
        if not chunk:
            continue
        events = [
            (f"{uidvalidity}:{uid}", mail_payload(raw, uid=uid, uidvalidity=uidvalidity, folder=folder))
            for uid, raw in chunk
        ]
        last_uid = max(uid for uid, _ in chunk)
        inbound_events_record(
            account=account, events=events, cursor={"uidvalidity": uidvalidity, "last_uid": last_uid, "folder": folder}
        )
        _after_fetch(account=account, mailbox_reader=mailbox_reader, uids=[uid for uid, _ in chunk])
        fetched += len(chunk)
        logger.info("mailbox %s: %s mails fetched so far (UID %s)", account.name, fetched, last_uid)
    if cursor.get("uidvalidity") is None and not fetched:
        # Remember UIDVALIDITY from the first contact, so a later change is recognised.
        ChannelAccount.objects.filter(pk=account.pk).update(
            cursor={"uidvalidity": uidvalidity, "last_uid": last_uid, "folder": folder}
        )
    return fetched


def _after_fetch(*, account: ChannelAccount, mailbox_reader: Any, uids: list[int]) -> None:
    """What the admin chose to do with fetched mail (setting `after_fetch`): "leave" it as it was (the default;
    we fetch with BODY.PEEK, so nothing is marked read), "mark_read", or "move:<folder>". Runs after the batch is
    committed, so a failure here never loses a mail; it is logged and the mail simply stays where it was."""
    action = str(account.settings.get("after_fetch") or "leave")
    try:
        if action == "mark_read":
            mailbox_reader.mark_seen(uids)
        elif action.startswith("move:") and action[5:]:
            mailbox_reader.move(uids, action[5:])
    except Exception:
        logger.warning("mailbox %s: after_fetch %r failed for %s mails", account.name, action, len(uids), exc_info=True)


# --- Import ---------------------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    read: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def iter_mail_files(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(source label, raw bytes) for every mail in .eml files, maildirs (cur/ new/) and mbox files."""
    for path in paths:
        if path.is_dir():
            if (path / "cur").is_dir() or (path / "new").is_dir():
                maildir = mailbox.Maildir(path, factory=None, create=False)
                for key in sorted(maildir.iterkeys()):
                    yield f"{path}:{key}", maildir.get_bytes(key)
            else:
                yield from iter_mail_files(sorted(p for p in path.iterdir() if not p.name.startswith(".")))
        elif _is_mbox(path):
            box = mailbox.mbox(path, factory=None, create=False)
            for index, key in enumerate(box.iterkeys()):
                yield f"{path}#{index + 1}", box.get_bytes(key)
        else:
            yield str(path), path.read_bytes()


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() in (".mbox", ".mbx"):
        return True
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def mail_import(
    *, account: ChannelAccount, paths: list[Path], batch: int = 200, progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Ingest mail files through the same pipeline as IMAP (synchronously, in this process)."""
    report = ImportReport()
    pending: list[tuple[str, bytes]] = []

    def flush() -> None:
        events = [
            (f"import:{hashlib.sha256(raw).hexdigest()}", mail_payload(raw, source=source)) for source, raw in pending
        ]
        new_ids = inbound_events_record(account=account, events=events)
        report.duplicates += len(events) - len(new_ids)
        if new_ids:
            result = inbound_events_process(event_ids=new_ids)
            report.ingested += len(result.messages)
            report.duplicates += result.done - len(result.messages)
            for source, reason in InboundEvent.objects.filter(
                pk__in=new_ids, state=InboundEvent.State.FAILED
            ).values_list("payload__source", "error"):
                report.quarantined.append((str(source), reason))
        pending.clear()

    for source, raw in iter_mail_files(paths):
        report.read += 1
        pending.append((source, raw))
        if len(pending) >= batch:
            flush()
        if progress:
            progress(report.read)
    if pending:
        flush()
    return report
