"""The NetDAM chain: REDUCE_FWD hop by hop across Device objects wired by a tiny in-memory
loop. Invariant: every device ends with the NumPy sum, signalled once, whatever the
delivery order and however often the glue delivers a datagram twice."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest

from firmware_model import Device
from netdam.wire.codec import Packet, decode, encode
from netdam.wire.fields import DType, Flag, Opcode, RedOp, Status
from netdam.wire.frag import fragment

HOST = 1000
KEY = 0x5EED
ADDR, SIGNAL = 0, 60000
IMM = 1


class Fabric:
    """Stands in for the glue: delivers Outs by member id, numbers device-to-device
    datagrams per (src, dst) with ACK_REQ (as the reliability layer would), and consumes
    the replies devices send each other."""

    def __init__(self, n: int, mtu: int, seed: int, dup: float = 0.0):
        self.devs = {i: Device(i, 1 << 16, mtu=mtu) for i in range(n)}
        for d in self.devs.values():
            d.register_region(0, 1 << 16, key=KEY)
            d.set_group(9, tuple(self.devs))
        self.rng = random.Random(seed)
        self.dup = dup
        self.queue: list[tuple[int, bytes]] = []
        self.seqs: dict[tuple[int, int], int] = defaultdict(lambda: 77)
        self.host_replies: list[Packet] = []

    def submit(self, dest: int, pkt: Packet) -> None:
        pair = (pkt.src, dest)
        seq = self.seqs[pair]
        self.seqs[pair] = seq + 1
        self.queue.append((dest, encode(pkt.copy(seq=seq, flags=pkt.flags | Flag.ACK_REQ))))

    def run(self) -> None:
        while self.queue:
            i = self.rng.randrange(len(self.queue))      # any delivery order
            dest, data = self.queue.pop(i)
            if self.rng.random() < self.dup:
                self.queue.append((dest, data))           # delivered twice
            src = decode(data).src
            for out in self.devs[dest].receive(data, 0.0):
                if out.dest is None:                       # a reply to the sender
                    if src >= HOST:
                        self.host_replies.append(out.packet)
                else:
                    self.submit(out.dest, out.packet)


def _every_device_holds(fab: Fabric, expect: np.ndarray, signals: int) -> None:
    """Every device has ``expect`` at ADDR and its signal word at ``signals``, and
    refused nothing."""
    for i, d in fab.devs.items():
        got = np.frombuffer(bytes(d.memory[ADDR:ADDR + expect.nbytes]), expect.dtype)
        np.testing.assert_array_equal(got, expect)
        assert int.from_bytes(d.memory[SIGNAL:SIGNAL + 8], "little") == signals, i
        assert not d.counters()["naks"]


@pytest.mark.parametrize("n,mtu,dup,dtype", [(3, 65000, 0.0, DType.FLOAT32),
                                             (4, 512, 0.0, DType.FLOAT32),
                                             (4, 512, 0.3, DType.INT32),
                                             (4, 1500, 0.2, DType.FLOAT64)])
def test_chain_allreduce_with_result_multicast(n, mtu, dup, dtype):
    np_dtype = {DType.FLOAT32: np.float32, DType.INT32: np.int32,
                DType.FLOAT64: np.float64}[dtype]
    count = 1000
    fab = Fabric(n, mtu, seed=n * 31 + mtu, dup=dup)
    rng = np.random.default_rng(n)
    inputs = [rng.integers(-1000, 1000, count).astype(np_dtype) for _ in range(n)]
    for i, d in fab.devs.items():
        d.memory[ADDR:ADDR + inputs[i].nbytes] = inputs[i].tobytes()
    host_part = rng.integers(-1000, 1000, count).astype(np_dtype)
    expect = host_part.copy()
    for x in inputs:                      # the chain's order: payload op memory, hop by hop
        expect = expect + x
    route = tuple(range(n))
    template = Packet(opcode=Opcode.REDUCE_FWD, src=HOST, dst=0, rkey=KEY, dtype=dtype,
                      redop=RedOp.SUM, addr=ADDR, addr2=SIGNAL, imm=IMM, req_id=4242,
                      group=9, route=route, hop=0,
                      flags=Flag.LAST_HOP_SIGNAL | Flag.RESULT_MCAST)
    frags = list(fragment(template, host_part.tobytes(), mtu))
    for f in frags:
        fab.submit(0, f)
    fab.run()
    for i, d in fab.devs.items():
        got = np.frombuffer(bytes(d.memory[ADDR:ADDR + expect.nbytes]), np_dtype)
        np.testing.assert_array_equal(got, expect)
        assert int.from_bytes(d.memory[SIGNAL:SIGNAL + 8], "little") == IMM, i
        assert d.counters()["internal_errors"] == 0 and not d.counters()["naks"]
    # hop 0 ACKs every fragment (a duplicate is ACKed again, never re-applied)
    assert len({p.seq for p in fab.host_replies}) == len(frags)
    assert all(p.opcode == Opcode.ACK for p in fab.host_replies)
    assert fab.devs[n - 1].counters()["by_opcode"]["REDUCE_FWD"]["packets"] >= len(frags)


def test_intermediate_hops_leave_memory_alone():
    fab = Fabric(3, 65000, seed=1)
    for d in fab.devs.values():
        d.memory[0:8] = np.array([1, 2], np.int32).tobytes()
    pkt = Packet(opcode=Opcode.REDUCE_FWD, src=HOST, dst=0, rkey=KEY, dtype=DType.INT32,
                 redop=RedOp.SUM, addr=0, length=8, req_id=1, route=(0, 1, 2),
                 payload=np.array([10, 20], np.int32).tobytes())
    fab.submit(0, pkt)
    fab.run()
    mem = [np.frombuffer(bytes(d.memory[0:8]), np.int32).tolist() for d in fab.devs.values()]
    assert mem == [[1, 2], [1, 2], [13, 26]]


def test_chain_configured_by_id_when_the_packet_has_no_route():
    fab = Fabric(3, 65000, seed=2)
    for d in fab.devs.values():
        d.set_chain(4, (2, 0, 1))
        d.memory[0:4] = np.array([5], np.int32).tobytes()
    pkt = Packet(opcode=Opcode.REDUCE_FWD, src=HOST, dst=2, rkey=KEY, dtype=DType.INT32,
                 redop=RedOp.SUM, addr=0, length=4, req_id=1, group=4, hop=0,
                 payload=np.array([1], np.int32).tobytes())
    fab.submit(2, pkt)
    fab.run()
    assert np.frombuffer(bytes(fab.devs[1].memory[0:4]), np.int32)[0] == 16


@pytest.mark.parametrize("n,mtu,dup", [(1, 65000, 0.0), (3, 512, 0.0), (4, 1500, 0.3)])
def test_chain_descriptor_runs_an_allreduce_from_device_memory(n, mtu, dup):
    """The in-network allreduce: one descriptor per block, each starting at a different
    device; the devices do all the per-fragment work; every device ends with the sum and
    a signal that counts the blocks."""
    fab = Fabric(n, mtu, seed=n + mtu, dup=dup)
    count = 999
    rng = np.random.default_rng(7)
    inputs = [rng.integers(-1000, 1000, count).astype(np.int32) for _ in range(n)]
    for i, d in fab.devs.items():
        d.memory[ADDR:ADDR + inputs[i].nbytes] = inputs[i].tobytes()
    spans = np.array_split(np.arange(count), n)
    for b, idx in enumerate(spans):
        route = tuple((b + k) % n for k in range(n))
        fab.submit(route[0], Packet(
            opcode=Opcode.REDUCE_FWD, src=HOST, dst=route[0], rkey=KEY, dtype=DType.INT32,
            redop=RedOp.SUM, addr=ADDR + int(idx[0]) * 4, length=len(idx) * 4, addr2=SIGNAL,
            imm=1, req_id=100 + b, group=9, route=route, hop=0,
            flags=Flag.LAST_HOP_SIGNAL | Flag.RESULT_MCAST))
    fab.run()
    _every_device_holds(fab, sum(inputs), n)
    assert len({p.req_id for p in fab.host_replies}) == n  # one ACK per descriptor


def _join(host: int, meeting: int, route: tuple[int, ...], addr: int, length: int,
          **changes) -> Packet:
    """Host ``host``'s joined start (SPEC §4.9) of its block, to the meeting device."""
    pkt = Packet(opcode=Opcode.REDUCE_FWD, src=host, dst=meeting, rkey=KEY,
                 dtype=DType.INT32, redop=RedOp.SUM, addr=addr, length=length,
                 addr2=SIGNAL, imm=1, req_id=200 + host, group=9, route=route, hop=0,
                 flags=Flag.LAST_HOP_SIGNAL | Flag.RESULT_MCAST | Flag.JOIN)
    return pkt.copy(**changes) if changes else pkt


@pytest.mark.parametrize("n,mtu,dup,meeting", [(1, 65000, 0.0, 0), (3, 512, 0.0, 0),
                                               (4, 1500, 0.3, 2)])
def test_joined_starts_wait_for_every_member_then_run_the_allreduce(n, mtu, dup, meeting):
    """Each host sends its block's descriptor with JOIN to one meeting device as soon as
    its own input is in memory: nothing starts before the last one arrives, so an input
    written just before its host's JOIN is in the sum; then every device ends with the
    sum and a signal that counts the blocks, and every host got its answer."""
    fab = Fabric(n, mtu, seed=n * 7 + mtu, dup=dup)
    count = 999
    rng = np.random.default_rng(3)
    inputs = [rng.integers(-1000, 1000, count).astype(np.int32) for _ in range(n)]
    spans = np.array_split(np.arange(count), n)
    for b, idx in enumerate(spans):
        fab.devs[b].memory[ADDR:ADDR + inputs[b].nbytes] = inputs[b].tobytes()
        route = tuple((b + k) % n for k in range(n))
        fab.submit(meeting, _join(HOST + b, meeting, route, ADDR + int(idx[0]) * 4,
                                  len(idx) * 4))
        fab.run()
        held = fab.devs[meeting].counters()
        if b < n - 1:      # still waiting: no chain ran, nothing was signalled
            assert held["joins_held"] == b + 1 and held["joins_started"] == 0
            assert all(int.from_bytes(d.memory[SIGNAL:SIGNAL + 8], "little") == 0
                       for d in fab.devs.values())
    _every_device_holds(fab, sum(inputs), n)
    done = fab.devs[meeting].counters()
    assert done["joins_started"] == n and done["joins_held"] == 0
    answered = {p.src: p.opcode for p in fab.host_replies}
    assert {p.req_id for p in fab.host_replies} == {200 + HOST + b for b in range(n)}
    assert set(answered.values()) == {Opcode.ACK}


def test_an_empty_joined_start_counts_its_sender_and_starts_nothing():
    """A member with nothing to contribute joins with length 0: the others' chains wait
    for it, then run; only theirs are started (and signalled)."""
    fab = Fabric(3, 1500, seed=9)
    for i, d in fab.devs.items():
        d.memory[ADDR:ADDR + 400] = np.full(100, i + 1, np.int32).tobytes()
    blocks = {0: (0, 200), 1: (200, 200), 2: (200, 400)}    # block 1 is empty
    for b, (lo, hi) in blocks.items():
        route = tuple((b + k) % 3 for k in range(3))
        fab.submit(1, _join(HOST + b, 1, route, ADDR + lo, hi - lo))
        fab.run()
        if b < 2:
            assert fab.devs[1].counters()["joins_held"] == b + 1
    _every_device_holds(fab, np.full(100, 6, np.int32), 2)
    assert fab.devs[1].counters()["joins_started"] == 2


def _status_of(dev: Device, pkt: Packet, seq: int) -> int:
    outs = dev.receive(encode(pkt.copy(seq=seq, flags=pkt.flags | Flag.ACK_REQ)), 0.0)
    (reply,) = [o.packet for o in outs if o.dest is None]
    return reply.status if reply.opcode == Opcode.NAK else 0


def test_joined_starts_that_cannot_be_held_are_refused_and_a_regrouping_drops_them():
    fab = Fabric(3, 65000, seed=1)
    dev = fab.devs[0]
    route = (1, 2, 0)
    assert _status_of(dev, _join(HOST, 0, route, 0, 64, payload=bytes(64)), 1) == \
        Status.MALFORMED                                     # a fragment, not a descriptor
    assert _status_of(dev, _join(HOST, 0, route, 0, 64, group=8), 2) == Status.BAD_GROUP
    assert _status_of(dev, _join(HOST, 0, (7, 1), 0, 64), 7) == Status.BAD_GROUP  # 7: none
    assert _status_of(dev, _join(HOST, 0, route, 0, 64), 3) == 0          # held
    assert _status_of(dev, _join(HOST, 0, route, 0, 64, req_id=5), 4) == Status.BUSY
    assert dev.counters()["joins_held"] == 1
    dev.set_group(9, (0, 1, 2))          # the group set again: what it held is dropped
    assert dev.counters()["joins_held"] == 0
    assert _status_of(dev, _join(HOST, 0, route, 0, 64, req_id=6), 5) == 0
    assert dev.counters()["joins_held"] == 1 and dev.counters()["joins_started"] == 0


def test_a_joined_start_whose_group_never_completes_expires():
    """A member that never joins (its job failed) must not leave the others' starts
    held for the next job: they are dropped after the peer timeout, and counted."""
    dev = Device(0, 1 << 16, peer_timeout=5.0)
    dev.register_region(0, 1 << 16, key=KEY)
    dev.set_group(9, (0, 1))
    pkt = _join(HOST, 0, (0, 1), 0, 64)
    dev.receive(encode(pkt.copy(seq=1, flags=pkt.flags | Flag.ACK_REQ)), 100.0)
    assert dev.counters()["joins_held"] == 1
    assert dev.next_timer() <= 105.0
    dev.on_timer(104.0)
    assert dev.counters()["joins_held"] == 1
    dev.on_timer(105.5)
    assert dev.counters()["joins_held"] == 0 and dev.counters()["joins_expired"] == 1
