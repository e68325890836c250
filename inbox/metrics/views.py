"""The managers' dashboard, its CSV export and the JSON API: one set of figures (selectors.overview) three ways.

Managers and admins only; an agent gets 403 (the page exists, it is not theirs). The range is a preset
(?range=1h|24h|7d|30d) or explicit ?start=…&end=… (ISO 8601); a bad value falls back to the last 24 hours
with a note, never an error page.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from inbox.agents.selectors import role_of
from inbox.metrics.charts import Series, line_chart
from inbox.metrics.selectors import overview
from inbox.metrics.types import Overview, TimeRange

PRESETS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_RANGE = timedelta(days=366)


def parse_range(params: Any, now: datetime) -> tuple[TimeRange, str, str]:
    """(range, preset name or "custom", a note when the request's range was not usable)."""
    start_raw, end_raw = params.get("start", ""), params.get("end", "")
    if start_raw or end_raw:
        start, end = parse_datetime(start_raw or ""), parse_datetime(end_raw or "") if end_raw else now
        if start is not None and end is not None:
            start = timezone.make_aware(start) if timezone.is_naive(start) else start
            end = timezone.make_aware(end) if timezone.is_naive(end) else end
            if start < end and end - start <= MAX_RANGE:
                return TimeRange(start, end), "custom", ""
        return TimeRange(now - PRESETS["24h"], now), "24h", "That range was not usable; showing the last 24 hours."
    preset = params.get("range", "24h")
    if preset not in PRESETS:
        return TimeRange(now - PRESETS["24h"], now), "24h", f"Unknown range {preset!r}; showing the last 24 hours."
    return TimeRange(now - PRESETS[preset], now), preset, ""


def bucket_for(span: TimeRange) -> int:
    return 3600 if span.hours <= 48 else 86400


def managers_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            if request.path.startswith("/api/"):
                return JsonResponse({"error": "sign in first"}, status=401)
            return login_required(view)(request, *args, **kwargs)
        if not role_of(request.user).is_manager:
            if request.path.startswith("/api/"):
                return JsonResponse({"error": "the metrics are for managers"}, status=403)
            return render(request, "metrics/forbidden.html", {"nav": "dashboard"}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


def _figures(request: HttpRequest) -> tuple[Overview, str, str]:
    now = timezone.now()
    span, preset, note = parse_range(request.GET, now)
    return overview(range=span, now=now, bucket_seconds=bucket_for(span)), preset, note


def _charts(data: Overview) -> dict[str, Any]:
    buckets = sorted({p.at for p in data.trend})
    index = {at: i for i, at in enumerate(buckets)}
    by_language: dict[str, dict[str, list[float | None]]] = defaultdict(
        lambda: {k: [None] * len(buckets) for k in ("arrivals", "waiting", "frt")}
    )
    for p in data.trend:
        series = by_language[p.language or "other"]
        series["arrivals"][index[p.at]] = p.arrivals
        series["waiting"][index[p.at]] = p.waiting
        series["frt"][index[p.at]] = p.first_response_p50
    # The busiest languages first; the chart legend has room for eight.
    order = sorted(by_language, key=lambda lang: -sum(v or 0 for v in by_language[lang]["arrivals"]))

    def chart(kind: str, title: str, unit: str = "") -> Any:
        return line_chart(
            title=title, buckets=buckets, series=[Series(lang, by_language[lang][kind]) for lang in order], unit=unit
        )

    return {
        "arrivals_chart": chart("arrivals", "Arrivals per language"),
        "waiting_chart": chart("waiting", "Customers waiting per language"),
        "frt_chart": chart("frt", "First response time (median) per language", unit="s"),
    }


def _summary(data: Overview) -> dict[str, Any]:
    """The strip at the top: where customers wait longest right now, and whether the queues are staffed."""
    waiting = [q for q in data.queues if q.oldest_wait_seconds is not None]
    worst = max(waiting, key=lambda q: q.oldest_wait_seconds or 0.0, default=None)
    short = [q for q in data.queues if q.agents_needed is not None and q.agents_needed > q.agents_online]
    return {
        "waiting": sum(q.waiting_now for q in data.queues),
        "worst": worst,
        "breaches": sum(q.first_response_breaches for q in data.queues),
        "online": sum(q.agents_online for q in data.queues),
        "understaffed": short,
        "failed": sum(c.deliveries_failed for c in data.channels),
    }


@require_GET
@managers_only
def dashboard(request: HttpRequest) -> HttpResponse:
    data, preset, note = _figures(request)
    context = {
        "summary": _summary(data),
        "bucket_label": "hour" if data.bucket_seconds <= 3600 else "day",
        "nav": "dashboard",
        "data": data,
        "preset": preset,
        "presets": list(PRESETS),
        "note": note,
        "query": request.GET.urlencode(),
        **_charts(data),
    }
    template = "metrics/_body.html" if request.GET.get("partial") == "body" else "metrics/dashboard.html"
    return render(request, template, context)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@require_GET
@managers_only
def metrics_json(request: HttpRequest) -> JsonResponse:
    data, preset, note = _figures(request)
    body = _jsonable(asdict(data))
    body["range"] = {"start": data.range.start.isoformat(), "end": data.range.end.isoformat(), "preset": preset}
    if note:
        body["note"] = note
    return JsonResponse(body)


QUEUE_COLUMNS = [
    "language", "name", "waiting_now", "oldest_wait_seconds", "open", "assigned", "arrivals", "arrivals_per_hour",
    "first_response_p50", "first_response_p90", "first_responses", "resolution_p50", "resolution_p90", "resolutions",
    "first_response_target_seconds", "first_response_breaches", "resolution_target_seconds", "resolution_breaches",
    "agents_online", "load", "capacity", "handle_time_seconds", "agents_needed",
]  # fmt: skip
CHANNEL_COLUMNS = [
    "kind", "name", "waiting_now", "oldest_wait_seconds", "open", "assigned", "arrivals", "arrivals_per_hour",
    "first_response_p50", "first_response_p90", "resolution_p50", "resolution_p90", "replies_sent",
    "deliveries_failed", "deliveries_retrying",
]  # fmt: skip


@require_GET
@managers_only
def dashboard_csv(request: HttpRequest) -> HttpResponse:
    """The dashboard's tables as one CSV: a section per table, range and generation time in the first rows."""
    data, _, _ = _figures(request)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = f"{data.range.start:%Y%m%dT%H%M}-{data.range.end:%Y%m%dT%H%M}"
    response["Content-Disposition"] = f'attachment; filename="switchboard-metrics-{stamp}.csv"'
    out = csv.writer(response)
    out.writerow(["range_start", data.range.start.isoformat(), "range_end", data.range.end.isoformat()])
    out.writerow(["generated_at", data.generated_at.isoformat()])
    out.writerow([])
    out.writerow(["queue", *QUEUE_COLUMNS])
    for q in data.queues:
        out.writerow(["queue", *[_cell(getattr(q, c)) for c in QUEUE_COLUMNS]])
    out.writerow([])
    out.writerow(["channel", *CHANNEL_COLUMNS])
    for ch in data.channels:
        out.writerow(["channel", *[_cell(getattr(ch, c)) for c in CHANNEL_COLUMNS]])
    out.writerow([])
    out.writerow(["trend", "bucket_start", "language", "arrivals", "first_response_p50", "waiting"])
    for p in data.trend:
        out.writerow(["trend", p.at.isoformat(), p.language, p.arrivals, _cell(p.first_response_p50), p.waiting])
    return response


def _cell(value: Any) -> Any:
    """Numbers as numbers; a spreadsheet formula in a name (=, +, -, @) is neutralised (CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
