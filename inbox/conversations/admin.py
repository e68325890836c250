"""Admin: channels are configured here (admins only); dead-lettered events are inspected and retried here.

Who sees what (inbox/agents/auth.py): channel accounts, inbound events and deliveries exist for admins only;
conversations, contacts, messages and the audit trail are read-only for managers, editable by admins.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from connectors.base import ConnectorError
from inbox.agents.auth import AdminsOnlyAdmin, ManagersReadOnlyAdmin
from inbox.conversations.channels import channel_diagnose, registry
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
from inbox.conversations.telegram import telegram_webhook_set
from inbox.conversations.x import x_webhook_register


def _secret_names() -> dict[str, list[str]]:
    """secret name -> the channel kinds that use it, from the connectors' declarations."""
    names: dict[str, list[str]] = {}
    for kind in registry().kinds():
        try:
            cls = registry().get(kind)
        except ImportError:
            continue
        for name in getattr(cls, "secret_fields", ()):
            names.setdefault(name, []).append(kind)
    return names


class _ChannelAccountFormBase(forms.ModelForm):
    """Secrets are write-only: never rendered back into the page; a blank input keeps the stored value."""

    kind = forms.ChoiceField(choices=())

    class Meta:
        model = ChannelAccount
        fields = ("kind", "name", "is_active", "settings")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kind_field = self.fields["kind"]
        assert isinstance(kind_field, forms.ChoiceField)
        kind_field.choices = [(k, k) for k in registry().kinds()]
        stored = self.instance.secrets if self.instance.pk else {}
        for name in _secret_names():
            if name in stored:
                self.fields[f"secret_{name}"].help_text += "; set (leave blank to keep)"

    def save(self, commit: bool = True) -> ChannelAccount:
        account: ChannelAccount = super().save(commit=False)
        secrets = dict(account.secrets or {})
        for name in _secret_names():
            value = self.cleaned_data.get(f"secret_{name}")
            if value:
                secrets[name] = value
        account.secrets = secrets
        if commit:
            account.save()
        return account


def _secret_field(name: str, kinds: list[str]) -> forms.CharField:
    return forms.CharField(
        label=name.replace("_", " "),
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=f"used by: {', '.join(kinds)}",
    )


# Declared on the class (not added in __init__), as the admin's form factory requires of non-model fields.
ChannelAccountForm = type(
    "ChannelAccountForm",
    (_ChannelAccountFormBase,),
    {f"secret_{name}": _secret_field(name, kinds) for name, kinds in sorted(_secret_names().items())},
)


@admin.register(ChannelAccount)
class ChannelAccountAdmin(AdminsOnlyAdmin):
    form = ChannelAccountForm
    list_display = ("name", "kind", "is_active", "health", "health_detail", "paused_until", "public_id")
    list_filter = ("kind", "is_active", "health")
    readonly_fields = ("public_id", "cursor", "health", "health_detail", "health_checked_at", "paused_until")
    actions = ["test_connection", "telegram_register_webhook", "x_register_webhook"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The secret inputs are the form's declared fields, not model fields: list them for the admin's layout.
        return [
            *_ChannelAccountFormBase.Meta.fields,
            *[f"secret_{n}" for n in sorted(_secret_names())],
            *self.readonly_fields,
        ]

    @admin.action(description="Telegram: register the webhook (webhook mode) with a fresh secret if none is set")
    def telegram_register_webhook(self, request: HttpRequest, queryset: QuerySet[ChannelAccount]) -> None:
        for account in queryset:
            if account.kind != "telegram":
                self.message_user(request, f"{account}: not a Telegram channel", messages.WARNING)
                continue
            try:
                url = telegram_webhook_set(account=account)
            except ConnectorError as exc:
                self.message_user(request, f"{account}: webhook not set: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{account}: Telegram will post updates to {url}", messages.SUCCESS)

    @admin.action(description="X: register the Account Activity webhook and subscribe the account (webhook mode)")
    def x_register_webhook(self, request: HttpRequest, queryset: QuerySet[ChannelAccount]) -> None:
        for account in queryset:
            if account.kind != "x":
                self.message_user(request, f"{account}: not an X channel", messages.WARNING)
                continue
            try:
                result = x_webhook_register(account=account)
            except ConnectorError as exc:
                self.message_user(request, f"{account}: webhook not registered: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{account}: X posts this account's DMs and mentions to {result.get('url')} "
                    f"(webhook {result.get('webhook_id')}, subscribed: {result.get('subscribed')})",
                    messages.SUCCESS,
                )

    @admin.action(description="Test connection (reports exactly which step fails)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ChannelAccount]) -> None:
        for account in queryset:
            steps = channel_diagnose(account=account)
            if not steps:
                self.message_user(request, f"{account}: this channel has no connection to test", messages.INFO)
                continue
            failed = [s for s in steps if not s.ok]
            text = "; ".join(
                f"{s.name}: {'ok' if s.ok else 'FAILED'}{' (' + s.detail + ')' if s.detail else ''}" for s in steps
            )
            self.message_user(request, f"{account}: {text}", messages.ERROR if failed else messages.SUCCESS)


@admin.register(InboundEvent)
class InboundEventAdmin(AdminsOnlyAdmin):
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
class OutboundDeliveryAdmin(AdminsOnlyAdmin):
    list_display = ("id", "account", "state", "attempts", "next_attempt_at", "provider_id", "last_error")
    list_filter = ("state", "account")


@admin.register(Conversation)
class ConversationAdmin(ManagersReadOnlyAdmin):
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


admin.site.register(Contact, ManagersReadOnlyAdmin)
admin.site.register(ContactIdentity, ManagersReadOnlyAdmin)
admin.site.register(Message, ManagersReadOnlyAdmin)
admin.site.register(AuditEvent, ManagersReadOnlyAdmin)
