"""Sign-in and sign-out, login throttling (real Redis), argon2 hashing, and who may configure what in the admin."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.test import Client

from inbox.common import ratelimit
from inbox.routing.models import AgentProfile
from tests.factories import PASSWORD

LOGIN = "/login/"


@pytest.fixture(autouse=True)
def _fresh_redis() -> Iterator[None]:
    """Each test starts with no failure counted (the conftest flushes the Redis db once per session only)."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


def sign_in(client: Client, username: str, password: str, ip: str = "127.0.0.1", **extra: Any) -> Any:
    return client.post(LOGIN, {"username": username, "password": password, **extra}, REMOTE_ADDR=ip)


def api_sign_in(client: Client, username: str, password: str, ip: str = "127.0.0.1") -> Any:
    return client.post(
        "/api/agent/session",
        {"username": username, "password": password},
        content_type="application/json",
        REMOTE_ADDR=ip,
    )


def signed_in_as(client: Client) -> str | None:
    body = client.get("/api/agent/session").json()
    return body["username"] if body["authenticated"] else None


# --- The page -----------------------------------------------------------------------------------------------


def test_sign_in_page_has_labels_autocomplete_and_a_strict_csp(db: None) -> None:
    response = Client().get(LOGIN)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<label for="id_username">Username</label>' in page
    assert '<label for="id_password">Password</label>' in page
    assert 'autocomplete="username"' in page and 'autocomplete="current-password"' in page
    assert "autofocus" in page
    assert "agents/auth.css" in page
    # No inline script or style: the CSP forbids them.
    assert "<script>" not in page and "style=" not in page and "<style" not in page
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "no-cache" in response["Cache-Control"]
    assert 'class="top"' not in page  # anonymous users see no header


def test_sign_in_and_out_through_the_page_with_csrf(demo: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    session = client.session
    session["before"] = True
    session.save()
    key_before = client.cookies[settings.SESSION_COOKIE_NAME].value
    client.get(LOGIN)
    csrf = client.cookies["csrftoken"].value

    assert sign_in(client, "ana", PASSWORD).status_code == 403  # no CSRF token

    response = sign_in(client, "ana", PASSWORD, csrfmiddlewaretoken=csrf)
    assert response.status_code == 302 and response["Location"] == "/inbox/"
    assert client.cookies[settings.SESSION_COOKIE_NAME].value != key_before  # session rotated (fixation)
    assert signed_in_as(client) == "ana"
    # Signed in already: the sign-in page sends the agent on to the inbox.
    assert client.get(LOGIN)["Location"] == "/inbox/"

    csrf = client.cookies["csrftoken"].value  # rotated on sign-in
    assert client.get("/logout/").status_code == 405  # a link or an <img> cannot sign anyone out
    assert client.post("/logout/").status_code == 403  # nor a cross-site form
    assert signed_in_as(client) == "ana"
    response = client.post("/logout/", {"csrfmiddlewaretoken": csrf}, follow=True)
    assert response.redirect_chain == [("/login/", 302)]
    assert "You have been signed out." in response.content.decode()
    assert signed_in_as(client) is None


def test_wrong_password_and_unknown_user_get_the_same_generic_answer(
    demo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    with caplog.at_level(logging.WARNING, logger="inbox.agents.auth"):
        wrong = sign_in(client, "ana", "not-her-password", ip="192.0.2.7")
        unknown = sign_in(client, "nobody", "whatever-1")
    for response in (wrong, unknown):
        assert response.status_code == 200
        page = response.content.decode()
        assert "Wrong username or password." in page and 'role="alert"' in page
    assert 'value="ana"' in wrong.content.decode()  # the username stays filled in; the password never comes back
    assert "not-her-password" not in wrong.content.decode()
    assert signed_in_as(client) is None
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'ana'" in m and "192.0.2.7" in m for m in failures), failures
    assert not any("not-her-password" in m for m in failures)


def test_empty_form_says_what_is_missing(db: None) -> None:
    response = Client().post(LOGIN, {"username": "ana"})
    assert response.status_code == 400
    assert "Enter your username and password." in response.content.decode()


def test_users_without_an_agent_profile_cannot_sign_in_but_superusers_can(demo: Any) -> None:
    User = get_user_model()
    User.objects.create_user("plain", password=PASSWORD)
    User.objects.create_user("staffer", password=PASSWORD, is_staff=True)
    User.objects.create_superuser("root", password=PASSWORD)
    inactive = User.objects.get(username="ben")
    inactive.is_active = False
    inactive.save()
    for username in ("plain", "staffer", "ben"):
        client = Client()
        response = sign_in(client, username, PASSWORD)
        assert response.status_code == 200 and "Wrong username or password." in response.content.decode()
        assert signed_in_as(client) is None
        assert api_sign_in(Client(), username, PASSWORD).status_code == 401
    client = Client()
    assert sign_in(client, "root", PASSWORD).status_code == 302
    assert signed_in_as(client) == "root"


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [
        ("/inbox/c/42/", "/inbox/c/42/"),
        ("https://evil.example/phish", "/inbox/"),
        ("//evil.example/", "/inbox/"),
        ("http://testserver/inbox/?status=all", "http://testserver/inbox/?status=all"),
        ("javascript:alert(1)", "/inbox/"),
        ("", "/inbox/"),
    ],
)
def test_next_is_honoured_only_when_it_stays_on_this_site(demo: Any, next_url: str, expected: str) -> None:
    client = Client()
    page = client.get(LOGIN, {"next": next_url}).content.decode()
    if expected == next_url:
        assert f'name="next" value="{next_url}"' in page
    else:
        assert 'name="next"' not in page
    response = sign_in(client, "ana", PASSWORD, next=next_url)
    assert response.status_code == 302 and response["Location"] == expected


def test_the_inbox_sends_anonymous_users_to_the_sign_in_page(db: None) -> None:
    response = Client().get("/inbox/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/inbox/"


# --- Throttling ---------------------------------------------------------------------------------------------


def test_a_username_is_locked_after_too_many_failures_even_with_the_right_password(demo: Any) -> None:
    """Past the limit the password is not even checked: the right one is refused, and a PBKDF2 hash (which a
    successful check upgrades to argon2) stays untouched."""
    oleg = get_user_model().objects.get(username="oleg")
    oleg.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    oleg.save()
    limit = settings.SWITCHBOARD_LOGIN_FAILURES_PER_USER
    client = Client()
    for attempt in range(limit):
        # Case does not matter: "Oleg" and "OLEG" count against the same account.
        response = sign_in(client, ["oleg", "Oleg", "OLEG"][attempt % 3], f"guess-{attempt}")
        assert response.status_code == 200, attempt
    locked = sign_in(client, "oleg", PASSWORD)
    assert locked.status_code == 429
    assert 0 < int(locked["Retry-After"]) <= settings.SWITCHBOARD_LOGIN_LOCKOUT_SECONDS
    page = locked.content.decode()
    assert "Too many failed sign-ins. Try again in 5 minutes." in page and 'role="alert"' in page
    assert signed_in_as(client) is None
    oleg.refresh_from_db()
    assert oleg.password.startswith("pbkdf2_sha256$")  # check_password never ran
    # Another address is locked out of this account too (the lock is per username), but other accounts are fine.
    assert sign_in(Client(), "oleg", PASSWORD, ip="198.51.100.9").status_code == 429
    assert sign_in(Client(), "ana", PASSWORD).status_code == 302


def test_an_address_is_locked_after_too_many_failures_across_usernames(demo: Any, settings: Any) -> None:
    settings.SWITCHBOARD_LOGIN_FAILURES_PER_IP = 3
    attacker = "203.0.113.5"
    for username in ("ana", "ben", "maria"):
        assert sign_in(Client(), username, "password1", ip=attacker).status_code == 200
    refused = sign_in(Client(), "oleg", PASSWORD, ip=attacker)
    assert refused.status_code == 429 and "Retry-After" in refused
    # Nobody was locked per username (one failure each), and other addresses are not affected.
    client = Client()
    assert sign_in(client, "oleg", PASSWORD, ip="203.0.113.6").status_code == 302
    assert signed_in_as(client) == "oleg"


def test_a_successful_sign_in_clears_the_usernames_failures(demo: Any) -> None:
    limit = settings.SWITCHBOARD_LOGIN_FAILURES_PER_USER
    store = redis.Redis.from_url(settings.REDIS_URL)
    for attempt in range(limit - 1):
        assert sign_in(Client(), "ana", f"guess-{attempt}").status_code == 200
    assert int(store.get("attempts:login:user:ana") or 0) == limit - 1
    assert sign_in(Client(), "ana", PASSWORD).status_code == 302
    assert store.get("attempts:login:user:ana") is None
    # A success is not a failure of the address either.
    assert int(store.get("attempts:login:ip:127.0.0.1") or 0) == limit - 1
    # The full allowance again.
    for attempt in range(limit - 1):
        assert sign_in(Client(), "ana", f"again-{attempt}").status_code == 200
    assert sign_in(Client(), "ana", PASSWORD).status_code == 302


def test_the_json_session_api_is_throttled_the_same_way(demo: Any) -> None:
    limit = settings.SWITCHBOARD_LOGIN_FAILURES_PER_USER
    client = Client()
    for attempt in range(limit - 1):
        assert api_sign_in(client, "ben", f"guess-{attempt}").status_code == 401
    # The page and the API share the count.
    assert sign_in(client, "ben", "one-more-guess").status_code == 200
    locked = api_sign_in(client, "ben", PASSWORD)
    assert locked.status_code == 429
    assert locked.json()["error"] == "Too many failed sign-ins. Try again in 5 minutes."
    assert locked.json()["retry_after"] == int(locked["Retry-After"]) > 0
    assert signed_in_as(client) is None
    assert sign_in(client, "ben", PASSWORD).status_code == 429


def test_sign_in_still_works_when_redis_is_down(demo: Any, settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Fail open: Redis down must not lock every agent out of the inbox; the outage is logged as an error."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    ratelimit._client.cache_clear()
    try:
        with caplog.at_level(logging.ERROR, logger="inbox.agents.auth"):
            client = Client()
            assert sign_in(client, "ana", "wrong-password").status_code == 200
            assert sign_in(client, "ana", PASSWORD).status_code == 302
        assert signed_in_as(client) == "ana"
        assert any("throttle store unavailable" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    finally:
        ratelimit._client.cache_clear()


# --- Password hashing ---------------------------------------------------------------------------------------


def test_new_passwords_are_argon2id(demo: Any) -> None:
    ana = get_user_model().objects.get(username="ana")
    assert ana.password.startswith("argon2$argon2id$")


def test_an_old_pbkdf2_hash_is_upgraded_to_argon2id_at_sign_in(demo: Any) -> None:
    ben = get_user_model().objects.get(username="ben")
    ben.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    ben.save()
    assert ben.password.startswith("pbkdf2_sha256$")
    client = Client()
    assert sign_in(client, "ben", PASSWORD).status_code == 302
    ben.refresh_from_db()
    assert ben.password.startswith("argon2$argon2id$")
    assert ben.check_password(PASSWORD)


# --- The admin: only admins configure channels ----------------------------------------------------------------

ADMIN_ONLY = [
    "/admin/conversations/channelaccount/",
    "/admin/conversations/inboundevent/",
    "/admin/conversations/outbounddelivery/",
    "/admin/routing/agentqueue/",
    "/admin/routing/agentprofile/",
]


def admin_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_only_admins_see_or_change_channels_queues_and_agents(demo: Any) -> None:
    from inbox.agents.services import agent_upsert

    root = agent_upsert(username="root", password=PASSWORD, role=AgentProfile.Role.ADMIN)
    manager = admin_client(demo.manager)
    admin = admin_client(root)
    channel = f"/admin/conversations/channelaccount/{demo.webchat.pk}/change/"
    for url in ADMIN_ONLY:
        assert manager.get(url).status_code == 403, url
        assert admin.get(url).status_code == 200, url
    assert manager.get(channel).status_code == 403
    assert manager.post(channel, {"name": "taken over"}).status_code == 403
    assert manager.get("/admin/conversations/channelaccount/add/").status_code == 403
    assert admin.get(channel).status_code == 200
    # The admin index shows a manager no channels, queues or agents.
    index = manager.get("/admin/").content.decode()
    assert "Channel accounts" not in index and "Agent queues" not in index and "Agent profiles" not in index
    assert "Channel accounts" in admin.get("/admin/").content.decode()
    # Agents are not staff: no admin at all.
    assert admin_client(demo.agent_es).get("/admin/conversations/channelaccount/").status_code == 302


def test_an_admin_by_agent_role_without_superuser_may_configure(demo: Any) -> None:
    user = get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    AgentProfile.objects.create(user=user, role=AgentProfile.Role.ADMIN)
    client = admin_client(user)
    for url in ADMIN_ONLY:
        assert client.get(url).status_code == 200, url


def test_managers_see_conversations_and_contacts_in_the_admin_read_only(demo: Any) -> None:
    from inbox.conversations.models import Conversation
    from tests.agents.test_agent_api import spanish_conversation

    conversation: Conversation = spanish_conversation(demo)
    manager = admin_client(demo.manager)
    for url in (
        "/admin/conversations/conversation/",
        "/admin/conversations/contact/",
        "/admin/conversations/message/",
        "/admin/conversations/auditevent/",
    ):
        assert manager.get(url).status_code == 200, url
    change = f"/admin/conversations/conversation/{conversation.pk}/change/"
    page = manager.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert manager.post(change, {"status": "closed"}).status_code == 403
    assert manager.get("/admin/conversations/contact/add/").status_code == 403
    assert manager.get(f"/admin/conversations/conversation/{conversation.pk}/delete/").status_code == 403
    conversation.refresh_from_db()
    assert conversation.status != "closed"


def test_parallel_attempts_cannot_slip_past_the_limit(db: None) -> None:
    """The check and the count are one atomic step in Redis: 30 simultaneous attempts, exactly 5 get through."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(_: int) -> int | None:
        return ratelimit.attempt_count({"login:user:race": 5, "login:ip:race": 100}, window=60)

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(attempt, range(30)))
    assert results.count(None) == 5
    assert all(wait is not None and 0 < wait <= 60 for wait in results if wait is not None)
    store = redis.Redis.from_url(settings.REDIS_URL)
    assert int(store.get("attempts:login:user:race") or 0) == 5
    assert int(store.get("attempts:login:ip:race") or 0) == 5  # refused attempts are not counted


def test_behind_a_proxy_the_client_address_is_the_entry_the_proxy_appended(settings) -> None:
    """The first X-Forwarded-For entries come from the client and can be forged; the last is our proxy's."""
    from django.test import RequestFactory

    from inbox.common.http import client_ip

    request = RequestFactory().get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 10.0.0.7", REMOTE_ADDR="127.0.0.1")
    settings.SWITCHBOARD_TRUST_X_FORWARDED_FOR = False
    assert client_ip(request) == "127.0.0.1"
    settings.SWITCHBOARD_TRUST_X_FORWARDED_FOR = True
    assert client_ip(request) == "10.0.0.7"
