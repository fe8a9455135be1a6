"""Inline SVG charts for the HTML report: text, no files, no scripts, no fonts.

Each chart scales with its container (a viewBox and no fixed size), carries an accessible
name (``role="img"``, ``<title>``, ``<desc>`` with the numbers in words) and uses a palette
that stays distinct for colour-blind readers (Okabe & Ito), with dash patterns on top of
colour so that lines also differ in greyscale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Okabe-Ito, without the yellow (too little contrast on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "6 3", "2 3", "8 3 2 3")


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def dash(i: int) -> str:
    return DASHES[(i // len(PALETTE)) % len(DASHES)]


@dataclass
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    index: int  # colour and dash


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi]; whole numbers only with ``integer``."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}"


def _svg_open(width: int, height: int, title: str, desc: str, ident: str) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{ident}-t">{escape(title)}</title>',
        f'<desc id="{ident}-d">{escape(desc)}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ident: str,
    desc: str,
    width: int = 520,
    height: int = 320,
) -> str:
    """Lines of (x, y) points on shared axes; the legend is left to the caller (HTML)."""
    left, right, top, bottom = 60, 14, 38, 46
    xs = [p[0] for s in series for p in s.points] or [0.0, 1.0]
    ys = [p[1] for s in series for p in s.points] or [0.0, 1.0]
    xt = nice_ticks(min(xs), max(xs), 5, integer=all(float(x).is_integer() for x in xs))
    yt = nice_ticks(min(ys), max(ys), 5)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def py(y: float) -> float:
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    out = _svg_open(width, height, title, desc, ident)
    out.append('<g font-family="system-ui, sans-serif" font-size="13" fill="#1a1a1a">')
    for t in yt:
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
            'stroke="#d0d0d0" stroke-width="1"/>'
        )
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in xt:
        out.append(
            f'<text x="{px(t):.1f}" y="{top + ph + 18}" text-anchor="middle">{_fmt(t)}</text>'
        )
    out.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#555"/>'
    )
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#555"/>')
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">'
        f"{escape(xlabel)}</text>"
    )
    # The y label sits above the axis, unrotated: it stays clear of the tick labels when
    # a phone-width window enlarges the text.
    out.append(f'<text x="4" y="{top - 18}">{escape(ylabel)}</text>')
    out.append("</g>")
    for s in series:
        if not s.points:
            continue
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        d = f' stroke-dasharray="{dash(s.index)}"' if dash(s.index) else ""
        out.append(
            f'<polyline points="{pts}" fill="none" stroke="{color(s.index)}" '
            f'stroke-width="2.2" stroke-linejoin="round"{d}><title>{escape(s.label)}</title>'
            "</polyline>"
        )
        if len(s.points) == 1:
            x, y = s.points[0]
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color(s.index)}"/>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    bars: Sequence[tuple[str, float, int]],
    *,
    title: str,
    xlabel: str,
    ident: str,
    desc: str,
    value_text: Sequence[str],
    width: int = 560,
) -> str:
    """Horizontal bars (label, value, colour index), each under its label, values written at
    the bar's end. Labels above the bars leave the bars the full width on a narrow screen."""
    left, right, top, row = 8, 110, 8, 46
    height = top + row * len(bars) + 48
    vmax = max((b[1] for b in bars), default=1.0) or 1.0
    ticks = nice_ticks(0.0, vmax, 4)
    pw = width - left - right

    def px(v: float) -> float:
        return left + v / ticks[-1] * pw

    out = _svg_open(width, height, title, desc, ident)
    out.append('<g font-family="system-ui, sans-serif" font-size="13" fill="#1a1a1a">')
    base = top + row * len(bars)
    for t in ticks:
        out.append(
            f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top}" y2="{base}" stroke="#d0d0d0"/>'
        )
        out.append(f'<text x="{px(t):.1f}" y="{base + 18}" text-anchor="middle">{_fmt(t)}</text>')
    for i, ((label, value, ci), text) in enumerate(zip(bars, value_text)):
        y = top + i * row
        out.append(f'<text x="{left}" y="{y + 16}">{escape(label)}</text>')
        out.append(
            f'<rect x="{left}" y="{y + 22}" width="{max(0.5, px(value) - left):.1f}" '
            f'height="18" fill="{color(ci)}"><title>{escape(label)}: {escape(text)}'
            "</title></rect>"
        )
        out.append(f'<text x="{px(value) + 5:.1f}" y="{y + 37}">{escape(text)}</text>')
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">'
        f"{escape(xlabel)}</text>"
    )
    out.append("</g></svg>")
    return "\n".join(out)
