"""Partial indexes for the manager metrics (inbox/metrics/selectors.py) on PostgreSQL.

* ``delivery_failed_at``: deliveries given up on, by their last attempt (``COALESCE(claimed_at, created_at)``, how
  the dashboard dates a failure) and account: the failed count of a range reads only this small index instead of
  every failed delivery's heap row (the two columns are included because PostgreSQL uses an expression index for
  an index-only scan only when it has the expression's columns too).
* ``delivery_sent_account``: sent deliveries by ``sent_at`` with the account, so the replies sent in a range are
  counted per account by an index-only scan.
* ``delivery_retry_wait_account``: the deliveries waiting for a retry, by account (index-only as well).
* ``conv_loaded_assignee``: the open and pending conversations by assignee (an agent's load), counted per agent by
  an index-only scan instead of filtering every conversation ever assigned.

Written as SQL rather than ``Meta.indexes``: the expression and the partial conditions are PostgreSQL's,
``CREATE INDEX CONCURRENTLY`` does not block the replies being sent while an index is built (so this migration is not
atomic), and the model state stays as it is (``makemigrations`` does not see these). SQLite (the embedded demo
database) is skipped: its tables are small.
"""

from django.db import migrations

INDEXES = {
    "delivery_failed_at": (
        "conversations_outbounddelivery ((COALESCE(claimed_at, created_at)), account_id)"
        " INCLUDE (claimed_at, created_at) WHERE state = 'failed'"
    ),
    "delivery_sent_account": "conversations_outbounddelivery (sent_at, account_id) WHERE state = 'sent'",
    "delivery_retry_wait_account": "conversations_outbounddelivery (account_id) WHERE state = 'retry_wait'",
    "conv_loaded_assignee": (
        "conversations_conversation (assignee_id) WHERE status IN ('open', 'pending') AND assignee_id IS NOT NULL"
    ),
}


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in INDEXES.items():
        if _invalid(schema_editor, name):  # a concurrent build that failed leaves an INVALID index: build it again
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")
    # Statistics for the expression index (the planner otherwise guesses a few dozen failed deliveries in any range).
    schema_editor.execute("ANALYZE conversations_outbounddelivery")
    schema_editor.execute("ANALYZE conversations_conversation")


def _invalid(schema_editor, name):  # type: ignore[no-untyped-def]
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s AND NOT i.indisvalid",
            [name],
        )
        return cursor.fetchone() is not None


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("conversations", "0009_inbox_order_indexes")]

    operations = [migrations.RunPython(create, drop)]
