"""Small server-rendered SVG charts (no script, nothing from a CDN; the CSP allows neither).

Colours come from classes in the shared stylesheet (`.chart ...`), since inline styles are refused.
Every bar and point carries a <title>, so hovering shows the exact figure, and the page puts the
same figures in a table for screen readers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from math import floor, log10

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 220
NARROW = 400  # for a chart that shares a row with another: same text size, fewer pixels per day
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    css_class: str


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is at least `value` (1 for nothing), for a readable axis."""
    if value <= 0:
        return 1
    magnitude = 10 ** floor(log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def percent_label(value: float) -> str:
    return f"{value * 100:.0f}%" if float(value * 100).is_integer() else f"{value * 100:.1f}%"


@dataclass(frozen=True)
class _Frame:
    width: int
    days: Sequence[date]
    y_max: float

    @property
    def plot_height(self) -> float:
        return HEIGHT - TOP - BOTTOM

    @property
    def slot(self) -> float:
        return (self.width - LEFT - RIGHT) / max(len(self.days), 1)

    def x(self, index: int) -> float:
        return LEFT + self.slot * (index + 0.5)

    def y(self, value: float) -> float:
        return TOP + self.plot_height * (1 - min(value, self.y_max) / self.y_max)

    def open(self, title: str, y_label: Callable[[float], str]) -> list[str]:
        parts = [
            f'<svg class="chart" viewBox="0 0 {self.width} {HEIGHT}" role="img" aria-label="{escape(title)}" '
            'xmlns="http://www.w3.org/2000/svg">',
            f"<title>{escape(title)}</title>",
        ]
        for fraction in (0, 0.5, 1):
            y = self.y(self.y_max * fraction)
            parts.append(
                f'<line class="chart-grid" x1="{LEFT}" x2="{self.width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            )
            parts.append(
                f'<text class="chart-axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{escape(y_label(self.y_max * fraction))}</text>"
            )
        last = len(self.days) - 1
        for index, day in enumerate(self.days):
            # The last day and every seventh before it (same weekday): readable, never crowded.
            if (last - index) % 7 == 0:
                parts.append(
                    f'<text class="chart-axis" x="{self.x(index):.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                    f"{day.strftime('%m-%d')}</text>"
                )
        return parts


def bar_chart(
    title: str,
    days: Sequence[date],
    series: Sequence[Series],
    *,
    y_label: Callable[[float], str] = _number,
    width: int = WIDTH,
) -> Markup:
    """Bars per day, the series stacked bottom-up in the order given. Counts: the axis goes to at
    least 2, so its middle line is a whole number."""
    totals = [sum(s.values[i] for s in series) for i in range(len(days))]
    frame = _Frame(width, days, max(2, nice_ceiling(max(totals, default=0))))
    parts = frame.open(title, y_label)
    for index, day in enumerate(days):
        base = 0.0
        detail = ", ".join(f"{_number(s.values[index])} {s.name}" for s in series)
        for s in series:
            value = s.values[index]
            if value <= 0:
                continue
            height = frame.plot_height * value / frame.y_max
            y = TOP + frame.plot_height - base - height
            parts.append(
                f'<rect class="chart-bar {s.css_class}" x="{frame.x(index) - frame.slot * 0.35:.1f}" '
                f'y="{y:.1f}" width="{frame.slot * 0.7:.1f}" height="{height:.1f}">'
                f"<title>{day.isoformat()}: {escape(detail)}</title></rect>"
            )
            base += height
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text and label in parts is escaped


def line_chart(
    title: str,
    days: Sequence[date],
    values: Sequence[float | None],
    *,
    y_max: float | None = None,
    y_label: Callable[[float], str] = _number,
    css_class: str = "chart-line",
    width: int = WIDTH,
) -> Markup:
    """A line through the days that have a value; days without one (None) break the line."""
    known = [v for v in values if v is not None]
    frame = _Frame(width, days, y_max if y_max is not None else nice_ceiling(max(known, default=0)))
    parts = frame.open(title, y_label)
    segments: list[list[str]] = [[]]
    for index, (day, value) in enumerate(zip(days, values, strict=True)):
        if value is None:
            segments.append([])
            continue
        point = f"{frame.x(index):.1f},{frame.y(value):.1f}"
        segments[-1].append(point)
        parts.append(
            f'<circle class="chart-point {css_class}" cx="{frame.x(index):.1f}" cy="{frame.y(value):.1f}" r="3">'
            f"<title>{day.isoformat()}: {escape(y_label(value))}</title></circle>"
        )
    for points in segments:
        if len(points) > 1:
            parts.append(f'<polyline class="{css_class}" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text and label in parts is escaped
