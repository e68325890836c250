"""Every real-world message in ../shared/data/email parses (text extracted) or is refused with a stated reason.

The corpus (Ruby mail gem and django-helpdesk fixtures: broken headers and encodings, ISO-2022-JP, Shift_JIS,
bounces, RFC 2822 examples) is read where it lies; it is never copied into the project.
"""

from __future__ import annotations

import time
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest

from connectors.base import InboundMessage, PermanentError
from connectors.email.parse import parse_bounce, parse_email

pytestmark = pytest.mark.langdata

SKIP_NAMES = {"SOURCES.md", ".gitattributes"}


def corpus(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in SKIP_NAMES)


def has_text_body(path: Path) -> bool:
    """An independent oracle: does the stdlib's compat32 parser find a non-blank inline text part?"""
    message = BytesParser(policy=compat32).parsebytes(path.read_bytes())
    for part in message.walk():
        if part.get_content_maintype() == "text" and not part.get_filename() and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload.strip():
                return True
    return False


def test_every_message_parses_or_is_refused_with_a_reason(shared_email_dir: Path) -> None:
    files = corpus(shared_email_dir)
    assert len(files) >= 100, f"expected about 110 messages in {shared_email_dir}, found {len(files)}"
    parsed: dict[str, InboundMessage] = {}
    refused: dict[str, str] = {}
    crashed: dict[str, str] = {}
    slowest = (0.0, "")
    for path in files:
        name = str(path.relative_to(shared_email_dir))
        raw = path.read_bytes()
        started = time.perf_counter()
        try:
            parsed[name] = parse_email(raw)
        except PermanentError as exc:
            assert str(exc), f"{name}: PermanentError without a reason"
            refused[name] = str(exc)
        except Exception as exc:
            crashed[name] = f"{exc.__class__.__name__}: {exc}"
        try:
            parse_bounce(raw)
        except PermanentError:
            pass
        except Exception as exc:
            crashed[name + " (parse_bounce)"] = f"{exc.__class__.__name__}: {exc}"
        slowest = max(slowest, (time.perf_counter() - started, name))

    empty = [
        n for n, m in parsed.items() if not (m.text.strip() or m.html.strip()) and has_text_body(shared_email_dir / n)
    ]
    print(
        f"\nshared e-mail corpus: {len(files)} files, {len(parsed)} parsed, {len(refused)} refused, "
        f"{len(crashed)} crashed; with text {sum(1 for m in parsed.values() if m.text.strip())}, "
        f"with attachments {sum(1 for m in parsed.values() if m.attachments)}, "
        f"synthetic ids {sum(1 for m in parsed.values() if m.metadata['synthetic_id'])}, "
        f"automatic {sum(1 for m in parsed.values() if m.metadata['auto_submitted'])}, "
        f"bounces {sum(1 for m in parsed.values() if m.metadata['bounce'])}; slowest {slowest[0] * 1000:.0f} ms "
        f"({slowest[1]})"
    )
    for name, reason in sorted(refused.items()):
        print(f"  refused {name}: {reason}")
    assert not crashed, crashed
    # Refusals are the exception: an empty file and a message with no sender at all.
    assert len(refused) <= 3, refused
    assert not empty, f"parsed but nothing extracted from a message with a text body: {empty}"
    for name, message in parsed.items():
        assert message.external_id, name
        assert message.sender.handle and "@" in message.sender.handle, name
        assert message.thread_key, name


def expect(directory: Path, name: str) -> InboundMessage:
    return parse_email((directory / name).read_bytes())


def test_known_messages_read_right(shared_email_dir: Path) -> None:
    ruby = shared_email_dir / "ruby-mail"
    assert expect(ruby, "multi_charset/japanese_iso_2022.eml").subject == "まみむめも"
    assert expect(ruby, "multi_charset/japanese_shift_jis.eml").text.startswith("あいうえお")
    assert expect(ruby, "multi_charset/ks_c_5601-1987.eml").text == "스티해"
    utf8 = expect(ruby, "rfc6532/utf8_headers.eml")
    assert utf8.sender.display_name == "Jöhn Doe" and utf8.subject == "Säying Hello"
    reply = expect(ruby, "rfc2822/example06.eml")
    assert reply.metadata["in_reply_to"] == "1234@local.machine.example"
    assert reply.thread_key == "1234@local.machine.example"
    obsolete = expect(ruby, "rfc2822/example13.eml")  # RFC 2822 A.6.3: obsolete white space and comments
    assert obsolete.sender.handle == "jdoe@machine.example"
    pdf = expect(ruby, "attachment_emails/attachment_pdf.eml")
    assert [a.content_type for a in pdf.attachments] == ["application/pdf"]
    unquoted = expect(ruby, "attachment_emails/attachment_with_unquoted_name.eml")
    assert unquoted.attachments[0].filename == "This is a test.txt"
    mbox = expect(ruby, "plain_emails/mix_caps_content_type.eml")
    assert mbox.sender.handle == "bb@bug.com" and mbox.text == "foo bar"


def test_bounces_in_the_corpus(shared_email_dir: Path) -> None:
    reports = shared_email_dir / "ruby-mail" / "multipart_report_emails"
    delayed = parse_bounce((reports / "report_422.eml").read_bytes())
    assert delayed is not None and delayed.action == "delayed" and delayed.status == "4.2.2"
    assert not delayed.permanent
    failed = parse_bounce((reports / "report_530.eml").read_bytes())
    assert failed is not None and failed.permanent and failed.status.startswith("5")
    multi = parse_bounce((reports / "multi_address_bounce1.eml").read_bytes())
    assert multi is not None and len(multi.recipients) >= 2 and multi.original_message_id
