#!/usr/bin/env python3
"""Where the round trip of an 8-byte READ goes, across two processes.

An agent (this process) READs 8 bytes from a device server (a forked child) over UDP,
one READ at a time, as ``tools/bench_transport.py`` does. The socket of each side is
wrapped so that every receive and send is stamped with ``time.monotonic()`` (one clock
for both processes), and each READ's time is cut at those stamps into the phases of its
critical path:

    agent: call -> sendmsg     the primitive, the reliability core, the encoding
    agent: sendmsg             the system call (loopback delivers inside it)
    to the device              until the device's receive returns (it busy-polls)
    device: loop, in           the device loop until the engine has the datagram
    device: engine             decoding and executing it (``Device.receive_many``)
    device: loop, out          the device loop until the answer's system call
    device: sendmsg
    to the agent               until the agent's receive returns
    agent: receive -> return   the completer, the reliability core, the handle

The phases of one READ add up to its time; the table gives each phase's median and its
share of the mean. The stamps cost each side a Python call per socket call (and the
device one per engine call), about a microsecond each, so the total is a little above
``bench_transport``'s. As there, the agent and the device run on CPUs of their own by
default (``--no-pin``: wherever the scheduler puts them).

    python tools/read_path.py [--count 3000] [--no-pin]
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing as mp
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_transport import cpus_for, pin  # noqa: E402
from netdam.agent import Addr, Agent  # noqa: E402
from netdam.device import DeviceConfig, DeviceServer  # noqa: E402

PHASES = ("agent: call -> sendmsg", "agent: sendmsg", "to the device", "device: loop, in",
          "device: engine", "device: loop, out", "device: sendmsg", "to the agent",
          "agent: receive -> return")


class Stamped:
    """A socket whose receives and sends are stamped (``log``: (kind, time) pairs)."""

    def __init__(self, sock):
        self._sock = sock
        self.log: list[tuple[str, float]] = []

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def _rx(self, fn, *args):
        r = fn(*args)
        self.log.append(("rx", time.monotonic()))
        return r

    def recvfrom_into(self, *args):
        return self._rx(self._sock.recvfrom_into, *args)

    def recvfrom(self, *args):
        return self._rx(self._sock.recvfrom, *args)

    def sendmsg(self, *args):
        self.log.append(("tx", time.monotonic()))
        r = self._sock.sendmsg(*args)
        self.log.append(("sent", time.monotonic()))
        return r


def _device(ready, stop, count: int) -> None:
    srv = DeviceServer(DeviceConfig(device_id=1, mem_size=1 << 16))
    sock = srv.udp.sock = Stamped(srv.udp.sock)
    engine = srv.device.receive_many

    def stamped_engine(datagrams, now):
        sock.log.append(("engine", time.monotonic()))
        outs = engine(datagrams, now)
        sock.log.append(("engined", time.monotonic()))
        return outs

    srv.device.receive_many = stamped_engine
    ready.put(srv.info())
    while stop.empty():
        for _ in range(100):
            srv.step(0.001)
    ready.put(sock.log[-8 * count:])
    srv.close()


def _times(log, kind: str) -> list[float]:
    return [t for k, t in log if k == kind]


def measure(count: int, cpus: tuple[int, int] | None = None) -> list[tuple[float, ...]]:
    """Each READ's phases (seconds, in ``PHASES`` order), for the READs matched to one
    device turn; with ``cpus``, the agent runs on the first and the device on the
    second."""
    ctx = mp.get_context("fork")
    ready, stop = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_device, args=(ready, stop, count), daemon=True)
    child.start()
    if cpus:
        pin(os.getpid(), cpus[0])
        pin(child.pid, cpus[1])
    try:
        ag = Agent(timeout=10)
        ag.add_device(ready.get(timeout=30), path="udp")
        sock = ag.udp.sock = Stamped(ag.udp.sock)
        a = Addr(1, 64)
        for _ in range(200):
            ag.read(a, 8)
        sock.log.clear()
        calls = []
        for _ in range(count):
            t0 = time.monotonic()
            ag.read(a, 8)
            calls.append((t0, time.monotonic()))
        stop.put(1)
        dlog = ready.get(timeout=30)
        ag.close()
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    a_tx, a_sent, a_rx = (_times(sock.log, k) for k in ("tx", "sent", "rx"))
    d_rx, d_in, d_out, d_tx, d_sent = (_times(dlog, k) for k in
                                       ("rx", "engine", "engined", "tx", "sent"))

    def after(times, t):
        i = bisect.bisect_left(times, t)
        return times[i] if i < len(times) else None

    rows = []
    for t0, t1 in calls:
        s1 = after(a_tx, t0)
        s2 = s1 and after(a_sent, s1)
        s3 = s2 and after(d_rx, s1)
        e1 = s3 and after(d_in, s3)
        e2 = e1 and after(d_out, e1)
        s4 = e2 and after(d_tx, e2)
        s5 = s4 and after(d_sent, s4)
        s6 = s5 and after(a_rx, s4)
        if not s6 or s6 > t1:
            continue
        marks = (t0, s1, s2, s3, e1, e2, s4, s5, s6, t1)
        rows.append(tuple(b - a for a, b in zip(marks, marks[1:])))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3000, help="READs to time")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="the agent on one CPU, the device on another (default: on)")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be at least 1")
    cpus = cpus_for(args.pin)
    rows = measure(args.count, cpus)
    if not rows:
        print("no READ could be matched to a device turn", file=sys.stderr)
        return 1
    totals = [sum(r) for r in rows]
    mean_total = statistics.fmean(totals)
    width = max(map(len, PHASES))
    print(f"{len(rows)} of {args.count} READs matched; median round trip "
          f"{statistics.median(totals) * 1e6:.1f} us")
    print(f"{'phase':<{width}}  {'median us':>9}  {'share':>6}")
    for i, name in enumerate(PHASES):
        col = [r[i] for r in rows]
        print(f"{name:<{width}}  {statistics.median(col) * 1e6:9.1f}  "
              f"{statistics.fmean(col) / mean_total:6.1%}")
    print("placement: " + (f"agent on CPU {cpus[0]}, device on CPU {cpus[1]}" if cpus
                           else "not pinned"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
