"""Sign-in and sign-out pages (owned by inbox/agents/auth.py)."""

from __future__ import annotations

from django.urls import URLPattern, path

from inbox.agents import auth

urlpatterns: list[URLPattern] = [
    path("login/", auth.login_page, name="login"),
    path("logout/", auth.logout_page, name="logout"),
]
