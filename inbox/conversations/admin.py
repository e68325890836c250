"""Admin: channels are configured here (admins only); dead-lettered events are inspected and retried here."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from inbox.conversations.models import (
    AuditEvent,
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    InboundEvent,
    Message,
    OutboundDelivery,
)


@admin.register(ChannelAccount)
class ChannelAccountAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "is_active", "health", "paused_until", "public_id")
    list_filter = ("kind", "is_active", "health")
    readonly_fields = ("public_id", "cursor", "health", "health_detail", "health_checked_at", "paused_until")
    exclude = ("secrets",)  # never rendered back into a page


@admin.register(InboundEvent)
class InboundEventAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "external_id", "state", "attempts", "received_at", "error")
    list_filter = ("state", "account")
    search_fields = ("external_id", "error")
    readonly_fields = (
        "account",
        "external_id",
        "payload",
        "attempts",
        "error",
        "received_at",
        "processed_at",
    )
    actions = ["requeue"]

    @admin.action(description="Process again (reset attempts)")
    def requeue(self, request: HttpRequest, queryset: QuerySet[InboundEvent]) -> None:
        count = queryset.exclude(state=InboundEvent.State.DONE).update(
            state=InboundEvent.State.PENDING, attempts=0, claimed_at=None, next_attempt_at=timezone.now()
        )
        self.message_user(request, f"{count} event(s) will be processed by the next sweep.", messages.SUCCESS)


@admin.register(OutboundDelivery)
class OutboundDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "state", "attempts", "next_attempt_at", "provider_id", "last_error")
    list_filter = ("state", "account")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "account",
        "contact",
        "language",
        "queue",
        "status",
        "priority",
        "assignee",
        "last_message_at",
    )
    list_filter = ("status", "language", "queue", "account")
    raw_id_fields = ("contact", "identity", "assignee")


admin.site.register(Contact)
admin.site.register(ContactIdentity)
admin.site.register(Message)
admin.site.register(AuditEvent)
