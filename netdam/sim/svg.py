"""A small SVG line chart (log-log), enough for time-vs-size plots of several algorithms.

Owns the drawing of ``netdam sim --plot``: one series per algorithm, log axes with
decade ticks, a legend; plain SVG 1.1 text any browser shows. No plotting library.
"""

from __future__ import annotations

import math
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f")
W, H = 720, 460
LEFT, RIGHT, TOP, BOTTOM = 80, 170, 40, 60


def _decades(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0 ** e for e in range(a, b + 1)]


def _binary(lo: float, hi: float) -> list[float]:
    """Powers of two (every 2nd, 4th... power when the range is wide) for byte axes."""
    a, b = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    step = max(1, -(-(b - a) // 10))
    return [2.0 ** e for e in range(a - a % step, b + 1, step)]


def _fmt(v: float, unit: str) -> str:
    if unit == "B":
        for suffix, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if v >= scale:
                return f"{v / scale:g} {suffix}"
        return f"{v:g} B"
    return f"{v:g}"


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, xlabel: str,
               ylabel: str, xunit: str = "") -> str:
    """SVG text of ``series`` (name -> [(x, y)], all positive) on log-log axes."""
    pts = [p for ps in series.values() for p in ps if p[0] > 0 and p[1] > 0]
    if not pts:
        raise ValueError("nothing to plot: every value must be positive")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x0 == x1:
        x0, x1 = x0 / 2, x1 * 2
    y0, y1 = 10 ** math.floor(math.log10(y0)), 10 ** math.ceil(math.log10(y1))
    if y0 == y1:
        y1 = y0 * 10
    lx0, lx1, ly0, ly1 = (math.log10(v) for v in (x0, x1, y0, y1))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (math.log10(x) - lx0) / (lx1 - lx0) * pw

    def py(y: float) -> float:
        return TOP + ph - (math.log10(y) - ly0) / (ly1 - ly0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{LEFT + pw / 2}" y="22" text-anchor="middle" font-size="15">'
           f'{escape(title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" '
           f'stroke="#444"/>']
    for t in (_binary(x0, x1) if xunit == "B" else _decades(x0, x1)):
        if x0 <= t <= x1:
            x = px(t)
            out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" '
                       f'stroke="#ddd"/>')
            out.append(f'<text x="{x:.1f}" y="{TOP + ph + 18}" text-anchor="middle">'
                       f'{escape(_fmt(t, xunit))}</text>')
    for t in _decades(y0, y1):
        y = py(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 15}" text-anchor="middle">'
               f'{escape(xlabel)}</text>')
    out.append(f'<text x="18" y="{TOP + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {TOP + ph / 2})">{escape(ylabel)}</text>')
    for i, (name, ps) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        ps = sorted(p for p in ps if p[0] > 0 and p[1] > 0)
        if ps:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in ps)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                       f'stroke-width="2"/>')
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>'
                    for x, y in ps]
        ly = TOP + 10 + 20 * i
        out.append(f'<line x1="{W - RIGHT + 15}" y1="{ly}" x2="{W - RIGHT + 40}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{W - RIGHT + 46}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


__all__ = ["line_chart"]
