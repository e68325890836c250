"""Real-browser fixtures: Debian's Chromium driven by Playwright against the live stack.

Everything is real: Chromium (headless), uvicorn serving inbox.asgi (`web_server`), the Celery worker process,
PostgreSQL and Redis. One browser for the package; one browser context (its own storage, locale, network) per
visitor. Chromium comes from Debian (`.ci/chromium.sh`); Playwright's own browser download is not used.

Customer pages are served by a small loopback HTTP server on another port, so the widget runs cross-origin
exactly as on a customer's website (its API calls carry that Origin; CORS applies).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.factories import PASSWORD

try:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev dependencies include playwright
    sync_playwright = expect = None

TIMEOUT_MS = 15_000  # every locator/expect wait: generous, but bounded
WIDGET_PATH = "/static/switchboard/widget.js"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if sync_playwright is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if shutil.which("chromium") is None:
        return "chromium is not installed: run .ci/chromium.sh (apt-get install chromium)"
    return None


def skip_unless_browser(*, module: bool = False) -> None:
    """Skip locally; in CI (CI set) a missing browser is a broken set-up, never a silent skip."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run here)", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


@pytest.fixture(scope="package", autouse=True)
def _sync_orm_beside_playwright(web_server: Any) -> Iterator[None]:
    """Playwright's sync API keeps its asyncio loop marked as running in this thread between calls, so Django
    would take every ORM call in the tests (and the database flush after each) for a call from async code.
    Nothing here runs on that loop: DJANGO_ALLOW_ASYNC_UNSAFE is Django's documented switch for exactly this.
    Scoped to this package; the servers (which inherit os.environ) are started before it is set."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the package (Debian's, found on PATH)."""
    skip_unless_browser()
    executable = shutil.which("chromium")
    expect.set_options(timeout=TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        # chromium_sandbox=False (Playwright's default, spelled out): Chromium's sandbox cannot start as root or in
        # most containers; the browser only ever loads our own loopback pages.
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, chromium_sandbox=False)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="package")
def widget_src(web_server: Any) -> str:
    """The widget's URL on the install; fails (not skips) when the install does not serve it."""
    src = f"{web_server.url}{WIDGET_PATH}"
    response = httpx.get(src, timeout=10)
    if response.status_code != 200 or "javascript" not in response.headers.get("content-type", ""):
        pytest.fail(
            f"GET {WIDGET_PATH} on the test server answered {response.status_code} "
            f"({response.headers.get('content-type')}): the install must serve the widget",
            pytrace=False,
        )
    return src


class CustomerSite:
    """A customer's website on another loopback port: static HTML pages embedding the one-tag widget."""

    def __init__(self, root: Path) -> None:
        self.root = root

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, name="customer-site", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def page(self, widget_src: str, public_key: str, **data: str) -> str:
        """Write a page with the widget tag (plus optional data-* attributes) and return its URL."""
        attrs = "".join(f' data-{name.replace("_", "-")}="{html.escape(value)}"' for name, value in data.items())
        name = f"shop-{uuid.uuid4().hex[:12]}.html"
        (self.root / name).write_text(
            "<!doctype html>\n<html><head><meta charset='utf-8'><title>Acme Outdoor</title></head>\n"
            "<body style='font-family: sans-serif; margin: 40px'>\n"
            "<h1>Acme Outdoor</h1><p>Tents, boots and everything for the weekend.</p>\n"
            f'<script async src="{html.escape(widget_src)}" data-key="{html.escape(public_key)}"{attrs}></script>\n'
            "</body></html>\n",
            encoding="utf-8",
        )
        return f"{self.url}/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="package")
def customer_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CustomerSite]:
    site = CustomerSite(tmp_path_factory.mktemp("customer-site"))
    try:
        yield site
    finally:
        site.stop()


@dataclass
class WidgetVisitor:
    """One visitor: a browser context (own storage and locale) with a page that embeds the widget."""

    context: BrowserContext
    page: Page
    key: str
    lang: str
    api: str
    errors: list[str] = field(default_factory=list)

    def sb(self, hook: str) -> Locator:
        """A widget element by its test hook (Playwright's CSS engine pierces the open shadow root)."""
        return self.page.locator(f'[data-sb="{hook}"]')

    def messages(self, sender: str | None = None, text: str | None = None) -> Locator:
        selector = '[data-sb="message"]' + (f'[data-from="{sender}"]' if sender else "")
        found = self.sb("messages").locator(selector)
        return found.filter(has_text=text) if text else found

    def open(self) -> None:
        """Open the panel (it may already be open: the widget remembers that across reloads)."""
        panel, launcher = self.sb("panel"), self.sb("launcher")
        expect(panel.or_(launcher).first).to_be_visible()
        if not panel.is_visible():
            launcher.click()
        expect(panel).to_be_visible()
        expect(self.sb("input")).to_be_editable()

    def send(self, text: str) -> None:
        self.sb("input").fill(text)
        self.sb("send").click()

    def storage(self, name: str) -> str | None:
        """localStorage `switchboard:<key>:<name>` as the widget stored it (raw string)."""
        return self.page.evaluate("(k) => window.localStorage.getItem(k)", f"switchboard:{self.key}:{name}")

    def token(self) -> str:
        raw = self.storage("token")
        assert raw, f"the widget stored no token under switchboard:{self.key}:token"
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        return value if isinstance(value, str) else str(value.get("token"))

    def fetch(self, path: str, token: str | None) -> dict[str, Any]:
        """GET on the API from inside this page (this site's Origin, CORS and all): {"status", "body"}."""
        return self.page.evaluate(
            """async ([url, token]) => {
                const headers = token === null ? {} : {Authorization: `Bearer ${token}`};
                const response = await fetch(url, {headers});
                let body = null;
                try { body = await response.json(); } catch (e) { body = null; }
                return {status: response.status, body};
            }""",
            [f"{self.api}{path}", token],
        )


@pytest.fixture
def page_for(
    browser: Browser, web_server: Any, widget_src: str, customer_site: CustomerSite
) -> Iterator[Callable[..., WidgetVisitor]]:
    """page_for(lang, key) opens the install's demo page /demo/?key=<key> in a new context with that locale
    (navigator.language and Accept-Language); page_for(lang, key, site=True) opens a customer page on another
    origin instead, embedding `<script async src=".../widget.js" data-key="<key>">` (extra data-* as kwargs)."""
    opened: list[WidgetVisitor] = []

    def open_page(lang: str, key: str, *, site: bool = False, **data: str) -> WidgetVisitor:
        context = browser.new_context(locale=lang, viewport={"width": 1024, "height": 760})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        visitor = WidgetVisitor(context=context, page=page, key=key, lang=lang, api=web_server.url)
        page.on("pageerror", lambda exc: visitor.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: visitor.errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None,
        )
        opened.append(visitor)
        url = customer_site.page(widget_src, key, **data) if site else f"{web_server.url}/demo/?key={key}"
        response = page.goto(url)
        assert response is not None and response.ok, f"GET {url} -> {response and response.status}"
        if not site:  # the demo page embeds the install's (first) web chat channel: make sure it is this one
            expect(page.locator(f'script[data-key="{key}"]')).to_have_count(1)
        return visitor

    yield open_page
    for visitor in opened:
        if visitor.errors:
            print(f"[{visitor.lang} {visitor.page.url}] browser errors:\n  " + "\n  ".join(visitor.errors))
        visitor.context.close()


@dataclass
class Agent:
    """An agent signed in over HTTP (session cookie + CSRF), as the agent UI is."""

    client: httpx.Client
    ws_url: str

    @property
    def cookie(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.client.cookies.items())

    @contextmanager
    def websocket(self) -> Iterator[ClientConnection]:
        with connect(f"{self.ws_url}/ws/agent/", additional_headers={"Cookie": self.cookie}) as ws:
            yield ws

    def reply(self, conversation_id: int, text: str) -> dict[str, Any]:
        response = self.client.post(
            f"/api/agent/conversations/{conversation_id}/reply",
            json={"text": text},
            headers={"X-CSRFToken": self.client.cookies["csrftoken"]},
        )
        assert response.status_code == 201, f"agent reply -> {response.status_code} {response.text}"
        return response.json()


@pytest.fixture
def agents(web_server: Any) -> Iterator[Callable[[str], Agent]]:
    """agents("ana") -> that agent signed in (make_demo()'s password)."""
    clients: list[httpx.Client] = []

    def sign_in(username: str) -> Agent:
        client = httpx.Client(base_url=web_server.url, timeout=10)
        clients.append(client)
        client.get("/api/agent/session")
        signed_in = client.post(
            "/api/agent/session",
            json={"username": username, "password": PASSWORD},
            headers={"X-CSRFToken": client.cookies["csrftoken"]},
        )
        assert signed_in.status_code == 200, signed_in.text
        return Agent(client=client, ws_url=web_server.url.replace("http://", "ws://"))

    yield sign_in
    for client in clients:
        client.close()


AGENT_VIEWPORT = {"width": 1280, "height": 800}


class Visitor:
    """A web chat visitor talking to the install's visitor API (what the widget does underneath)."""

    def __init__(self, base: str, key: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=10)
        response = self.http.post(f"/api/webchat/v1/{key}/sessions", json={})
        assert response.status_code in (200, 201), response.text
        self.http.headers["Authorization"] = f"Bearer {response.json()['token']}"

    def say(self, text: str) -> None:
        response = self.http.post("/api/webchat/v1/messages", json={"client_id": str(uuid.uuid4()), "text": text})
        assert response.status_code in (200, 202), response.text

    def sees(self) -> list[dict[str, Any]]:
        response = self.http.get("/api/webchat/v1/messages")
        assert response.status_code == 200, response.text
        return list(response.json()["messages"])


@dataclass
class AgentPage:
    page: Any
    base: str

    def sb(self, hook: str) -> Any:
        return self.page.locator(f'[data-sb="{hook}"]')

    def row(self, conversation_id: int) -> Any:
        return self.page.locator(f'[data-sb="conversation-row"][data-id="{conversation_id}"]')

    def live(self) -> None:
        """The page's websocket is connected (events from now on reach it)."""
        expect(self.page.locator("body[data-live=on]")).to_have_count(1)

    def unlabelled_controls(self) -> list[str]:
        """Form controls without an accessible name (a <label>, aria-label or aria-labelledby): must be none."""
        return list(
            self.page.evaluate(
                """() => [...document.querySelectorAll('input, select, textarea, button')]
                .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
                .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                    && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
                .map((el) => el.outerHTML.slice(0, 120))"""
            )
        )

    def shot(self, name: str) -> None:
        from tests.browser.test_widget import SCREENSHOTS, assert_png

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        assert_png(path, AGENT_VIEWPORT["width"], AGENT_VIEWPORT["height"])


@pytest.fixture
def agent_page(browser: Any, web_server: Any) -> Iterator[Callable[[str], AgentPage]]:
    contexts: list[Any] = []

    def sign_in(username: str) -> AgentPage:
        context = browser.new_context(viewport=AGENT_VIEWPORT, locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{web_server.url}/inbox/")
        expect(page).to_have_url(f"{web_server.url}/login/?next=/inbox/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{web_server.url}/inbox/")
        agent = AgentPage(page=page, base=web_server.url)
        agent.errors = errors  # type: ignore[attr-defined]
        return agent

    yield sign_in
    for context in contexts:
        context.close()
