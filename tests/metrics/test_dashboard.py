"""The managers' dashboard, its CSV export and the JSON API, on constructed data (PostgreSQL)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from inbox.conversations.models import ChannelAccount, Contact, ContactIdentity, Conversation


def signed_in(user: object) -> Client:
    client = Client()
    client.force_login(user)  # type: ignore[arg-type]
    return client


def waiting_conversation(account: ChannelAccount, queue: object, *, minutes: int, handle: str) -> Conversation:
    contact = Contact.objects.create(name='=HYPERLINK("http://evil")' if handle == "evil" else handle)
    identity = ContactIdentity.objects.create(contact=contact, kind=account.kind, handle=handle)
    conversation = Conversation.objects.create(account=account, contact=contact, identity=identity, queue=queue)
    at = timezone.now() - timedelta(minutes=minutes)
    Conversation.objects.filter(pk=conversation.pk).update(created_at=at, waiting_since=at, last_message_at=at)
    return conversation


def test_only_managers_see_the_dashboard(demo) -> None:
    assert Client().get(reverse("dashboard")).status_code == 302
    assert Client().get(reverse("metrics-json")).status_code == 401
    ana = signed_in(demo.agent_es)
    forbidden = ana.get(reverse("dashboard"))
    assert forbidden.status_code == 403 and "for managers" in forbidden.content.decode()
    assert ana.get(reverse("metrics-json")).status_code == 403
    assert ana.get(reverse("dashboard-csv")).status_code == 403
    assert "Dashboard" not in ana.get(reverse("inbox")).content.decode()
    maria = signed_in(demo.manager)
    assert maria.get(reverse("dashboard")).status_code == 200
    assert 'href="/dashboard/"' in maria.get(reverse("inbox")).content.decode()


def test_the_page_the_json_and_the_csv_give_the_same_figures(demo) -> None:
    es = demo.queues["es"]
    waiting_conversation(demo.webchat, es, minutes=30, handle="v1")
    waiting_conversation(demo.webchat, es, minutes=5, handle="v2")
    maria = signed_in(demo.manager)

    body = maria.get(reverse("metrics-json"), {"range": "24h"}).json()
    row = next(q for q in body["queues"] if q["language"] == "es")
    assert row["waiting_now"] == 2 and row["arrivals"] == 2
    assert 29 * 60 <= row["oldest_wait_seconds"] <= 31 * 60
    channel = next(c for c in body["channels"] if c["account_id"] == demo.webchat.pk)
    assert channel["waiting_now"] == 2
    assert body["range"]["preset"] == "24h"

    page = maria.get(reverse("dashboard")).content.decode()
    assert 'data-sb="queue-row" data-language="es"' in page
    assert "<svg" in page and "Arrivals per language" in page
    assert "script-src 'self'" in maria.get(reverse("dashboard"))["Content-Security-Policy"]

    export = maria.get(reverse("dashboard-csv"), {"range": "7d"})
    assert export["Content-Type"].startswith("text/csv") and "attachment;" in export["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    header = next(r for r in rows if r[:1] == ["queue"] and r[1] == "language")
    es_row = next(r for r in rows if r[:1] == ["queue"] and r[1] == "es")
    assert dict(zip(header, es_row, strict=True))["waiting_now"] == "2"


def test_a_formula_in_a_name_is_neutralised_in_the_csv(demo) -> None:
    evil = ChannelAccount.objects.create(kind="webchat", name="=cmd|' /C calc'!A0")
    waiting_conversation(evil, demo.queues["en"], minutes=1, handle="evil")
    rows = list(csv.reader(io.StringIO(signed_in(demo.manager).get(reverse("dashboard-csv")).content.decode())))
    names = [r[2] for r in rows if r[:1] == ["channel"] and r[1] == "webchat"]
    assert "'=cmd|' /C calc'!A0" in names
    assert not any(cell.startswith("=") for r in rows for cell in r)


def test_ranges_presets_custom_and_bad_values(demo) -> None:
    maria = signed_in(demo.manager)
    week = maria.get(reverse("metrics-json"), {"range": "7d"}).json()["range"]
    assert week["preset"] == "7d"
    custom = maria.get(
        reverse("metrics-json"), {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"}
    ).json()
    assert custom["range"]["preset"] == "custom" and custom["range"]["start"].startswith("2026-01-01")
    bad = maria.get(reverse("metrics-json"), {"range": "forever"}).json()
    assert bad["range"]["preset"] == "24h" and "Unknown range" in bad["note"]
    backwards = maria.get(reverse("metrics-json"), {"start": "2026-02-01T00:00", "end": "2026-01-01T00:00"}).json()
    assert backwards["range"]["preset"] == "24h" and "not usable" in backwards["note"]
    assert maria.get(reverse("dashboard"), {"range": "forever"}).status_code == 200
