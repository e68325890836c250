"""Template context for the agents' pages: the signed-in user's role and presence."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from inbox.agents.selectors import role_of
from inbox.routing.models import AgentProfile


def agent(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"role": role_of(user), "presence_choices": AgentProfile.Presence.choices}
