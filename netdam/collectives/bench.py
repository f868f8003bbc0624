"""``netdam bench``: nccl-tests-style sweeps of collectives on a local cluster.

Owns the sweep (``-b/-e/-f`` or ``-i``), the case list (collectives x algorithms x sizes),
the progress bar, and the report in nccl-tests' columns: size, count, type, redop, root,
time (us: the median of the timed iterations on the slowest rank), algbw and busbw
(GB/s), #wrong (every iteration checked unless ``--no-check``), plus the host CPU seconds
per collective (the offload claim: in-network algorithms leave the host nearly idle).
``--json`` writes every row, ``--plot`` draws busbw against size as SVG (``plot.py``),
``--pcap`` captures the whole run. ``--compare gloo|mpi|mpi-shm`` and ``--baseline``
add the yardsticks of ``compare.py`` to the same run: a ratio column per library and the
raw limits (UDP stream, memcpy) of each size.

algbw = size / time. busbw = algbw x the nccl-tests factor for n ranks (``check.BUSBW_FACTOR``),
the share of the data each rank's link must carry, so busbw reads against a link's speed:

    all_reduce                 2(n-1)/n
    all_gather, reduce_scatter,
    all_to_all(v), moe         (n-1)/n
    broadcast, reduce          1
    baselines (stream, memcpy) 1 (one link, one copy)

Sizes are nccl-tests' too: an all_gather's is the gathered array (each rank gives size / n,
``check.input_count``), every other collective's is each rank's buffer; ``count`` is the
size in elements.

Each timed iteration starts after a barrier and a flush (``Channels.flush``: every
answer the barrier still had coming is taken first), so time and host CPU are the
collective's own; each rank measures its whole process (every thread), from its call
to its return.

Paths: ranks run one per device; ``--nodes N --devices-per-node K`` makes N x K ranks.
Ranks on one node talk over shared memory, ranks on different nodes over UDP, so
``--nodes N`` (K = 1) sends every byte over UDP and ``--nodes 1 --devices-per-node K``
keeps every byte in shared memory.
"""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from netdam.api import fit_layout
from netdam.cluster import check_mtu_option
from netdam.collectives import compare
from netdam.collectives.check import BUSBW_FACTOR, case_size, input_count, numpy_dtype
from netdam.collectives.communicator import ALL_GATHER_ALGOS, BROADCAST_ALGOS
from netdam.collectives.plot import busbw_svg
from netdam.collectives.run_cmd import parse_size
from netdam.collectives.runner import (MEM_SIZE, Result, load_store_refusal, memory_refusal,
                                       run_cases)
from netdam.collectives.types import OP_NAMES
from netdam.errors import UsageError
from netdam.launch import add_bind_argument
from netdam.transport.faults import add_fault_arguments, given_faults
from netdam.ui import check_outputs, progress_bar, report_console, write_output

#: algorithms swept per collective when --algo is not given
ALGOS = {"all_reduce": ["ring", "recursive_doubling", "one_shot", "load_store", "chain",
                        "tree", "hierarchical"],
         "broadcast": list(BROADCAST_ALGOS), "all_gather": list(ALL_GATHER_ALGOS)}
#: the in-network algorithms that work in place (--registered applies to them)
OFFLOAD = {"all_reduce": ("chain", "tree"), "broadcast": ("multicast",)}


def sizes(begin: int, end: int, factor: float, step: int | None) -> list[int]:
    if begin <= 0 or end < begin:
        raise UsageError(f"need 0 < -b <= -e, got -b {begin} -e {end}")
    out, s = [], begin
    if step is not None:
        if step < 1:
            raise UsageError(f"-i must be at least 1 byte, not {step}")
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
    p.add_argument("--nodes", type=int, default=4,
                   help="emulated nodes; ranks on different nodes talk over UDP (default 4)")
    p.add_argument("--devices-per-node", type=int, default=1, metavar="K",
                   help="devices (= ranks) per node; ranks of a node talk over shared "
                        "memory (default 1: every byte crosses UDP)")
    p.add_argument("-b", "--minbytes", type=parse_size, default=8 << 10,
                   help="smallest size per rank, e.g. 4K (default 8K)")
    p.add_argument("-e", "--maxbytes", type=parse_size, default=1 << 20,
                   help="largest size per rank, e.g. 64M (default 1M)")
    p.add_argument("-f", "--stepfactor", type=float, default=4.0,
                   help="multiply the size by this from -b to -e (default 4)")
    p.add_argument("-i", "--stepbytes", type=parse_size, default=None,
                   help="add this to the size instead of multiplying")
    p.add_argument("-w", "--warmup", type=int, default=1, help="warm-up iterations")
    p.add_argument("-n", "--iters", type=int, default=5, help="timed iterations")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--op", default="sum", choices=sorted(OP_NAMES))
    p.add_argument("--root", type=int, default=0)
    p.add_argument("--algo", action="append",
                   help="algorithm(s) to sweep (repeatable; each collective runs those "
                        "of them it has, or its one algorithm): " + "; ".join(
                            f"{c}: {', '.join(a)}" for c, a in ALGOS.items()))
    p.add_argument("--no-check", action="store_true", help="do not check results")
    p.add_argument("-R", "--registered", action="store_true",
                   help="in-network all_reduce (chain, tree) and the multicast broadcast "
                        "in place on a buffer that "
                        "lives in the device's work area, like nccl-tests -R with NCCL's "
                        "registered buffers: no host copy in or out (sizes up to the "
                        "work area, 64 MiB here; larger ones run as usual)")
    p.add_argument("--json", metavar="FILE", help="write every row as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw busbw vs size as an SVG file")
    p.add_argument("--compare", action="append", choices=sorted(compare.REFERENCES),
                   help="also run the same cases with torch.distributed's Gloo or with "
                        "Open MPI (repeatable) and print netdam busbw / theirs")
    p.add_argument("--baseline", action="store_true",
                   help="also time the same bytes over a raw UDP stream and a memcpy")
    p.add_argument("--pcap", metavar="FILE", help="capture the whole run")
    p.add_argument("--mtu", type=int, default=None)
    add_bind_argument(p)
    add_fault_arguments(p)


def plan(args: argparse.Namespace) -> tuple[int, list[dict]]:
    """The world size and the cases; every bad argument is a UsageError here."""
    bad = [c for c in args.collectives if c not in BUSBW_FACTOR]
    if bad:
        raise UsageError(f"unknown collective(s) {bad}; choose from {sorted(BUSBW_FACTOR)}")
    try:
        storage, bits = numpy_dtype(args.dtype)
    except (UsageError, KeyError):
        raise UsageError(f"unknown dtype {args.dtype!r}") from None
    if args.nodes < 1 or args.devices_per_node < 1:
        raise UsageError("--nodes and --devices-per-node must be at least 1")
    n = args.nodes * args.devices_per_node
    if args.iters < 1 or args.warmup < 0:
        raise UsageError("-n must be at least 1 and -w at least 0")
    if not 0 <= args.root < n:
        raise UsageError(f"--root must be a rank, 0 to {n - 1}, not {args.root}")
    check_outputs(args, "json", "plot", "pcap")
    given_faults(args)             # (bad values refused before the banner)
    check_mtu_option(args.mtu)
    for name in args.compare or []:
        compare.require(name, args.dtype)
    known = {a for algos in ALGOS.values() for a in algos}
    unknown = sorted(set(args.algo or ()) - known)
    if unknown:
        raise UsageError(f"unknown algorithm(s) {unknown}; choose from {sorted(known)}")
    if "load_store" in (args.algo or ()):
        why = load_store_refusal(args.nodes, n, 0, bool(args.pcap))
        if why:
            raise UsageError(why)
    why = memory_refusal(n, args.maxbytes, not args.no_check)
    if why:
        raise UsageError(f"-e: {why}")
    cases = []
    registrable = fit_layout(n, 1, MEM_SIZE).work_bytes   # -R: one rank's work area
    for coll in args.collectives:
        algos = ALGOS.get(coll, [None])
        if args.algo:     # in the order given
            algos = [a for a in dict.fromkeys(args.algo) if a in algos] or [None]
        elif args.nodes == 1 or args.devices_per_node == 1:   # one level: hierarchical
            algos = [a for a in algos if a != "hierarchical"]  # would be another name
        for algo in algos:
            for size in sizes(args.minbytes, args.maxbytes, args.stepfactor, args.stepbytes):
                count = input_count(coll, size // storage.itemsize, n)   # per rank
                if algo == "load_store" and load_store_refusal(
                        args.nodes, n, count * storage.itemsize, bool(args.pcap)):
                    continue     # it runs on one node, up to one slot per rank
                cases.append({"collective": coll, "algo": algo, "count": count,
                              "dtype": args.dtype, "bits": bits, "op": args.op,
                              "root": args.root, "warmup": args.warmup, "iters": args.iters,
                              "check": not args.no_check,
                              "registered": bool(args.registered)
                              and algo in OFFLOAD.get(coll, ())
                              and size <= registrable})
    return n, cases


def paths(nodes: int, per_node: int) -> str:
    """Which transports the ranks' bytes take."""
    if nodes == 1:
        return "every byte over shared memory"
    if per_node == 1:
        return "every byte over UDP"
    return "shared memory inside a node, UDP across nodes"


def run(args: argparse.Namespace) -> int:
    n, cases = plan(args)
    references = args.compare or []
    ref_cases = compare.comparable(cases)
    console = report_console()
    console.print(f"netdam bench: {n} ranks ({args.nodes} nodes x {args.devices_per_node}, "
                  f"{paths(args.nodes, args.devices_per_node)}), {len(cases)} cases, {args.warmup} warm-up + {args.iters} "
                  f"iterations each")
    with progress_bar(console) as bar:
        task = bar.add_task("netdam", total=len(cases))
        results = run_cases(cases, nprocs=n, nodes=args.nodes,
                            devices_per_node=args.devices_per_node, mtu=args.mtu,
                            pcap=args.pcap, faults=given_faults(args),
                            progress=lambda k: bar.update(task, completed=k),
                            bind=args.bind)
        bar.update(task, completed=len(cases))
        others: dict[str, list[Result]] = {}
        for name in references:
            t = bar.add_task(compare.REFERENCES[name].label, total=len(ref_cases))
            others[name] = compare.run_reference(
                name, ref_cases, n, progress=lambda k, t=t: bar.update(t, completed=k),
                bind=args.bind)
        if args.baseline:
            sizes_ = sorted({r.nbytes for r in results if r.nbytes})
            t = bar.add_task("baselines", total=2 * len(sizes_))
            others["baseline"] = compare.run_baselines(
                sizes_, args.warmup, args.iters, progress=lambda k: bar.update(t, completed=k))
    rows = [row(r, n) for r in results]
    extra = [row(r, n) for rs in others.values() for r in rs]
    annotate(rows, extra, references)
    console.print(table(rows, n, references, args.baseline))
    if extra:
        console.print(reference_table(extra, n))
    if args.json:
        write_output("json", args.json, json.dumps(rows + extra, indent=1))
    if args.plot:
        write_output("plot", args.plot, plot(rows + extra, n, args))
        console.print(f"plot written to {args.plot}")
    checked = results + [r for name in references for r in others[name]]
    return 0 if all(r.ok for r in checked) else 1     # a baseline is a measure, not a check


def row(r: Result, n: int) -> dict:
    c = r.case
    if c["collective"] in compare.BASELINES:     # one link or one copy: busbw = algbw
        algbw = r.nbytes / (r.time_us / 1e6) / 1e9 if r.time_us > 0 else 0.0
        busbw = algbw
    else:
        algbw, busbw = r.bandwidth(n)
    algo = c.get("algo")
    if c.get("registered"):
        algo = f"{algo}, registered"
    return {"library": c.get("library", "netdam"), "collective": c["collective"],
            "algo": algo, "size": r.nbytes, "type": c["dtype"],
            "count": case_size(c["collective"], c["count"], n),
            "redop": c.get("op"), "root": c.get("root"), "time_us": r.time_us,
            "min_us": min(r.times_us, default=0.0), "max_us": max(r.times_us, default=0.0),
            "algbw": algbw, "busbw": busbw, "wrong": r.wrong, "cpu_s": r.cpu_s,
            "error": r.error, "ranks": r.ranks if c.get("library") == "baseline" else n}


def annotate(rows: list[dict], extra: list[dict], references: list[str]) -> None:
    """Give each netdam row the figures of its references at the same shape:
    ``<lib>_busbw``, ``<lib>_time_us`` and ``vs_<lib>`` (netdam busbw / theirs), and
    the baselines' bandwidth at its size (``udp_stream_gbps``, ``memcpy_gbps``)."""
    def shape(d):
        return (d["collective"], d["size"], d["type"], d["redop"], d["root"])
    for name in references:
        theirs = {shape(d): d for d in extra if d["library"] == name and d["error"] is None}
        for d in rows:
            ref = theirs.get(shape(d))
            d[f"{name}_busbw"] = ref["busbw"] if ref else None
            d[f"{name}_time_us"] = ref["time_us"] if ref else None
            d[f"vs_{name}"] = (d["busbw"] / ref["busbw"] if ref and ref["busbw"] > 0
                               and d["error"] is None else None)
    limits = {(d["collective"], d["size"]): d["busbw"] for d in extra
              if d["library"] == "baseline"}
    if limits:
        for d in rows:
            for kind in compare.BASELINES:
                d[f"{kind.replace(' ', '_')}_gbps"] = limits.get((kind, d["size"]))


def table(rows: list[dict], n: int, references: list[str], baseline: bool) -> Table:
    t = Table(title=f"netdam bench, {n} ranks (time: median of iterations, slowest rank)")
    cols = ["collective", "algo", "size (B)", "count", "type", "redop", "root", "time (us)",
            "algbw (GB/s)", "busbw (GB/s)", "#wrong", "host cpu (us)"]
    cols += [f"vs {compare.REFERENCES[name].label}" for name in references]
    cols += ["UDP / memcpy (GB/s)"] if baseline else []
    for col in cols:
        t.add_column(col, justify="left" if col in ("collective", "algo", "type", "redop")
                     else "right")
    for d in rows:
        wrong = str(d["wrong"]) if d["error"] is None else f"[red]{d['error']}[/]"
        cells = [d["collective"], str(d["algo"] or "-"), f"{d['size']:,}", f"{d['count']:,}",
                 d["type"], d["redop"], str(d["root"]), f"{d['time_us']:,.0f}",
                 f"{d['algbw']:.3f}", f"{d['busbw']:.3f}", wrong,
                 f"{d['cpu_s'] * 1e6:,.0f}"]     # (seconds showed 4 KiB as 0.0000)
        cells += [_ratio(d[f"vs_{name}"]) for name in references]
        if baseline:
            cells.append(f"{d.get('udp_stream_gbps') or 0:.2f} / {d.get('memcpy_gbps') or 0:.2f}")
        t.add_row(*cells)
    return t


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def reference_table(extra: list[dict], n: int) -> Table:
    t = Table(title=f"references: the same shapes, {n} ranks (baselines: one stream, "
                    "one copy)")
    for col in ("library", "what", "size (B)", "type", "time (us)", "min (us)", "max (us)",
                "algbw (GB/s)", "busbw (GB/s)", "#wrong"):
        t.add_column(col, justify="left" if col in ("library", "what", "type") else "right")
    for d in extra:
        wrong = str(d["wrong"]) if d["error"] is None else f"[red]{d['error']}[/]"
        t.add_row(d["library"], d["collective"], f"{d['size']:,}", d["type"],
                  f"{d['time_us']:,.0f}", f"{d['min_us']:,.0f}", f"{d['max_us']:,.0f}",
                  f"{d['algbw']:.3f}", f"{d['busbw']:.3f}", wrong)
    return t


def series_name(d: dict) -> str:
    if d["library"] == "baseline":
        return d["collective"]
    if d["library"] == "netdam":
        return f"{d['collective']} {d['algo']}" if d["algo"] else d["collective"]
    return f"{d['collective']} {compare.REFERENCES[d['library']].label}"


def plot(rows: list[dict], n: int, args: argparse.Namespace) -> str:
    """One line per (collective, algorithm), then per reference library and baseline."""
    series: dict[str, list[tuple[int, float]]] = {}
    dashed = set()
    for d in rows:
        if d["error"] is None:
            series.setdefault(series_name(d), []).append((d["size"], d["busbw"]))
            if d["library"] != "netdam":
                dashed.add(series_name(d))
    title = (f"netdam bench: busbw, {n} ranks ({args.nodes} nodes x "
             f"{args.devices_per_node}), {args.dtype}")
    return busbw_svg(series, title, dashed)
