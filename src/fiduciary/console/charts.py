"""Small charts drawn on the server as inline SVG: pure functions from numbers to markup.

No script, no chart library, no CDN; no ``style=`` attribute either (the console's CSP has
``style-src 'self'``), so colours and sizes are SVG presentation attributes. Each chart is an
``img`` with a ``<title>`` and an ``aria-label``, and comes with its numbers as rows for the
text alternative the page shows beside it (a table in a ``<details>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

__all__ = ["Bar", "Chart", "alerts_per_day", "bar_chart", "on_time_by_month"]

# The stylesheet's palette (console.css): accent, muted ink, rule lines, red, green.
_ACCENT, _INK, _LINE, _RED, _GREEN = "#0b5cad", "#4a5360", "#c9d0d8", "#a4161a", "#1d6b34"
_WIDTH, _HEIGHT = 600, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 8, 12, 28


@dataclass(frozen=True)
class Bar:
    """One bar: its axis label, its value (None: no data, no bar), the value as read aloud,
    and its colour; ``mark_zero``: a zero is drawn as a sliver, unlike no data."""

    label: str
    value: float | None
    text: str
    fill: str = _ACCENT
    mark_zero: bool = False


@dataclass(frozen=True)
class Chart:
    """The SVG and the numbers behind it (column headings, then one row per bar); with no
    number to draw, what to say instead."""

    title: str
    svg: Markup
    columns: tuple[str, str]
    rows: list[tuple[str, str]]
    empty: str | None = None


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def bar_chart(title: str, bars: Sequence[Bar], top: float, axis: Sequence[tuple[float, str]],
              label_every: int = 1) -> Markup:
    """A vertical bar chart scaled to ``top``, with horizontal rules at ``axis`` (value,
    label) and every ``label_every``-th bar labelled underneath."""
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(len(bars), 1)
    scale = plot_h / top if top > 0 else 0.0
    base = _TOP + plot_h
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'viewBox="0 0 {_WIDTH} {_HEIGHT}" width="100%" aria-label="{escape(title)}" '
             f'font-family="system-ui, sans-serif" font-size="11">',
             f"<title>{escape(title)}</title>"]
    for value, text in axis:
        y = base - value * scale
        parts.append(f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{_num(y)}" y2="{_num(y)}" '
                     f'stroke="{_LINE}" stroke-width="1"/>')
        parts.append(f'<text x="{_LEFT - 4}" y="{_num(y + 4)}" text-anchor="end" '
                     f'fill="{_INK}">{escape(text)}</text>')
    for i, bar in enumerate(bars):
        x = _LEFT + i * slot
        if bar.value is not None and (bar.value > 0 or bar.mark_zero):
            h = max(min(bar.value, top) * scale, 2.0)
            parts.append(f'<rect x="{_num(x + slot * 0.15)}" y="{_num(base - h)}" '
                         f'width="{_num(slot * 0.7)}" height="{_num(h)}" fill="{bar.fill}">'
                         f"<title>{escape(bar.label)}: {escape(bar.text)}</title></rect>")
        if i % label_every == 0:
            parts.append(f'<text x="{_num(x + slot / 2)}" y="{_HEIGHT - 10}" '
                         f'text-anchor="middle" fill="{_INK}">{escape(bar.label)}</text>')
    parts.append(f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{base}" y2="{base}" '
                 f'stroke="{_INK}" stroke-width="1"/></svg>')
    return Markup("".join(parts))  # noqa: S704 - every text inside is escaped above


def _nice_top(largest: int) -> int:
    """A round upper bound for a count axis: 1, 2, 5, 10, 20, 50, ..."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= largest:
                return step * m
        step *= 10


def alerts_per_day(days: Sequence[tuple[date, int]]) -> Chart:
    """Alerts raised per day (oldest first), a label every week."""
    title = f"Alerts raised per day, last {len(days)} days"
    top = _nice_top(max((n for _, n in days), default=0) or 1)
    bars = [Bar(d.strftime("%d %b"), n, f"{n} alert{'s' if n != 1 else ''}") for d, n in days]
    svg = bar_chart(title, bars, top, [(0, "0"), (top / 2, _num(top / 2)), (top, str(top))],
                    label_every=7)
    return Chart(title, svg, ("Day", "Alerts"), [(d.isoformat(), str(n)) for d, n in days],
                 None if any(n for _, n in days) else "No alert was raised in these days.")


def on_time_by_month(months: Sequence[tuple[date, int, int]], target: float = 0.95) -> Chart:
    """Share of data-subject requests answered on time per month (month, due, on time),
    oldest first; a month below ``target`` in red, a month with none due without a bar."""
    title = f"Data-subject requests answered on time, per month, last {len(months)} months"
    bars, rows = [], []
    for month, due, on_time in months:
        label = month.strftime("%b %Y")
        if not due:
            bars.append(Bar(month.strftime("%b"), None, "none due"))
            rows.append((label, "none due"))
            continue
        rate = on_time / due
        text = f"{_num(100 * rate)}% ({on_time} of {due})"
        bars.append(Bar(month.strftime("%b"), rate, text, _RED if rate < target else _GREEN,
                        mark_zero=True))
        rows.append((label, text))
    svg = bar_chart(title, bars, 1.0, [(0, "0%"), (0.5, "50%"), (1.0, "100%")])
    return Chart(title, svg, ("Month", "On time"), rows,
                 None if any(due for _, due, _ in months) else
                 "No request was due for an answer in these months.")
