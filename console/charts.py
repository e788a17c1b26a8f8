"""Charts drawn on the server: numbers in, an inline `<svg>` out. No script and no library, so a chart costs the
page a few kilobytes, passes the pages' CSP (presentation attributes, never a style attribute) and reads the same
with scripts off. Each chart is an image with a title and a description for screen readers; the page shows its
numbers in a table beside it as well."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

SVG_NS = "http://www.w3.org/2000/svg"
INK, LINE, BAND, RULE, GRID = "#1b1b1b", "#0b57d0", "#c6dafc", "#b3261e", "#d0d0d0"


@dataclass(frozen=True)
class Series:
    """Values in [y_min, y_max], one per x = 1..n; `low`/`high` (optional, as long) draw a band around them, and
    `tips` a tooltip (an SVG <title>) on each point."""

    values: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    tips: Sequence[str] | None = None


def _f(x: float) -> str:
    return f"{x:.1f}"


def line_chart(series: Series, *, chart_id: str, title: str, description: str, x_label: str,
               threshold: float | None = None, threshold_label: str = "", y_min: float = 0.0, y_max: float = 1.0,
               percent: bool = True, width: int = 640, height: int = 260) -> Markup:
    """A line chart of `series` over x = 1..n with an optional horizontal rule at `threshold`, as SVG markup."""
    left, right, top, bottom = 48, 16, 14, 38
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(series.values)
    span = (y_max - y_min) or 1.0

    def x(i: int) -> float:  # i counts from 1
        return left + (plot_w / 2 if n <= 1 else (i - 1) * plot_w / (n - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - (min(max(v, y_min), y_max) - y_min) / span)

    def tick(v: float) -> str:
        return f"{v:.0%}" if percent else f"{v:g}"

    out = [f'<svg xmlns="{SVG_NS}" class="chart" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-labelledby="{escape(chart_id)}-title '
           f'{escape(chart_id)}-desc">',
           f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
           f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>']
    for k in range(5):  # grid and y ticks
        v = y_min + span * k / 4
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_f(y(v))}" y2="{_f(y(v))}" stroke="{GRID}"/>')
        out.append(f'<text x="{left - 6}" y="{_f(y(v) + 4)}" text-anchor="end" font-size="12" fill="{INK}">'
                   f'{tick(v)}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="{INK}"/>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{INK}"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="12" '
               f'fill="{INK}">{escape(x_label)}</text>')
    if n:
        out.append(f'<text x="{_f(x(1))}" y="{top + plot_h + 16}" text-anchor="middle" font-size="12" '
                   f'fill="{INK}">1</text>')
        if n > 1:
            out.append(f'<text x="{_f(x(n))}" y="{top + plot_h + 16}" text-anchor="middle" font-size="12" '
                       f'fill="{INK}">{n}</text>')
    if n and series.low is not None and series.high is not None:
        upper = [f"{_f(x(i))},{_f(y(v))}" for i, v in enumerate(series.high, start=1)]
        lower = [f"{_f(x(i))},{_f(y(v))}" for i, v in reversed(list(enumerate(series.low, start=1)))]
        out.append(f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{BAND}" '
                   f'fill-opacity="0.7"/>')
    if threshold is not None:
        out.append(f'<line class="threshold" x1="{left}" x2="{left + plot_w}" y1="{_f(y(threshold))}" '
                   f'y2="{_f(y(threshold))}" stroke="{RULE}" stroke-width="2" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{left + plot_w - 4}" y="{_f(y(threshold) - 5)}" text-anchor="end" font-size="12" '
                   f'fill="{RULE}">{escape(threshold_label or tick(threshold))}</text>')
    if n > 1:
        line = " ".join(f"{_f(x(i))},{_f(y(v))}" for i, v in enumerate(series.values, start=1))
        out.append(f'<polyline class="series" points="{line}" fill="none" stroke="{LINE}" stroke-width="2"/>')
    for i, v in enumerate(series.values, start=1):
        tip = series.tips[i - 1] if series.tips is not None else f"{i}: {tick(v)}"
        out.append(f'<circle class="point" cx="{_f(x(i))}" cy="{_f(y(v))}" r="3" fill="{LINE}" data-n="{i}" '
                   f'data-value="{v:.6f}"><title>{escape(tip)}</title></circle>')
    out.append("</svg>")
    return Markup("".join(out))
