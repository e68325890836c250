"""ASGI entry point: HTTP via Django; websockets via Channels (/ws/agent/ for agents, /ws/webchat/ for visitors)."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
# A web process borrows database connections from a pool (settings.py); DB_POOL=0 turns it off.
os.environ.setdefault("DB_POOL", "1")
django_asgi_app = get_asgi_application()
if settings.DEBUG:
    # The demo (`make run`) serves the admin's CSS/JS itself; production puts a web server or CDN in front.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from inbox.agents.consumers import AgentConsumer  # noqa: E402
from inbox.webchat.consumers import VisitorConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(
            URLRouter(
                [
                    path("ws/agent/", AgentConsumer.as_asgi()),
                    path("ws/webchat/", VisitorConsumer.as_asgi()),
                ]
            )
        ),
    }
)
