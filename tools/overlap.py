#!/usr/bin/env python3
"""Does a non-blocking all_reduce progress while the hosts are away? Its start against
the whole call, and the call with hosts away between start and wait.

Ranks of a LocalCluster (``--nodes`` nodes of one device each, every byte over UDP)
run each algorithm ``--count`` times per phase, each call after a barrier:

- alone: ``all_reduce_nb`` then ``wait``; *start* is the time until ``all_reduce_nb``
  returned, *call* until ``wait`` did;
- others away: the same, with every rank but rank 0 asleep between the two for D, the
  alone phase's call time (the slowest rank's median): hosts busy elsewhere (a GPU
  kernel, I/O), not calling into netdam; rank 0 waits at once;
- all away: every rank asleep for D, rank 0 too.

*Overlap* is how much of D a call hid: (call + D - call away) / D, 1 when it went on
entirely without the sleeping hosts, 0 when it waited for them. A host-driven algorithm
(``ring``) moves only while its hosts call into netdam, as MPI's collectives without a
progress thread: about 0 either way. The in-network chain (on the registered buffer
``comm.work_buffer``) needs no host once started: every rank hands its descriptor to
rank 0's device, which starts the chains once every rank is in (a joined start,
``netdam.collectives.offload``): about 1 with the others away and with all away. The
aggregation tree needs every host at each level (a host hands its partial sum up once
its children's are in): about 0 either way. Figures are medians over calls of the
slowest rank; compare runs of one sitting.

    python tools/overlap.py [--nodes 4] [--size 4M] [--count 20] [--algo chain ...] [--json FILE]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rankjob import check_job, job_parser, report, run_ranks, save  # noqa: E402

WARMUP = 3
ALGOS = ("ring", "chain", "tree")
IN_NETWORK = ("chain", "tree")


def rank_main(size: int, count: int, algos: list[str], out: str) -> int:
    """One rank's side (run by ``main`` through the launcher)."""
    import numpy as np

    import netdam
    comm = netdam.init(timeout=60)
    n = comm.size
    figures = {}
    for algo in algos:
        x = comm.work_buffer(size // 4) if algo in IN_NETWORK else \
            np.empty(size // 4, np.float32)

        def phase(away: float) -> dict:
            starts, calls = [], []
            for i in range(WARMUP + count):
                x[:] = comm.rank + 1
                comm.barrier()
                t0 = time.perf_counter()
                req = comm.all_reduce_nb(x, out=x, algo=algo)
                t1 = time.perf_counter()
                if away:
                    time.sleep(away)
                req.wait()
                t2 = time.perf_counter()
                if i >= WARMUP:
                    starts.append((t1 - t0) * 1e6)
                    calls.append((t2 - t0) * 1e6)
            if not (x == n * (n + 1) / 2).all():
                raise SystemExit(f"rank {comm.rank}: {algo} gave a wrong sum")
            return {"start_us": starts, "call_us": calls}

        alone = phase(0.0)
        d = comm.all_reduce(np.array([statistics.median(alone["call_us"])]), op="max")[0]
        others = phase(0.0 if comm.rank == 0 else d * 1e-6)
        figures[algo] = {"alone": alone, "others_away": others, "all_away": phase(d * 1e-6),
                         "away_us": float(d)}
    return report(comm, out, figures)


def main(argv: list[str] | None = None) -> int:
    ap = job_parser(__doc__.splitlines()[0], size="4M", count=20,
                    count_help="timed calls per algorithm")
    ap.add_argument("--algo", action="append", choices=ALGOS,
                    help="algorithms (repeatable; default: all)")
    a = ap.parse_args(argv)
    size = a.size
    algos = a.algo or list(ALGOS)
    check_job(ap, a)
    if a.rank_body:
        return rank_main(size, a.count, algos, a.rank_body[0])
    ranks = run_ranks(__file__, ["--size", str(size), "--count", str(a.count),
                                 *[f"--algo={x}" for x in algos]], a.nodes,
                      mem_size=max(64 << 20, 4 * size))
    if ranks is None:
        return 1
    fig = {"nodes": a.nodes, "size": size, "count": a.count, "algos": {}}
    for algo in algos:
        def slowest(ph: str, key: str) -> float:
            return statistics.median(max(r[algo][ph][key][i] for r in ranks)
                                     for i in range(a.count))
        d = ranks[0][algo]["away_us"]
        f = {"start_us": slowest("alone", "start_us"), "call_us": slowest("alone", "call_us"),
             "away_us": d}
        for ph in ("others_away", "all_away"):
            f[f"call_{ph}_us"] = slowest(ph, "call_us")
            f[f"overlap_{ph}"] = min(1.0, max(0.0, (f["call_us"] + d - f[f"call_{ph}_us"]) / d))
        fig["algos"][algo] = f
        print(f"{algo:>6}: start {f['start_us']:7.0f} us, call {f['call_us']:7.0f} us; "
              f"overlap of {d:7.0f} us away: others {f['overlap_others_away']:6.1%}, "
              f"all {f['overlap_all_away']:6.1%}")
    save(a.json, fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
