#!/usr/bin/env python3
"""What a registered in-network all_reduce costs its host in the communicator's own
code: the call, against the same round issued with the agent's primitives alone.

Ranks of a LocalCluster (``--nodes`` nodes of one device each) run ``--count`` rounds of
each way, alternating, on the registered buffer (``comm.work_buffer``), in place, each
after a barrier and a flush of the communicator's channels, and time each round's host
CPU (the thread's, ``time.thread_time``):

- *call*: ``comm.all_reduce(b, out=b, algo="chain")``;
- *bare*: what that call does on the wire, written out: this rank's block's chain
  descriptor as a quiet joined start at rank 0's device (``Agent.reduce_chain_nb``),
  a wait on the home device's signal word (``Channels.wait_word``) and the join retired
  (``Agent.answered``), with nothing of the communicator around it: no argument checks,
  algorithm choice, generators or steps.

The difference is the communicator's dispatch, the part of a call that a persistent or
compiled call path could save; the rest is the descriptor's send, the sleep until the
signal, and the wake-up. Both ways are checked (every element must equal the number of
ranks). Figures are the medians over ranks of each rank's mean; compare runs of one
sitting.

    python tools/dispatch_cost.py [--nodes 4] [--size 1M] [--count 300] [--json FILE]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rankjob import check_job, job_parser, report, run_ranks, save  # noqa: E402

WARMUP = 5
WAYS = ("call", "bare")


def rank_main(size: int, count: int, out: str) -> int:
    """One rank's side (run by ``main`` through the launcher)."""
    import netdam
    from netdam.collectives.algorithms import blocks
    from netdam.wire.fields import DType, RedOp

    comm = netdam.init(timeout=60)
    n, r, lay, agent, ch = comm.size, comm.rank, comm.layout, comm.agent, comm.channels
    b = comm.work_buffer(size // 4)
    devices = [a.device for a in comm.areas]
    lo, hi = blocks(b.size, n, 4)[r]
    signal = comm.areas[r] + lay.offload_signal

    def bare() -> None:
        comm.chain_blocks += n       # the communicator's count of finished blocks
        h = agent.reduce_chain_nb(devices[r:] + devices[:r], comm.areas[r] + (lay.work + lo),
                                  hi - lo, dtype=DType.FLOAT32, op=RedOp.SUM, signal=signal,
                                  group=comm.group, join=devices[0], quiet=True,
                                  timeout=comm.timeout)
        ch.track(h)
        ch.wait_word(lay.offload_signal, comm.chain_blocks, "the bare round")
        agent.answered(h)

    ways = {"call": lambda: comm.all_reduce(b, out=b, algo="chain"), "bare": bare}
    spent = dict.fromkeys(WAYS, 0)
    for i in range(WARMUP + count):       # the two ways alternate, round by round
        for way, run in ways.items():
            b[:] = 1
            comm.barrier()
            ch.flush()
            t = time.thread_time_ns()
            run()
            if i >= WARMUP:
                spent[way] += time.thread_time_ns() - t
            if b[0] != n or b[-1] != n:
                raise SystemExit(f"rank {r}: {way} gave {b[0]}, {b[-1]}, not {n}")
    return report(comm, out, {way: total / count / 1e3 for way, total in spent.items()})


def main(argv: list[str] | None = None) -> int:
    ap = job_parser(__doc__.splitlines()[0], size="1M", count=300,
                    count_help="timed rounds of each way")
    a = ap.parse_args(argv)
    check_job(ap, a, most=64 << 20)
    if a.rank_body:
        return rank_main(a.size, a.count, a.rank_body[0])
    ranks = run_ranks(__file__, ["--size", str(a.size), "--count", str(a.count)], a.nodes,
                      mem_size=128 << 20)
    if ranks is None:
        return 1
    fig = {"nodes": a.nodes, "size": a.size, "count": a.count,
           **{f"{w}_us": statistics.median(rk[w] for rk in ranks) for w in WAYS}}
    fig["dispatch_us"] = fig["call_us"] - fig["bare_us"]
    print(f"host CPU per round: call {fig['call_us']:.0f} us, bare {fig['bare_us']:.0f} us, "
          f"the communicator's part {fig['dispatch_us']:.0f} us "
          f"({fig['dispatch_us'] / fig['call_us']:.0%})")
    save(a.json, fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
