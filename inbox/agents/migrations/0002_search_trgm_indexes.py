"""Inbox search over conversation subjects and contact names: trigram indexes on PostgreSQL, as for message text
(conversations/0006). A rare word (an order number, a surname) is then found from three indexes at once instead of
by reading every candidate conversation (inbox/agents/selectors.py: _search). SQLite scans, fine at a demo's size.
"""

from django.db import migrations

INDEXES = {
    "conv_subject_trgm": "conversations_conversation USING gin (UPPER(subject) gin_trgm_ops)",
    "contact_name_trgm": "conversations_contact USING gin (UPPER(name) gin_trgm_ops)",
}


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, target in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_initial"), ("conversations", "0006_message_search_index")]

    operations = [migrations.RunPython(create, drop)]
