#!/usr/bin/env python3
"""Signal ping-pong between two hosts on two nodes: what put_signal / wait_signal cost.

Two ranks of a LocalCluster (two nodes, one device each) take turns: rank 0 PUT_SIGNALs
a payload into rank 1's home device and bumps a word there; rank 1, waiting on that
word with ``wait_signal``, answers the same way into rank 0's device. Each signal
crosses UDP to the other node's device; each wait is on the waiter's own node's device,
which is where netdam's waits can look at the word in place (shared memory) instead of
polling it with READs. The payload and the words live in the ranks' offload work areas.

Rank 0 reports the round trip (median, min, max over ``--count``), and each rank its
host CPU per round trip, its sleeps (voluntary context switches) per round trip and how
many of its waits looked in place. Like every figure here, compare runs of one sitting.

    python tools/signal_pingpong.py [--count 2000] [--bytes 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rankjob import report, run_ranks, save  # noqa: E402  (this folder: run as a script)

WARMUP = 50


def rank_main(count: int, nbytes: int, out: str) -> int:
    """One rank's side of the ping-pong (run by ``main`` through the launcher)."""
    import netdam
    comm = netdam.init(timeout=30)
    rank, agent, lay = comm.rank, comm.agent, comm.layout
    peer = 1 - rank
    mine = comm.areas[rank] + lay.work        # the word others bump for me, then data
    theirs = comm.areas[peer] + lay.work
    payload = bytes(range(256)) * (nbytes // 256 + 1)
    payload = payload[:nbytes]
    agent.write(mine, bytes(8))
    comm.barrier()
    times, r0 = [], None
    for i in range(WARMUP + count):
        if i == WARMUP:
            r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        if rank == 0:
            agent.put_signal(theirs + 64, payload, theirs, 1)
            agent.wait_signal(mine, i + 1)
        else:
            agent.wait_signal(mine, i + 1)
            agent.put_signal(theirs + 64, payload, theirs, 1)
        if i >= WARMUP:
            times.append((time.perf_counter() - t0) * 1e6)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    t_cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    got = bytes(agent.read(mine + 64, nbytes))
    if got != payload:
        raise SystemExit(f"rank {rank}: the payload arrived damaged")
    return report(comm, out, {"rank": rank, "times_us": times, "cpu_us": t_cpu / count * 1e6,
                              "sleeps": (r1.ru_nvcsw - r0.ru_nvcsw) / count,
                              "in_place": agent.counters.get("signals_in_place", 0)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="timed round trips")
    ap.add_argument("--bytes", type=int, default=64, help="payload of each signal")
    ap.add_argument("--json", help="write the figures as JSON")
    ap.add_argument("--rank-body", nargs=1, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.count < 1:
        ap.error("--count must be at least 1")
    if not 0 < a.bytes <= 4096:
        ap.error("--bytes must be from 1 to 4096")
    if a.rank_body:
        return rank_main(a.count, a.bytes, a.rank_body[0])
    ranks = run_ranks(__file__, ["--count", str(a.count), "--bytes", str(a.bytes)], 2)
    if ranks is None:
        return 1
    rt = ranks[0]["times_us"]
    fig = {"count": a.count, "bytes": a.bytes, "round_trip_us": statistics.median(rt),
           "min_us": min(rt), "max_us": max(rt),
           "cpu_us": [r["cpu_us"] for r in ranks], "sleeps": [r["sleeps"] for r in ranks],
           "waits_in_place": [r["in_place"] for r in ranks]}
    print(f"round trip of {a.bytes}-byte signals over {a.count}: median "
          f"{fig['round_trip_us']:.1f} us (min {fig['min_us']:.1f}, max {fig['max_us']:.1f})")
    for r in ranks:
        print(f"rank {r['rank']}: host CPU {r['cpu_us']:.1f} us and {r['sleeps']:.2f} sleeps "
              f"per round trip; waits that looked in place: {r['in_place']}")
    save(a.json, fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
