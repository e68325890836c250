"""A strict Content-Security-Policy for the agents' pages (customer content is hostile: DESIGN.md).

Everything the inbox loads is its own: scripts and styles from /static/, live updates over its own websocket.
No inline script or style, so an HTML e-mail that slipped past sanitising still could not run anything; e-mail
bodies are shown from their own URL in a sandboxed frame with an even stricter policy (see agents/views_ui).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",  # CSP3: 'self' covers ws:/wss: to the same host
        "frame-src 'self'",
        "frame-ancestors 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)

# The pages this policy is for; the admin keeps Django's own, the demo page is a stand-in for a customer's site.
PREFIXES = ("/inbox", "/login", "/logout", "/contacts", "/dashboard")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith(PREFIXES) and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = POLICY
        return response
