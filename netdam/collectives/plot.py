"""The one SVG line chart of netdam: ``netdam bench --plot`` (bus bandwidth against
message size) and ``netdam sim --plot`` (modeled time against size or ranks).

Owns the drawing and nothing else: given named series of (x, y) points (for the bench,
size in bytes and busbw in GB/s) it returns one self-contained SVG document with a log2 x axis (ticks at powers of
two, labelled 4K, 1M, ...), a y axis that turns logarithmic when the values span more
than two decades (a memcpy baseline next to an emulator otherwise flattens every other
line), axis labels, a title and a legend. Each series is one ``<polyline
class="series">`` (plus a marker per point, so a one-point series still shows); series
whose name says they are a reference (another library or a raw baseline) are dashed.
No dependency beyond the standard library.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 820, 500
LEFT, RIGHT, TOP, BOTTOM = 80, 230, 50, 60     # margins; the legend sits in RIGHT
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#17becf", "#7f7f7f", "#bcbd22")
#: a y range wider than this ratio is drawn on a log axis
LOG_Y_SPAN = 100.0


def size_label(nbytes: float) -> str:
    """1024 -> '1K', 3 << 20 -> '3M': nccl-tests' way of naming sizes."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{int(nbytes) >> shift}{unit}"
    return f"{nbytes:g}"


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw)


class _Axis:
    """Maps a data range onto a pixel range, linear or log, and proposes ticks."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool, base: int):
        self.log, self.base, self.p0, self.p1 = log, base, p0, p1
        if log:
            self.lo = base ** math.floor(math.log(lo, base))
            self.hi = base ** math.ceil(math.log(hi, base))
            if self.hi <= self.lo:
                self.lo, self.hi = self.lo / base, self.hi * base
        else:
            step = _nice_step(hi or 1.0)
            self.lo, self.hi, self.step = 0.0, math.ceil((hi or 1.0) / step) * step, step

    def __call__(self, v: float) -> float:
        if self.log:
            f = math.log(v / self.lo) / math.log(self.hi / self.lo)
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + f * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if not self.log:
            n = round((self.hi - self.lo) / self.step)
            return [self.lo + i * self.step for i in range(n + 1)]
        k0, k1 = round(math.log(self.lo, self.base)), round(math.log(self.hi, self.base))
        every = max(1, math.ceil((k1 - k0) / 12))          # at most ~12 labels
        return [float(self.base ** k) for k in range(k0, k1 + 1, every)]


def busbw_svg(series: dict[str, list[tuple[int, float]]], title: str,
              dashed: set[str] = frozenset()) -> str:
    """The busbw chart as SVG text; ``series`` maps a legend name to (size, busbw)."""
    return line_chart(series, title=title, xlabel="message size (bytes, log scale)",
                      ylabel="busbw (GB/s)", dashed=dashed)


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, xlabel: str,
               ylabel: str, x_bytes: bool = True, dashed: set[str] = frozenset()) -> str:
    """SVG text of named series of (x, y) points: a log2 x axis (labelled as sizes when
    ``x_bytes``, else as plain numbers), a y axis that turns logarithmic over wide
    ranges, one ``<polyline class="series">`` per series (dashed if named in
    ``dashed``) and a legend. Points with a value <= 0 are left out."""
    points = [(s, b) for pts in series.values() for s, b in pts]
    sizes = [s for s, _ in points if s > 0] or [1]
    values = [b for _, b in points if b > 0] or [1.0]
    log_y = max(values) / min(values) > LOG_Y_SPAN
    x = _Axis(min(sizes), max(sizes), LEFT, WIDTH - RIGHT, True, 2)
    y = _Axis(min(values), max(values), HEIGHT - BOTTOM, TOP, log_y, 10)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="15">'
           f'{escape(title)}</text>']
    for v in x.ticks():
        px = x(v)
        out.append(f'<line class="grid" x1="{px:.1f}" y1="{TOP}" x2="{px:.1f}" '
                   f'y2="{HEIGHT - BOTTOM}" stroke="#e5e5e5"/>')
        label = size_label(v) if x_bytes else f"{v:g}"
        out.append(f'<text class="xtick" x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                   f'text-anchor="middle">{label}</text>')
    for v in y.ticks():
        py = y(v)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{py:.1f}" x2="{WIDTH - RIGHT}" '
                   f'y2="{py:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text class="ytick" x="{LEFT - 6}" y="{py + 4:.1f}" '
                   f'text-anchor="end">{v:g}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
               f'height="{HEIGHT - TOP - BOTTOM}" fill="none" stroke="black"/>')
    out.append(f'<text class="xlabel" x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 18}" '
               f'text-anchor="middle">{escape(xlabel)}</text>')
    ylabel = escape(ylabel) + (" (log scale)" if log_y else "")
    out.append(f'<text class="ylabel" x="18" y="{(TOP + HEIGHT - BOTTOM) / 2}" '
               f'text-anchor="middle" transform="rotate(-90 18 {(TOP + HEIGHT - BOTTOM) / 2})"'
               f'>{ylabel}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        dash = ' stroke-dasharray="6 4"' if name in dashed else ""
        drawn = [(x(s), y(b)) for s, b in sorted(pts) if s > 0 and b > 0]
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in drawn)
        out.append(f'<polyline class="series" data-name="{escape(name)}" points="{coords}" '
                   f'fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>'
                for px, py in drawn]
        ly = TOP + 10 + 20 * i
        lx = WIDTH - RIGHT + 14
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text class="legend" x="{lx + 30}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
