"""python manage.py import_mail --account ID PATH...: .eml files, maildirs and mbox files into the inbox."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inbox.conversations.mail import mail_import
from inbox.conversations.models import ChannelAccount


class Command(BaseCommand):
    help = (
        "Import mail (.eml files, maildirs, mbox files, or folders of them) through the normal pipeline: "
        "contacts, conversations, language, queues. Already imported mails are counted as duplicates."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--account", required=True, help="id or name of the e-mail channel account")
        parser.add_argument("--batch", type=int, default=200)

    def handle(self, *args: Any, **options: Any) -> None:
        missing = [str(p) for p in options["paths"] if not p.exists()]
        if missing:
            raise CommandError(f"not found: {', '.join(missing)}")
        ref = options["account"]
        account = (
            ChannelAccount.objects.filter(kind="email")
            .filter(**({"pk": int(ref)} if str(ref).isdigit() else {"name": ref}))
            .first()
        )
        if account is None:
            raise CommandError(f"no e-mail channel account {ref!r}")
        started = time.monotonic()
        tty = sys.stderr.isatty()

        def progress(count: int) -> None:
            if tty or count % 100 == 0:
                rate = count / max(time.monotonic() - started, 1e-6)
                sys.stderr.write(f"\r  {count} mails read, {rate:.0f}/s" + ("" if tty else "\n"))
                sys.stderr.flush()

        report = mail_import(account=account, paths=options["paths"], batch=options["batch"], progress=progress)
        if tty:
            sys.stderr.write("\n")
        self.stdout.write(
            f"read {report.read}, ingested {report.ingested}, duplicates {report.duplicates}, "
            f"quarantined {len(report.quarantined)} in {time.monotonic() - started:.1f} s"
        )
        for source, reason in report.quarantined:
            self.stdout.write(f"  quarantined {source}: {reason}")
