"""Admin: canned responses are written and edited here (per language, typed as /shortcut in the reply box)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from inbox.agents.models import CannedResponse


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("shortcut", "language", "title", "created_by", "updated_at")
    list_filter = ("language",)
    search_fields = ("shortcut", "title", "text")
    ordering = ("language", "shortcut")
    readonly_fields = ("created_by", "updated_at")
    fields = ("language", "shortcut", "title", "text", "created_by", "updated_at")

    def get_form(
        self, request: HttpRequest, obj: CannedResponse | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        form.base_fields["text"].help_text = (
            "Variables: {contact_name}, {agent_name}, {conversation_id}, {channel}. Anything else in braces is "
            "left as written."
        )
        return form

    def save_model(self, request: HttpRequest, obj: CannedResponse, form: Any, change: bool) -> None:
        if not change and obj.created_by_id is None and request.user.is_authenticated:
            obj.created_by_id = request.user.pk
        super().save_model(request, obj, form, change)
