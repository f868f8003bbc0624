#!/usr/bin/env python3
"""Transport benchmarks: prints one table the lead records.

- 8-byte READ round trip through the agent and a device process (UDP, shared memory, and
  relayed through a device of the host's node to another device, SPEC §8.5)
  against a plain Python UDP echo, the same echo with both ends polling their socket
  instead of sleeping (as netdam's agent and device do while they wait), and a C UDP
  echo (tools/udp_echo.c, compiled with the C compiler at run time into a temporary
  directory), all of the same datagram size;
- 64 KiB WRITE throughput (blocking and pipelined);
- 16 MiB WRITE and READ throughput over UDP and over shared memory (rings only, and with
  the agent's zero-copy mapping of device memory), against a C UDP stream of the same
  datagram size, and against the same stream doing a netdam datagram's byte work in C
  (CRC32C made and checked, payloads from and into 16 MiB of memory): what a compiled
  netdam could reach at best; the same byte work over 1 MiB, which stays in the cache
  (the best case of any datagram size's byte work); and the stream sending from those
  16 MiB with no CRC32C (what reading a large buffer costs the sender alone);
- CRC32C throughput of each kernel this CPU has (``netdam.wire.fast.select_crc``), on one
  65000-byte datagram in the cache (as a receiver checks what it just received) and on
  16 MiB in datagrams of that size (as a sender stamps a buffer the caches do not hold).

Loopback only. Each latency figure is the median of several interleaved trials, so the
baselines and netdam see the same machine noise; each throughput figure is the median
of as many runs, after one warm-up. A 16 MiB trial moves 16 MiB each way over shared
memory (rings, then mapped), then over UDP, then runs the C streams; each transfer's
figure is the median of a block of three runs after an untimed one. Each ratio is the
median of the ratios of the trials (a READ trial over the echo trial next to it; a
trial's UDP WRITE over its shared-memory transfers and its streams), so a change of the
machine's speed between the two halves of a run does not show as a ratio. (A WRITE run
right after a stream run is often slow for a few tens of milliseconds, with no
retransmission: the machine, not the library; the block's untimed run and median absorb
that.) Every row gives the median, the minimum and the maximum of its trials.

Placement (``--pin``, the default where two CPUs are allowed): as on two hosts, every
client (this process with its agents, the echo clients, the C stream's sender) runs on
one CPU and every server (the echo servers, the C sink, the device processes) on another,
all threads of each process. Unpinned (``--no-pin``), the scheduler moves them: a
blocking echo whose two ends land on one CPU skips the wake-ups of an idle CPU and takes
a fraction of the time it takes across two (9 against 60 us here), so its trials spread
several-fold.

    python tools/bench_transport.py [--trials 5] [--count 2000] [--no-pin] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netdam.agent import Addr, Agent  # noqa: E402
from netdam.device import DeviceProcess  # noqa: E402
from netdam.wire.codec import overhead  # noqa: E402
from netdam.wire.fields import DEFAULT_MTU  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ECHO_TIMEOUT = 5.0    #: seconds an echo may take to answer before a trial fails
CACHED = 1 << 20     #: memory of the cached work stream: it stays in each CPU's L2 cache

PY_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
buf = bytearray(65536)
while True:
    n, a = s.recvfrom_into(buf)
    if n == 1:
        break
    s.sendto(memoryview(buf)[:n], a)
"""

#: the same echo, but never sleeping: both ends poll their socket without blocking, as
#: netdam's agent and device do while they wait, so no round trip wakes an idle CPU
PY_SPIN_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.setblocking(False)
print(s.getsockname()[1], flush=True)
buf = bytearray(65536)
while True:
    try:
        n, a = s.recvfrom_into(buf)
    except BlockingIOError:
        continue
    if n == 1:
        break
    s.sendto(memoryview(buf)[:n], a)
"""


def free_port() -> int:
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpus_for(pin: bool) -> tuple[int, int] | None:
    """(client CPU, server CPU): the first two this process may use, or None when not
    pinning (asked not to, fewer than two CPUs allowed, or no affinity calls here)."""
    if not pin or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else None


def pin(pid: int, cpu: int | None) -> None:
    """Keep every thread of process ``pid`` on ``cpu`` (nothing when ``cpu`` is None);
    threads it starts later inherit the placement of the thread that starts them."""
    if cpu is None:
        return
    task = f"/proc/{pid}/task"
    threads = [int(t) for t in os.listdir(task)] if os.path.isdir(task) else [pid]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {cpu})
        except ProcessLookupError:     # a thread that ended meanwhile
            pass


def python_echo_rtt(port: int, size: int, count: int, *, spin: bool = False) -> float:
    """Microseconds per round trip through the echo at ``port``; with ``spin``, this end
    polls its socket instead of sleeping in ``recv``. An answer missing for
    ``ECHO_TIMEOUT`` seconds raises TimeoutError."""
    import socket
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    msg = b"x" * size
    buf = bytearray(65536)
    c.settimeout(0.0 if spin else ECHO_TIMEOUT)
    t = time.perf_counter()
    for _ in range(count):
        c.sendto(msg, ("127.0.0.1", port))
        give_up = None
        while True:
            try:
                c.recv_into(buf)
                break
            except BlockingIOError:          # polling, and nothing yet
                now = time.monotonic()
                give_up = give_up or now + ECHO_TIMEOUT
                if now > give_up:
                    raise TimeoutError(f"the echo at port {port} did not answer within "
                                       f"{ECHO_TIMEOUT:g} s") from None
    dt = (time.perf_counter() - t) / count
    c.close()
    return dt * 1e6


def spin_echo_rtt(size: int, count: int, cpu: int | None) -> float:
    """``python_echo_rtt`` with both ends polling: the polling server (on ``cpu``) runs
    only for this trial, so that it takes no CPU from the others."""
    srv = subprocess.Popen([sys.executable, "-c", PY_SPIN_ECHO], stdout=subprocess.PIPE,
                           text=True)
    try:
        port = int(srv.stdout.readline())
        pin(srv.pid, cpu)
        return python_echo_rtt(port, size, count, spin=True)
    finally:
        srv.kill()
        srv.wait(5)


def c_echo_rtt(exe: str, port: int, size: int, count: int) -> float:
    out = subprocess.run([exe, "client", str(port), str(size), str(count)],
                         capture_output=True, text=True, timeout=60)
    return float(out.stdout.strip())


def c_stream(exe: str, size: int, total: int, memory: int = 0,
             sink_cpu: int | None = None, crc: bool = True) -> float:
    """GB/s a C sender achieves into a C sink with datagrams of ``size`` bytes; with
    ``memory``, both also do a netdam datagram's byte work (CRC32C trailer made and
    checked, payload taken from and copied into ``memory`` bytes: udp_echo.c), or
    (``crc`` False) the sender only takes its payloads from ``memory``. The sender runs
    where this process may; the sink on ``sink_cpu`` when given."""
    port = free_port()
    work = [str(memory)] if memory else []
    sink_mode, stream_mode = (("sink", "stream") if not memory else
                              ("sink-work", "stream-work") if crc else ("sink", "stream-mem"))
    sink = subprocess.Popen([exe, sink_mode, str(port), str(total)] +
                            (work if sink_mode == "sink-work" else []),
                            stdout=subprocess.PIPE, text=True)
    pin(sink.pid, sink_cpu)
    sink.stdout.readline()
    subprocess.run([exe, stream_mode, str(port), str(size), str(total), *work], timeout=60)
    got, secs, *bad = sink.communicate(timeout=30)[0].split()
    if bad and int(bad[0]):
        raise RuntimeError(f"the C work stream's sink refused {bad[0]} datagrams")
    return int(got) / max(float(secs), 1e-9) / 1e9


def agent_rtt(ag: Agent, dev: int, count: int) -> float:
    a = Addr(dev, 0)
    for _ in range(50):
        ag.read(a, 8)
    t = time.perf_counter()
    for _ in range(count):
        ag.read(a, 8)
    return (time.perf_counter() - t) / count * 1e6


def throughput(fn, nbytes: int, repeat: int) -> list[float]:
    """GB/s of ``fn`` moving ``nbytes`` in each of ``repeat`` runs, after a warm-up."""
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(nbytes / (time.perf_counter() - t) / 1e9)
    return runs


def crc_rates(trials: int) -> dict[str, tuple[list[float], list[float]]]:
    """GB/s of each CRC32C kernel: ``{name: (cached runs, streaming runs)}``."""
    from netdam.wire import fast
    gram, big = os.urandom(DEFAULT_MTU), os.urandom(16 << 20)
    grams = [memoryview(big)[i:i + DEFAULT_MTU]
             for i in range(0, len(big) - DEFAULT_MTU, DEFAULT_MTU)]
    rates: dict[str, tuple[list[float], list[float]]] = {}
    try:
        for widest in (1, 2):
            name = fast.select_crc(widest)
            if name in rates:
                continue
            cached = throughput(lambda: [fast.crc32c(gram) for _ in range(1000)],
                                1000 * len(gram), trials)
            streaming = throughput(lambda: [fast.crc32c(g) for g in grams],
                                   len(grams) * DEFAULT_MTU, trials)
            rates[name] = (cached, streaming)
    finally:
        fast.select_crc()
    return rates


class Table:
    """The rows printed: (measurement, median, min, max, unit)."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, float, str]] = []

    def runs(self, name: str, values, unit: str) -> float:
        """A row from the figures of several runs (trials); returns their median."""
        values = list(values)
        med = statistics.median(values)
        self.rows.append((name, med, min(values), max(values), unit))
        return med

    def print(self) -> None:
        width = max(len(r[0]) for r in self.rows)
        print(f"{'measurement':<{width}}  {'median':>9}  {'min':>9}  {'max':>9}  unit")
        for name, med, lo, hi, unit in self.rows:
            print(f"{name:<{width}}  {med:>9.3f}  {lo:>9.3f}  {hi:>9.3f}  {unit}")

    def as_json(self) -> list[dict]:
        return [{"measurement": n, "value": m, "min": lo, "max": hi, "unit": u}
                for n, m, lo, hi, u in self.rows]


def compile_echo(tmp: str) -> str | None:
    """tools/udp_echo.c linked with the fast path's C source (its CRC32C and its
    generated header layout), or None without a C compiler."""
    from netdam.wire import fastpath_build
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    exe = os.path.join(tmp, "udp_echo")
    layout, fastpath = os.path.join(tmp, "layout.h"), os.path.join(tmp, "fastpath.c")
    with open(layout, "w") as f:
        f.write(fastpath_build.layout_defines())
    with open(fastpath, "w") as f:
        f.write(fastpath_build.source())
    subprocess.run([cc, "-O2", "-include", layout, "-o", exe, os.path.join(HERE, "udp_echo.c"),
                    fastpath], check=True)
    return exe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--count", type=int, default=2000, help="round trips per trial")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="clients on one CPU, servers on another (default: on)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if args.trials < 1 or args.count < 1:
        ap.error("--trials and --count must be at least 1")
    table = Table()
    big = 16 << 20
    cpus = cpus_for(args.pin)
    client, server = cpus if cpus else (None, None)
    pin(os.getpid(), client)    # the agents, the echo clients and the C stream's sender
    print("placement: " + (f"clients on CPU {client}, servers and devices on CPU {server}"
                           if cpus else "not pinned"), flush=True)
    with tempfile.TemporaryDirectory(prefix="netdam-bench-") as tmp:
        exe = compile_echo(tmp)
        echo = subprocess.Popen([sys.executable, "-c", PY_ECHO], stdout=subprocess.PIPE,
                                text=True)
        py_port = int(echo.stdout.readline())
        pin(echo.pid, server)
        c_port = free_port()
        c_srv = None
        if exe:
            c_srv = subprocess.Popen([exe, "server", str(c_port)], stdout=subprocess.PIPE,
                                     text=True)
            c_srv.stdout.readline()
            pin(c_srv.pid, server)
        far = DeviceProcess("--id", 2, "--mem-size", 2 * big)   # "another node's" device
        dev = DeviceProcess("--id", 1, "--mem-size", 2 * big, "--shm", "--peers",
                            json.dumps({2: list(far.address)}))
        for device in (far, dev):
            pin(device.pid, server)
        try:
            udp_ag = Agent(timeout=10)
            udp_ag.add_device(dev.info, path="udp")
            shm_ag = Agent(timeout=10)
            shm_ag.add_device(dev.info, path="shm")
            ring_ag = Agent(timeout=10, direct_min=None)   # shm rings only, no mapping
            ring_ag.add_device(dev.info, path="shm")
            relay_ag = Agent(timeout=10)       # device 2 through device 1 (SPEC §8.5)
            relay_ag.add_device(dev.info, path="shm")
            relay_ag.add_device(far.info, path="relay", via=1)
            size = overhead() + 8  # the size of an 8-byte READ_RESP datagram
            lat = {"py": [], "spin": [], "c": [], "udp": [], "shm": [], "relay": []}
            for _ in range(args.trials):
                lat["py"].append(python_echo_rtt(py_port, size, args.count))
                lat["spin"].append(spin_echo_rtt(size, args.count, server))
                if exe:
                    lat["c"].append(c_echo_rtt(exe, c_port, size, args.count))
                lat["udp"].append(agent_rtt(udp_ag, 1, args.count))
                lat["shm"].append(agent_rtt(shm_ag, 1, args.count))
                lat["relay"].append(agent_rtt(relay_ag, 2, args.count))
            table.runs(f"Python UDP echo RTT ({size} B)", lat["py"], "us")
            table.runs(f"Python UDP echo RTT ({size} B), both ends polling", lat["spin"],
                       "us")
            if lat["c"]:
                table.runs(f"C UDP echo RTT ({size} B)", lat["c"], "us")
            table.runs("netdam READ 8 B RTT, UDP", lat["udp"], "us")
            table.runs("netdam READ 8 B RTT, shm", lat["shm"], "us")
            table.runs("netdam READ 8 B RTT, relayed by the node's device", lat["relay"], "us")
            table.runs("  UDP READ / Python echo (target <= 2)",
                       [u / p for u, p in zip(lat["udp"], lat["py"])], "x")
            table.runs("  UDP READ / Python echo, both ends polling",
                       [u / p for u, p in zip(lat["udp"], lat["spin"])], "x")

            a = Addr(1, 0)
            blob64 = os.urandom(64 << 10)
            table.runs("WRITE 64 KiB blocking, UDP",
                       throughput(lambda: [udp_ag.write(a, blob64) for _ in range(64)],
                                  64 * len(blob64), args.trials), "GB/s")
            table.runs("WRITE 64 KiB pipelined, UDP",
                       throughput(lambda: udp_ag.wait_all(
                           [udp_ag.write_nb(a + (i % 64) * len(blob64), blob64)
                            for i in range(256)]), 256 * len(blob64), args.trials), "GB/s")
            blob = os.urandom(big)
            out = bytearray(big)
            paths = (("shm rings", ring_ag), ("shm", shm_ag), ("UDP", udp_ag))
            udp_ag.write(a, blob)   # every READ below reads back what every WRITE writes
            trials = []        # one dict per trial: GB/s of each transfer, side by side
            for _ in range(args.trials):
                trial = {}
                for name, ag in paths:   # UDP's WRITE last: the C streams come right after
                    for d, fn in (("r", lambda: ag.read(a, big, out=out)),
                                  ("w", lambda: ag.write(a, blob))):
                        trial[d + name] = statistics.median(throughput(fn, big, 3))
                    assert out == blob, f"{name} read back something else"
                    out[:] = bytes(big)
                if exe:
                    trial.update(
                        plain=c_stream(exe, DEFAULT_MTU, big * 4, sink_cpu=server),
                        work=c_stream(exe, DEFAULT_MTU, big * 4, memory=big,
                                      sink_cpu=server),
                        work_cached=c_stream(exe, DEFAULT_MTU, big * 4, memory=CACHED,
                                             sink_cpu=server),
                        mem=c_stream(exe, DEFAULT_MTU, big * 4, memory=big,
                                     sink_cpu=server, crc=False))
                trials.append(trial)

            def col(key, over=None):
                return [t[key] / (t[over] if over else 1) for t in trials]
            for name in ("UDP", "shm rings", "shm"):
                for d, what in (("w", "WRITE"), ("r", "READ")):
                    table.runs(f"{what} 16 MiB, {name}", col(d + name), "GB/s")
            if exe:
                table.runs(f"C UDP stream, {DEFAULT_MTU} B datagrams", col("plain"), "GB/s")
                table.runs("  WRITE 16 MiB UDP / C stream (target >= 0.6)",
                           col("wUDP", "plain"), "x")
                table.runs("C UDP stream from 16 MiB of memory, no CRC32C", col("mem"),
                           "GB/s")
                table.runs("  C stream from memory / C stream", col("mem", "plain"), "x")
                table.runs("C UDP stream with a datagram's byte work (CRC32C, 16 MiB)",
                           col("work"), "GB/s")
                table.runs("  C stream with the byte work / C stream", col("work", "plain"),
                           "x")
                table.runs("  WRITE 16 MiB UDP / C stream with the byte work",
                           col("wUDP", "work"), "x")
                table.runs(f"C UDP stream with the byte work, {CACHED >> 20} MiB (cached)",
                           col("work_cached"), "GB/s")
                table.runs("  C stream with the byte work, cached / C stream",
                           col("work_cached", "plain"), "x")
            for name, (cached, streaming) in crc_rates(args.trials).items():
                table.runs(f"CRC32C ({name}), {DEFAULT_MTU} B in cache", cached, "GB/s")
                table.runs(f"CRC32C ({name}), 16 MiB in {DEFAULT_MTU} B datagrams",
                           streaming, "GB/s")
            table.runs("WRITE 16 MiB, relayed by the node's device",
                       throughput(lambda: relay_ag.write(Addr(2, 0), blob), big, args.trials),
                       "GB/s")
            for kind in ("shm", "shm rings"):
                for d, what in (("w", "WRITE"), ("r", "READ")):
                    table.runs(f"  {kind} / UDP {what} 16 MiB (target >= 3)",
                               col(d + kind, d + "UDP"), "x")
            for ag in (udp_ag, ring_ag, shm_ag, relay_ag):
                ag.close()
        finally:
            dev.stop()
            far.stop()
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"q", ("127.0.0.1", py_port))
            if c_srv:
                s.sendto(b"q", ("127.0.0.1", c_port))
            s.close()
            echo.wait(5)
            if c_srv:
                c_srv.wait(5)
    table.print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"placement": {"client_cpu": client, "server_cpu": server},
                       "rows": table.as_json()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
