"""What the multi-rank tools share: run the tool's own rank body on a fresh LocalCluster
and collect what each rank wrote.

A tool (``signal_pingpong.py``, ``overlap.py``) re-runs its own file as every rank with
``--rank-body DIR`` added to its arguments; each rank writes ``DIR/rankR.json``, and
``run_ranks`` returns those documents in rank order (None, with one line on stderr, if
a rank failed). ``save`` writes a tool's figures where ``--json`` said.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


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


def save(path: str | None, fig: dict) -> None:
    """Write ``fig`` as JSON to ``path`` (the tool's ``--json``), if given."""
    if path:
        with open(path, "w") as f:
            json.dump(fig, f, indent=1)
