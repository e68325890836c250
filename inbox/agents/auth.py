"""Sign-in and sign-out, login throttling, and who may do what in the Django admin.

Who may sign in to the inbox: an active user with an agent profile (any role: agent, manager, admin) or a
superuser. Anyone else gets the same answer as a wrong password, so the page tells nobody which accounts exist.

Throttling counts failed sign-ins per username (case-insensitive) and per client address in Redis, shared by every
web process. Past the limit a sign-in is refused *before* the password is checked: a locked account answers the
same whether the password is right or not, and a guessing attacker costs us no argon2 work.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

import redis
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from inbox.agents.selectors import Role, role_of
from inbox.common import ratelimit
from inbox.common.http import client_ip
from inbox.routing.models import AgentProfile

logger = logging.getLogger(__name__)

WRONG_CREDENTIALS = "Wrong username or password."
MAX_USERNAME = 150  # Django's User.username
MAX_PASSWORD = 1000  # nobody types more; bounds the work a request can ask of the password hasher


# --- Who may sign in, and the throttle ------------------------------------------------------------------------


def may_sign_in(user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated or not getattr(user, "is_active", False):
        return False
    return bool(getattr(user, "is_superuser", False)) or AgentProfile.objects.filter(user_id=user.pk).exists()


def normalize_username(username: str) -> str:
    """As Django's sign-in form does (NFKC), so the page and the JSON API look up the same account."""
    return unicodedata.normalize("NFKC", username)


def _throttle_keys(username: str, ip: str) -> tuple[str, str]:
    return f"login:user:{normalize_username(username).casefold()}", f"login:ip:{ip}"


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: ``user`` is signed in; else ``retry_after`` seconds when throttled (the
    password was not checked); else wrong credentials (or not allowed in: the same answer on purpose)."""

    user: AbstractBaseUser | None = None
    retry_after: int | None = None

    @property
    def throttled_message(self) -> str:
        minutes = max(1, math.ceil((self.retry_after or 0) / 60))
        return f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def sign_in(request: HttpRequest, *, username: str, password: str) -> SignIn:
    """Check the throttle, then the password, then who may sign in; on success log the user in (Django rotates the
    session key and the CSRF token). Used by the sign-in page and the JSON API alike."""
    username = normalize_username(username)
    ip = client_ip(request)
    user_key, ip_key = _throttle_keys(username, ip)
    counted = False
    try:
        # The attempt is counted up front (atomically with the check) and taken back on success, so parallel
        # guesses cannot all slip in before the first failure is recorded.
        wait = ratelimit.attempt_count(
            {
                user_key: settings.SWITCHBOARD_LOGIN_FAILURES_PER_USER,
                ip_key: settings.SWITCHBOARD_LOGIN_FAILURES_PER_IP,
            },
            window=settings.SWITCHBOARD_LOGIN_LOCKOUT_SECONDS,
        )
        counted = True
    except redis.RedisError:
        # Fail open: Redis is a transport, not the source of truth (DESIGN.md), and an outage of it must not lock
        # every agent out of the inbox while customers wait. Guessing stays slow without it (argon2 per attempt),
        # and this error is logged on every sign-in until Redis is back, so the outage does not go unnoticed.
        logger.error("login throttle store unavailable; checking the password without throttling", exc_info=True)
        wait = None
    if wait is not None:
        logger.warning("sign-in refused, too many failures: username=%r ip=%s retry_after=%ss", username, ip, wait)
        return SignIn(retry_after=wait)
    user = authenticate(request, username=username, password=password)
    if user is None or not may_sign_in(user):
        # The attempt stays counted as a failure. Never log the password.
        logger.warning("sign-in failed: username=%r ip=%s", username, ip)
        return SignIn()
    if counted:
        try:
            ratelimit.attempts_clear(user_key)
            ratelimit.attempt_refund(ip_key)
        except redis.RedisError:
            logger.error("login throttle store unavailable; could not reset the failure count", exc_info=True)
    login(request, user)
    return SignIn(user=user)


# --- Pages ------------------------------------------------------------------------------------------------------


class SignInForm(forms.Form):
    username = forms.CharField(max_length=MAX_USERNAME)
    password = forms.CharField(max_length=MAX_PASSWORD, strip=False)


def _next_url(request: HttpRequest) -> str:
    """Where to go after signing in: ``next`` only when it stays on this site (no open redirect)."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def _render(request: HttpRequest, form: SignInForm, *, next_url: str, error: str = "", status: int = 200) -> Any:
    return render(
        request,
        "agents/login.html",
        {
            "form": form,
            "next": next_url if next_url != resolve_url(settings.LOGIN_REDIRECT_URL) else "",
            "error": error,
        },
        status=status,
    )


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def login_page(request: HttpRequest) -> HttpResponse:
    next_url = _next_url(request)
    if request.method != "POST":
        if may_sign_in(request.user):
            return redirect(next_url)
        return _render(request, SignInForm(), next_url=next_url)
    form = SignInForm(request.POST)
    if not form.is_valid():
        missing = not request.POST.get("username") or not request.POST.get("password")
        error = "Enter your username and password." if missing else WRONG_CREDENTIALS  # else: longer than any
        return _render(request, form, next_url=next_url, error=error, status=400)
    result = sign_in(request, username=form.cleaned_data["username"], password=form.cleaned_data["password"])
    if result.user is not None:
        return redirect(next_url)
    if result.retry_after is not None:
        response = _render(request, form, next_url=next_url, error=result.throttled_message, status=429)
        response["Retry-After"] = str(result.retry_after)
        return response
    return _render(request, form, next_url=next_url, error=WRONG_CREDENTIALS)


@require_POST  # a GET (a link, an <img>) must not sign anyone out; the POST carries the CSRF token
def logout_page(request: HttpRequest) -> HttpResponse:
    logout(request)
    messages.info(request, "You have been signed out.")
    return redirect("login")


# --- The Django admin: who sees what ----------------------------------------------------------------------------


def _role(request: HttpRequest) -> Role:
    """role_of once per request: the admin asks for permissions many times per page."""
    role: Role | None = getattr(request, "_switchboard_role", None)
    if role is None:
        role = role_of(request.user)
        request._switchboard_role = role  # type: ignore[attr-defined]
    return role


class AdminsOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Channels, queues, agents and raw provider events: seen and configured by admins only (a superuser or an
    agent profile with role admin). Managers are staff, but this part of the admin does not exist for them."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _role(request).is_admin

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _role(request).is_admin

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return _role(request).is_admin

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _role(request).is_admin

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _role(request).is_admin


class ManagersReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Conversations, contacts, messages, audit events: admins edit; managers may look (read-only), since they see
    every conversation in the inbox anyway and the audit trail is theirs to review. Agents are not staff."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _role(request).is_manager

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _role(request).is_manager

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return _role(request).is_admin

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _role(request).is_admin

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _role(request).is_admin
