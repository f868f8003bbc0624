#!/usr/bin/env python3
"""Python work per request and per datagram, on each side, as a count of lines.

An agent and a device server run in this one process, taking turns, over a real UDP
socket pair; ``sys.settrace`` counts the Python lines each side executes (and the
functions they are in). A count does not move with the machine the way a time does,
so it compares two versions of the code where a timing on a noisy machine cannot; it
weighs every line alike, so read it beside the timings of tools/bench_transport.py.

    python tools/python_work.py read8        # one READ of 8 bytes: send, device, answer
    python tools/python_work.py write        # a 4 MiB WRITE: per datagram, each side
    python tools/python_work.py read         # a 4 MiB READ: per datagram, each side
    python tools/python_work.py write --top 15   # and the functions the lines are in
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netdam.agent import Addr, Agent  # noqa: E402
from netdam.device import DeviceConfig, DeviceServer  # noqa: E402
from netdam.wire.frag import fragment_count  # noqa: E402

BIG = 4 << 20


class Counter:
    """Lines executed while ``side`` is set, by side and by function."""

    def __init__(self):
        self.lines = collections.Counter()
        self.where = collections.defaultdict(collections.Counter)
        self.side = None

    def _call(self, frame, event, arg):
        return self._line if event == "call" else None

    def _line(self, frame, event, arg):
        if event == "line":
            self.lines[self.side] += 1
            co = frame.f_code
            self.where[self.side][f"{os.path.basename(co.co_filename)}:{co.co_name}"] += 1
        return self._line

    def run(self, side: str, fn):
        self.side = side
        sys.settrace(self._call)
        try:
            return fn()
        finally:
            sys.settrace(None)


def _until(h, srv, ag, count: Counter | None) -> None:
    """Turns of the device and the agent until ``h`` is done (counted when ``count``)."""
    while not h.done():
        if count is None:
            srv.step(0.0)
            ag.progress(0.0)
        else:
            count.run("device", lambda: srv.step(0.0))
            count.run("agent", lambda: ag.progress(0.0))
    h.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["read8", "write", "read"])
    ap.add_argument("--top", type=int, default=0, help="also list the busiest functions")
    args = ap.parse_args(argv)
    srv = DeviceServer(DeviceConfig(device_id=1, mem_size=2 * BIG))
    ag = Agent(timeout=10)
    ag.add_device(srv.info(), path="udp")
    a = Addr(1, 0)
    blob, out = os.urandom(BIG), bytearray(BIG)
    count = Counter()
    try:
        if args.what == "read8":
            n = 100
            for k in range(n + 100):          # the first 100 warm up, uncounted
                c = count if k >= 100 else None
                srv.step(0.0)                 # the turn after an answer: its timers
                h = c.run("agent send", lambda: ag.read_nb(a, 8)) if c else ag.read_nb(a, 8)
                while not (c.run("device", lambda: srv.step(0.0)) if c else srv.step(0.0)):
                    pass
                if c:
                    c.run("agent answer", h.wait)
                else:
                    h.wait()
            unit = "per READ"
        else:
            if args.what == "read":
                _until(ag.write_nb(a, blob), srv, ag, None)
            start = (lambda: ag.write_nb(a, blob)) if args.what == "write" else \
                (lambda: ag.read_nb(a, BIG, out=out))
            for k in range(3):                # two to warm up, one counted
                c = count if k == 2 else None
                h = c.run("agent", start) if c else start()
                _until(h, srv, ag, c)
            assert args.what == "write" or out == blob
            n = fragment_count(BIG, ag.mtu)
            unit = f"per datagram ({n} datagrams of {ag.mtu} bytes)"
        print(f"{args.what}: Python lines {unit}")
        for side, lines in count.lines.items():
            print(f"  {side:13s} {lines / n:7.1f}")
            for name, k in count.where[side].most_common(args.top):
                print(f"      {k / n:7.1f}  {name}")
    finally:
        ag.close()
        srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
