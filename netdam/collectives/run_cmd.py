"""``netdam run COLLECTIVE --nodes N --size BYTES ...``: one collective, checked.

Owns the one-case command: parse the collective's parameters, run it on a fresh local
cluster (one rank per device) with optional capture and fault injection, and print one
row with time, bandwidths and #wrong. Exit status 1 when the result was wrong.
"""

from __future__ import annotations

import argparse

from netdam.collectives.check import BUSBW_FACTOR, case_size, input_count, numpy_dtype
from netdam.collectives.communicator import (ALL_GATHER_ALGOS, ALLREDUCE_ALGOS,
                                             BROADCAST_ALGOS)
from netdam.collectives.runner import load_store_refusal, memory_refusal, run_cases
from netdam.collectives.types import OP_NAMES
from netdam.demo import report
from netdam.errors import UsageError
from netdam.launch import add_bind_argument
from netdam.transport.faults import add_fault_arguments, given_faults
from netdam.ui import report_console

#: what ``--algo`` may name, per collective (the communicator's ``algo=`` choices)
ALGOS = {"all_reduce": ("auto", *(a for a in ALLREDUCE_ALGOS if a != "auto")),
         "broadcast": ("auto", *BROADCAST_ALGOS),
         "all_gather": ("auto", *ALL_GATHER_ALGOS)}


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b").rstrip("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 64K, 16M)") \
            from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("collective", choices=sorted(BUSBW_FACTOR))
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--devices-per-node", type=int, default=1, metavar="K")
    p.add_argument("--size", type=parse_size, default=1 << 20,
                   help="bytes per rank (an all_gather's: of the gathered array, as "
                        "nccl-tests sizes it)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--op", default="sum", choices=sorted(OP_NAMES))
    p.add_argument("--algo", default=None, help="; ".join(
        f"{c}: {', '.join(a)}" for c, a in ALGOS.items()))
    p.add_argument("--root", type=int, default=0)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--deterministic", action="store_true",
                   help="reproducible mode: sums in rank order, bit-exact run after run")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare every iteration with NumPy (default on)")
    p.add_argument("--pcap", metavar="FILE")
    p.add_argument("--mtu", type=int, default=None)
    add_bind_argument(p)
    add_fault_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        storage, bits = numpy_dtype(args.dtype)
    except (UsageError, KeyError):
        raise UsageError(f"unknown dtype {args.dtype!r}") from None
    if args.algo and args.algo not in ALGOS.get(args.collective, ()):
        raise UsageError(f"{args.collective} has no algorithm {args.algo!r}")
    if args.nodes < 1 or args.devices_per_node < 1:
        raise UsageError("--nodes and --devices-per-node must be at least 1")
    if args.iters < 1 or args.warmup < 0:
        raise UsageError("--iters must be at least 1 and --warmup at least 0")
    if args.size < 0:
        raise UsageError(f"--size {args.size}: must not be negative")
    n = args.nodes * args.devices_per_node
    if not 0 <= args.root < n:
        raise UsageError(f"--root {args.root} outside 0..{n - 1}")
    why = memory_refusal(n, args.size, args.check)
    if why:
        raise UsageError(why)
    count = input_count(args.collective, args.size // storage.itemsize, n)   # per rank
    if args.size and not count:      # nothing would run, and the row would still say ok
        least = case_size(args.collective, 1, n) * storage.itemsize
        raise UsageError(f"--size {args.size}: less than one {args.dtype} element per rank; "
                         f"the smallest {args.collective} of {n} ranks is {least} bytes "
                         "(--size 0 runs an empty one)")
    if args.algo == "load_store":
        why = load_store_refusal(args.nodes, n, count * storage.itemsize, bool(args.pcap))
        if why:
            raise UsageError(why)
    case = {"collective": args.collective, "count": count,
            "dtype": args.dtype, "bits": bits, "op": args.op, "algo": args.algo,
            "root": args.root, "iters": args.iters, "warmup": args.warmup,
            "deterministic": args.deterministic, "check": args.check}
    faults = given_faults(args)
    [res] = run_cases([case], nprocs=n, nodes=args.nodes,
                      devices_per_node=args.devices_per_node, mtu=args.mtu, pcap=args.pcap,
                      faults=faults, bind=args.bind)
    report_console().print(report([res], n, f"netdam run {args.collective}, {n} ranks"))
    return 0 if res.ok else 1

