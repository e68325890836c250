"""Trend charts as server-rendered SVG: no chart library, no script, nothing the CSP has to allow.

A chart is a list of series (one per language) over the same buckets; the SVG draws polylines with a legend
and axis labels, and carries a <title> per point so the numbers are readable on hover and by screen readers
(the same figures are in the tables and the CSV).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Eight distinguishable colours with ≥ 3:1 contrast on white (WCAG non-text contrast).
PALETTE = ["#0b57d0", "#b3261e", "#146c2e", "#8a5300", "#6a1b9a", "#00696f", "#5d4037", "#c2185b"]
WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 640, 220, 48, 28, 12, 110


@dataclass
class Series:
    label: str
    values: list[float | None]  # one per bucket; None = no data


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 60:
            return f"{value / 60:.0f} min"
        return f"{value:.0f} s"
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def line_chart(*, title: str, buckets: list[datetime], series: list[Series], unit: str = "") -> SafeString:
    """An accessible SVG line chart (role=img, <title>, <desc>), or a short text when there is nothing to draw."""
    # A language with nothing to show (all empty or zero) stays off the chart; the tables still list it.
    drawn = [s for s in series if any(v for v in s.values)][: len(PALETTE)]
    if not buckets or not drawn:
        return mark_safe(f'<p class="chart-empty">{escape(title)}: no data in this range.</p>')  # noqa: S308 - escaped
    top = max(v for s in drawn for v in s.values if v is not None) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(buckets) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return LEFT + i * step, TOP + plot_h * (1 - v / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{_id(title)}-t">',
        f'<title id="{_id(title)}-t">{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#8a939e"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#8a939e"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" class="tick">{escape(_fmt(top, unit))}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" class="tick">0</text>',
    ]
    for i in sorted({0, len(buckets) // 2, len(buckets) - 1}):
        label = timezone.localtime(buckets[i]).strftime("%d %b %H:%M" if len(buckets) <= 48 else "%d %b")
        parts.append(
            f'<text x="{LEFT + i * step:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="tick">{label}</text>'
        )
    # Each bucket's time formatted once, not once per point of every series.
    stamps = [timezone.localtime(at).strftime("%d %b %H:%M") for at in buckets]
    for n, s in enumerate(drawn):
        colour = PALETTE[n]
        name = escape(s.label)
        points = [(i, v, *xy(i, v)) for i, v in enumerate(s.values) if v is not None]
        path = " ".join(f"{x:.1f},{y:.1f}" for _, _, x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
            f"<title>{name} {stamps[i]}: {escape(_fmt(v, unit))}</title></circle>"
            for i, v, x, y in points
        )
        ly = TOP + 14 * n + 6
        parts.append(f'<rect x="{WIDTH - RIGHT + 10}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 26}" y="{ly + 1}" class="legend">{name}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text in it went through escape(); the rest is numbers


def _id(title: str) -> str:
    return "chart-" + "".join(c if c.isalnum() else "-" for c in title.lower())[:40]
