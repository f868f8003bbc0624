"""Run collective cases on a fresh LocalCluster and merge what the ranks report.

Owns the parent side of ``netdam demo``, ``netdam run`` and ``netdam bench``: start the
cluster, run the worker (worker.py) as every rank through the launcher, follow progress
from rank 0's output, and merge the ranks' lines into one result per case (time = the
slowest rank's median, #wrong summed over ranks, an error if any rank failed).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from netdam.api import fit_layout
from netdam.cluster import LocalCluster
from netdam.collectives import check as C
from netdam.launch import run_hosts

#: device memory of the clusters benchmarks run on (room for a 64 MiB work area per rank)
MEM_SIZE = 128 << 20


def load_store_refusal(nodes: int, ranks: int, per_rank: int, capture: bool) -> str | None:
    """Why a ``load_store`` case cannot run on the clusters these commands start (one
    rank per device, MEM_SIZE each), or None when it can."""
    if nodes > 1 or capture:
        return "load_store needs every rank on one node (--nodes 1) and no --pcap"
    stage = fit_layout(ranks, 1, MEM_SIZE).slot_bytes   # the layout such a job uses
    if per_rank > stage:
        return f"load_store takes at most {stage} bytes per rank, not {per_rank}"
    return None


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_refusal(ranks: int, per_rank: int, check: bool,
                   available: int | None = None) -> str | None:
    """Why a case of ``per_rank`` bytes per rank would not fit this machine's memory, or
    None when it fits (or the memory is unknown). Every rank holds its buffer, its result
    and, checking, every rank's input and the expected result (worker.py); the devices
    hold MEM_SIZE each."""
    available = available_memory() if available is None else available
    if available is None:
        return None
    copies = ranks + 3 if check else 3
    need = ranks * (copies * per_rank + MEM_SIZE)
    if need <= available:
        return None
    gib = 1 << 30
    why = (f"{per_rank} bytes per rank on {ranks} ranks need about {need / gib:.1f} GiB of "
           f"memory here, and {available / gib:.1f} GiB are available")
    return why + (" (checking, every rank holds every rank's input; --no-check needs less)"
                  if check else "")


@dataclass
class Result:
    case: dict
    time_us: float = 0.0                 # median over iterations, slowest rank
    times_us: list[float] = field(default_factory=list)
    wrong: int = 0
    error: str | None = None
    nbytes: int = 0
    cpu_s: float = 0.0                   # host CPU seconds per iteration, mean over ranks
    ranks: int = 0
    digests: dict[int, str] = field(default_factory=dict)   # rank -> hash of its result

    @property
    def ok(self) -> bool:
        return self.error is None and self.wrong == 0 and self.ranks > 0

    def bandwidth(self, n: int) -> tuple[float, float]:
        return C.busbw(self.case["collective"], self.nbytes, self.time_us / 1e6, n)


def merge(cases: list[dict], lines: list[dict]) -> list[Result]:
    out = [Result(case=c) for c in cases]
    per_case: dict[int, list[dict]] = {}
    for line in lines:
        per_case.setdefault(line["case"], []).append(line)
    for i, res in enumerate(out):
        ranks = per_case.get(i, [])
        res.ranks = len(ranks)
        errors = [r["error"] for r in ranks if "error" in r]
        if errors:
            res.error = errors[0]
            continue
        if not ranks:
            res.error = "not run (an earlier case failed)"
            continue
        res.wrong = sum(r["wrong"] for r in ranks)
        res.nbytes = C.case_size(res.case["collective"], max(r["nbytes"] for r in ranks),
                                 len(ranks))
        medians = [statistics.median(r["times_us"]) for r in ranks if r["times_us"]]
        res.time_us = max(medians) if medians else 0.0
        slowest = max(ranks, key=lambda r: statistics.median(r["times_us"] or [0]))
        res.times_us = slowest["times_us"]
        res.cpu_s = statistics.mean(r["cpu_s"] for r in ranks)
        res.digests = {r["rank"]: r.get("digest") for r in ranks}
    return out


def run_cases(cases: list[dict], *, nprocs: int, nodes: int | None = None,
              devices_per_node: int = 1, mem_size: int = MEM_SIZE, mtu: int | None = None,
              pcap: str | None = None, faults: dict | None = None, timeout: float = 600.0,
              progress: Callable[[int], None] | None = None, quiet: bool = True,
              bind: str = "cpu") -> list[Result]:
    """Run ``cases`` on every rank of a new cluster, the ranks bound to CPUs as
    ``bind`` says (``netdam.launch``); ``progress(k)`` after k cases."""
    nodes = nodes or nprocs
    with tempfile.TemporaryDirectory(prefix="netdam-run-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "cases.json").write_text(json.dumps(cases))
        argv = [sys.executable, "-m", "netdam.collectives.worker", str(tmpdir / "cases.json"),
                str(tmpdir)]
        out = _Sink() if quiet else sys.stdout
        done = threading.Event()
        watcher = None
        if progress is not None:
            watcher = threading.Thread(target=_follow, args=(tmpdir / "rank0.jsonl", progress,
                                                             done), daemon=True)
            watcher.start()
        with LocalCluster(nodes=nodes, devices_per_node=devices_per_node, mem_size=mem_size,
                          mtu=mtu, pcap=pcap, **(faults or {})) as cluster:
            code = run_hosts(cluster, nprocs, argv, timeout=timeout, out=out, err=out,
                             extra_env={"NETDAM_JOB": tmpdir.name}, bind=bind)
        done.set()
        if watcher is not None:
            watcher.join(timeout=2)
        lines = []
        for f in sorted(tmpdir.glob("rank*.jsonl")):
            lines += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    results = merge(cases, lines)
    if code != 0:
        why = f"a rank exited with {code}" + (f": {out.tail()}" if isinstance(out, _Sink)
                                              else "")
        for r in results:
            if r.error is None and r.ranks < nprocs:
                r.error = why
    return results


def _follow(path: Path, progress: Callable[[int], None], done: threading.Event) -> None:
    seen = 0
    while not done.is_set():
        try:
            n = sum(1 for _ in path.open())
        except OSError:
            n = 0
        if n != seen:
            seen = n
            progress(n)
        time.sleep(0.1)


class _Sink:
    """Keeps the last lines the ranks printed (shown when a run fails)."""

    def __init__(self, keep: int = 20):
        self.lines: list[str] = []
        self.keep = keep

    def write(self, text: str) -> None:
        self.lines.append(text.rstrip("\n"))
        del self.lines[:-self.keep]

    def flush(self) -> None:
        pass

    def tail(self) -> str:
        return " | ".join(self.lines[-5:])
