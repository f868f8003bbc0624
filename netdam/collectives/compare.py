"""The yardsticks beside ``netdam bench``: other libraries, and the physical limits.

Owns the parent side of ``--compare gloo|mpi|mpi-shm`` and ``--baseline``:

- **References** (one row of ``REFERENCES`` each): the same cases (collective, size,
  dtype, op, root; warm-up and timed iterations, every one checked) run by
  torch.distributed over Gloo (N local processes meeting at ``tcp://127.0.0.1:PORT``,
  Gloo's own sockets kept on ``lo``) or by mpi4py under Open MPI (``mpirun --mca btl
  tcp,self``, TCP on loopback; ``mpi-shm``: ``--mca btl vader,self``, its shared-memory
  transport, the yardstick for ranks of one node), with the same world size and the same
  placement as netdam's ranks (``--bind``: rank r on the r-th CPU, round robin, through
  ``--bind-to core:overload-allowed`` for Open MPI; or none). Results come back as
  ``runner.Result``, merged exactly as netdam's own ranks' lines are (time = the
  slowest rank's median).
- **Baselines**: the same number of bytes moved by a minimal UDP stream (one sender, one
  receiving process, datagrams of netdam's default size, a window of acknowledgements so
  the receiver is never overrun, no retransmission; the time runs from the first send to
  the last datagram received) and by one memcpy (``np.copyto``). Their bandwidth is what
  one link or one memory copy can do here, so a busbw can be read against it. A stream
  round that still lost datagrams counts in #wrong, and its time is that of the bytes
  that arrived scaled up to all of them; baselines never fail the run.

The worker processes live in ``compare_worker``. Only the collectives every library has
(``COMPARABLE``) are compared; the others simply get no ratio.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from netdam.cluster import spawn
from netdam.collectives.compare_worker import ACK, END, QUIT, REPORT, WINDOW, now
from netdam.collectives.runner import Result, merge
from netdam.errors import UsageError
from netdam.launch import rank_cpus
from netdam.wire.fields import DEFAULT_MTU

COMPARABLE = ("all_reduce", "all_gather", "broadcast")
# no square brackets in these: the command line prints errors as rich markup
INSTALL_TORCH = ("pip install torch --index-url https://download.pytorch.org/whl/cpu "
                 "(the CPU build; netdam's bench extra)")
INSTALL_MPI = "apt-get install openmpi-bin libopenmpi-dev && pip install mpi4py"


@dataclass(frozen=True)
class Reference:
    """A library netdam is compared with: what it needs and which dtypes it takes."""
    label: str
    modules: tuple[str, ...]
    programs: tuple[str, ...]
    install: str
    dtypes: frozenset[str]


_MPI_DTYPES = frozenset({"float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                        "uint16", "uint32", "uint64"})

REFERENCES = {
    "gloo": Reference("Gloo", ("torch",), (), INSTALL_TORCH,
                      frozenset({"float32", "float64", "float16", "bfloat16", "int8", "uint8",
                                 "int32", "int64"})),
    "mpi": Reference("Open MPI", ("mpi4py",), ("mpirun",), INSTALL_MPI, _MPI_DTYPES),
    # the same over its shared-memory transport: what to set beside netdam's ranks of
    # one node, which load and store each other's memory
    "mpi-shm": Reference("Open MPI shm", ("mpi4py",), ("mpirun",), INSTALL_MPI,
                         _MPI_DTYPES),
}

BASELINES = ("udp stream", "memcpy")


def require(name: str, dtype: str) -> None:
    """Raise a one-line UsageError unless ``--compare name`` can run here with ``dtype``."""
    ref = REFERENCES[name]
    missing = [m for m in ref.modules if importlib.util.find_spec(m) is None]
    missing += [p for p in ref.programs if shutil.which(p) is None]
    if missing:
        raise UsageError(f"--compare {name} needs {' and '.join(missing)}, not installed "
                         f"here; install with: {ref.install}")
    if dtype not in ref.dtypes:
        raise UsageError(f"--compare {name} takes --dtype {', '.join(sorted(ref.dtypes))}; "
                         f"not {dtype}")


def comparable(cases: list[dict]) -> list[dict]:
    """One case per distinct (collective, count, dtype, op, root): the algorithm is
    netdam's business, the references run each shape once."""
    seen, out = set(), []
    for c in cases:
        key = (c["collective"], c["count"], c["dtype"], c.get("op"), c.get("root"))
        if c["collective"] in COMPARABLE and key not in seen:
            seen.add(key)
            out.append({**c, "algo": None})
    return out


def key(case: dict) -> tuple:
    return (case["collective"], case["count"], case["dtype"], case.get("op"), case.get("root"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(name: str, n: int, argv: list[str], bind: str = "cpu"
              ) -> list[tuple[list[str], dict, int | None]]:
    """The processes to start for ``name`` with world size n: (argv, extra env, the CPU
    to bind it to or None) each. Ranks are placed as ``netdam.launch`` places netdam's
    (``bind``); mpirun binds its own ranks the same way (by core, rank r on the r-th
    CPU, sharing them round robin when there are more ranks than CPUs)."""
    if name == "gloo":
        port = str(_free_port())
        cpus = rank_cpus(n) if bind == "cpu" else [None] * n
        return [(argv, {"RANK": str(r), "WORLD_SIZE": str(n), "MASTER_PORT": port,
                        "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}, cpus[r])
                for r in range(n)]
    btl = ["--mca", "btl", "vader,self"] if name == "mpi-shm" else \
        ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]
    binding = ["--map-by", "core:oversubscribe", "--bind-to", "core:overload-allowed"] \
        if bind == "cpu" else ["--oversubscribe", "--bind-to", "none"]
    mpirun = ["mpirun", "-n", str(n), *binding, *btl, "--mca", "oob_tcp_if_include", "lo"]
    if os.geteuid() == 0:
        mpirun.append("--allow-run-as-root")
    return [(mpirun + argv, {}, None)]


def run_reference(name: str, cases: list[dict], nprocs: int, timeout: float = 600.0,
                  progress: Callable[[int], None] | None = None, bind: str = "cpu"
                  ) -> list[Result]:
    """Run ``cases`` (from ``comparable``) with library ``name`` on nprocs local ranks,
    placed as ``bind`` says."""
    with tempfile.TemporaryDirectory(prefix=f"netdam-{name}-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "cases.json").write_text(json.dumps(cases))
        argv = [sys.executable, "-m", "netdam.collectives.compare_worker", name,
                str(tmpdir / "cases.json"), str(tmpdir)]
        procs, logs = [], []
        for i, (cmd, extra, cpu) in enumerate(commands(name, nprocs, argv, bind)):
            logs.append(tmpdir / f"process{i}.log")
            with logs[-1].open("w") as log:     # a file, not a pipe: nothing can block
                procs.append(spawn(cmd, env={**os.environ, **extra}, stdout=log,
                                   stderr=subprocess.STDOUT, cpu=cpu))
        error = _wait(procs, tmpdir / "rank0.jsonl", timeout, progress)
        if error:
            said = [ln for log in logs for ln in log.read_text().splitlines() if ln.strip()]
            error += (": " + said[-1][:200]) if said else ""
        lines = []
        for f in sorted(tmpdir.glob("rank*.jsonl")):
            lines += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    results = merge(cases, lines)
    for r in results:
        r.case = {**r.case, "library": name}
        if error and r.error is None and r.ranks < nprocs:
            r.error = error
    return results


def _wait(procs: list[subprocess.Popen], rank0: Path, timeout: float,
          progress: Callable[[int], None] | None) -> str | None:
    """Wait for every process; the first failure or the timeout ends the others (by
    their own handles: SIGTERM, which mpirun passes on to its ranks, then SIGKILL).
    Returns why it failed, or None."""
    deadline, seen, error = time.monotonic() + timeout, -1, None
    while any(p.poll() is None for p in procs):
        bad = [p for p in procs if p.returncode not in (None, 0)]
        if bad or time.monotonic() > deadline:
            error = (f"a rank exited with {bad[0].returncode}" if bad
                     else f"timed out after {timeout:.0f} s")
            break
        if progress is not None and rank0.exists():
            done = sum(1 for _ in rank0.open())
            if done != seen:
                seen = done
                progress(done)
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    bad = [p for p in procs if p.returncode != 0]
    if bad and error is None:
        error = f"a rank exited with {bad[0].returncode}"
    return error


def _baseline_result(kind: str, nbytes: int, times_us: list[float], wrong: int) -> Result:
    case = {"collective": kind, "library": "baseline", "algo": None, "count": nbytes,
            "dtype": "uint8", "op": None, "root": None}
    return Result(case=case, time_us=statistics.median(times_us), times_us=times_us,
                  wrong=wrong, nbytes=nbytes, ranks=1)


def memcpy(nbytes: int, warmup: int, iters: int) -> Result:
    src, dst = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e6)
    return _baseline_result("memcpy", nbytes, times, 0)


class UdpStream:
    """A sink process and this process as sender; one round per measurement."""

    def __init__(self, datagram: int = DEFAULT_MTU):
        self.datagram = datagram
        self.sink = subprocess.Popen([sys.executable, "-m", "netdam.collectives.compare_worker",
                                      "udp-sink"], stdout=subprocess.PIPE, text=True)
        self.port = int(self.sink.stdout.readline())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.settimeout(1.0)
        self.buf = memoryview(bytearray(b"x" * datagram))

    def round(self, nbytes: int) -> tuple[float, int]:
        """Seconds from the first send to the last datagram received, and bytes received."""
        dest = ("127.0.0.1", self.port)
        sendto, buf, d = self.sock.sendto, self.buf, self.datagram
        acked = 0
        t0 = now()
        for off in range(0, nbytes, d):
            while off - acked > WINDOW:     # wait for the sink to catch up
                kind, acked, _ = self._answer()
                if kind is None:            # an acknowledgement was lost: go on
                    acked = off
            sendto(buf[:min(d, nbytes - off)], dest)
        for _ in range(10):      # the end marker can be dropped like any datagram
            sendto(END, dest)
            kind, got, last = self._answer()
            while kind == ACK:
                kind, got, last = self._answer()
            if kind == END:
                return max(last - t0, 1e-9), got
        raise RuntimeError("the UDP stream sink does not answer")

    def _answer(self) -> tuple[bytes | None, int, float]:
        try:
            return REPORT.unpack(self.sock.recv(REPORT.size))
        except socket.timeout:
            return None, 0, 0.0

    def measure(self, nbytes: int, warmup: int, iters: int) -> Result:
        times, lossy = [], 0
        for i in range(warmup + iters):
            secs, got = self.round(nbytes)
            if i >= warmup:
                times.append(secs * 1e6 * nbytes / max(got, 1))
                lossy += got < nbytes
        return _baseline_result("udp stream", nbytes, times, lossy)

    def close(self) -> None:
        self.sock.sendto(QUIT, ("127.0.0.1", self.port))
        try:
            self.sink.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.sink.kill()
            self.sink.wait()
        self.sock.close()


def run_baselines(sizes: list[int], warmup: int, iters: int,
                  progress: Callable[[int], None] | None = None) -> list[Result]:
    """A UDP stream row and a memcpy row per size."""
    out = []
    stream = UdpStream()
    try:
        for size in sizes:
            out += [stream.measure(size, warmup, iters), memcpy(size, warmup, iters)]
            if progress is not None:
                progress(len(out))
    finally:
        stream.close()
    return out
