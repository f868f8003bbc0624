"""The processes behind ``netdam bench --compare`` and ``--baseline``.

Owns one rank of a reference library running the bench's cases, and the receiving end of
the raw UDP stream baseline:

- ``python -m netdam.collectives.compare_worker gloo CASES.json OUT_DIR`` with ``RANK``,
  ``WORLD_SIZE`` and ``MASTER_PORT`` set: torch.distributed over Gloo, rendezvous at
  ``tcp://127.0.0.1:MASTER_PORT``;
- ``mpirun ... python -m netdam.collectives.compare_worker mpi CASES.json OUT_DIR``:
  mpi4py over whatever transport mpirun was told to use;
- ``python -m netdam.collectives.compare_worker udp-sink``: prints its port, counts the
  bytes of each round of datagrams, acknowledges every ``ACK_EVERY`` bytes (the sender
  keeps at most ``WINDOW`` bytes unacknowledged, so the sink's socket buffer never
  overflows) and, at a one-byte end marker, answers with the byte count and the
  CLOCK_MONOTONIC time of the last data datagram (the sender holds the start time on the
  same clock).

A library rank does what a netdam rank does (``netdam.collectives.worker``): the same
rank-dependent inputs from ``check.make_input``, warm-up and timed iterations each after a
barrier, every timed iteration checked against the NumPy reference, one JSON line per
case in the same format, so ``runner.merge`` reads both. Output buffers are prepared
outside the timed region.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import struct
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from netdam.collectives import check as C

#: the stream sink's answers: kind (ACK or END), bytes received, time of the last datagram
REPORT = struct.Struct("!cqd")
END, QUIT, ACK = b"E", b"Q", b"A"
#: flow control of the stream: an acknowledgement per ACK_EVERY bytes, at most WINDOW
#: bytes in flight (well under the 4 MiB socket buffer both ends ask for)
ACK_EVERY, WINDOW = 512 << 10, 2 << 20


def now() -> float:
    """The clock sender and sink share (CLOCK_MONOTONIC is system-wide on Linux)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Gloo:
    """torch.distributed with the Gloo backend; tensors share memory with NumPy arrays."""

    OPS = {"sum": "SUM", "prod": "PRODUCT", "min": "MIN", "max": "MAX", "band": "BAND",
           "bor": "BOR", "bxor": "BXOR"}

    def __init__(self):
        import torch
        import torch.distributed as dist
        self.torch, self.dist = torch, dist
        self.rank, self.size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}",
                                rank=self.rank, world_size=self.size,
                                timeout=timedelta(seconds=120))

    def tensor(self, a: np.ndarray, bits: str | None):
        t = self.torch.from_numpy(a)
        return t.view(self.torch.bfloat16) if bits == "bfloat16" else t

    def barrier(self) -> None:
        self.dist.barrier()

    def all_reduce(self, x, out, case):
        np.copyto(out, x)
        op = getattr(self.dist.ReduceOp, self.OPS[case.get("op", "sum")])
        return lambda: self.dist.all_reduce(self.tensor(out, case.get("bits")), op=op)

    def all_gather(self, x, out, case):
        parts = [self.tensor(out[i], case.get("bits")) for i in range(self.size)]
        return lambda: self.dist.all_gather(parts, self.tensor(x, case.get("bits")))

    def broadcast(self, x, out, case):
        root = case.get("root", 0)
        np.copyto(out, x if self.rank == root else 0)
        return lambda: self.dist.broadcast(self.tensor(out, case.get("bits")), src=root)

    def close(self) -> None:
        self.dist.destroy_process_group()


class Mpi:
    """mpi4py's buffer interface on NumPy arrays."""

    OPS = {"sum": "SUM", "prod": "PROD", "min": "MIN", "max": "MAX", "band": "BAND",
           "bor": "BOR", "bxor": "BXOR"}

    def __init__(self):
        from mpi4py import MPI
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def barrier(self) -> None:
        self.comm.Barrier()

    def all_reduce(self, x, out, case):
        op = getattr(self.MPI, self.OPS[case.get("op", "sum")])
        return lambda: self.comm.Allreduce(x, out, op=op)

    def all_gather(self, x, out, case):
        return lambda: self.comm.Allgather(x, out)

    def broadcast(self, x, out, case):
        root = case.get("root", 0)
        np.copyto(out, x if self.rank == root else 0)
        return lambda: self.comm.Bcast(out, root=root)

    def close(self) -> None:
        pass


LIBRARIES = {"gloo": Gloo, "mpi": Mpi, "mpi-shm": Mpi}   # mpi-shm: another transport

#: collective -> (shape of the output for n ranks and count, the reference answer)
COLLECTIVES = {
    "all_reduce": (lambda n, c: (c,), lambda case, xs, r: C.reduce_all(
        xs, case.get("op", "sum"), case.get("bits"))),
    "all_gather": (lambda n, c: (n, c), lambda case, xs, r: np.stack(xs)),
    "broadcast": (lambda n, c: (c,), lambda case, xs, r: xs[case.get("root", 0)]),
}


def run_case(lib, case: dict) -> dict:
    n, rank = lib.size, lib.rank
    coll = case["collective"]
    shape, reference = COLLECTIVES[coll]
    inputs = [C.make_input(r, case["count"], case["dtype"], case.get("seed", 0),
                           case.get("op", "sum")) for r in range(n)]
    x = inputs[rank]
    want = reference(case, inputs, rank) if case.get("check", True) else None
    out = np.empty(shape(n, case["count"]), x.dtype)
    warmup = case.get("warmup", 1)
    times, wrong = [], 0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(warmup + case.get("iters", 1)):
        step = getattr(lib, coll)(x, out, case)
        lib.barrier()
        t0 = time.perf_counter()
        step()
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt * 1e6)
            if want is not None and not C.same(out, want, case.get("bits")):
                wrong += 1
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"rank": rank, "times_us": times, "wrong": wrong, "nbytes": int(x.nbytes),
            "cpu_s": cpu / max(len(times) + warmup, 1)}


def run_library(name: str, cases_file: str, out_dir: str) -> int:
    cases = json.loads(Path(cases_file).read_text())
    lib = LIBRARIES[name]()
    failed = 0
    with (Path(out_dir) / f"rank{lib.rank}.jsonl").open("w") as f:
        for i, case in enumerate(cases):
            try:
                res = run_case(lib, case)
            except Exception as exc:   # reported per case, then stop: ranks are out of step
                res = {"rank": lib.rank, "error": f"{type(exc).__name__}: {exc}"}
                failed = 1
            res["case"] = i
            f.write(json.dumps(res) + "\n")
            f.flush()
            if failed:
                break
    lib.close()
    return failed


def udp_sink() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1], flush=True)
    buf = bytearray(1 << 16)
    got, last, next_ack = 0, 0.0, ACK_EVERY
    while True:
        n, peer = s.recvfrom_into(buf)
        if n == 1 and buf[0:1] == END:
            s.sendto(REPORT.pack(END, got, last), peer)
            got, next_ack = 0, ACK_EVERY
        elif n == 1 and buf[0:1] == QUIT:
            return 0
        else:
            got += n
            last = now()
            if got >= next_ack:
                s.sendto(REPORT.pack(ACK, got, last), peer)
                next_ack += ACK_EVERY


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["udp-sink"]:
        return udp_sink()
    return run_library(argv[0], argv[1], argv[2])


if __name__ == "__main__":
    sys.exit(main())
