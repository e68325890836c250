"""Writes for the message pipeline (services write, selectors read): one module per stage.

- ``intake``    receive -> persist -> process -> ingest -> route (and files fetched after the commit)
- ``outbound``  the agent's reply -> its delivery (claim, pacing, rate-limit pauses, retries)
- ``sweep``     re-enqueue what a lost broker message or a dead worker left behind
- ``actions``   agents' actions on a conversation
"""

from inbox.conversations.services.actions import (
    conversation_assign,
    conversation_claim,
    conversation_set_language,
    conversation_set_priority,
    conversation_set_status,
    conversation_snooze,
    conversation_take_next,
    conversations_wake,
    delivery_retry,
    note_create,
)
from inbox.conversations.services.intake import (
    ProcessReport,
    backoff_seconds,
    inbound_event_record,
    inbound_events_process,
    inbound_events_record,
    message_files_fetch,
    message_ingest,
)
from inbox.conversations.services.outbound import (
    ReplyFile,
    ReplyRefused,
    conversation_move_to_private,
    delivery_attempt,
    reply_create,
)
from inbox.conversations.services.sweep import SweepReport, sweep_stuck_work

__all__ = [
    "ProcessReport",
    "ReplyFile",
    "ReplyRefused",
    "SweepReport",
    "backoff_seconds",
    "conversation_assign",
    "conversation_claim",
    "conversation_move_to_private",
    "conversation_set_language",
    "conversation_set_priority",
    "conversation_set_status",
    "conversation_snooze",
    "conversation_take_next",
    "conversations_wake",
    "delivery_attempt",
    "delivery_retry",
    "inbound_event_record",
    "inbound_events_process",
    "inbound_events_record",
    "message_files_fetch",
    "message_ingest",
    "note_create",
    "reply_create",
    "sweep_stuck_work",
]
