"""Search over message text for the inbox: a trigram index on PostgreSQL.

Trigrams (pg_trgm) rather than a language's full-text configuration, because customers write in every language,
Chinese and Japanese without spaces between words: a trigram index serves a substring match in any script.
Django's ``icontains`` on PostgreSQL is ``UPPER(text) LIKE UPPER(%s)``, so the index is on UPPER(text).
SQLite (the embedded default) has no such index type; its search scans, which is fine at a demo's size.
"""

from django.db import migrations


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS msg_text_trgm ON conversations_message USING gin (UPPER(text) gin_trgm_ops)"
    )


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS msg_text_trgm")


class Migration(migrations.Migration):
    dependencies = [("conversations", "0005_conversation_snoozed_until_conversation_conv_contact_and_more")]

    operations = [migrations.RunPython(create, drop)]
