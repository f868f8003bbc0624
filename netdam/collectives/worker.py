"""The host program behind ``netdam demo``, ``netdam run`` and ``netdam bench``.

Owns running a list of collective cases on one rank and reporting each as a JSON line:
every rank builds its own rank-dependent input, runs warm-up and timed iterations, checks
every iteration's result against the NumPy reference (which it can compute alone, from
the seed), and appends ``{"case": i, "rank": r, "times_us": [...], "wrong": k, ...}`` to
its output file. The parent (``netdam.collectives.runner``) merges the ranks' lines.

Run as ``python -m netdam.collectives.worker CASES.json OUT_DIR`` under the bootstrap
environment (``netdam launch`` sets it).
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from netdam.collectives import check as C


def _reference(case: dict, n: int, rank: int, inputs: list[np.ndarray]):
    coll, op, bits = case["collective"], case.get("op", "sum"), case.get("bits")
    root = case.get("root", 0)
    if coll == "all_reduce":
        return C.reduce_all(inputs, op, bits)
    if coll == "reduce":
        return C.reduce_all(inputs, op, bits) if rank == root else None
    if coll == "broadcast":
        return inputs[root]
    if coll == "all_gather":
        return np.stack(inputs)
    if coll == "reduce_scatter":
        total = C.reduce_all(inputs, op, bits)
        return np.array_split(total, n)[rank]
    if coll == "all_to_all":
        return np.concatenate([np.array_split(x, n)[rank] for x in inputs])
    if coll == "all_to_allv":
        counts = _v_counts(n, len(inputs[0]))
        parts = []
        for src, x in enumerate(inputs):
            start = sum(counts[src][:rank])
            parts.append(x[start:start + counts[src][rank]])
        return np.concatenate(parts)
    if coll == "barrier":
        return None
    if coll == "moe":
        return C.encode_bits(C.moe_reference(*inputs[rank]), "bfloat16")
    raise ValueError(f"unknown collective {coll!r}")


def _inputs(case: dict, n: int) -> list:
    if case["collective"] == "moe":   # (tokens, topk, weights); count = tokens x hidden
        hidden, k = case.get("hidden", 256), case.get("k", 4)
        return [C.moe_input(r, case["count"] // hidden, hidden, case.get("experts", 2 * n),
                            k, case.get("seed", 0)) for r in range(n)]
    return [C.make_input(r, case["count"], case["dtype"], case.get("seed", 0),
                         case.get("op", "sum")) for r in range(n)]


def _moe(comm, case: dict, x, topk, weights):
    """Dispatch, the stand-in experts on the dequantized rows, combine."""
    experts = case.get("experts", 2 * comm.size)
    d = comm.moe_dispatch(x, topk, experts, topk_weights=weights)
    first = comm.rank * (experts // comm.size)
    xd, y = d.x, np.zeros((len(d.src_rank), d.hidden), np.float32)
    for row, j in zip(*np.nonzero(d.topk_idx >= 0)):
        y[row] += d.topk_weights[row, j] * C.moe_expert(first + int(d.topk_idx[row, j]),
                                                        xd[row])
    return comm.moe_combine(y, d)


def _v_counts(n: int, count: int) -> list[list[int]]:
    """all_to_allv send counts: rank s sends an uneven, rank-dependent share to each p."""
    out = []
    for s in range(n):
        weights = [(s + p) % 3 + 1 for p in range(n)]
        raw = [count * w // sum(weights) for w in weights]
        raw[-1] += count - sum(raw)
        out.append(raw)
    return out


def _prepare(comm, case: dict, x, registered=None):
    """The argument of one iteration, made before the clock starts. A registered case
    fills ``registered``, its buffer in the device's work area (one per case, reused by
    every iteration, as nccl-tests -R registers its buffers once)."""
    if case["collective"] == "broadcast":
        x = x if comm.rank == case.get("root", 0) else np.zeros_like(x)
        if registered is None:
            return x.copy()
    if registered is not None:
        registered[:] = x
        return registered
    return x


def _run_once(comm, case: dict, x: np.ndarray):
    coll, kw = case["collective"], {}
    if case.get("bits"):
        kw["dtype"] = case["bits"]
    op = case.get("op", "sum")
    root = case.get("root", 0)
    if coll == "all_reduce":
        comm.tree_radix = case.get("radix", 2)
        return comm.all_reduce(x, op, algo=case.get("algo"),
                               out=x if case.get("registered") else None,
                               deterministic=case.get("deterministic"), **kw)
    if coll == "reduce":
        return comm.reduce(x, root, op, **kw)
    if coll == "broadcast":      # x: the buffer _prepare made (broadcast works in place)
        return comm.broadcast(x, root, algo=case.get("algo"))
    if coll == "all_gather":
        return comm.all_gather(x, algo=case.get("algo"))
    if coll == "reduce_scatter":
        return comm.reduce_scatter(x, op, **kw)
    if coll == "all_to_all":   # equal-length inputs: everyone sends me the same share
        if len(x) % comm.size == 0:
            return comm.all_to_all(x)
        counts = [len(p) for p in np.array_split(x, comm.size)]
        return comm.all_to_allv(x, counts, [counts[comm.rank]] * comm.size)
    if coll == "all_to_allv":
        counts = _v_counts(comm.size, len(x))
        return comm.all_to_allv(x, counts[comm.rank], [counts[s][comm.rank]
                                                       for s in range(comm.size)])
    if coll == "barrier":
        return comm.barrier()
    if coll == "moe":
        return _moe(comm, case, *x)
    raise ValueError(f"unknown collective {coll!r}")


def run_case(comm, case: dict) -> dict:
    n, rank = comm.size, comm.rank
    inputs = _inputs(case, n)
    bits = "bfloat16" if case["collective"] == "moe" else case.get("bits")  # combine's type
    want = _reference(case, n, rank, inputs) if case.get("check", True) else None
    times, wrong, digest, got = [], 0, None, None
    cpu = []            # host CPU seconds of each timed collective (not the checks)
    mine = inputs[rank]
    registered = comm.work_buffer(len(mine), mine.dtype) if case.get("registered") else None
    for i in range(case.get("warmup", 1) + case.get("iters", 1)):
        arg = _prepare(comm, case, mine, registered)
        comm.barrier()
        comm.channels.flush()   # the barrier's last answers are the barrier's, not timed
        c0 = _cpu_seconds()
        t0 = time.perf_counter()
        got = _run_once(comm, case, arg)
        dt = time.perf_counter() - t0
        c1 = _cpu_seconds()
        if i >= case.get("warmup", 1):
            times.append(dt * 1e6)
            cpu.append(c1 - c0)
            if want is not None and not C.same(np.asarray(got), want, bits):
                wrong += 1
    if got is not None:           # the last result's fingerprint (ranks compare them)
        digest = hashlib.sha256(np.asarray(got).tobytes()).hexdigest()[:16]
    return {"rank": rank, "times_us": times, "wrong": wrong, "digest": digest,
            "cpu_s": sum(cpu) / max(len(cpu), 1),
            "nbytes": int(_first(inputs[rank]).nbytes)}


def _cpu_seconds() -> float:
    """CPU time of this process (every thread: the agent's and the heartbeat's)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cases = json.loads(Path(argv[0]).read_text())
    out_dir = Path(argv[1])
    import netdam
    comm = netdam.init(deterministic=False)
    out = out_dir / f"rank{comm.rank}.jsonl"
    failed = 0
    with out.open("w") as f:
        for i, case in enumerate(cases):
            try:
                res = run_case(comm, case)
            except Exception as exc:   # reported per case; the run goes on
                res = {"rank": comm.rank, "error": f"{type(exc).__name__}: {exc}"}
                failed += 1
            res["case"] = i
            f.write(json.dumps(res) + "\n")
            f.flush()
            if "error" in res:
                break   # the ranks' message streams are no longer in step
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
