#!/usr/bin/env python3
"""Capture overhead: packets/s of a UDP send loop with and without ``Capture.record``.

Sends ``--count`` netdam WRITE datagrams of ``--size`` payload bytes over loopback UDP
(to a socket nobody reads; the kernel drops what does not fit, the send cost is what is
measured) and prints packets/s for: no capture, capture to pcap, capture to pcapng, and
``record`` alone; plus, for reference, the cost of building the same frame as scapy
packet objects. The lead records the table.

    python tools/bench_capture.py [--count 200000] [--size 64] [--trials 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netdam.capture.pcap import Capture  # noqa: E402
from netdam.wire.codec import Packet, encode  # noqa: E402
from netdam.wire.fields import Opcode  # noqa: E402


def run(count: int, datagram: bytes, fmt: str | None, send: bool, tmp: str) -> float:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    dst, src = rx.getsockname(), tx.getsockname()
    cap = Capture(os.path.join(tmp, f"bench.{fmt}"), fmt) if fmt else None
    sendto, now = tx.sendto, time.time
    t = time.perf_counter()
    for _ in range(count):
        if send:
            sendto(datagram, dst)
        if cap is not None:
            cap.record(now(), src, dst, datagram)
    if cap is not None:
        cap.close()
    elapsed = time.perf_counter() - t
    tx.close()
    rx.close()
    return count / elapsed


def scapy_rate(count: int, datagram: bytes) -> float:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    t = time.perf_counter()
    for _ in range(count):
        bytes(Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=1, dport=2)
              / Raw(datagram))
    return count / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=64, help="payload bytes per datagram")
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    datagram = encode(Packet(opcode=Opcode.WRITE, src=1, dst=3, seq=1, req_id=1,
                             length=args.size, payload=bytes(args.size)))
    cases = [("send only", None, True), ("send + capture pcap", "pcap", True),
             ("send + capture pcapng", "pcapng", True), ("capture pcap only", "pcap", False),
             ("capture pcapng only", "pcapng", False)]
    with tempfile.TemporaryDirectory() as tmp:
        best = {name: max(run(args.count, datagram, fmt, send, tmp)
                          for _ in range(args.trials)) for name, fmt, send in cases}
    base = best["send only"]
    print(f"datagram {len(datagram)} bytes, {args.count} packets, best of {args.trials}")
    print(f"{'case':<28}{'packets/s':>14}{'us/packet':>12}{'vs send only':>14}")
    for name, rate in best.items():
        print(f"{name:<28}{rate:>14,.0f}{1e6 / rate:>12.2f}{rate / base:>13.0%}")
    ref = scapy_rate(min(args.count, 2000), datagram)
    print(f"{'(scapy objects per frame)':<28}{ref:>14,.0f}{1e6 / ref:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
