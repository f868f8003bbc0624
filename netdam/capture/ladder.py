"""Sequence (ladder) diagrams of netdam captures: in the terminal, as SVG, as PNG.

Owns the drawing of ``netdam dissect --ladder``: one column per UDP endpoint (labelled
with the netdam member id seen sending from it), one arrow per datagram with its opcode
as the label; NAKs and undecodable datagrams in red, retransmissions in yellow/orange,
datagrams a fault injector dropped end in a cross. The SVG is hand-written text (no
dependency); PNG needs matplotlib, which netdam does not depend on — ``render_png``
raises ``PngUnavailable`` when it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from rich.text import Text

from netdam.capture.frames import Endpoint, Frame, endpoint_text
from netdam.wire.fields import Flag, Opcode


class PngUnavailable(RuntimeError):
    """PNG output was asked for but no library to draw it is installed."""


@dataclass(frozen=True)
class Arrow:
    frame: Frame
    t: float              #: seconds since the first frame of the window
    a: int                #: source column
    b: int                #: destination column
    label: str
    style: str            #: "normal" | "nak" | "error" | "retransmit" | "dropped"


@dataclass
class Ladder:
    endpoints: list[Endpoint]
    members: list[str]    #: member id seen sending from each endpoint ("?" if none)
    arrows: list[Arrow]


def _label(f: Frame) -> str:
    if not f.fields:
        return "undecodable"
    op = f.opcode_name
    if f.fields.get("opcode") == Opcode.NAK:
        op = f"NAK {f.status_name}"
    text = f"{op} #{f.fields.get('seq')}"
    if f.fields.get("flags", 0) & Flag.RETRANSMIT:
        text += " (re)"
    if f.fields.get("flags", 0) & Flag.MORE_FRAGS or f.fields.get("frag_off"):
        text += f" @{f.fields.get('frag_off')}"
    return text


def _style(f: Frame) -> str:
    if f.note and f.note.startswith("dropped"):
        return "dropped"
    if f.error:
        return "error"
    if f.fields.get("opcode") == Opcode.NAK:
        return "nak"
    if f.fields.get("flags", 0) & Flag.RETRANSMIT:
        return "retransmit"
    return "normal"


def build(frames: list[Frame]) -> Ladder:
    """The ladder of ``frames`` (already windowed), columns in order of appearance."""
    endpoints: list[Endpoint] = []
    members: dict[Endpoint, str] = {}
    index: dict[Endpoint, int] = {}
    for f in frames:
        for ep in (f.src, f.dst):
            if ep not in index:
                index[ep] = len(endpoints)
                endpoints.append(ep)
        if f.fields and f.src not in members:
            members[f.src] = str(f.fields.get("src"))
    t0 = frames[0].time if frames else 0.0
    arrows = [Arrow(f, f.time - t0, index[f.src], index[f.dst], _label(f), _style(f))
              for f in frames]
    return Ladder(endpoints, [members.get(ep, "?") for ep in endpoints], arrows)


# -- terminal --------------------------------------------------------------------------------

_RICH = {"normal": "", "nak": "bold red", "error": "red", "retransmit": "yellow",
         "dropped": "dim"}


def render_text(ladder: Ladder, width: int = 100) -> list[Text]:
    """The ladder as rich Text lines: a header of endpoints, then one line per arrow."""
    n = max(1, len(ladder.endpoints))
    tcol = 11
    col = max(16, min(30, (width - tcol) // n))
    centers = [tcol + col * i + col // 2 for i in range(n)]
    total = tcol + col * n
    lines = []
    for row in (ladder.members, [endpoint_text(ep) for ep in ladder.endpoints]):
        buf = [" "] * total
        for c, label in zip(centers, row):
            label = label if row is not ladder.members else f"member {label}"
            label = label[:col - 1]
            start = max(0, c - len(label) // 2)
            buf[start:start + len(label)] = label
        lines.append(Text("".join(buf).rstrip(), style="bold"))
    for arrow in ladder.arrows:
        buf = [" "] * total
        t = f"{arrow.t * 1e3:9.3f}ms"
        buf[0:len(t)] = t
        for c in centers:
            buf[c] = "│"
        lo, hi = sorted((centers[arrow.a], centers[arrow.b]))
        if lo == hi:
            hi = lo + 3
            buf[lo + 1:hi + 1] = "──↩"
        else:
            for x in range(lo + 1, hi):
                buf[x] = "─"
            if arrow.a < arrow.b:
                buf[hi - 1] = "✗" if arrow.style == "dropped" else "▶"
            else:
                buf[lo + 1] = "✗" if arrow.style == "dropped" else "◀"
        label = arrow.label
        room = hi - lo - 3
        if room >= 4:
            label = label[:room]
            start = lo + 1 + (hi - lo - len(label)) // 2
            buf[start:start + len(label)] = label
        line = "".join(buf).rstrip()
        if room < 4:
            line += f"  {label}"
        extra = "; ".join(x for x in (arrow.frame.note, arrow.frame.error) if x)
        if extra:
            line += f"  ({extra[:60]})"
        lines.append(Text(line, style=_RICH[arrow.style]))
    return lines


# -- SVG / PNG -------------------------------------------------------------------------------

_COLOR = {"normal": "#222222", "nak": "#c0392b", "error": "#c0392b",
          "retransmit": "#d68910", "dropped": "#999999"}
_COL_W, _ROW_H, _TOP, _LEFT = 170, 26, 64, 90


def _geometry(ladder: Ladder):
    n = max(1, len(ladder.endpoints))
    xs = [_LEFT + _COL_W * i + _COL_W // 2 for i in range(n)]
    width = _LEFT + _COL_W * n + 20
    height = _TOP + _ROW_H * (len(ladder.arrows) + 1)
    return xs, width, height


def render_svg(ladder: Ladder, title: str = "netdam") -> str:
    """The ladder as a standalone SVG document."""
    xs, width, height = _geometry(ladder)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">',
           f"<title>{escape(title)}</title>",
           '<defs>' + "".join(
               f'<marker id="head-{k}" viewBox="0 0 10 10" refX="10" refY="5" '
               f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
               f'<path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
               for k, c in _COLOR.items()) + '</defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for x, ep, member in zip(xs, ladder.endpoints, ladder.members):
        out.append(f'<text x="{x}" y="20" text-anchor="middle" font-weight="bold">'
                   f'member {escape(member)}</text>')
        out.append(f'<text x="{x}" y="36" text-anchor="middle">'
                   f'{escape(endpoint_text(ep))}</text>')
        out.append(f'<line x1="{x}" y1="{_TOP - 16}" x2="{x}" y2="{height - 6}" '
                   f'stroke="#bbbbbb" stroke-dasharray="4 3"/>')
    for i, a in enumerate(ladder.arrows):
        y = _TOP + _ROW_H * i
        color = _COLOR[a.style]
        dash = ' stroke-dasharray="6 4"' if a.style in ("dropped", "error") else ""
        out.append(f'<text x="6" y="{y + 4}" fill="#666666">{a.t * 1e3:.3f} ms</text>')
        x1, x2 = xs[a.a], xs[a.b]
        if x1 == x2:
            out.append(f'<path d="M{x1},{y} h30 v10 h-30" fill="none" stroke="{color}"'
                       f'{dash} marker-end="url(#head-{a.style})"/>')
            tx = x1 + 36
            anchor = "start"
        else:
            end = x2 - (12 if a.style == "dropped" else 0) * (1 if x2 > x1 else -1)
            marker = "" if a.style == "dropped" else f' marker-end="url(#head-{a.style})"'
            out.append(f'<line x1="{x1}" y1="{y}" x2="{end}" y2="{y + 10}" '
                       f'stroke="{color}" stroke-width="1.4"{dash}{marker}/>')
            if a.style == "dropped":
                out.append(f'<text x="{end}" y="{y + 14}" text-anchor="middle" '
                           f'fill="{color}" font-size="14">×</text>')
            tx = (x1 + x2) / 2
            anchor = "middle"
        label = a.label + (f" ({a.frame.note})" if a.frame.note else "")
        out.append(f'<text x="{tx}" y="{y + 2}" text-anchor="{anchor}" fill="{color}">'
                   f'{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_png(ladder: Ladder, path, title: str = "netdam") -> None:
    """Draw the ladder into a PNG file with matplotlib (raises PngUnavailable without)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PngUnavailable("PNG output needs matplotlib, which is not installed; "
                             "use --svg FILE instead") from None
    xs, width, height = _geometry(ladder)
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.set_title(title)
    for x, ep, member in zip(xs, ladder.endpoints, ladder.members):
        ax.text(x, 20, f"member {member}", ha="center", weight="bold", family="monospace")
        ax.text(x, 36, endpoint_text(ep), ha="center", family="monospace", fontsize=8)
        ax.plot([x, x], [_TOP - 16, height - 6], color="#bbbbbb", ls="--", lw=0.8)
    for i, a in enumerate(ladder.arrows):
        y = _TOP + _ROW_H * i
        color = _COLOR[a.style]
        ax.text(6, y + 4, f"{a.t * 1e3:.3f} ms", color="#666666", family="monospace",
                fontsize=8)
        x1, x2 = xs[a.a], xs[a.b]
        ax.annotate("", xy=(x2, y + 10), xytext=(x1, y),
                    arrowprops={"arrowstyle": "-[" if a.style == "dropped" else "->",
                                "color": color,
                                "ls": "--" if a.style in ("dropped", "error") else "-"})
        ax.text((x1 + x2) / 2, y + 2, a.label, ha="center", color=color,
                family="monospace", fontsize=8)
    fig.savefig(path)
    plt.close(fig)


__all__ = ["Arrow", "Ladder", "PngUnavailable", "build", "render_png", "render_svg",
           "render_text"]
