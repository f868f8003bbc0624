"""``netdam launch -n N [--devices-per-node K] SCRIPT [ARGS]``: run a program on every host.

Owns running N host processes against a LocalCluster: each gets the bootstrap
environment (so ``netdam.init()`` works inside), its output is prefixed with its rank,
the first rank to fail ends the launch with its exit code (the others are terminated),
and Ctrl-C or a dead process tears everything down with no orphans.

Each rank is bound to one CPU of those the launcher may use, rank r to the r-th modulo
their number (``--bind cpu``, the default; Open MPI's ``--bind-to core --map-by core``),
so ranks are spread evenly however many there are. Unbound, the scheduler keeps ranks
that wake each other often on one CPU: three of four ranks on one of two CPUs made a
4 KiB all_reduce on one node take 1.7x as long (BENCHMARKS.md). The devices are not
bound. ``--bind none`` leaves the ranks to the scheduler (a rank that runs threads of
its own may want all CPUs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from netdam.cluster import LocalCluster, spawn
from netdam.errors import UsageError
from netdam.transport.faults import add_fault_arguments, given_faults


def _pump(stream, prefix: str, out, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(f"{prefix}{line}" if line.endswith("\n") else f"{prefix}{line}\n")
            out.flush()
    stream.close()


#: values of ``--bind``: one CPU per rank, round robin (default), or none
BIND_CHOICES = ("cpu", "none")


def rank_cpus(n: int, allowed=None) -> list[int]:
    """The CPU of each of n ranks bound round robin over ``allowed`` (default: the CPUs
    this process may use), in CPU number order."""
    cpus = sorted(os.sched_getaffinity(0) if allowed is None else allowed)
    return [cpus[r % len(cpus)] for r in range(n)]


def add_bind_argument(p: argparse.ArgumentParser) -> None:
    """``--bind``, for every command that starts ranks (launch, run, bench)."""
    p.add_argument("--bind", choices=BIND_CHOICES, default="cpu",
                   help="bind rank r to the r-th CPU, round robin (cpu, the default), "
                        "or leave the ranks to the scheduler (none)")


def run_hosts(cluster: LocalCluster, n: int, argv: list[str], *, timeout: float | None = None,
              out=None, err=None, extra_env: dict | None = None, bind: str = "cpu") -> int:
    """Run ``argv`` as n host processes, each bound to a CPU as ``bind`` says (module
    docstring); return 0 or the first failing rank's code."""
    if bind not in BIND_CHOICES:
        raise UsageError(f"--bind {bind}: expected one of {', '.join(BIND_CHOICES)}")
    out, err = out or sys.stdout, err or sys.stderr
    cpus = rank_cpus(n) if bind == "cpu" else None
    lock = threading.Lock()
    procs, pumps = [], []
    width = len(str(n - 1))
    for rank in range(n):
        env = dict(os.environ) | cluster.env(rank, n) | (extra_env or {})
        env["PYTHONUNBUFFERED"] = "1"
        p = spawn(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                  bufsize=1, cpu=None if cpus is None else cpus[rank])
        procs.append(p)
        prefix = f"[{rank:>{width}}] "
        for stream, sink in ((p.stdout, out), (p.stderr, err)):
            t = threading.Thread(target=_pump, args=(stream, prefix, sink, lock), daemon=True)
            t.start()
            pumps.append(t)
    deadline = None if timeout is None else time.monotonic() + timeout
    code = 0
    try:
        while True:
            states = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(states) if c not in (None, 0)]
            if failed:
                rank, code = failed[0]
                with lock:
                    err.write(f"netdam launch: rank {rank} exited with {code}; stopping\n")
                break
            if all(c == 0 for c in states):
                break
            if deadline is not None and time.monotonic() > deadline:
                with lock:
                    err.write(f"netdam launch: timed out after {timeout:g} s\n")
                code = 124
                break
            time.sleep(0.02)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for t in pumps:
            t.join(timeout=2)
    return code if code >= 0 else 128 - code


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--nprocs", type=int, required=True, help="number of host processes")
    p.add_argument("--nodes", type=int, default=None,
                   help="emulated nodes (default: one per host process)")
    p.add_argument("--devices-per-node", type=int, default=1, metavar="K")
    p.add_argument("--mem-size", type=int, default=64 << 20, help="bytes of memory per device")
    p.add_argument("--mtu", type=int, default=None, help="datagram size (default 65000)")
    p.add_argument("--pcap", metavar="FILE", help="write every netdam datagram to FILE")
    p.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    p.add_argument("--check-args", action="store_true",
                   help="check before each collective that every rank passed the same "
                        "arguments (NETDAM_CHECK_ARGS=1)")
    add_fault_arguments(p)
    p.add_argument("script", help="Python script (or a program, with --exec)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")
    p.add_argument("--exec", action="store_true",
                   help="SCRIPT is a program to execute, not a Python file")
    add_bind_argument(p)


def run(args: argparse.Namespace) -> int:
    if args.nprocs < 1:
        raise UsageError(f"-n must be at least 1, not {args.nprocs}")
    nodes = args.nodes or args.nprocs
    if nodes < 1 or nodes > args.nprocs:
        raise UsageError(f"--nodes must be between 1 and -n ({args.nprocs}), not {nodes}")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, not {args.timeout:g}")
    if args.exec:
        if shutil.which(args.script) is None:
            raise UsageError(f"no such program: {args.script}")
        argv = [args.script, *args.args]
    else:
        if not Path(args.script).is_file():
            raise UsageError(f"no such script: {args.script}")
        argv = [sys.executable, args.script, *args.args]
    faults = given_faults(args)
    with LocalCluster(nodes=nodes, devices_per_node=args.devices_per_node,
                      mem_size=args.mem_size, mtu=args.mtu, pcap=args.pcap, **faults) as c:
        try:
            return run_hosts(c, args.nprocs, argv, timeout=args.timeout, bind=args.bind,
                             extra_env={"NETDAM_CHECK_ARGS": "1"} if args.check_args else None)
        except KeyboardInterrupt:
            return 130
