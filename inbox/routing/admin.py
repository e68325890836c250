from django.contrib import admin

from inbox.routing.models import AgentProfile, AgentQueue


@admin.register(AgentQueue)
class AgentQueueAdmin(admin.ModelAdmin):
    list_display = ("name", "language", "is_fallback", "is_active", "first_response_sla_seconds")


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "role", "capacity", "presence")
    filter_horizontal = ("queues",)
