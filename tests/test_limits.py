"""Resource bounds of a device process, with real processes and sockets. Invariants: a
peer flooding a device cannot starve another peer (every one of the other peer's
operations completes, none times out) nor grow the device's memory without bound (its
excess is dropped and counted); every limit is a documented, configurable flag whose
default is the engine's own; a bad limit is one readable line."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netdam import limits
from netdam.agent import Addr, Agent
from netdam.device import DeviceProcess

KEY = 0x51DE
REGIONS = json.dumps([{"base": 0, "length": 1 << 20, "key": KEY}])

FLOODER = textwrap.dedent("""
    import socket, sys, time
    from netdam.wire import Opcode, Packet, encode
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    data = [encode(Packet(opcode=Opcode.WRITE, src=0x7777, dst=1, rkey=%d, req_id=i,
                          addr=4096 + 1024 * (i %% 64), length=1024, payload=bytes(1024)))
            for i in range(64)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    print("flooding", flush=True)
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        for d in data:
            try:
                s.sendto(d, (host, port))
                n += 1
            except OSError:
                pass
    print(n, flush=True)
""" % KEY)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.timeout(60)
def test_a_flooding_peer_neither_starves_another_nor_exhausts_memory():
    with DeviceProcess("--id", 1, "--mem-size", 1 << 20, "--regions", REGIONS,
                       "--peer-queue", 32, "--rx-queue-bytes", 1 << 20) as dev:
        rss0 = _rss_kib(dev.pid)
        flood = subprocess.Popen([sys.executable, "-c", FLOODER, *map(str, dev.address), "6"],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert flood.stdout.readline().strip() == "flooding"
            time.sleep(0.5)                    # the flood is on
            with Agent(timeout=3.0) as victim:
                victim.add_device(dev.info, path="udp")
                for i in range(40):            # every operation completes, none times out
                    payload = i.to_bytes(8, "little") * 4
                    victim.write(Addr(1, 0x40000 + 32 * i), payload)
                    assert bytes(victim.read(Addr(1, 0x40000 + 32 * i), 32)) == payload
                assert victim.counters["timeouts"] == 0
            assert flood.poll() is None, "the victim finished while the flood was on"
            rss1 = _rss_kib(dev.pid)
        finally:
            sent = int(flood.communicate(timeout=20)[0].strip() or 0)
    c = dev.final_counters
    assert sent > 10_000
    assert c["rx_dropped_source_full"] > 0          # the flood's excess, dropped here
    assert c["rx_max_queued"] <= 2 * 32 and c["internal_errors"] == 0
    assert rss1 - rss0 < 32 << 10, f"device RSS grew by {rss1 - rss0} KiB"


def test_limits_are_documented_flags():
    out = subprocess.run([sys.executable, "-m", "netdam", "device", "--help"],
                         capture_output=True, text=True, timeout=30,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    assert all(row.flag in out for row in limits.LIMITS)
    doc = (Path(__file__).resolve().parents[1] / "RELIABILITY.md").read_text()
    assert limits.markdown_table() in doc, "RELIABILITY.md's limits table is stale"


def test_a_bad_limit_is_one_readable_line():
    p = subprocess.run([sys.executable, "-m", "netdam", "device", "--max-peers", "0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--max-peers must be positive" in p.stderr
    assert "Traceback" not in p.stderr
