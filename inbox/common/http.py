"""Small JSON helpers shared by the API views: clear errors for bad input, nothing else."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def json_body(request: HttpRequest, *, max_bytes: int = 256 * 1024) -> dict[str, Any]:
    if len(request.body) > max_bytes:
        raise BadRequest(f"request body is larger than {max_bytes} bytes", status=413)
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise BadRequest(f"expected Content-Type application/json, got {content_type or 'none'}", status=415)
    try:
        data = json.loads(request.body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def field_str(
    data: dict[str, Any], key: str, *, required: bool = True, max_length: int | None = None, default: str = ""
) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise BadRequest(f"field {key!r} is required")
        return default
    if not isinstance(value, str):
        raise BadRequest(f"field {key!r} must be a string")
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"field {key!r} is longer than {max_length} characters", status=413)
    return value


def client_ip(request: HttpRequest) -> str:
    """The client's address, for rate limits and sign-in throttling.

    Behind a reverse proxy (SWITCHBOARD_TRUST_X_FORWARDED_FOR): the LAST X-Forwarded-For entry, the one our proxy
    appended (nginx's $proxy_add_x_forwarded_for, most load balancers). Entries before it come from the client
    and can be anything, so taking the first would let a client pick a new address for every request.
    """
    from django.conf import settings

    if settings.SWITCHBOARD_TRUST_X_FORWARDED_FOR:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return str(request.META.get("REMOTE_ADDR") or "unknown")
