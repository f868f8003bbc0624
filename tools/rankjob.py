"""What the multi-rank tools share: run the tool's own rank body on a fresh LocalCluster
and collect what each rank wrote.

A tool (``signal_pingpong.py``, ``overlap.py``, ``dispatch_cost.py``) re-runs its own
file as every rank with ``--rank-body DIR`` added to its arguments; each rank writes
``DIR/rankR.json`` (``report``), and ``run_ranks`` returns those documents in rank order
(None, with one line on stderr, if a rank failed). ``save`` writes a tool's figures
where ``--json`` said. ``job_parser`` and ``check_job`` are the options of a tool whose
ranks reduce float32 arrays of ``--size`` bytes on ``--nodes`` nodes, and their checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from netdam.collectives.run_cmd import parse_size


def run_ranks(tool: str, args: list[str], nodes: int, *, mem_size: int | None = None,
              timeout: float = 600) -> list[dict] | None:
    """Run ``python TOOL ARGS --rank-body DIR`` as one rank on each of ``nodes`` nodes
    (one device each) and return every rank's ``rankR.json``."""
    from netdam.cluster import LocalCluster
    from netdam.launch import run_hosts
    name = os.path.basename(tool).removesuffix(".py")
    kw = {} if mem_size is None else {"mem_size": mem_size}
    with tempfile.TemporaryDirectory() as out, LocalCluster(nodes=nodes, **kw) as cluster:
        argv = [sys.executable, os.path.abspath(tool), *args, "--rank-body", out]
        code = run_hosts(cluster, nodes, argv, timeout=timeout)
        if code:
            print(f"{name}: a rank failed (exit {code})", file=sys.stderr)
            return None
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(nodes)]


def report(comm, out: str, figures) -> int:
    """A rank's side is done: once every rank has finished timing (a barrier, so no rank
    reports while another still measures), write ``figures`` as ``out/rankR.json``."""
    comm.barrier()
    Path(out, f"rank{comm.rank}.json").write_text(json.dumps(figures))
    return 0


def job_parser(description: str, *, size: str, count: int,
               count_help: str) -> argparse.ArgumentParser:
    """A tool's parser with ``--nodes``, ``--size`` (default ``size``), ``--count``
    (default ``count``), ``--json`` and the hidden ``--rank-body``; the tool adds its own
    options and checks what it parsed with ``check_job``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--nodes", type=int, default=4, help="nodes of one device and rank each")
    ap.add_argument("--size", type=parse_size, default=size, help="bytes per rank (float32)")
    ap.add_argument("--count", type=int, default=count, help=count_help)
    ap.add_argument("--json", help="write the figures as JSON")
    ap.add_argument("--rank-body", nargs=1, help=argparse.SUPPRESS)
    return ap


def check_job(ap: argparse.ArgumentParser, a: argparse.Namespace, *,
              most: int | None = None) -> None:
    """Refuse, in one line (``ap.error``, exit 2), fewer than 2 nodes, no count, or a
    size that is not a multiple of 4 bytes (float32) of at least one element per rank
    (and, with ``most``, at most that many bytes)."""
    if a.nodes < 2:
        ap.error("--nodes must be at least 2")
    if a.count < 1:
        ap.error("--count must be at least 1")
    least = 4 * a.nodes
    if a.size < least or a.size % 4 or (most is not None and a.size > most):
        ap.error(f"--size must be a multiple of 4 of at least {least} bytes" if most is None
                 else f"--size must be a multiple of 4 from {least} bytes to "
                      f"{most >> 20} MiB")


def save(path: str | None, fig: dict) -> None:
    """Write ``fig`` as JSON to ``path`` (the tool's ``--json``), if given."""
    if path:
        with open(path, "w") as f:
            json.dump(fig, f, indent=1)
