"""``netdam status``: the health and counters of a running cluster, live or as JSON.

Owns finding a running cluster (``--coordinator``, ``NETDAM_COORDINATOR``, or the newest
cluster file a live launcher left in the runtime folder), asking its coordinator for
status, and rendering it: a rich table per member (role, node, endpoint, health, packets,
bytes, NAKs, retransmissions and their rates between refreshes) or ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rich.live import Live
from rich.table import Table

from netdam.control.client import ControlClient
from netdam.errors import UsageError
from netdam.ui import report_console

#: counters shown as columns: (title, key in a member's counters)
COLUMNS = (("rx pkts", "rx_packets"), ("tx pkts", "tx_packets"), ("rx bytes", "rx_bytes"),
           ("tx bytes", "tx_bytes"), ("NAKs", "naks_total"), ("retx", "retransmits"),
           ("dup", "duplicates"), ("bad crc", "dropped_crc"))


def runtime_dir() -> Path:
    """Where launchers leave one JSON file per running cluster."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"netdam-{os.getuid()}")
    return Path(base) / "netdam"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_coordinator(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("NETDAM_COORDINATOR"):
        return os.environ["NETDAM_COORDINATOR"]
    files = sorted(runtime_dir().glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for f in files:
        try:
            info = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(info.get("pid", 0))):
            return info["control"]
    raise UsageError("no running cluster found: pass --coordinator tcp://HOST:PORT or set "
                     "NETDAM_COORDINATOR")


def _total(counters: dict, key: str) -> int:
    if key == "naks_total":
        naks = counters.get("naks", {})
        return sum(naks.values()) if isinstance(naks, dict) else int(naks or 0)
    value = counters.get(key, 0)
    return int(value) if isinstance(value, (int, float)) else 0


def render(status: dict, previous: dict | None, dt: float) -> Table:
    t = Table(title=f"netdam cluster {status.get('cluster', '')} (pkey 0x{status['pkey']:04x})")
    for col in ("id", "role", "node", "name", "endpoint", "health"):
        t.add_column(col)
    for title, _ in COLUMNS:
        t.add_column(title, justify="right")
    if previous is not None:
        t.add_column("rx pkt/s", justify="right")
    before = {m["id"]: m for m in (previous or {}).get("members", [])}
    for m in sorted(status["members"], key=lambda m: m["id"]):
        c = m.get("counters", {})
        ep = ":".join(map(str, m["endpoint"])) if m.get("endpoint") else "-"
        health = "[green]alive[/]" if m["alive"] else f"[red]dead[/] ({m['silent_for']:.1f}s)"
        row = [str(m["id"]), m["role"], str(m["node"]), m["name"], ep, health]
        row += [f"{_total(c, key):,}" for _, key in COLUMNS]
        if previous is not None:
            old = before.get(m["id"], {}).get("counters", {})
            rate = (_total(c, "rx_packets") - _total(old, "rx_packets")) / max(dt, 1e-9)
            row.append(f"{rate:,.0f}")
        t.add_row(*row)
    return t


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator", metavar="ADDRESS",
                   help="tcp://HOST:PORT of the coordinator (default: the newest local cluster)")
    p.add_argument("--json", action="store_true", help="print one JSON object and exit")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    p.add_argument("--auth", metavar="DIR", default=None,
                   help="CURVE keys of an authenticated cluster (default: NETDAM_AUTH)")


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError(f"--interval must be positive, not {args.interval}")
    from netdam.control.auth import from_env
    client = ControlClient(find_coordinator(args.coordinator), timeout=args.timeout,
                           auth=args.auth or from_env())
    try:
        status = client.status()
        if args.json:
            print(json.dumps({k: v for k, v in status.items() if k not in ("ok", "rid")}))
            return 0
        console = report_console()
        if not args.watch:
            console.print(render(status, None, 0.0))
            return 0
        with Live(render(status, None, 0.0), console=console, auto_refresh=False) as live:
            while True:
                t0 = time.monotonic()
                time.sleep(args.interval)
                new = client.status()
                live.update(render(new, status, time.monotonic() - t0), refresh=True)
                status = new
    finally:
        client.close()
