"""``netdam sim``: one simulated collective, or a sweep, as a table, JSON or a plot.

Owns the command line of the simulator (``add_arguments`` / ``run``, registered in
netdam/cli.py): arguments to ``SimConfig``, the rich tables (modeled time, algbw/busbw,
fabric utilisation, the busiest link), the sweep over sizes (``-b/-e/-f`` as in
``netdam bench``) or node counts with a progress bar, ``--json`` and ``--plot`` (SVG of
time against size, or against nodes, one line per algorithm). Bad arguments are one
line (UsageError, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from rich.console import Console
from rich.table import Table

from netdam.collectives.run_cmd import parse_size
from netdam.errors import UsageError
from netdam.sim.run import COLLECTIVES, MODES, SimConfig, SimResult, algorithms_of, simulate
from netdam.collectives.plot import line_chart
from netdam.sim.topology import FABRICS
from netdam.ui import check_outputs, progress_bar, report_console, write_output


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (e.g. 8x8 or 4x4x4)") \
            from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r}")
    return dims


def _counts(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of node counts: {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"not a list of node counts: {text!r}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p.add_argument("collective", choices=COLLECTIVES)
    p.add_argument("--nodes", type=int, default=d.nodes, help="nodes (ranks = nodes x K)")
    p.add_argument("--devices-per-node", "-k", type=int, default=1, metavar="K",
                   help="devices per node, joined by the scale-up link")
    p.add_argument("--size", type=parse_size, default=d.size, help="bytes per rank (64K, 1G)")
    p.add_argument("--algo", default=None,
                   help="algorithm, or several comma-separated for a sweep or a plot")
    p.add_argument("--topology", default=d.topology, choices=list(FABRICS))
    p.add_argument("--link-gbps", type=float, default=d.link_gbps)
    p.add_argument("--latency-ns", type=float, default=d.latency_ns,
                   help="one fabric link, one way")
    p.add_argument("--scaleup-gbps", type=float, default=d.scaleup_gbps)
    p.add_argument("--scaleup-latency-ns", type=float, default=d.scaleup_latency_ns)
    p.add_argument("--pcie-gbps", type=float, default=d.pcie_gbps, help="GB/s host <-> device")
    p.add_argument("--pcie-ns", type=float, default=d.pcie_crossing_ns,
                   help="one host <-> device crossing")
    p.add_argument("--mode", choices=list(MODES), default=d.mode,
                   help="packet: real datagrams and data, checked; sized: the same "
                        "datagrams without data; chunk: one burst per message (scale)")
    p.add_argument("--mtu", type=int, default=d.mtu)
    p.add_argument("--radix", type=int, default=d.radix, help="devices per leaf switch")
    p.add_argument("--planes", type=int, default=d.planes, help="multiplane: planes")
    p.add_argument("--dims", type=_dims, default=None, help="torus shape, e.g. 8x8")
    p.add_argument("--tree-radix", type=int, default=d.tree_radix)
    p.add_argument("--loss", type=float, default=0.0, help="per-link datagram loss (packet)")
    p.add_argument("--queue-bytes", type=parse_size, default=None,
                   help="per-link queue; tail drop beyond it (packet mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", choices=("size", "nodes"), default=None)
    p.add_argument("-b", "--minbytes", type=parse_size, default=1 << 10)
    p.add_argument("-e", "--maxbytes", type=parse_size, default=1 << 20)
    p.add_argument("-f", "--stepfactor", type=int, default=4)
    p.add_argument("--node-counts", type=_counts, default=[8, 64, 512],
                   help="--sweep nodes: comma-separated node counts")
    p.add_argument("--links", type=int, default=5, help="busiest links to list (one run)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="FILE.svg", help="time against size (or nodes), SVG")


def configs(args: argparse.Namespace) -> list[SimConfig]:
    """Every run the arguments ask for (algorithm-major)."""
    algos = (args.algo.split(",") if args.algo else algorithms_of(args.collective)[:1])
    base = SimConfig(collective=args.collective, nodes=args.nodes, size=args.size,
                     topology=args.topology, link_gbps=args.link_gbps,
                     latency_ns=args.latency_ns, devices_per_node=args.devices_per_node,
                     scaleup_gbps=args.scaleup_gbps,
                     scaleup_latency_ns=args.scaleup_latency_ns, pcie_gbps=args.pcie_gbps,
                     pcie_crossing_ns=args.pcie_ns, mode=args.mode, mtu=args.mtu,
                     queue_bytes=args.queue_bytes, loss=args.loss, radix=args.radix,
                     planes=args.planes, dims=args.dims, tree_radix=args.tree_radix,
                     seed=args.seed)
    if args.sweep == "size":
        if args.minbytes <= 0 or args.maxbytes < args.minbytes or args.stepfactor < 2:
            raise UsageError("--sweep size needs 0 < -b <= -e and -f >= 2")
        sizes, s = [], args.minbytes
        while s <= args.maxbytes:
            sizes.append(s)
            s *= args.stepfactor
        points = [{"size": s} for s in sizes]
    elif args.sweep == "nodes":
        points = [{"nodes": k} for k in args.node_counts]
    else:
        points = [{}]
    return [replace(base, algo=a.strip(), **pt) for a in algos for pt in points]


def _size(n: int) -> str:
    for suffix, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    return f"{n:,}"


def results_table(results: list[SimResult], title: str) -> Table:
    t = Table(title=title)
    for col in ("algo", "ranks", "size", "time (us)", "algbw GB/s", "busbw GB/s",
                "fabric", "busiest link", "check"):
        t.add_column(col, justify="left" if col in ("algo", "busiest link", "check")
                     else "right")
    for r in results:
        c, b = r.config, r.busiest or {"name": "-", "utilisation": 0.0}
        check = {True: "[green]ok[/]", False: "[red]WRONG[/]", None: "-"}[r.correct]
        t.add_row(c.algo, str(c.ranks), _size(c.size), f"{r.time_ns / 1e3:,.2f}",
                  f"{r.algbw:.3f}", f"{r.busbw:.3f}", f"{r.mean_utilisation():.0%}",
                  f"{b['name']} {b['utilisation']:.0%}", check)
    t.caption = ("fabric: mean utilisation of the fabric links used; check: result "
                 "equals NumPy (per-packet mode only)")
    return t


def links_table(r: SimResult, k: int) -> Table:
    t = Table(title=f"busiest {min(k, len(r.links))} of {len(r.links)} links used")
    for col in ("link", "kind", "packets", "bytes", "busy (us)", "util", "peak queue (B)"):
        t.add_column(col, justify="left" if col in ("link", "kind") else "right")
    for lk in r.links[:k]:
        t.add_row(lk["name"], lk["kind"], f"{lk['packets']:,}", f"{lk['bytes']:,}",
                  f"{lk['busy_us']:,.2f}", f"{lk['utilisation']:.0%}",
                  f"{lk['peak_queue_bytes']:,}")
    return t


def plot(results: list[SimResult], path: str, by: str) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        x = r.config.size if by == "size" else r.config.ranks
        series.setdefault(r.config.algo, []).append((x, r.time_ns / 1e3))
    c = results[0].config
    what = (f"{c.ranks} ranks" if by == "size" else _size(c.size))
    svg = line_chart(series, title=f"{c.collective}, {what}, {results[0].topology}, "
                                   f"{c.link_gbps:g} Gbit/s ({c.mode} mode)",
                     xlabel="bytes per rank" if by == "size" else "ranks",
                     ylabel="modeled time (us)", x_bytes=by == "size")
    write_output("plot", path, svg)


def run(args: argparse.Namespace) -> int:
    check_outputs(args, "json", "plot")
    cfgs = configs(args)
    console = report_console()
    results: list[SimResult] = []
    if len(cfgs) == 1:
        results.append(simulate(cfgs[0]))
    else:
        with progress_bar(Console(stderr=True)) as bar:
            task = bar.add_task("simulating", total=len(cfgs))
            for c in cfgs:
                bar.update(task, description=f"{c.algo} {c.ranks} ranks {_size(c.size)}")
                results.append(simulate(c))
                bar.advance(task)
    text = json.dumps([r.to_json() for r in results], indent=1) + "\n" if args.json else ""
    if args.json == "-":
        sys.stdout.write(text)
    else:
        first = results[0]
        console.print(results_table(results, f"netdam sim {args.collective}: "
                                             f"{first.topology}, {args.link_gbps:g} Gbit/s, "
                                             f"{args.mode} mode, modeled"))
        if len(results) == 1 and args.links > 0:
            console.print(links_table(first, args.links))
        wall = sum(r.wall_s for r in results)
        console.print(f"simulated {sum(r.events for r in results):,} events in {wall:.1f} s")
        if args.json:      # (after the report: a failed write loses nothing shown)
            write_output("json", args.json, text)
    if args.plot:
        plot(results, args.plot, "nodes" if args.sweep == "nodes" else "size")
    return 0 if all(r.correct is not False for r in results) else 1
