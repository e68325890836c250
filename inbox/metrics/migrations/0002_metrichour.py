"""MetricHour: finished hours (and days) of conversation events and replies sent, complete (inbox/metrics/models.py),
and on PostgreSQL the triggers that keep every stored span right.

Any INSERT, UPDATE or DELETE of a conversation or a delivery that reaches into an hour that had already ended when
its transaction began (a reopened conversation loses its resolution; a corrected language moves its figures to
another queue; an import writes old rows; a provider's sent time lies in the past hour) deletes that hour's row and
its day's row, and they are read live until the beat seals them again. Changes to the hour that is current when
their transaction begins need nothing: the beat seals an hour only once every transaction that began before the
hour's end has finished (services.hours_seal). The triggers take the shared side of an advisory lock whose exclusive
side the beat takes while sealing, so a change and a seal never cross.

The update triggers fire only when a column the figures read changes (queue, account, the resolved status, the
three timestamps; a delivery's state, sent time, account) and one of its timestamps lies in an hour already ended;
the function then forgets only the hours whose figures the change alters (answering or resolving now a conversation
created yesterday alters none of yesterday's figures: no lock, no delete). Sending now does not even call it. SQLite (the embedded demo database) gets no trigger; there the dashboard
never reads these rows (hours_seal writes none).
"""

from django.db import migrations, models

# inbox/metrics/services.py HOUR_LOCK: the advisory lock (class, object) shared with the beat.
LOCK = "1396853576, 0"
ENDED = "date_trunc('hour', transaction_timestamp(), 'UTC')"
CONVERSATION_STAMPS = ("created_at", "first_response_at", "resolved_at")
DELIVERY_STAMPS = ("sent_at",)


def _resolved(row: str) -> str:
    return f"CASE WHEN {row}.status = 'resolved' THEN {row}.resolved_at END"


# A conversation counts in the hour of its creation (an arrival), of its first response (a first response time)
# and, while resolved, of its resolution (a resolution and a handling time, counted from the first response). Which
# of those hours a change touches: all of them, before and after, when where it counts (queue, account) or every
# duration (its creation) changes; else the hours of its old and new first response, and of its resolution.
CONVERSATION_HOURS = f"""
    IF TG_OP = 'INSERT' THEN
        stamps := ARRAY[NEW.created_at, NEW.first_response_at, {_resolved("NEW")}];
    ELSIF TG_OP = 'DELETE' THEN
        stamps := ARRAY[OLD.created_at, OLD.first_response_at, {_resolved("OLD")}];
    ELSIF OLD.queue_id IS DISTINCT FROM NEW.queue_id OR OLD.account_id IS DISTINCT FROM NEW.account_id
          OR OLD.created_at IS DISTINCT FROM NEW.created_at THEN
        stamps := ARRAY[OLD.created_at, OLD.first_response_at, {_resolved("OLD")},
                        NEW.created_at, NEW.first_response_at, {_resolved("NEW")}];
    ELSE
        IF OLD.first_response_at IS DISTINCT FROM NEW.first_response_at THEN
            stamps := ARRAY[OLD.first_response_at, NEW.first_response_at];
        END IF;
        stamps := stamps || ARRAY[{_resolved("OLD")}, {_resolved("NEW")}];
    END IF;
"""
# A delivery counts in the hour of its sent time while it is sent.
DELIVERY_HOURS = """
    IF TG_OP <> 'INSERT' AND OLD.state = 'sent' THEN
        stamps := stamps || OLD.sent_at;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.state = 'sent' THEN
        stamps := stamps || NEW.sent_at;
    END IF;
"""


def _forget_function(name: str, hours: str) -> str:
    """The trigger function: the hours of the row that a change touches and that had ended when the transaction
    began lose their rows (and their days'); nothing else happens, the lock included, when there are none."""
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stamps timestamptz[] := ARRAY[]::timestamptz[];
    ended_hours timestamptz[];
BEGIN
{hours}
    ended_hours := ARRAY(SELECT DISTINCT date_trunc('hour', s, 'UTC') FROM unnest(stamps) AS s WHERE s < {ENDED});
    IF cardinality(ended_hours) = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock_shared({LOCK});
    -- Two statements on the unique (bucket, hours) index: an OR of both would read the whole table for every row.
    DELETE FROM metrics_metrichour WHERE hours = 1 AND bucket = ANY (ended_hours);
    DELETE FROM metrics_metrichour
     WHERE hours = 24 AND bucket = ANY (ARRAY(SELECT DISTINCT date_trunc('day', h, 'UTC') FROM unnest(ended_hours) AS h));
    RETURN NULL;
END
$$;
"""


FORGET_ALL = """
CREATE OR REPLACE FUNCTION metrics_hour_forget_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM metrics_metrichour;
    RETURN NULL;
END
$$;
"""


def _any_ended(row: str, stamps: tuple[str, ...]) -> str:
    return " OR ".join(f"{row}.{column} < {ENDED}" for column in stamps)


def _changed(columns: tuple[str, ...], *conditions: str) -> str:
    return " OR ".join([*(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in columns), *conditions])


def _triggers(table: str, prefix: str, function: str, stamps: tuple[str, ...], changed: str) -> str:
    return f"""
CREATE TRIGGER {prefix}_insert AFTER INSERT ON {table}
    FOR EACH ROW WHEN ({_any_ended("NEW", stamps)}) EXECUTE FUNCTION {function}();
CREATE TRIGGER {prefix}_update AFTER UPDATE ON {table}
    FOR EACH ROW WHEN (({changed}) AND ({_any_ended("OLD", stamps)} OR {_any_ended("NEW", stamps)}))
    EXECUTE FUNCTION {function}();
CREATE TRIGGER {prefix}_delete AFTER DELETE ON {table}
    FOR EACH ROW WHEN ({_any_ended("OLD", stamps)}) EXECUTE FUNCTION {function}();
CREATE TRIGGER {prefix}_truncate AFTER TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION metrics_hour_forget_all();
"""


CREATE = (
    _forget_function("metrics_hour_forget_conversation", CONVERSATION_HOURS)
    + _forget_function("metrics_hour_forget_delivery", DELIVERY_HOURS)
    + FORGET_ALL
    + _triggers(
        "conversations_conversation",
        "metrics_hour_conversation",
        "metrics_hour_forget_conversation",
        CONVERSATION_STAMPS,
        _changed(
            ("queue_id", "account_id", *CONVERSATION_STAMPS),
            "(OLD.status = 'resolved') IS DISTINCT FROM (NEW.status = 'resolved')",
        ),
    )
    + _triggers(
        "conversations_outbounddelivery",
        "metrics_hour_delivery",
        "metrics_hour_forget_delivery",
        DELIVERY_STAMPS,
        _changed(("account_id", *DELIVERY_STAMPS), "(OLD.state = 'sent') IS DISTINCT FROM (NEW.state = 'sent')"),
    )
)

DROP = "".join(
    f"DROP TRIGGER IF EXISTS {prefix}_{event} ON {table};\n"
    for table, prefix in (
        ("conversations_conversation", "metrics_hour_conversation"),
        ("conversations_outbounddelivery", "metrics_hour_delivery"),
    )
    for event in ("insert", "update", "delete", "truncate")
) + (
    "DROP FUNCTION IF EXISTS metrics_hour_forget_conversation();\n"
    "DROP FUNCTION IF EXISTS metrics_hour_forget_delivery();\n"
    "DROP FUNCTION IF EXISTS metrics_hour_forget_all();\n"
)


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(DROP, params=None)
    schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0001_initial"),
        ("conversations", "0010_metrics_delivery_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="MetricHour",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("bucket", models.DateTimeField(help_text="start of the span (UTC)")),
                ("hours", models.PositiveSmallIntegerField(default=1, help_text="1: an hour; 24: a UTC day")),
                ("data", models.BinaryField()),
                ("taken_at", models.DateTimeField()),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("bucket", "hours"), name="metric_hour_one_per_span")
                ],
            },
        ),
        migrations.RunPython(create, drop),
    ]
