"""Web chat visitors: sessions with a secret token, their posts and files into the pipeline, typing, and the
"continue by email" choice."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from connectors.base import AssignsOutboundIds, OutboundMessage
from connectors.email.parse import sniff_content_type
from inbox.common import ratelimit
from inbox.conversations.channels import connector_for
from inbox.conversations.models import AuditEvent, ChannelAccount, Contact, ContactIdentity, Conversation, Message
from inbox.conversations.realtime import MANAGERS_GROUP, agent_group, publish, publish_on_commit, queue_group
from inbox.conversations.services import inbound_events_record
from inbox.webchat.models import Visitor, VisitorToken

# What a visitor may attach (type from the bytes, never from the file name).
ATTACHMENT_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain")
MAX_ATTACHMENT_BYTES = 10 * 2**20
MAX_ATTACHMENTS = 5
MAX_ATTACHMENTS_TOTAL = 20 * 2**20


class VisitorRefused(ValueError):
    """The request cannot be honoured as sent (bad signature, file too large...). ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identity_hash(secret: str, user_id: str) -> str:
    """What the host site's server computes for identity verification: hex HMAC-SHA256(secret, user id)."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def visitor_create(
    *,
    account: ChannelAccount,
    name: str = "",
    email: str = "",
    user_id: str = "",
    user_hash: str = "",
) -> tuple[Visitor, str]:
    """A visitor and a fresh token (256 random bits); only the token's hash is stored, the token is shown once.

    With ``user_id``, the host site vouches for its signed-in user: ``user_hash`` must be the HMAC of the user id
    under the channel's identity secret. The same verified user again (another device) gets the same visitor,
    so their history follows them, with a token of its own.
    """
    token = secrets.token_urlsafe(32)
    if user_id or user_hash:
        secret = str(account.secrets.get("identity_secret") or "")
        if not secret:
            raise VisitorRefused("this channel does not verify identities (no identity secret is set)", 403)
        if not user_id or not hmac.compare_digest(identity_hash(secret, user_id), user_hash.strip().lower()):
            raise VisitorRefused("the user's identity signature (user_hash) does not match", 403)
        existing = Visitor.objects.select_related("identity").filter(account=account, verified_user_id=user_id)
        visitor = existing.first()
        if visitor is not None:
            VisitorToken.objects.create(visitor=visitor, token_hash=token_hash(token))
            return visitor, token
    handle = str(uuidlib.uuid4())
    try:
        with transaction.atomic():
            contact = Contact.objects.create(name=name[:200], email=email[:254])
            identity = ContactIdentity.objects.create(
                contact=contact, kind=account.kind, handle=handle, display_name=name[:200]
            )
            visitor = Visitor.objects.create(
                uuid=handle,
                account=account,
                identity=identity,
                token_hash=token_hash(token),
                verified_user_id=user_id[:200],
                email=email[:254],
            )
    except IntegrityError:  # the same verified user opening two tabs at once
        visitor = Visitor.objects.get(account=account, verified_user_id=user_id)
        VisitorToken.objects.create(visitor=visitor, token_hash=token_hash(token))
    return visitor, token


def _payload(visitor: Visitor, client_id: uuidlib.UUID, text: str, accept_language: str) -> dict[str, object]:
    return {
        "visitor": str(visitor.uuid),
        "client_id": str(client_id),
        "text": text,
        "accept_language": accept_language[:200],
        "name": visitor.identity.display_name,
        "email": visitor.email,
        "sent_at": timezone.now().isoformat(),
    }


def visitor_post(*, visitor: Visitor, client_id: uuidlib.UUID, text: str, accept_language: str = "") -> bool:
    """Store the visitor's message as an inbound event. Returns False when that client id was already posted
    (a resend after a lost answer, another tab's retry): the message exists once, whatever the client does."""
    payload = _payload(visitor, client_id, text, accept_language)
    return bool(inbound_events_record(account=visitor.account, events=[(f"{visitor.uuid}:{client_id}", payload)]))


@dataclass(frozen=True)
class VisitorFile:
    filename: str
    content: bytes


def visitor_post_files(
    *,
    visitor: Visitor,
    client_id: uuidlib.UUID,
    text: str,
    files: Sequence[VisitorFile],
    accept_language: str = "",
) -> bool:
    """A message with files. The types are read from the bytes; over the limits the whole post is refused with
    the rule it broke (nothing half-stored). The files travel inside the event, so they are stored with the message
    in the same transaction that ingests it."""
    if not files:
        raise VisitorRefused("no file was sent (field 'files')")
    if len(files) > MAX_ATTACHMENTS:
        raise VisitorRefused(f"at most {MAX_ATTACHMENTS} files per message")
    if sum(len(item.content) for item in files) > MAX_ATTACHMENTS_TOTAL:
        raise VisitorRefused(f"the files add up to more than {MAX_ATTACHMENTS_TOTAL // 2**20} MB", 413)
    attachments = []
    for item in files:
        if len(item.content) > MAX_ATTACHMENT_BYTES:
            raise VisitorRefused(f"{item.filename} is larger than {MAX_ATTACHMENT_BYTES // 2**20} MB", 413)
        content_type = sniff_content_type(item.content, "")
        if content_type == "text/plain" or (not content_type or content_type == "application/octet-stream"):
            content_type = "text/plain" if _is_text(item.content) else "application/octet-stream"
        if content_type not in ATTACHMENT_TYPES:
            raise VisitorRefused(f"{item.filename}: files of this type cannot be sent here ({content_type})", 415)
        attachments.append(
            {"filename": item.filename[:200], "content_type": content_type, "content_b64": _b64(item.content)}
        )
    payload = {**_payload(visitor, client_id, text, accept_language), "attachments": attachments}
    return bool(inbound_events_record(account=visitor.account, events=[(f"{visitor.uuid}:{client_id}", payload)]))


def _is_text(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in content


def _b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


def visitor_conversation(visitor: Visitor) -> Conversation | None:
    """The visitor's unresolved conversation, if any (a visitor has one open chat at a time)."""
    return (
        Conversation.objects.filter(identity_id=visitor.identity_id, status__in=Conversation.UNRESOLVED)
        .order_by("-id")
        .first()
    )


def visitor_typing(*, visitor: Visitor, state: bool) -> None:
    """Tell the agents who can see the visitor's conversation that the visitor is typing (or stopped)."""
    conversation = visitor_conversation(visitor)
    if conversation is None:
        return
    groups = [MANAGERS_GROUP]
    if conversation.queue_id:
        groups.append(queue_group(conversation.queue_id))
    if conversation.assignee_id:
        groups.append(agent_group(conversation.assignee_id))
    publish(groups, {"type": "visitor.typing", "conversation": conversation.pk, "state": bool(state)})


def visitor_continue_by_email(*, visitor: Visitor, email: str, name: str = "") -> bool:
    """The visitor leaves an address: agents' replies to this chat are also e-mailed there (when the channel has an
    e-mail account, settings["email_channel"]), and the agents see a note saying so. Returns whether replies will
    actually be e-mailed (the widget tells the visitor the truth)."""
    email = email.strip()
    with transaction.atomic():
        Visitor.objects.filter(pk=visitor.pk).update(email=email[:254])
        contact = visitor.identity.contact
        contact.email = contact.email or email[:254]
        if name and not contact.name:
            contact.name = name[:200]
        contact.save(update_fields=["email", "name"])
        conversation = visitor_conversation(visitor)
        emailed = webchat_email_account(visitor.account) is not None
        if conversation is not None:
            Message.objects.create(
                account_id=conversation.account_id,
                conversation=conversation,
                direction=Message.Direction.NOTE,
                text=f"The visitor asked to continue by e-mail: {email}"
                + ("" if emailed else " (no e-mail channel is set for this chat: answer them from your mailbox)"),
                metadata={"continue_by_email": email},
            )
            AuditEvent.objects.create(
                action="webchat.continue_by_email", conversation=conversation, data={"emailed": emailed}
            )
            groups = [MANAGERS_GROUP, *([queue_group(conversation.queue_id)] if conversation.queue_id else [])]
            publish_on_commit(groups, {"type": "conversation.updated", "conversation": conversation.pk})
    visitor.email = email[:254]
    return emailed


def webchat_email_account(account: ChannelAccount) -> ChannelAccount | None:
    """The e-mail channel a web chat channel sends "continue by email" copies through (settings email_channel: its
    name or id)."""
    ref = account.settings.get("email_channel")
    if not ref:
        return None
    accounts = ChannelAccount.objects.filter(kind="email", is_active=True)
    found = accounts.filter(pk=int(ref)).first() if str(ref).isdigit() else accounts.filter(name=str(ref)).first()
    return found


def webchat_email_copy(*, message: Message, conversation: Conversation) -> bool:
    """E-mail an agent's reply to a visitor who chose "continue by email", through the channel's e-mail account.
    Same Message-ID on every attempt (so a retry is the same mail). Returns whether a copy was sent."""
    visitor = Visitor.objects.filter(identity_id=conversation.identity_id).exclude(email="").first()
    email_account = webchat_email_account(conversation.account) if visitor is not None else None
    if visitor is None or email_account is None:
        return False
    connector = connector_for(email_account)
    message_id = (
        connector.outbound_id(conversation_id=conversation.pk, idempotency_key=str(message.uuid))
        if isinstance(connector, AssignsOutboundIds)
        else ""
    )
    team = conversation.account.settings.get("team_name") or conversation.account.name
    connector.send(
        OutboundMessage(
            idempotency_key=str(message.uuid),
            recipient=visitor.email,
            subject=f"Your chat with {team}",
            text=f"{message.text}\n\n--\nA reply to your chat on our website. You can answer this e-mail.",
            metadata={
                "message_id": message_id,
                "attachments": [
                    {"filename": a.filename, "content_type": a.content_type, "content": a.file.read()}
                    for a in message.attachments.all()
                ],
            },
        )
    )
    return True


# --- Who may post, and how fast ---------------------------------------------------------------------------
def origin_allowed(account: ChannelAccount, origin: str | None) -> bool:
    """settings["allowed_origins"]: exact origins ("https://www.example.com"); empty or "*" allows any. A request
    without an Origin header (not a browser page: curl, a server) is not a cross-site risk and is let through."""
    allowed = account.settings.get("allowed_origins") or []
    if not origin or not allowed or "*" in allowed:
        return True
    return origin.rstrip("/") in {str(o).rstrip("/") for o in allowed}


def limit_setting(account: ChannelAccount, name: str, default: int) -> int:
    limits = account.settings.get("rate_limits") or {}
    try:
        return int(limits.get(name, default)) if isinstance(limits, dict) else default
    except (TypeError, ValueError):
        return default


def message_rate_limited(visitor: Visitor, ip: str) -> float | None:
    """Seconds to wait when this visitor (or this address) is posting too fast; None when fine."""
    account = visitor.account
    per_visitor = limit_setting(account, "messages_per_minute", settings.SWITCHBOARD_WEBCHAT_MESSAGES_PER_MINUTE)
    per_ip = limit_setting(
        account, "messages_per_minute_per_ip", settings.SWITCHBOARD_WEBCHAT_MESSAGES_PER_MINUTE_PER_IP
    )
    return ratelimit.hit(f"wc:msg:{visitor.uuid}", limit=per_visitor, window=60) or ratelimit.hit(
        f"wc:msgip:{account.pk}:{ip}", limit=per_ip, window=60
    )
