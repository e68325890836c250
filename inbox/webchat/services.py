"""Web chat visitors: sessions with a secret token, and their posts into the pipeline."""

from __future__ import annotations

import hashlib
import secrets
import uuid as uuidlib

from django.db import transaction
from django.utils import timezone

from inbox.conversations.models import ChannelAccount, Contact, ContactIdentity
from inbox.conversations.services import inbound_event_record
from inbox.webchat.models import Visitor


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def visitor_create(*, account: ChannelAccount, name: str = "", email: str = "") -> tuple[Visitor, str]:
    """A new visitor and its token (256 random bits). Only the token's hash is stored; the token is shown once."""
    token = secrets.token_urlsafe(32)
    handle = str(uuidlib.uuid4())
    with transaction.atomic():
        contact = Contact.objects.create(name=name[:200], email=email[:254])
        identity = ContactIdentity.objects.create(
            contact=contact, kind=account.kind, handle=handle, display_name=name[:200]
        )
        visitor = Visitor.objects.create(uuid=handle, account=account, identity=identity, token_hash=token_hash(token))
    return visitor, token


def visitor_post(*, visitor: Visitor, client_id: uuidlib.UUID, text: str, accept_language: str = "") -> bool:
    """Store the visitor's message as an inbound event. Returns False when that client id was already posted."""
    payload = {
        "visitor": str(visitor.uuid),
        "client_id": str(client_id),
        "text": text,
        "accept_language": accept_language[:200],
        "name": visitor.identity.display_name,
        "sent_at": timezone.now().isoformat(),
    }
    return inbound_event_record(account=visitor.account, external_id=f"{visitor.uuid}:{client_id}", payload=payload)
