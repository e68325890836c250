"""Queues and agents: configured by admins only (inbox/agents/auth.py)."""

from django.contrib import admin

from inbox.agents.auth import AdminsOnlyAdmin
from inbox.routing.models import AgentProfile, AgentQueue


@admin.register(AgentQueue)
class AgentQueueAdmin(AdminsOnlyAdmin):
    list_display = ("name", "language", "is_fallback", "is_active", "first_response_sla_seconds")


@admin.register(AgentProfile)
class AgentProfileAdmin(AdminsOnlyAdmin):
    list_display = ("user", "role", "capacity", "presence")
    filter_horizontal = ("queues",)
