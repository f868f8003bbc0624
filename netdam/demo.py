"""``netdam demo``: the main job on defaults.

Owns the demo's plan and its report: start a local cluster (2 nodes of 2 devices by
default, one host rank per device, so ranks of one node talk over shared memory (scale-up)
and ranks of different nodes over UDP (scale-out), and every device takes part in the
in-network engine), run every collective with every algorithm on a few sizes and dtypes,
check each iteration against NumPy, show progress and a rich table (collective,
algorithm, dtype, size, time, algbw, busbw, #wrong), and exit 0 only if every case was
correct.
"""

from __future__ import annotations

import argparse

from rich.table import Table

from netdam.collectives.check import input_count
from netdam.collectives.runner import Result, run_cases
from netdam.errors import UsageError
from netdam.transport.faults import add_fault_arguments, given_faults
from netdam.ui import progress_bar, report_console

SIZES = (4 << 10, (1 << 20) + 12)     # a latency size and a bandwidth size (odd count)
#: collectives whose reduce op means something (the table shows "-" for the others)
REDUCING = {"all_reduce", "reduce", "reduce_scatter"}


def plan(n: int, *, chain: bool) -> list[dict]:
    """The demo's cases for a world of n ranks."""
    cases = []

    def add(coll, nbytes, dtype="float32", esize=4, **kw):
        cases.append({"collective": coll, "count": input_count(coll, nbytes // esize, n),
                      "dtype": dtype, "warmup": 1, "iters": 3, **kw})

    algos = ["ring", "recursive_doubling", "hierarchical"]
    algos += ["chain", "tree"] if chain else []
    for size in SIZES:
        for algo in algos:
            add("all_reduce", size, algo=algo)
        add("all_reduce", size, algo="ring", deterministic=True, label="ring (reproducible)")
        if chain:
            add("all_reduce", size, algo="chain", deterministic=True,
                label="chain (reproducible)")
    add("all_reduce", SIZES[0], "int32", algo="recursive_doubling", op="max")
    add("all_reduce", SIZES[0], "bfloat16", esize=2, algo="ring", bits="bfloat16")
    add("all_reduce", SIZES[0], "int64", esize=8, algo="ring", op="bxor")
    for size in SIZES:
        add("broadcast", size, root=n - 1, algo="binomial", label="binomial tree")
        if chain:
            add("broadcast", size, root=n - 1, algo="multicast", label="multicast (devices)")
        add("reduce", size, root=0, algo="binomial tree")
        add("all_gather", size, algo="ring")
        if chain:
            add("all_gather", size, algo="multicast", label="multicast (devices)")
        add("reduce_scatter", size, algo="ring")
        add("all_to_all", size, algo="pairwise")
        add("all_to_allv", size, algo="pairwise")
    for tokens in (16, 256):   # MoE: fp8 dispatch quantized by the devices, bf16 combine
        add("moe", tokens * 1024 * 4, hidden=1024, k=4, algo="fp8 + bf16")
    add("barrier", 0, algo="dissemination", iters=5)
    return cases


def report(results: list[Result], n: int, title: str) -> Table:
    t = Table(title=title)
    for col, just in (("collective", "left"), ("algorithm", "left"), ("op", "left"),
                      ("type", "left"), ("size (B)", "right"), ("time (us)", "right"),
                      ("algbw (GB/s)", "right"), ("busbw (GB/s)", "right"),
                      ("#wrong", "right"), ("", "left")):
        t.add_column(col, justify=just)
    for r in results:
        c = r.case
        algbw, busbw = r.bandwidth(n)
        mark = "[green]ok[/]" if r.ok else f"[red]FAIL[/] {r.error or ''}"
        op = c.get("op", "sum") if c["collective"] in REDUCING else "-"
        t.add_row(c["collective"], c.get("label", c.get("algo", "")), op,
                  c["dtype"], f"{r.nbytes:,}", f"{r.time_us:,.0f}", f"{algbw:.3f}",
                  f"{busbw:.3f}", str(r.wrong), mark)
    return t


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=2, help="emulated nodes (default 2)")
    p.add_argument("--devices-per-node", type=int, default=2, metavar="K",
                   help="devices per node; one host rank runs per device (default 2)")
    p.add_argument("--pcap", metavar="FILE", help="capture every netdam datagram to FILE")
    p.add_argument("--mtu", type=int, default=None, help="datagram size (default 65000)")
    add_fault_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.nodes < 1 or args.devices_per_node < 1:
        raise UsageError("--nodes and --devices-per-node must be at least 1")
    n = args.nodes * args.devices_per_node
    cases = plan(n, chain=True)
    faults = given_faults(args)
    console = report_console()
    console.print(f"netdam demo: {args.nodes} nodes x {args.devices_per_node} device(s), "
                  f"{n} host ranks, {len(cases)} checked cases")
    with progress_bar(console) as bar:
        task = bar.add_task("running collectives", total=len(cases))
        results = run_cases(cases, nprocs=n, nodes=args.nodes,
                            devices_per_node=args.devices_per_node, mtu=args.mtu,
                            pcap=args.pcap, faults=faults,
                            progress=lambda k: bar.update(task, completed=k))
    console.print(report(results, n, f"netdam collectives, {n} ranks on {args.nodes} nodes"))
    bad = [r for r in results if not r.ok]
    if args.pcap:
        console.print(f"capture written to {args.pcap}")
    if bad:
        console.print(f"[red]{len(bad)} of {len(results)} cases failed[/]")
        return 1
    console.print(f"[green]all {len(results)} cases correct[/]")
    return 0
