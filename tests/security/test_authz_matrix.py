"""The authorization matrix: every URL x every role x every kind of id it takes -> what that role gets.

Roles (the columns). "agent" and "agent_other_queue" are named from visitor A's Spanish conversation:

* ``anonymous``: a browser with no session (it has a CSRF cookie and sends the token, as a browser would);
* ``visitor_a`` / ``visitor_b``: web chat visitors, ``Authorization: Bearer <their visitor token>``, no session;
  visitor A owns the Spanish conversation, visitor B the Russian one;
* ``agent_other_queue``: oleg, agent of the Russian queue (so the Russian conversation is *his* queue's);
* ``agent``: ana, agent of the Spanish queue, and the assignee of the German conversation;
* ``manager``: maria, sees every queue; staff in the admin, read-only there;
* ``admin``: ada, superuser with an admin profile: configures channels, queues and agents;
* ``agent_without_csrf_token`` (state-changing requests with a session only): ana's session, but the request does
  not carry the CSRF token (a form posted from another site): always 403, nothing changed;
* ``metrics_wrong_token`` / ``metrics_right_token`` (``/metrics`` only): a Prometheus scraper's bearer token.

Ids (the rows of each URL): ``es_*`` belongs to visitor A's Spanish conversation, ``ru_*`` to visitor B's Russian
conversation, ``assigned_*`` to a German conversation assigned to ana, ``missing`` exists nowhere (see conftest.py).

Each cell states the status the role gets. An allowed cell may change the database (and where it matters the
change is checked: the reply exists, the merge happened); a denied cell (``allowed=False``) must change nothing in
any table (checked with a digest of every table). Every response, allowed or not, is searched for data of
customers that role may not see (markers in conftest.py) and for the channels' secrets.

One test per URL and method (``test_matrix[<route>-<method>...]``) runs all its cells, each in a savepoint rolled
back afterwards, and lists every wrong cell as ``<case> <role> <id>: expected …, got …``. A cell that shows a real
flaw is taken out of its test into ``test_known_flaw[<case>-<role>-<id>]``, which expects the correct behaviour and
is marked xfail(strict=True) with what is wrong. ``test_every_url_has_a_matrix_entry`` fails for a URL pattern
that has no row here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.contrib.sessions.models import Session
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.http import HttpResponseBase
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from inbox.conversations.models import ContactMerge, Conversation, InboundEvent, Message, OutboundDelivery
from inbox.routing.models import AgentProfile
from inbox.webchat.models import Visitor
from tests.security.conftest import (
    INTERNAL_NOTE,
    MARKER_SCOPE,
    MARKERS,
    METRICS_TOKEN,
    SECRET_VALUES,
    World,
)

ROLES = ("anonymous", "visitor_a", "visitor_b", "agent_other_queue", "agent", "manager", "admin")
NO_CSRF = "agent_without_csrf_token"
SIGNED_OUT = ("anonymous", "visitor_a", "visitor_b")
VISITORS = ("visitor_a", "visitor_b")
AGENTS = ("agent_other_queue", "agent")
# What each signed-in role may see (the rule under test): scopes of the ids and of the customers' data.
SEES: dict[str, frozenset[str]] = {
    "agent": frozenset({"es", "assigned"}),
    "agent_other_queue": frozenset({"ru"}),
    "manager": frozenset({"es", "ru", "assigned"}),
    "admin": frozenset({"es", "ru", "assigned"}),
}
SEES[NO_CSRF] = SEES["agent"]
VISITOR_OWNS = {"visitor_a": "A", "visitor_b": "B"}


# --- Expected outcomes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    status: int
    # For a redirect: the Location starts with one of these ("{id}": the cell's id value; a final "$": is exactly).
    location: tuple[str, ...] = ()
    # False: a denial (or a refusal): the database must be exactly as before.
    allowed: bool = True

    def __str__(self) -> str:
        where = f" to {' or '.join(self.location)}" if self.location else ""
        return f"{self.status}{where} ({'allowed' if self.allowed else 'denied, nothing changed'})"


def ok(status: int = 200, *location: str) -> Expect:
    return Expect(status, location)


LOGIN = Expect(302, ("/login/?next=",), allowed=False)  # login_required: to the sign-in page
ADMIN_LOGIN = Expect(302, ("/admin/login/?next=",), allowed=False)  # the admin's own check (is_staff)
NOT_FOUND = Expect(404, allowed=False)  # the app's denial for ids: the same as an id that does not exist
UNAUTHORIZED = Expect(401, allowed=False)
FORBIDDEN = Expect(403, allowed=False)
CSRF_REFUSED = Expect(403, allowed=False)
NOT_ALLOWED = Expect(405, allowed=False)
# A business rule says no (not an authorization question): back to the page with the reason, nothing changed.
REFUSED_TO_PAGE = Expect(302, ("/inbox/c/{id}/",), allowed=False)

ExpectFn = Callable[[str, str], Expect]  # (role, id key) -> expected


def scopes_of(key: str) -> frozenset[str]:
    """The scopes an id belongs to: a contact-merge pair belongs to both its sides; missing ids to none visible."""
    parts = key.split("<-")
    return frozenset(part.split("_")[0] for part in parts)


# Ids visible to whoever sees any one of these scopes: the merged contact of HOTEL (es) and INDIA (ru), and that merge
# (an agent may undo a merge whose kept contact they see: inbox/agents/contact_selectors.py merge_visible).
ANY_OF = {"mixed_contact": frozenset({"es", "ru"}), "mixed_merge": frozenset({"es", "ru"})}


def sees(role: str, key: str) -> bool:
    if key in ANY_OF:
        return bool(SEES.get(role, frozenset()) & ANY_OF[key])
    return role in SEES and scopes_of(key) <= SEES[role]


def agent_page(allowed: Expect, *, signed_out: Expect = LOGIN) -> ExpectFn:
    """The inbox's pages and forms: signed out -> sign in; an id the role may not see -> 404."""

    def expect(role: str, key: str) -> Expect:
        if role == NO_CSRF:
            return CSRF_REFUSED
        if role in SIGNED_OUT:
            return signed_out
        listing = key == "-" or key.startswith("?")  # no id: a page or a list (its query as the row)
        return allowed if listing or sees(role, key) else NOT_FOUND

    return expect


def agent_api(allowed: Expect) -> ExpectFn:
    """The agents' JSON API: signed out -> 401."""
    return agent_page(allowed, signed_out=UNAUTHORIZED)


def managers_only(allowed: Expect, *, signed_out: Expect = LOGIN) -> ExpectFn:
    def expect(role: str, key: str) -> Expect:
        if role in SIGNED_OUT:
            return signed_out
        return allowed if role in ("manager", "admin") else FORBIDDEN

    return expect


def everyone(expected: Expect) -> ExpectFn:
    return lambda role, key: expected


def by_id(mapping: Mapping[str, Expect]) -> ExpectFn:
    """The same for every role; depends on the id only (public endpoints, webhooks)."""
    return lambda role, key: mapping[key]


def visitor_api(allowed: Expect, *, own: Callable[[str, str], bool] = lambda role, key: True) -> ExpectFn:
    """The widget API: a visitor token or 401 (a session is no credential here); ``own``: the id is the visitor's."""

    def expect(role: str, key: str) -> Expect:
        if role not in VISITORS:
            return UNAUTHORIZED
        return allowed if own(role, key) else NOT_FOUND

    return expect


def admin_site(*, manager: Expect, admin: Expect, csrf: bool = False) -> ExpectFn:
    """The Django admin: not staff (signed out, agents) -> the admin's sign-in redirect."""

    def expect(role: str, key: str) -> Expect:
        if role == NO_CSRF and csrf:
            return CSRF_REFUSED
        if role == "manager":
            return manager
        if role == "admin":
            return admin
        return ADMIN_LOGIN

    return expect


# --- Cases: one request shape of one URL ----------------------------------------------------------------------
Data = Callable[[World, str, str], Any]  # (world, role, id key) -> the request body
Check = Callable[[World, str, str], str | None]  # -> a problem, or None
ContentCheck = Callable[[World, str, str, str], str | None]  # (…, body) -> a problem, or None


@dataclass(frozen=True)
class Case:
    route: str  # the URL pattern as the resolver spells it (the matrix's key)
    name: str  # the test id
    method: str
    path: str  # "{id}" -> the cell's id value; "{ru_queue}" etc. -> world.ids
    expect: ExpectFn
    ids: tuple[str, ...] = ("-",)
    roles: tuple[str, ...] = ROLES
    data: Data | None = None
    body: str = "form"  # form | json | multipart
    csrf: bool = True  # the request goes through Django's CSRF check (session-authenticated writes)
    headers: Callable[[World, str, str], dict[str, str]] | None = None
    effect: Check | None = None  # for allowed writes: the change that must have happened
    content: ContentCheck | None = None  # for allowed answers: what must (not) be in them
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    @property
    def all_roles(self) -> tuple[str, ...]:
        return (*self.roles, NO_CSRF) if self.writes and self.csrf else self.roles


def _conv(world: World, key: str) -> Conversation:
    return Conversation.objects.get(pk=world.ids[key])


def _actor(world: World, role: str) -> Any:
    return world.user(role) or world.users["agent"]


def _must_show(*customers_by_role: tuple[str, str]) -> ContentCheck:
    """Allowed list answers must show these customers to these roles (else the leak check proves nothing)."""

    def check(world: World, role: str, key: str, body: str) -> str | None:
        missing = [MARKERS[c] for r, c in customers_by_role if r == role and MARKERS[c].lower() not in body.lower()]
        return f"does not show {missing}" if missing else None

    return check


LIST_SHOWS = _must_show(
    ("agent", "A"), ("agent", "C"), ("agent_other_queue", "B"), ("manager", "A"), ("manager", "B"), ("admin", "C")
)
CONVERSATIONS = ("es_conversation", "ru_conversation", "assigned_conversation", "missing")
# The two conversations of the merged contact: each page's timeline spans the contact's conversations, but only those
# the role may see.
MERGED_CONVERSATIONS = ("es_merged_conversation", "ru_merged_conversation")
TO_PAGE = ("/inbox/c/{id}/",)
TO_PAGE_OR_LIST = ("/inbox/c/{id}/", "/inbox/$")  # "$": exactly


def _action(
    action: str,
    data: Data,
    effect: Check,
    *,
    slug: str | None = None,
    location: tuple[str, ...] = TO_PAGE,
) -> Case:
    return Case(
        "inbox/c/<int:conversation_id>/<slug:action>",
        f"inbox-action-POST-{action}",
        "POST",
        f"/inbox/c/{{id}}/{slug or action}",
        agent_page(Expect(302, location)),
        ids=CONVERSATIONS,
        data=data,
        effect=effect,
    )


def _not_if_taken(role: str, key: str) -> Expect:
    if role == "agent" and key == "es_taken_conversation":
        return REFUSED_TO_PAGE
    return agent_page(Expect(302, TO_PAGE))(role, key)


def _assign_target(world: World, role: str) -> Any:
    """Agents take it themselves; managers and admins hand it to ana."""
    return world.users["agent"] if role in ("manager", "admin") or role not in world.users else world.users[role]


REPLY_TEXT = "Respuesta escrita en la matriz"
NOTE_TEXT = "Nota escrita en la matriz"
API_REPLY_TEXT = "Respuesta de la API en la matriz"


def _effect_field(name: str, value: Callable[[World, str], Any]) -> Check:
    def check(world: World, role: str, key: str) -> str | None:
        got = getattr(_conv(world, key), name)
        want = value(world, role)
        return None if got == want else f"{name} is {got!r}, not {want!r}"

    return check


def _effect_message(direction: str, text: str) -> Check:
    def check(world: World, role: str, key: str) -> str | None:
        found = Message.objects.filter(conversation_id=world.ids[key], direction=direction, text=text).exists()
        return None if found else f"no {direction} message {text!r} in the conversation"

    return check


def _effect_presence(world: World, role: str, key: str) -> str | None:
    user = world.users[role]
    mine = AgentProfile.objects.get(user=user).presence
    others = list(
        AgentProfile.objects.exclude(user=user).filter(presence="away").values_list("user__username", flat=True)
    )
    if mine != "away" or others:
        return f"own presence {mine!r}; others set away: {others}"
    return None


def _effect_take_next(world: World, role: str, key: str) -> str | None:
    user = world.users[role]
    before = world.assigned_before.get(user.pk, set())
    taken = list(Conversation.objects.filter(assignee=user).exclude(pk__in=before).select_related("queue"))
    if len(taken) != 1:
        return f"took {len(taken)} conversations"
    if role in AGENTS and taken[0].queue not in AgentProfile.objects.get(user=user).queues.all():
        return f"took #{taken[0].pk} of queue {taken[0].queue}, not one of the agent's queues"
    return None


def _effect_retry(world: World, role: str, key: str) -> str | None:
    state = OutboundDelivery.objects.get(message_id=world.ids[key]).state
    return None if state == OutboundDelivery.State.QUEUED else f"delivery is {state}, not queued again"


def _effect_merged(world: World, role: str, key: str) -> str | None:
    merged = ContactMerge.objects.filter(
        target_id=world.ids[key], source_id=world.merge_source[key], undone_at__isnull=True
    ).exists()
    return None if merged else "no merge recorded"


def _effect_unmerged(world: World, role: str, key: str) -> str | None:
    return None if ContactMerge.objects.get(pk=world.ids[key]).undone_at else "the merge is not undone"


def _effect_visitor_event(world: World, role: str, key: str) -> str | None:
    visitor = str(world.visitors[VISITOR_OWNS[role]].uuid)
    new = InboundEvent.objects.filter(state=InboundEvent.State.PENDING, external_id__startswith=f"{visitor}:")
    return None if new.exists() else "no event stored for the visitor"


def _visitor_email(world: World, role: str, key: str) -> str | None:
    email = Visitor.objects.get(pk=world.visitors[VISITOR_OWNS[role]].pk).email
    return None if email == "matrix@example.com" else f"visitor e-mail is {email!r}"


def _channel_renamed(world: World, role: str, key: str) -> str | None:
    name = type(world.channels["webchat"]).objects.get(pk=world.ids[key]).name
    return None if name == "Website (renamed)" else f"channel name is {name!r}"


def _profile_role(world: World, role: str, key: str) -> str | None:
    got = AgentProfile.objects.get(pk=world.ids[key]).role
    return None if got == "admin" else f"role is {got!r}"


def _admin_index(world: World, role: str, key: str, body: str) -> str | None:
    admin_only = ("/admin/conversations/channelaccount/", "/admin/routing/agentprofile/", "/admin/routing/agentqueue/")
    shown = [url for url in admin_only if url in body]
    if role == "manager" and shown:
        return f"the manager's admin index links to admin-only pages {shown}"
    if role == "admin" and len(shown) != len(admin_only):
        return "the admin's index lacks the channel / queue / agent pages"
    return None


def _read_only_for_manager(world: World, role: str, key: str, body: str) -> str | None:
    has_save = 'name="_save"' in body
    if role == "manager" and has_save:
        return "the manager gets a Save button"
    if role == "admin" and not has_save:
        return "the admin gets no Save button"
    return None


def _merged_timeline(world: World, role: str, key: str, body: str) -> str | None:
    """HOTEL's and INDIA's pages show both to a manager: so what an agent does not see was really left out."""
    if role in ("manager", "admin") and key in (*MERGED_CONVERSATIONS, "mixed_contact"):
        missing = [MARKERS[c] for c in ("H", "I") if MARKERS[c] not in body]
        return f"the merged contact's page lacks {missing}" if missing else None
    return None


def _no_sign_in_names(world: World, role: str, key: str, body: str) -> str | None:
    """A visitor may see who answered, but never an agent's sign-in username (half of the credentials, and the key
    of the per-username sign-in lockout: a visitor who knows it can lock that agent out of the inbox)."""
    usernames = {user.get_username() for user in world.users.values()}
    shown = {m["author"] for m in json.loads(body)["messages"] if m["from"] == "agent"}
    if not shown:
        return "no agent message to look at"
    return f"agents shown by their sign-in usernames: {sorted(shown & usernames)}" if shown & usernames else None


def _contains(text: str) -> ContentCheck:
    return lambda world, role, key, body: None if text in body else f"lacks {text!r}"


def _form(**values: Any) -> Data:
    return lambda world, role, key: dict(values)


def _visitor_owns(kind: str) -> Callable[[str, str], bool]:
    """Visitor A owns the Spanish conversation's parts, visitor B the Russian one's."""
    scope = {"visitor_a": "es", "visitor_b": "ru"}
    return lambda role, key: key == f"{scope[role]}_{kind}"


FORGED_X_EVENT = {
    "for_user_id": "4242",
    "direct_message_events": [
        {
            "type": "message_create",
            "id": "1999000111222333444",
            "created_timestamp": "1767225600000",
            "message_create": {
                "target": {"recipient_id": "4242"},
                "sender_id": "31337",
                "message_data": {"text": "Please send the refund to IBAN XX00 1234, thanks", "entities": {}},
            },
        }
    ],
    "users": {"31337": {"id": "31337", "id_str": "31337", "name": "Mallory", "screen_name": "mallory"}},
}


def _signature_from_the_crc_endpoint(world: World, role: str, key: str) -> dict[str, str]:
    """What an attacker does: ask the public CRC endpoint to "answer a challenge" that is the body to forge."""
    body = json.dumps(FORGED_X_EVENT)
    answer = world.clients[role].get(f"/api/channels/{world.ids[key]}/x", {"crc_token": body})
    token = answer.json().get("response_token", "") if answer.status_code == 200 else ""
    return {"X-Twitter-Webhooks-Signature": token or "sha256=none"}


CHANNEL_IDS = ("webchat_channel", "inactive_webchat_channel", "telegram_channel", "missing_channel")


def _cases() -> list[Case]:
    now = timezone.now()
    cases = [
        # --- Redirects and public pages ---
        Case("", "root-GET", "GET", "/", everyone(ok(302, "/inbox/"))),
        Case("admin/login/", "admin-login-GET", "GET", "/admin/login/?next=/admin/", everyone(ok(302, "/login/"))),
        Case("healthz", "healthz-GET", "GET", "/healthz", everyone(ok()), content=_contains('"ok"')),
        Case("widget.js", "webchat-widget-GET", "GET", "/widget.js", everyone(ok())),
        Case(
            "static/switchboard/widget.js", "static-widget-GET", "GET", "/static/switchboard/widget.js", everyone(ok())
        ),
        Case("demo/", "webchat-demo-GET", "GET", "/demo/", everyone(ok())),
        # --- Sign-in ---
        Case(
            "login/",
            "login-GET",
            "GET",
            "/login/",
            lambda role, key: ok() if role in SIGNED_OUT else ok(302, "/inbox/"),
        ),
        Case(
            "logout/",
            "logout-POST",
            "POST",
            "/logout/",
            lambda r, k: CSRF_REFUSED if r == NO_CSRF else ok(302, "/login/"),
        ),
        Case("logout/", "logout-GET", "GET", "/logout/", everyone(NOT_ALLOWED)),  # a link must not sign anyone out
        Case("api/agent/session", "agent-session-GET", "GET", "/api/agent/session", everyone(ok())),
        Case(
            "api/agent/session",
            "agent-session-DELETE",  # signing out through the API: CSRF applies
            "DELETE",
            "/api/agent/session",
            lambda r, k: CSRF_REFUSED if r == NO_CSRF else ok(),
            body="json",
        ),
        # --- The inbox ---
        Case(
            "inbox/",
            "inbox-GET",
            "GET",
            "/inbox/{id}",
            agent_page(ok()),
            ids=(
                "-",
                "?status=all",
                "?status=all&q=cuenta",
                "?status=all&q=аккаунт",
                "?status=all&queue={ru_queue}",
                "?status=all&partial=rows",
            ),
            content=lambda w, r, k, body: (
                LIST_SHOWS(w, r, k, body) if k in ("?status=all", "?status=all&partial=rows") else None
            ),
        ),
        Case(
            "inbox/c/<int:conversation_id>/",
            "inbox-conversation-GET",
            "GET",
            "/inbox/c/{id}/",
            agent_page(ok()),
            ids=(*CONVERSATIONS, *MERGED_CONVERSATIONS),
            content=_merged_timeline,
        ),
        Case(
            "inbox/c/<int:conversation_id>/",
            "inbox-conversation-GET-timeline",
            "GET",
            "/inbox/c/{id}/?partial=timeline",
            agent_page(ok()),
            ids=(*CONVERSATIONS, *MERGED_CONVERSATIONS),
        ),
        Case(
            "inbox/presence",
            "inbox-presence-POST",
            "POST",
            "/inbox/presence",
            agent_page(ok(302, "/inbox/")),
            data=_form(presence="away", next="/inbox/"),
            effect=_effect_presence,
        ),
        Case(
            "inbox/presence",
            "inbox-presence-POST-offsite-next",  # no open redirect: back to the inbox
            "POST",
            "/inbox/presence",
            agent_page(ok(302, "/inbox/$")),
            data=_form(presence="away", next="https://evil.example/phish"),
            effect=_effect_presence,
        ),
        Case(
            "inbox/next",
            "inbox-take-next-POST",
            "POST",
            "/inbox/next",
            agent_page(ok(302, "/inbox/c/")),
            effect=_effect_take_next,
        ),
        _action(
            "reply",
            _form(kind="reply", text=REPLY_TEXT),
            _effect_message("out", REPLY_TEXT),
            location=("/inbox/c/{id}/#composer",),
        ),
        _action(
            "note",
            _form(kind="note", text=NOTE_TEXT),
            _effect_message("note", NOTE_TEXT),
            slug="reply",
            location=("/inbox/c/{id}/#composer",),
        ),
        # Claim / assign to oneself; "es_taken_conversation" is a Spanish one the manager has: the Spanish agent sees
        # it, but only a manager may take it from its holder.
        replace(
            _action("claim", _form(), _effect_field("assignee", lambda w, r: _actor(w, r))),
            ids=(*CONVERSATIONS, "es_taken_conversation"),
            expect=_not_if_taken,
        ),
        replace(
            _action(
                "assign",
                lambda w, r, k: {"assignee": str(_assign_target(w, r).pk)},
                _effect_field("assignee", lambda w, r: _assign_target(w, r)),
            ),
            ids=(*CONVERSATIONS, "es_taken_conversation"),
            expect=_not_if_taken,
        ),
        _action("status", _form(status="resolved"), _effect_field("status", lambda w, r: "resolved")),
        _action(
            "language", _form(language="fr"), _effect_field("language", lambda w, r: "fr"), location=TO_PAGE_OR_LIST
        ),
        _action(
            "snooze",
            _form(until=(now + timedelta(hours=2)).isoformat()),
            _effect_field("status", lambda w, r: "snoozed"),
        ),
        _action("priority", _form(priority="2"), _effect_field("priority", lambda w, r: 2)),
        # An agent may hand a conversation only to an agent of its queue; managers to anyone.
        replace(
            _action(
                "assign",
                lambda w, r, k: {
                    "assignee": str(w.users["agent" if r == "agent_other_queue" else "agent_other_queue"].pk)
                },
                _effect_field("assignee", lambda w, r: w.users["agent_other_queue"]),
            ),
            name="inbox-action-POST-assign-to-an-agent-of-another-queue",
            expect=lambda role, key: (
                REFUSED_TO_PAGE if role in AGENTS and sees(role, key) else agent_page(ok(302, *TO_PAGE))(role, key)
            ),
        ),
        replace(
            _action("bogus", _form(), lambda w, r, k: None),
            name="inbox-action-POST-unknown-action",
            expect=agent_page(NOT_FOUND),
        ),
        Case(
            "inbox/m/<int:message_id>/retry",
            "inbox-retry-POST",
            "POST",
            "/inbox/m/{id}/retry",
            agent_page(ok(302, "/inbox/c/")),
            ids=("es_reply", "ru_reply", "assigned_reply", "missing"),
            effect=_effect_retry,
        ),
        Case(
            "inbox/m/<int:message_id>/html",
            "inbox-message-html-GET",
            "GET",
            "/inbox/m/{id}/html",
            agent_page(ok()),
            ids=("es_message", "ru_message", "assigned_message", "missing"),
            content=_contains("HTML part of"),
        ),
        Case(
            "inbox/a/<int:attachment_id>",
            "inbox-attachment-GET",
            "GET",
            "/inbox/a/{id}",
            agent_page(ok()),
            ids=("es_attachment", "ru_attachment", "assigned_attachment", "missing"),
            content=_contains("receipt of"),
        ),
        # --- Contacts ---
        Case(
            "contacts/",
            "contacts-GET",
            "GET",
            "/contacts/{id}",
            agent_page(ok()),
            ids=("-", "?q=Cliente"),
            content=LIST_SHOWS,
        ),
        Case(
            "contacts/<int:contact_id>/",
            "contact-GET",
            "GET",
            "/contacts/{id}/?merge_q=Cliente",
            agent_page(ok()),
            ids=("es_contact", "ru_contact", "assigned_contact", "mixed_contact", "missing"),
            content=_merged_timeline,
        ),
        Case(
            "contacts/<int:contact_id>/merge/",
            "contact-merge-POST",
            "POST",
            "/contacts/{id}/merge/",
            agent_page(ok(302, "/contacts/{id}/")),
            ids=(
                "es_contact<-es_spare",
                "assigned_contact<-es_spare",
                "ru_contact<-es_spare",
                "es_contact<-ru_contact",
                "ru_contact<-ru_spare",
                "missing<-es_spare",
                "es_contact<-missing",
            ),
            data=lambda w, r, k: {"source": str(w.merge_source[k])},
            effect=_effect_merged,
        ),
        Case(
            "contacts/merges/<int:merge_id>/undo/",
            "contact-unmerge-POST",
            "POST",
            "/contacts/merges/{id}/undo/",
            agent_page(ok(302, "/contacts/")),
            ids=("es_merge", "ru_merge", "mixed_merge", "missing"),
            effect=_effect_unmerged,
        ),
        # --- Managers: the dashboard, its CSV, the JSON API ---
        Case("dashboard/", "dashboard-GET", "GET", "/dashboard/", managers_only(ok())),
        Case("dashboard/export.csv", "dashboard-csv-GET", "GET", "/dashboard/export.csv", managers_only(ok())),
        Case("api/metrics", "metrics-json-GET", "GET", "/api/metrics", managers_only(ok(), signed_out=UNAUTHORIZED)),
        # --- Prometheus: its own bearer token; sessions and visitor tokens are no credential ---
        Case(
            "metrics",
            "metrics-GET",
            "GET",
            "/metrics",
            lambda role, key: {"metrics_right_token": ok(), "metrics_wrong_token": FORBIDDEN}.get(
                role, FORBIDDEN if role in VISITORS else UNAUTHORIZED
            ),
            roles=(*ROLES, "metrics_wrong_token", "metrics_right_token"),
            settings={"SWITCHBOARD_METRICS_TOKEN": METRICS_TOKEN},
        ),
        Case(
            "metrics",
            "metrics-GET-no-token-configured",
            "GET",
            "/metrics",
            everyone(NOT_FOUND),
            roles=(*ROLES, "metrics_wrong_token", "metrics_right_token"),
            settings={"SWITCHBOARD_METRICS_TOKEN": ""},
        ),
        # --- The widget's visitor API: the visitor's own token, and only its own rows ---
        Case(
            "api/webchat/v1/<str:public_id>/config",
            "webchat-config-GET",
            "GET",
            "/api/webchat/v1/{id}/config",
            by_id({"webchat_channel": ok()} | dict.fromkeys(CHANNEL_IDS[1:], NOT_FOUND)),
            ids=CHANNEL_IDS,
        ),
        Case(
            "api/webchat/v1/<str:public_id>/sessions",
            "webchat-session-POST",
            "POST",
            "/api/webchat/v1/{id}/sessions",
            by_id({"webchat_channel": ok(201)} | dict.fromkeys(CHANNEL_IDS[1:], NOT_FOUND)),
            ids=CHANNEL_IDS,
            data=_form(name="Matrix visitor"),
            body="json",
            csrf=False,
            effect=lambda w, r, k: (
                None if Visitor.objects.filter(identity__display_name="Matrix visitor").exists() else "no visitor"
            ),
        ),
        Case(
            "api/webchat/v1/messages",
            "webchat-messages-GET",
            "GET",
            "/api/webchat/v1/messages?after=0",
            visitor_api(ok()),
            content=lambda w, r, k, body: (
                None if MARKERS[VISITOR_OWNS[r]] in body else "lacks the visitor's own messages"
            ),
        ),
        Case(
            "api/webchat/v1/messages",
            "webchat-messages-GET-agent-names",  # who answered, as the visitor sees it
            "GET",
            "/api/webchat/v1/messages?after=0",
            visitor_api(ok()),
            content=_no_sign_in_names,
        ),
        Case(
            "api/webchat/v1/messages",
            "webchat-messages-POST",
            "POST",
            "/api/webchat/v1/messages",
            visitor_api(ok(202)),
            data=lambda w, r, k: {"text": "¿Alguien por ahí?", "client_id": str(uuid.uuid4())},
            body="json",
            csrf=False,
            effect=_effect_visitor_event,
        ),
        Case(
            "api/webchat/v1/attachments",
            "webchat-attachments-POST",
            "POST",
            "/api/webchat/v1/attachments",
            visitor_api(ok(202)),
            data=lambda w, r, k: {
                "client_id": str(uuid.uuid4()),
                "text": "adjunto",
                "files": SimpleUploadedFile("nota.txt", b"una nota\n"),
            },
            body="multipart",
            csrf=False,
            effect=_effect_visitor_event,
        ),
        Case(
            "api/webchat/v1/attachments/<int:attachment_id>",
            "webchat-attachment-GET",
            "GET",
            "/api/webchat/v1/attachments/{id}",
            visitor_api(ok(), own=_visitor_owns("attachment")),
            ids=("es_attachment", "ru_attachment", "assigned_attachment", "missing"),
            content=lambda w, r, k, body: None if MARKERS[VISITOR_OWNS[r]] in body else "not the visitor's file",
        ),
        Case("api/webchat/v1/status", "webchat-status-GET", "GET", "/api/webchat/v1/status", visitor_api(ok())),
        Case(
            "api/webchat/v1/contact",
            "webchat-contact-POST",
            "POST",
            "/api/webchat/v1/contact",
            visitor_api(ok()),
            data=_form(email="matrix@example.com"),
            body="json",
            csrf=False,
            effect=_visitor_email,
        ),
        # --- Channel webhooks: their own authentication only (covered elsewhere); unauthenticated stores nothing ---
        Case(
            "api/channels/<str:public_id>/events",
            "api-channel-events-POST-unsigned",
            "POST",
            "/api/channels/{id}/events",
            by_id({"api_channel": FORBIDDEN, "webchat_channel": NOT_FOUND, "missing_channel": NOT_FOUND}),
            ids=("api_channel", "webchat_channel", "missing_channel"),
            data=_form(id="m-1", text="hola", sender={"id": "u-1"}),
            body="json",
            csrf=False,
        ),
        Case(
            "api/channels/<str:public_id>/telegram",
            "telegram-webhook-POST-no-secret",
            "POST",
            "/api/channels/{id}/telegram",
            by_id({"telegram_channel": UNAUTHORIZED, "webchat_channel": NOT_FOUND, "missing_channel": NOT_FOUND}),
            ids=("telegram_channel", "webchat_channel", "missing_channel"),
            data=_form(update_id=1, message={"message_id": 1, "text": "hola", "chat": {"id": 1}}),
            body="json",
            csrf=False,
        ),
        Case(
            "api/channels/<str:public_id>/telegram",
            "telegram-webhook-POST-wrong-secret",
            "POST",
            "/api/channels/{id}/telegram",
            by_id({"telegram_channel": FORBIDDEN}),
            ids=("telegram_channel",),
            data=_form(update_id=1, message={"message_id": 1, "text": "hola", "chat": {"id": 1}}),
            body="json",
            csrf=False,
            headers=lambda w, r, k: {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
        ),
        Case(
            "api/channels/<str:public_id>/x",
            "x-webhook-POST-unsigned",
            "POST",
            "/api/channels/{id}/x",
            by_id({"x_channel": UNAUTHORIZED, "webchat_channel": NOT_FOUND, "missing_channel": NOT_FOUND}),
            ids=("x_channel", "webchat_channel", "missing_channel"),
            data=_form(for_user_id="4242", direct_message_events=[]),
            body="json",
            csrf=False,
        ),
        Case(
            "api/channels/<str:public_id>/x",
            "x-webhook-POST-wrong-signature",
            "POST",
            "/api/channels/{id}/x",
            by_id({"x_channel": FORBIDDEN}),
            ids=("x_channel",),
            data=_form(for_user_id="4242", direct_message_events=[]),
            body="json",
            csrf=False,
            headers=lambda w, r, k: {"X-Twitter-Webhooks-Signature": "sha256=d3Jvbmc="},
        ),
        Case(
            "api/channels/<str:public_id>/x",
            # Anyone asks the CRC endpoint for HMAC(consumer secret, <a whole event body>) and posts that body with
            # the answer as its signature (the CRC answer and the signature are the same HMAC). Webhooks know no
            # roles: one role stands for the internet.
            "x-webhook-POST-signed-with-a-crc-answer",
            "POST",
            "/api/channels/{id}/x",
            by_id({"x_channel": FORBIDDEN}),
            ids=("x_channel",),
            roles=("anonymous",),
            data=lambda w, r, k: FORGED_X_EVENT,
            body="json",
            csrf=False,
            headers=_signature_from_the_crc_endpoint,
        ),
        Case(
            "api/channels/<str:public_id>/x",
            "x-webhook-GET-crc",  # public by design: the answer proves we hold the app's secret, reveals nothing
            "GET",
            "/api/channels/{id}/x?crc_token=matrix",
            by_id({"x_channel": ok(), "webchat_channel": NOT_FOUND, "missing_channel": NOT_FOUND}),
            ids=("x_channel", "webchat_channel", "missing_channel"),
            content=_contains("response_token"),
        ),
        # --- The agents' JSON API ---
        Case(
            "api/agent/conversations",
            "agent-conversations-GET",
            "GET",
            "/api/agent/conversations{id}",
            agent_api(ok()),
            ids=("?status=all", "?status=all&queue={ru_queue}", "?status=all&language=ru"),
            content=lambda w, r, k, body: LIST_SHOWS(w, r, k, body) if k == "?status=all" else None,
        ),
        Case(
            "api/agent/conversations/<int:conversation_id>",
            "agent-conversation-GET",
            "GET",
            "/api/agent/conversations/{id}",
            agent_api(ok()),
            ids=(*CONVERSATIONS, *MERGED_CONVERSATIONS),
        ),
        Case(
            "api/agent/conversations/<int:conversation_id>/reply",
            "agent-reply-POST",
            "POST",
            "/api/agent/conversations/{id}/reply",
            agent_api(ok(201)),
            ids=CONVERSATIONS,
            data=_form(text=API_REPLY_TEXT),
            body="json",
            effect=_effect_message("out", API_REPLY_TEXT),
        ),
        Case(
            "api/agent/conversations/<int:conversation_id>/language",
            "agent-language-POST",
            "POST",
            "/api/agent/conversations/{id}/language",
            agent_api(ok()),
            ids=CONVERSATIONS,
            data=_form(language="fr"),
            body="json",
            effect=_effect_field("language", lambda w, r: "fr"),
        ),
        Case(
            "api/agent/conversations/<int:conversation_id>/status",
            "agent-status-POST",
            "POST",
            "/api/agent/conversations/{id}/status",
            agent_api(ok()),
            ids=CONVERSATIONS,
            data=_form(status="resolved"),
            body="json",
            effect=_effect_field("status", lambda w, r: "resolved"),
        ),
        Case(
            "api/agent/presence",
            "agent-presence-POST",
            "POST",
            "/api/agent/presence",
            agent_api(ok()),
            data=_form(presence="away"),
            body="json",
            effect=_effect_presence,
        ),
        # --- The Django admin (one entry: admin/) ---
        Case("admin/", "admin-index-GET", "GET", "/admin/", admin_site(manager=ok(), admin=ok()), content=_admin_index),
        Case(
            "admin/",
            "admin-channel-change-GET",
            "GET",
            "/admin/conversations/channelaccount/{id}/change/",
            admin_site(manager=FORBIDDEN, admin=ok()),
            ids=("webchat_channel_pk", "telegram_channel_pk"),
            content=_contains("Save"),
        ),
        Case(
            "admin/",
            "admin-channel-change-POST",
            "POST",
            "/admin/conversations/channelaccount/{id}/change/",
            admin_site(manager=FORBIDDEN, admin=ok(302, "/admin/conversations/channelaccount/"), csrf=True),
            ids=("webchat_channel_pk",),
            data=_form(kind="webchat", name="Website (renamed)", is_active="on", settings="{}", _save="Save"),
            effect=_channel_renamed,
        ),
        Case(
            "admin/",
            "admin-channel-list-GET",
            "GET",
            "/admin/conversations/channelaccount/",
            admin_site(manager=FORBIDDEN, admin=ok()),
        ),
        Case(
            "admin/",
            "admin-agentprofile-change-GET",
            "GET",
            "/admin/routing/agentprofile/{id}/change/",
            admin_site(manager=FORBIDDEN, admin=ok()),
            ids=("agent_other_queue_profile",),
        ),
        Case(
            "admin/",
            "admin-agentprofile-change-POST",  # making oleg an admin: only an admin may
            "POST",
            "/admin/routing/agentprofile/{id}/change/",
            admin_site(manager=FORBIDDEN, admin=ok(302, "/admin/routing/agentprofile/"), csrf=True),
            ids=("agent_other_queue_profile",),
            data=lambda w, r, k: {
                "user": str(w.users["agent_other_queue"].pk),
                "role": "admin",
                "capacity": "5",
                "presence": "offline",
                "queues": [str(w.ids["ru_queue"])],
                "_save": "Save",
            },
            effect=_profile_role,
        ),
        Case(
            "admin/",
            "admin-conversation-change-GET",
            "GET",
            "/admin/conversations/conversation/{id}/change/",
            admin_site(manager=ok(), admin=ok()),
            ids=("ru_conversation",),
            content=_read_only_for_manager,
        ),
        Case(
            "admin/",
            "admin-conversation-change-POST",
            "POST",
            "/admin/conversations/conversation/{id}/change/",
            # The admin may edit; this partial form is sent back with its errors (200) and changes nothing.
            admin_site(manager=FORBIDDEN, admin=Expect(200, allowed=False), csrf=True),
            ids=("ru_conversation",),
            data=_form(status="resolved", _save="Save"),
        ),
        Case(
            "admin/",
            "admin-message-list-GET",  # managers read messages (notes included) in the admin: they see everything
            "GET",
            "/admin/conversations/message/",
            admin_site(manager=ok(), admin=ok()),
        ),
        Case(
            "admin/",
            "admin-cannedresponse-list-GET",  # plain Django permissions: the manager has none
            "GET",
            "/admin/agents/cannedresponse/",
            admin_site(manager=FORBIDDEN, admin=ok()),
        ),
        Case("admin/", "admin-user-list-GET", "GET", "/admin/auth/user/", admin_site(manager=FORBIDDEN, admin=ok())),
    ]
    return cases


CASES = _cases()
MATRIX: dict[str, list[Case]] = {}
for _case in CASES:
    MATRIX.setdefault(_case.route, []).append(_case)
assert len({c.name for c in CASES}) == len(CASES), "two cases share a name"

# Cells that show a real flaw: (case name, role, id key) -> what is wrong. They are left out of test_matrix and
# run alone in test_known_flaw, which expects the correct behaviour and is xfail(strict=True) until it is fixed.
# (Fixed: agent usernames in the widget API, now first names only; an X CRC answer signing any text, now only
# token-shaped challenges. Their cells run in test_matrix.)
KNOWN_FLAWS: dict[tuple[str, str, str], str] = {}


# --- Running a cell -------------------------------------------------------------------------------------------
def snapshot() -> dict[str, str]:
    """A digest of every table's rows (sessions aside: signing in and out is not a change of the data)."""
    tables = sorted(
        {
            model._meta.db_table
            for model in apps.get_models(include_auto_created=True)
            if model is not Session and model._meta.managed and not model._meta.proxy
        }
    )
    # Table names come from Django's model registry, never from a request.
    sql = " UNION ALL ".join(
        f"SELECT '{table}', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t"  # noqa: S608
        for table in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return dict(cursor.fetchall())


def forbidden_markers(role: str) -> list[str]:
    """What must never be in an answer to this role: other customers' data, notes for visitors, secrets."""
    if role in VISITORS:
        hidden = [m for key, m in MARKERS.items() if key != VISITOR_OWNS[role]] + [INTERNAL_NOTE]
    elif role in SEES:
        hidden = [m for key, m in MARKERS.items() if MARKER_SCOPE[key] not in SEES[role]]
    else:
        hidden = [*MARKERS.values(), INTERNAL_NOTE]
    return [*hidden, *SECRET_VALUES]


def _format(template: str, world: World, value: Any) -> str:
    return template.replace("{id}", str(value)).replace("{ru_queue}", str(world.ids["ru_queue"]))


def _request(world: World, case: Case, role: str, key: str) -> HttpResponseBase:
    client = world.clients[role]
    value = world.ids.get(key, key)  # list variants ("?q=…") are their own value
    path = _format(case.path, world, value)
    headers = dict(case.headers(world, role, key)) if case.headers else {}
    if case.method == "GET":
        return client.get(path, headers=headers)
    data = case.data(world, role, key) if case.data else {}
    send_token = case.csrf and role != NO_CSRF
    if case.method == "DELETE":
        if send_token:
            headers["X-CSRFToken"] = world.csrf[role]
        return client.delete(path, headers=headers)
    if case.body == "json":
        if send_token:
            headers["X-CSRFToken"] = world.csrf[role]
        return client.post(path, json.dumps(data), content_type="application/json", headers=headers)
    if send_token:
        data["csrfmiddlewaretoken"] = world.csrf[role]
    if case.body == "multipart":
        return client.post(path, data, headers=headers)
    # As a browser posts a form without files.
    return client.post(
        path, urlencode(data, doseq=True), content_type="application/x-www-form-urlencoded", headers=headers
    )


def _body(response: HttpResponseBase) -> str:
    # A file download: the test client closes the response once the iterator is done (never close() it here: that
    # signals request_finished, whose handler closes the database connection inside the test's transaction).
    streaming = getattr(response, "streaming", False)
    raw = b"".join(response.streaming_content) if streaming else response.content  # type: ignore[attr-defined]
    return bytes(raw).decode("utf-8", "replace")


def run_cell(world: World, case: Case, role: str, key: str, baseline: dict[str, str]) -> list[str]:
    """The cell's problems (empty: as the matrix says). The cell's changes are rolled back."""
    expected = case.expect(role, key)
    client = world.clients[role]
    cookies = deepcopy(client.cookies)
    savepoint = transaction.savepoint()
    problems: list[str] = []
    try:
        try:
            response = _request(world, case, role, key)
        except Exception as exc:  # a crash is a wrong cell like any other
            return [f"raised {type(exc).__name__}: {exc}"]
        body = _body(response)
        got = response.status_code
        location = response.get("Location", "")
        if got != expected.status:
            problems.append(f"got {got}{f' to {location}' if location else ''}")
        elif expected.location:
            value = world.ids.get(key, key)
            allowed = [_format(p, world, value) for p in expected.location]
            if not any(location == p[:-1] if p.endswith("$") else location.startswith(p) for p in allowed):
                problems.append(f"redirected to {location!r}")
        leaked = [m for m in forbidden_markers(role) if m.lower() in body.lower()]
        if leaked:
            problems.append(f"the answer contains data it must not: {leaked}")
        answered = not problems and expected.allowed and 200 <= got < 300
        if answered and case.content and (problem := case.content(world, role, key, body)) is not None:
            problems.append(problem)
        if not expected.allowed:
            changed = [table for table, digest in snapshot().items() if baseline.get(table) != digest]
            if changed:
                problems.append(f"a denied request changed {changed}")
        elif case.writes and case.effect and not problems and (problem := case.effect(world, role, key)) is not None:
            problems.append(f"allowed, but {problem}")
    finally:
        transaction.savepoint_rollback(savepoint)
        client.cookies = cookies
    return [f"expected {expected}, {p}" for p in problems]


def _cells(case: Case) -> list[tuple[str, str]]:
    return [(role, key) for role in case.all_roles for key in case.ids]


# --- The tests ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matrix(world: World, db: None, case: Case) -> None:
    with override_settings(**case.settings):
        baseline = snapshot()
        wrong = []
        for role, key in _cells(case):
            if (case.name, role, key) in KNOWN_FLAWS:
                continue
            wrong += [f"{case.name} {role} {key}: {p}" for p in run_cell(world, case, role, key, baseline)]
    assert not wrong, f"{len(wrong)} wrong cell(s) of {case.method} {case.path}:\n" + "\n".join(wrong)


_FLAW_PARAMS = [
    pytest.param(
        name,
        role,
        key,
        id=f"{name}-{role}" + (f"-{key}" if key != "-" else ""),
        marks=pytest.mark.xfail(strict=True, reason=reason),
    )
    for (name, role, key), reason in KNOWN_FLAWS.items()
]


@pytest.mark.skipif(not KNOWN_FLAWS, reason="no known flaw")
@pytest.mark.parametrize(("name", "role", "key"), _FLAW_PARAMS or [("-", "-", "-")])
def test_known_flaw(world: World, db: None, name: str, role: str, key: str) -> None:
    [case] = [c for c in CASES if c.name == name]
    with override_settings(**case.settings):
        problems = run_cell(world, case, role, key, snapshot())
    assert not problems, f"{name} {role} {key}: " + "; ".join(problems)


def _url_patterns() -> list[tuple[str, str]]:
    """(route, what it is) for every URL pattern, walking included URLconfs; the admin site is one entry."""
    found: list[tuple[str, str]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                if pattern.app_name == "admin":
                    found.append((route, "the Django admin site"))
                else:
                    walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                view = pattern.callback
                found.append((route, f"name={pattern.name!r}, view {view.__module__}.{view.__qualname__}"))

    walk(get_resolver().url_patterns, "")
    return found


def test_every_url_has_a_matrix_entry() -> None:
    patterns = _url_patterns()
    missing = [f"  {route!r} ({what})" for route, what in patterns if route not in MATRIX]
    assert not missing, (
        "URL patterns without an authorization matrix entry:\n"
        + "\n".join(missing)
        + "\nAdd a Case to _cases() in tests/security/test_authz_matrix.py for each (key: the route exactly as "
        "above), with the expected status for every role (anonymous, visitor_a, visitor_b, agent_other_queue, "
        "agent, manager, admin) and every kind of id it takes (es_*, ru_*, assigned_*, missing)."
    )
    stale = sorted(set(MATRIX) - {route for route, _ in patterns})
    assert not stale, f"matrix entries for URL patterns that no longer exist: {stale}"
