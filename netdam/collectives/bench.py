"""``netdam bench``: nccl-tests-style sweeps of collectives on a local cluster.

Owns the sweep (``-b/-e/-f`` or ``-i``), the case list (collectives x algorithms x sizes),
and the report in nccl-tests' columns: size, count, type, redop, root, time (us), algbw
and busbw (GB/s, nccl-tests' bus factors: 2(n-1)/n for all_reduce, (n-1)/n for
all_gather, reduce_scatter and all_to_all, 1 for broadcast and reduce), #wrong (every
iteration checked unless ``--no-check``), plus the host CPU seconds per collective (the
offload claim: in-network algorithms leave the host nearly idle). ``--json`` writes
every row; ``--pcap`` captures the whole run.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from netdam.collectives.check import BUSBW_FACTOR, numpy_dtype
from netdam.collectives.run_cmd import parse_size
from netdam.collectives.runner import Result, run_cases
from netdam.collectives.types import OP_NAMES
from netdam.errors import UsageError
from netdam.transport.faults import add_fault_arguments, given_faults

#: algorithms swept per collective when --algo is not given
ALGOS = {"all_reduce": ["ring", "recursive_doubling", "chain", "tree"]}


def sizes(begin: int, end: int, factor: float, step: int | None) -> list[int]:
    if begin <= 0 or end < begin:
        raise UsageError(f"need 0 < -b <= -e, got -b {begin} -e {end}")
    out, s = [], begin
    if step:
        while s <= end:
            out.append(s)
            s += step
        return out
    if factor <= 1:
        raise UsageError(f"-f must be greater than 1, not {factor}")
    while s <= end:
        out.append(int(s))
        s *= factor
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("collectives", nargs="*", default=["all_reduce"],
                   help=f"any of {', '.join(sorted(BUSBW_FACTOR))} (default all_reduce)")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--devices-per-node", type=int, default=1, metavar="K")
    p.add_argument("-b", "--minbytes", type=parse_size, default=8 << 10)
    p.add_argument("-e", "--maxbytes", type=parse_size, default=1 << 20)
    p.add_argument("-f", "--stepfactor", type=float, default=4.0)
    p.add_argument("-i", "--stepbytes", type=parse_size, default=None)
    p.add_argument("-w", "--warmup", type=int, default=1, help="warm-up iterations")
    p.add_argument("-n", "--iters", type=int, default=5, help="timed iterations")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--op", default="sum", choices=sorted(OP_NAMES))
    p.add_argument("--root", type=int, default=0)
    p.add_argument("--algo", action="append", help="algorithm(s) to sweep (repeatable)")
    p.add_argument("--no-check", action="store_true", help="do not check results")
    p.add_argument("--json", metavar="FILE", help="write every row as JSON")
    p.add_argument("--pcap", metavar="FILE", help="capture the whole run")
    p.add_argument("--mtu", type=int, default=None)
    add_fault_arguments(p)


def run(args: argparse.Namespace) -> int:
    bad = [c for c in args.collectives if c not in BUSBW_FACTOR]
    if bad:
        raise UsageError(f"unknown collective(s) {bad}; choose from {sorted(BUSBW_FACTOR)}")
    try:
        storage, bits = numpy_dtype(args.dtype)
    except (UsageError, KeyError):
        raise UsageError(f"unknown dtype {args.dtype!r}") from None
    n = args.nodes * args.devices_per_node
    if args.iters < 1 or args.warmup < 0:
        raise UsageError("-n must be at least 1 and -w at least 0")
    cases = []
    for coll in args.collectives:
        for algo in (args.algo or ALGOS.get(coll, [None])):
            for size in sizes(args.minbytes, args.maxbytes, args.stepfactor, args.stepbytes):
                cases.append({"collective": coll, "algo": algo, "count": size // storage.itemsize,
                              "dtype": args.dtype, "bits": bits, "op": args.op,
                              "root": args.root, "warmup": args.warmup, "iters": args.iters,
                              "check": not args.no_check})
    faults = given_faults(args)
    console = Console()
    console.print(f"netdam bench: {n} ranks ({args.nodes} nodes x {args.devices_per_node}), "
                  f"{len(cases)} cases, {args.warmup} warm-up + {args.iters} iterations each")
    results = run_cases(cases, nprocs=n, nodes=args.nodes,
                        devices_per_node=args.devices_per_node, mtu=args.mtu, pcap=args.pcap,
                        faults=faults)
    console.print(table(results, n))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([row(r, n) for r in results], f, indent=1)
    return 0 if all(r.ok for r in results) else 1


def row(r: Result, n: int) -> dict:
    algbw, busbw = r.bandwidth(n)
    c = r.case
    return {"collective": c["collective"], "algo": c.get("algo"), "size": r.nbytes,
            "count": c["count"], "type": c["dtype"], "redop": c.get("op"),
            "root": c.get("root"), "time_us": r.time_us, "algbw": algbw, "busbw": busbw,
            "wrong": r.wrong, "cpu_s": r.cpu_s, "error": r.error, "ranks": n}


def table(results: list[Result], n: int) -> Table:
    t = Table(title=f"netdam bench, {n} ranks (time: median of iterations, slowest rank)")
    for col in ("collective", "algo", "size (B)", "count", "type", "redop", "root",
                "time (us)", "algbw (GB/s)", "busbw (GB/s)", "#wrong", "host cpu (s)"):
        t.add_column(col, justify="left" if col in ("collective", "algo", "type", "redop")
                     else "right")
    for r in results:
        d = row(r, n)
        wrong = str(d["wrong"]) if r.error is None else f"[red]{r.error}[/]"
        t.add_row(d["collective"], str(d["algo"] or "-"), f"{d['size']:,}", f"{d['count']:,}",
                  d["type"], d["redop"], str(d["root"]), f"{d['time_us']:,.0f}",
                  f"{d['algbw']:.3f}", f"{d['busbw']:.3f}", wrong, f"{d['cpu_s']:.4f}")
    return t
