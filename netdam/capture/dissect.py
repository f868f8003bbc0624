"""The ``netdam dissect`` and ``netdam dissector`` commands.

Owns the command-line surface for reading captures of netdam traffic:

- ``netdam dissect FILE [--flows] [--ladder] [--filter EXPR] [--limit N]
  [--from S] [--to S] [--svg F | --png F]``: a table of the netdam datagrams of a pcap or
  pcapng file (read with scapy's readers, see ``pcap.read_frames``); ``--flows`` adds
  the per peer-pair statistics of ``flows``; ``--ladder`` draws a sequence diagram
  (``ladder``). Datagrams that fail to decode are listed with their error. A truncated
  or corrupt file is one line naming the record.
- ``netdam dissector install|path``: the Wireshark Lua plugin generated into
  proto/netdam.lua (``netdam_proto.DISSECTOR``). ``install`` copies it into the personal
  plugin folder Wireshark loads Lua from:

  * ``$WIRESHARK_CONFIG_DIR/plugins`` when that variable is set (any platform);
  * Linux and other Unix, macOS: ``~/.local/lib/wireshark/plugins`` (Wireshark >= 2.5;
    the older ``$XDG_CONFIG_HOME/wireshark/plugins``, default ``~/.config/wireshark``, is
    still read for Lua and reported by ``path`` when it holds a copy);
  * Windows: ``%APPDATA%\\Wireshark\\plugins``.

  ``path`` prints the shipped file, the install location and whether the installed copy
  is current. ``--dir`` overrides the folder.

Each command exposes ``*_add_arguments(parser)`` and ``*_run(args) -> int`` for netdam.cli.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from netdam.capture import ladder as ladder_mod
from netdam.capture.filters import compile_filter
from netdam.capture.flows import flow_stats
from netdam.capture.frames import Frame, endpoint_text, enum_name, netdam_frames
from netdam.errors import UsageError
from netdam.ui import report_console
from netdam.wire.fields import CREDIT_UNIT, DType, Opcode, RedOp

DEFAULT_LADDER_ROWS = 40


# -- netdam dissect --------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="pcap or pcapng capture")
    p.add_argument("--flows", action="store_true",
                   help="per peer-pair statistics: packets, bytes, retransmissions, "
                        "duplicates, NAKs by status, request-to-response latency")
    p.add_argument("--ladder", action="store_true",
                   help="sequence diagram of a short window (first --limit packets, "
                        f"default {DEFAULT_LADDER_ROWS}, or --from/--to)")
    p.add_argument("--filter", metavar="EXPR",
                   help="e.g. 'opcode==READ', 'status!=OK', 'device==3', "
                        "'seq>=10 && seq<20', 'flag==RETRANSMIT || error==1'")
    p.add_argument("--limit", type=int, metavar="N", help="show at most N packets")
    p.add_argument("--from", dest="t_from", type=float, metavar="S",
                   help="start of the window, seconds after the first packet")
    p.add_argument("--to", dest="t_to", type=float, metavar="S",
                   help="end of the window, seconds after the first packet")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--svg", metavar="F", help="write the ladder diagram as SVG to F")
    out.add_argument("--png", metavar="F",
                     help="write the ladder diagram as PNG to F (needs matplotlib)")


def load(path: str, expr: str | None = None, t_from: float | None = None,
         t_to: float | None = None) -> tuple[list[Frame], dict]:
    """The netdam frames of ``path`` that pass the filter and the time window."""
    pred = compile_filter(expr)          # a bad filter fails before the file is read
    if not Path(path).exists():
        raise UsageError(f"{path}: no such file")
    stats: dict = {}
    frames, t0 = [], None
    for f in netdam_frames(path, stats):
        if t0 is None:
            t0 = f.time
        rel = f.time - t0
        if t_from is not None and rel < t_from:
            continue
        if t_to is not None and rel > t_to:
            continue
        if pred(f):
            frames.append(f)
    stats["t0"] = t0
    return frames, stats


def _dtype_op(f: Frame) -> str:
    dt, op = f.fields.get("dtype"), f.fields.get("redop")
    if not dt and not op:
        return ""
    parts = [enum_name(DType, dt)] if dt else []
    if op:
        parts.append(enum_name(RedOp, op) if f.fields.get("opcode") not in
                     (Opcode.QUANT_FP8, Opcode.DEQUANT_FP8) else enum_name(DType, op))
    return "/".join(parts)


def packet_table(frames: list[Frame], t0: float | None, title: str) -> Table:
    t = Table(title=title, header_style="bold", show_lines=False, pad_edge=False)
    right = {"justify": "right", "no_wrap": True}
    for name, kw in (("#", right), ("time (s)", right), ("src", {"no_wrap": True}),
                     ("dst", {"no_wrap": True}), ("opcode", {"no_wrap": True}), ("seq", right),
                     ("req", right), ("addr", right), ("len", right),
                     ("dtype/op", {"no_wrap": True}), ("status", {"no_wrap": True}),
                     ("note / error", {"overflow": "fold", "min_width": 12})):
        t.add_column(name, **kw)
    for f in frames:
        g = f.fields.get
        style = ""
        status = ""
        if g("opcode") == Opcode.NAK:
            status, style = f.status_name, "red"
        elif g("status"):
            status = f.status_name
        if f.error:
            style = "bold red"
        elif f.note:
            style = "yellow"
        member = (lambda k: f" [{g(k)}]" if g(k) is not None else "")
        credit = (f"credit {g('group') * CREDIT_UNIT:,} B"      # SPEC §8.2
                  if g("opcode") == Opcode.ACK and g("group") else None)
        extra = "; ".join(x for x in (f.note, f.error, credit) if x)
        flags = g("flags") or 0
        opcode = f.opcode_name if f.fields else "?"
        if flags & 0x40:
            opcode += " (re)"
        t.add_row(str(f.number), f"{f.time - (t0 or f.time):.6f}",
                  endpoint_text(f.src) + member("src"), endpoint_text(f.dst) + member("dst"),
                  opcode, _s(g("seq")), _s(g("req_id")),
                  f"0x{g('addr'):x}" if g("addr") is not None else "", _s(g("length")),
                  _dtype_op(f), status, extra, style=style)
    return t


def _s(v) -> str:
    return "" if v is None else str(v)


def flows_table(frames: list[Frame]) -> Table:
    t = Table(title="flows (one direction between two UDP endpoints)", header_style="bold",
              caption="retrans: RETRANSMIT flag or a repeated (src, dst, seq, opcode, "
                      "frag_off); dup: byte-identical datagram; latency: first request "
                      "to first response, by req_id")
    for name in ("flow", "packets", "bytes", "retrans", "dup", "errors", "NAKs",
                 "latency min / median / p99 (us)"):
        t.add_column(name, justify="left" if name in ("flow", "NAKs") else "right")
    for s in flow_stats(frames):
        lat = s.latency()
        naks = ", ".join(f"{k}={v}" for k, v in sorted(s.naks.items()))
        t.add_row(f"{endpoint_text(s.src)} -> {endpoint_text(s.dst)}", str(s.packets),
                  str(s.bytes), str(s.retransmissions), str(s.duplicates), str(s.errors),
                  naks, " / ".join(f"{x * 1e6:.1f}" for x in lat) if lat else "")
    return t


def run(args: argparse.Namespace) -> int:
    console = report_console()
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    frames, stats = load(args.file, args.filter, args.t_from, args.t_to)
    t0 = stats.get("t0")
    drawing = args.ladder or args.svg or args.png
    shown = frames
    if args.limit is not None:
        shown = frames[:args.limit]
    elif drawing and args.t_from is None and args.t_to is None:
        shown = frames[:DEFAULT_LADDER_ROWS]
    if not args.ladder and not args.flows and not (args.svg or args.png):
        title = f"{args.file}: {len(shown)} of {len(frames)} netdam packets"
        if stats.get("skipped"):
            title += f" ({stats['skipped']} other frames skipped)"
        console.print(packet_table(shown, t0, title))
    if args.flows:
        console.print(flows_table(frames))
    if drawing:
        lad = ladder_mod.build(shown)
        if args.ladder:
            for line in ladder_mod.render_text(lad, console.width):
                console.print(line, soft_wrap=True, highlight=False)
        if args.svg:
            Path(args.svg).write_text(ladder_mod.render_svg(lad, title=args.file))
            console.print(f"wrote {args.svg} ({len(lad.arrows)} packets)", highlight=False)
        if args.png:
            try:
                ladder_mod.render_png(lad, args.png, title=args.file)
            except ladder_mod.PngUnavailable as exc:
                raise UsageError(str(exc)) from None
            console.print(f"wrote {args.png} ({len(lad.arrows)} packets)", highlight=False)
    return 0


# -- netdam dissector install|path -----------------------------------------------------------

def dissector_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("install", "path"),
                   help="install: copy the Lua plugin into Wireshark's personal plugin "
                        "folder; path: print where it is shipped and installed")
    p.add_argument("--dir", metavar="DIR",
                   help="plugin folder to use instead of Wireshark's personal one")


def plugin_dir(environ=None, platform: str | None = None) -> Path:
    """Wireshark's personal plugin folder for Lua scripts on this platform."""
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    if env.get("WIRESHARK_CONFIG_DIR"):
        return Path(env["WIRESHARK_CONFIG_DIR"]) / "plugins"
    if platform.startswith("win"):
        appdata = env.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(appdata) / "Wireshark" / "plugins"
    home = Path(env.get("HOME") or Path.home())
    return home / ".local" / "lib" / "wireshark" / "plugins"


def legacy_plugin_dir(environ=None) -> Path:
    """The older personal folder Wireshark still reads Lua from on Unix and macOS."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    xdg = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(xdg) / "wireshark" / "plugins"


def dissector_run(args: argparse.Namespace) -> int:
    from netdam_proto import DISSECTOR
    console = Console()
    if not DISSECTOR.exists():
        raise UsageError(f"{DISSECTOR} is missing: run `python -m netdam_proto.gen`")
    target_dir = Path(args.dir) if args.dir else plugin_dir()
    target = target_dir / DISSECTOR.name
    if args.action == "install":
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DISSECTOR, target)
        except OSError as exc:
            raise UsageError(f"cannot install into {target_dir}: {exc.strerror}") from None
        console.print(f"installed {target}", highlight=False)
        console.print("restart Wireshark (or Analyze > Reload Lua Plugins) to load it",
                      highlight=False)
        return 0
    shipped = DISSECTOR.read_bytes()
    console.print(f"shipped:   {DISSECTOR}", highlight=False)
    state = "not installed"
    if target.exists():
        state = "installed, current" if target.read_bytes() == shipped else \
            "installed, stale (run `netdam dissector install`)"
    console.print(f"installed: {target} ({state})", highlight=False)
    legacy = legacy_plugin_dir() / DISSECTOR.name
    if not args.dir and sys.platform != "win32" and legacy.exists() and legacy != target:
        console.print(f"also:      {legacy} (older folder; Wireshark prefers {target_dir})",
                      highlight=False)
    return 0


__all__ = ["add_arguments", "run", "dissector_add_arguments", "dissector_run", "load",
           "plugin_dir", "legacy_plugin_dir", "packet_table", "flows_table"]
