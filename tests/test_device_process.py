"""The device process: announces itself on its first stdout line, answers netdam
datagrams over UDP, forwards what the device originates to its peers reliably, counts
what it drops, and exits cleanly (counters last) on SIGTERM and SIGINT."""

import argparse
import json
import signal
import socket
import time

import numpy as np
import pytest

from netdam.agent import Addr, Agent
from netdam.device import DeviceProcess, add_arguments, config_from_args
from netdam.transport.shm import leaked
from netdam.wire import Flag, Opcode, Packet, decode, encode
from netdam.wire.fields import CREDIT_UNIT

pytestmark = pytest.mark.timeout(60)

KEY = 0x0BADCAFE
REGIONS = json.dumps([{"base": 0, "length": 65536, "key": KEY}])


def _free_ports(n):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ask(sock, addr, pkt, timeout=2.0):
    sock.settimeout(timeout)
    sock.sendto(encode(pkt), addr)
    return decode(sock.recv(70000))


def test_info_line_raw_datagrams_and_sigterm():
    with DeviceProcess("--id", 4, "--mem-size", 65536, "--regions", REGIONS) as dev:
        info = dev.info
        assert info["id"] == 4 and info["host"] == "127.0.0.1" and info["port"] > 0
        assert info["regions"][0]["key"] == KEY and info["shm"] is None
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        w = Packet(opcode=Opcode.WRITE, src=0x9001, dst=4, rkey=KEY, seq=77, req_id=1,
                   flags=Flag.ACK_REQ, addr=128, length=5, payload=b"hello")
        ack = _ask(s, dev.address, w)
        assert ack.opcode == Opcode.ACK and ack.seq == 77 and ack.has(Flag.ACK_VALID)
        r = Packet(opcode=Opcode.READ, src=0x9001, dst=4, rkey=KEY, seq=78, req_id=2,
                   flags=Flag.ACK_REQ, addr=128, length=5)
        resp = _ask(s, dev.address, r)
        assert resp.opcode == Opcode.READ_RESP and bytes(resp.payload) == b"hello"
        bad = bytearray(encode(w.copy(seq=79)))
        bad[-10] ^= 0xFF                       # corrupted: dropped and counted, no answer
        s.sendto(bytes(bad), dev.address)
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(70000)
        s.close()
        start = time.monotonic()
        assert dev.stop(signal.SIGTERM) == 0
        assert time.monotonic() - start < 3
    assert dev.final_counters["dropped_crc"] >= 1


def test_a_deferred_ack_goes_out_at_its_deadline_with_nothing_else_arriving():
    """The loop runs timers after a turn that served something even when no datagram
    follows: three fragments of an unfinished message are answered by one coalesced
    ACK once the ACK delay has passed."""
    with DeviceProcess("--id", 4, "--mem-size", 65536, "--regions", REGIONS) as dev:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        for i in range(3):
            s.sendto(encode(Packet(opcode=Opcode.WRITE, src=0x9002, dst=4, rkey=KEY,
                                   seq=500 + i, req_id=9, addr=0, length=4096,
                                   frag_off=64 * i, payload=bytes(64),
                                   flags=Flag.ACK_REQ | Flag.MORE_FRAGS)), dev.address)
        ack = decode(s.recv(70000))
        assert ack.opcode == Opcode.ACK and ack.seq == 502 and ack.addr2 == 3
        s.close()


def test_sigint_exits_cleanly_and_unlinks_shared_memory():
    dev = DeviceProcess("--id", 2, "--shm", "--shm-slots", 2)
    names = [dev.info["shm"]["memory"]] + [n for p in dev.info["shm"]["slots"] for n in p]
    assert set(names) <= set(leaked())
    assert dev.stop(signal.SIGINT) == 0
    assert dev.final_counters is not None
    assert not set(names) & set(leaked())


def test_multicast_is_replicated_to_peers():
    ports = _free_ports(3)
    peers = json.dumps({str(i + 1): ["127.0.0.1", p] for i, p in enumerate(ports)})
    groups = json.dumps({"7": [1, 2, 3]})
    devs = []
    try:
        for i, port in enumerate(ports):
            devs.append(DeviceProcess("--id", i + 1, "--port", port, "--peers", peers,
                                      "--groups", groups, "--regions", REGIONS,
                                      "--mem-size", 65536))
        with Agent(timeout=5) as ag:
            for d in devs:
                ag.add_device(d.info, path="udp")
            data = bytes(range(200)) * 100
            ag.multicast(7, Addr(1, 1000), data)
            for dev_id in (1, 2, 3):
                end = time.monotonic() + 5
                while ag.read(Addr(dev_id, 1000), len(data)) != data:
                    assert time.monotonic() < end, f"copy never reached device {dev_id}"
                    time.sleep(0.01)
        for d in devs:
            d.stop()
        assert devs[0].final_counters["forwarded"] >= 2
        assert devs[0].final_counters["forward_failed"] == 0
        for d in devs:                 # forwarding kept no view of a receive buffer
            assert d.final_counters["rx_pool_retained"] == 0
    finally:
        for d in devs:
            d.kill()


def test_datagrams_are_received_into_reused_buffers():
    """Bulk writes and reads go through a handful of receive buffers, reused: none is
    kept by the engine, none is allocated per datagram (so the pool never runs out)."""
    data = np.random.default_rng(3).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    with DeviceProcess("--id", 5, "--mem-size", 8 << 20) as dev:
        with Agent(timeout=10) as ag:
            ag.add_device(dev.info, path="udp")
            for i in range(8):
                ag.write(Addr(5, i * 4096), data)
                assert ag.read(Addr(5, i * 4096), len(data)) == data
            ag.atomic_add(Addr(5, 0), 1)
        assert dev.stop() == 0
    c = dev.final_counters
    assert c["udp_rx_datagrams"] >= 8 * 64            # every fragment came in
    assert c["rx_pool_retained"] == 0 and c["rx_pool_exhausted"] == 0
    assert 1 <= c["rx_pool_slots"] <= 256 < c["udp_rx_datagrams"]   # so: reused


def test_acks_carry_a_credit_shared_by_active_senders():
    """Every ACK over UDP carries the device's credit (SPEC §8.2): a lone writer gets the
    whole share, a second writer halves it for both, a small request takes no part, and
    an agent applies it."""
    with DeviceProcess("--id", 6, "--mem-size", 65536, "--regions", REGIONS,
                       "--credit-idle", 30) as dev:
        a, b, c = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
        for s in (a, b, c):
            s.bind(("127.0.0.1", 0))

        def write(sock, src, seq):
            w = Packet(opcode=Opcode.WRITE, src=src, dst=6, rkey=KEY, seq=seq, req_id=seq,
                       flags=Flag.ACK_REQ, addr=0, length=40000, payload=bytes(40000))
            ack = _ask(sock, dev.address, w)
            assert ack.opcode == Opcode.ACK and ack.seq == seq
            return ack.group * CREDIT_UNIT

        alone = write(a, 0x9001, 10)
        assert alone >= 4 << 20             # most of a doubled 4 MiB buffer
        shared = write(b, 0x9002, 20)
        assert abs(shared - alone / 2) <= 40000     # half, to a datagram
        poll = Packet(opcode=Opcode.READ, src=0x9003, dst=6, rkey=KEY, seq=30, req_id=30,
                      flags=Flag.ACK_REQ, addr=0, length=8)
        assert _ask(c, dev.address, poll).opcode == Opcode.READ_RESP   # small: no share
        assert write(a, 0x9001, 11) == shared
        with Agent(timeout=10) as ag:
            ag.add_device(dev.info, path="udp")
            ag.write(Addr(6, 0), bytes(60000))
            third = ag.rel.credit(6)
            assert 0 < third < shared and abs(third - alone / 3) <= 65000
        for s in (a, b, c):
            s.close()
        assert dev.stop() == 0
    c = dev.final_counters
    assert c["credit_senders"] == 3 and 0 < c["credit_bytes"] < shared


def test_a_writer_of_small_datagrams_is_held_to_its_queue():
    """With 1500-byte datagrams the device's queue for one source (--peer-queue), not its
    buffer, bounds the credit: the writer never has more datagrams in flight than that
    queue holds."""
    data = np.random.default_rng(5).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    with DeviceProcess("--id", 7, "--mem-size", 2 << 20, "--peer-queue", 100) as dev:
        with Agent(timeout=10, mtu=1500) as ag:
            ag.add_device(dev.info, path="udp")
            ag.write(Addr(7, 0), data)
            assert ag.read(Addr(7, 0), len(data)) == data
            credit = ag.rel.credit(7)
        assert dev.stop() == 0
    assert 1500 <= credit <= 100 * 1500


def test_arguments_build_a_config():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--id", "3", "--mtu", "9000", "--peers", '{"4": ["127.0.0.1", 5]}',
                              "--loss", "0.1", "--shm"])
    cfg = config_from_args(args)
    assert (cfg.device_id, cfg.mtu, cfg.shm, cfg.faults.loss) == (3, 9000, True, 0.1)
    assert cfg.peers == {"4": ["127.0.0.1", 5]}
    from netdam.errors import UsageError
    with pytest.raises(UsageError):
        config_from_args(parser.parse_args(["--mtu", "100"]))
    assert config_from_args(parser.parse_args(["--ack-every", "4"])).ack_every == 4
    with pytest.raises(UsageError, match="ack-every"):
        config_from_args(parser.parse_args(["--ack-every", "0"]))


@pytest.mark.parametrize("argv,text", [
    (["--port", "99999"], "port 99999 outside 0..65535"),
    (["--mem-size", "0"], "memory size 0 must be positive"),
    (["--id", "65535"], "device id 65535 outside"),
    (["--shm-slots", "0"], "shm slots 0"),
])
def test_a_bad_device_argument_is_one_line(argv, text):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "netdam", "device", *argv], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert text in p.stderr and "Traceback" not in p.stderr
    assert p.stdout == ""                    # no info line: no device came up


def test_a_taken_port_is_one_line():
    import subprocess
    import sys
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "netdam", "device", "--port", str(port)],
                           capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"cannot bind UDP 127.0.0.1:{port}" in p.stderr and "Traceback" not in p.stderr
