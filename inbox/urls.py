from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.shortcuts import redirect
from django.urls import include, path
from django.views.generic import RedirectView

from inbox.agents import pages
from inbox.agents import views as agent_views
from inbox.conversations import webhooks
from inbox.metrics import views as metrics_views
from inbox.metrics.prometheus import metrics_view
from inbox.webchat import views as webchat_views


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("", lambda request: redirect("inbox")),
    # One sign-in page for everyone, throttled (inbox/agents/auth.py): the admin's own form would not be.
    path("admin/login/", RedirectView.as_view(url="/login/", query_string=True)),
    path("admin/", admin.site.urls),
    # The agents' inbox (server-rendered pages), sign-in, contacts.
    path("", include("inbox.agents.auth_urls")),
    path("inbox/", pages.inbox_list, name="inbox"),
    path("inbox/c/<int:conversation_id>/", pages.conversation_page, name="inbox-conversation"),
    path("inbox/presence", pages.presence_set, name="inbox-presence"),
    path("inbox/next", pages.take_next, name="inbox-take-next"),
    path("inbox/c/<int:conversation_id>/<slug:action>", pages.conversation_action, name="inbox-action"),
    path("inbox/m/<int:message_id>/retry", pages.message_retry, name="inbox-retry"),
    path("inbox/m/<int:message_id>/html", pages.message_html, name="inbox-message-html"),
    path("inbox/a/<int:attachment_id>", pages.attachment_download, name="inbox-attachment"),
    path("contacts/", include("inbox.agents.contact_urls")),
    # Managers: the dashboard, its CSV and the JSON API.
    path("dashboard/", metrics_views.dashboard, name="dashboard"),
    path("dashboard/export.csv", metrics_views.dashboard_csv, name="dashboard-csv"),
    path("api/metrics", metrics_views.metrics_json, name="metrics-json"),
    path("healthz", healthz),
    path("metrics", metrics_view, name="metrics"),
    # Web chat visitor API (the widget).
    path("api/webchat/v1/<str:public_id>/config", webchat_views.config, name="webchat-config"),
    path("api/webchat/v1/<str:public_id>/sessions", webchat_views.session_create, name="webchat-session"),
    path("api/webchat/v1/messages", webchat_views.messages, name="webchat-messages"),
    path("api/webchat/v1/attachments", webchat_views.attachments, name="webchat-attachments"),
    path("api/webchat/v1/attachments/<int:attachment_id>", webchat_views.attachment, name="webchat-attachment"),
    path("api/webchat/v1/status", webchat_views.status, name="webchat-status"),
    path("api/webchat/v1/contact", webchat_views.contact, name="webchat-contact"),
    # The widget script (one tag on the customer's site) and a sample page with it.
    path("widget.js", webchat_views.widget_js, name="webchat-widget"),
    path("static/switchboard/widget.js", webchat_views.widget_js),
    path("demo/", webchat_views.demo, name="webchat-demo"),
    # Channel webhooks.
    path("api/channels/<str:public_id>/events", webhooks.api_channel_events, name="api-channel-events"),
    path("api/channels/<str:public_id>/telegram", webhooks.telegram_webhook, name="telegram-webhook"),
    path("api/channels/<str:public_id>/x", webhooks.x_webhook, name="x-webhook"),
    # Agents.
    path("api/agent/session", agent_views.session, name="agent-session"),
    path("api/agent/conversations", agent_views.conversation_list, name="agent-conversations"),
    path(
        "api/agent/conversations/<int:conversation_id>",
        agent_views.conversation_detail,
        name="agent-conversation",
    ),
    path(
        "api/agent/conversations/<int:conversation_id>/reply",
        agent_views.conversation_reply,
        name="agent-reply",
    ),
    path(
        "api/agent/conversations/<int:conversation_id>/language",
        agent_views.conversation_language,
        name="agent-language",
    ),
    path(
        "api/agent/conversations/<int:conversation_id>/status",
        agent_views.conversation_status,
        name="agent-status",
    ),
    path("api/agent/presence", agent_views.presence, name="agent-presence"),
]
