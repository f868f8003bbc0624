"""The UDP glue moves netdam datagrams byte-exact at every MTU, with large socket
buffers, and its injector's corruption is caught by the receiver's CRC."""

import os
import time

import pytest

from netdam.transport.faults import FaultConfig
from netdam.transport.rxpool import RecvPool
from netdam.transport.udp import UdpEndpoint, check_mtu
from netdam.wire import Opcode, Packet, WireError, decode
from netdam.wire.fields import DEFAULT_MTU, MAX_DATAGRAM
from netdam.wire.frag import fragment


def _drain(ep, want, timeout=2.0):
    got = []
    while len(got) < want:
        r = ep.recv(timeout)
        if r is None:
            break
        view, _ = r
        got.append(bytes(view))
    return got


def test_defaults_and_buffers(pair):
    a, _ = pair
    assert a.address[0] == "127.0.0.1" and a.address[1] > 0
    assert a.mtu == DEFAULT_MTU
    rcv, snd = a.buffer_sizes
    assert rcv >= 1 << 20 and snd >= 1 << 20
    with pytest.raises(ValueError):
        check_mtu(100)
    with pytest.raises(ValueError):
        UdpEndpoint(mtu=MAX_DATAGRAM + 1)


@pytest.mark.parametrize("mtu", [1500, 9000, MAX_DATAGRAM])
def test_fragments_arrive_byte_exact(pair, mtu):
    a, b = pair
    data = bytes(range(256)) * 600  # 150 KiB
    frags = list(fragment(Packet(opcode=Opcode.WRITE, req_id=3), data, mtu))
    for f in frags:
        a.send(f, b.address)
    got = _drain(b, len(frags))
    assert len(got) == len(frags) and all(len(g) <= mtu for g in got)
    out = bytearray(len(data))
    for g in got:
        p = decode(g)
        out[p.frag_off:p.frag_off + len(p.payload)] = p.payload
    assert out == data
    assert a.counters["tx_datagrams"] == b.counters["rx_datagrams"] == len(frags)


def test_recv_timeout_returns_none(pair):
    _, b = pair
    assert b.recv(0.0) is None
    assert b.recv(0.01) is None
    assert b.recv_bytes(0.0) is None and b.recv_bytes(0.01) is None


def test_waiting_says_whether_a_datagram_is_there_without_taking_it(pair):
    a, b = pair
    assert not b.waiting()
    a.send_bytes(b"x", b.address)              # loopback: queued before sendto returns
    assert b.waiting() and b.waiting()         # looking takes nothing
    assert bytes(b.recv(0.0)[0]) == b"x" and not b.waiting()


def test_recv_bytes_gives_each_datagram_its_own_bytes(pair):
    a, b = pair
    for i in range(3):
        a.send_bytes(bytes([i]) * (100 + i), b.address)
    got = [b.recv_bytes(1.0) for _ in range(3)]
    assert [d for d, _ in got] == [bytes([i]) * (100 + i) for i in range(3)]
    assert all(addr == a.address for _, addr in got)
    assert b.counters["rx_datagrams"] == 3 and b.counters["rx_bytes"] == 303


def test_injected_faults_are_seen_by_the_receiver():
    a = UdpEndpoint(faults=FaultConfig(loss=0.2, dup=0.1, corrupt=0.1, reorder=0.2,
                                       seed=5))
    b = UdpEndpoint()
    try:
        n = 300
        for i in range(n):
            a.send(Packet(opcode=Opcode.WRITE, seq=i, payload=b"z" * 64), b.address, now=0.0)
        a.flush(1.0)  # everything held back for reordering goes now
        assert a.next_timer() is None
        got = _drain(b, a.injector.counters["sent"], timeout=1.0)
        k = a.injector.counters
        assert len(got) == k["sent"] == n - k["lost"] + k["duplicated"]
        bad = 0
        for g in got:
            try:
                decode(g)
            except WireError:
                bad += 1
        assert k["corrupted"] <= bad <= 2 * k["corrupted"] and bad > 0
    finally:
        a.close()
        b.close()


def test_a_wake_fd_ends_a_wait_for_datagrams(pair):
    _, b = pair
    r, w = os.pipe()
    try:
        b.wake_on(r)
        os.write(w, b"x")
        start = time.monotonic()
        assert b.recv(30.0) is None            # nothing came, but the wait is over
        assert b.recv_batch(RecvPool(2048, 2), 8, 30.0) == []
        assert time.monotonic() - start < 15   # far from the 30 s asked for, twice
    finally:
        os.close(r)
        os.close(w)
