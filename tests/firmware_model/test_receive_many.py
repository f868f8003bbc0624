"""``Device.receive_many`` against ``Device.receive``, and ACK coalescing (SPEC §4.7).

Invariant: for any list of datagrams, ``receive_many`` leaves memory, counters and every
later answer exactly as ``receive`` of each datagram in turn would, and returns the same
datagrams in the same order. With ``ack_every`` > 1 a run of fragments is answered by one
ACK whose ``addr2`` counts the requests it answers; every NAK still goes out alone.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_model import Device
from netdam.wire import fast
from netdam.wire.codec import Packet, decode, encode
from netdam.wire.fields import DType, Flag, Opcode, RedOp, Status

MEM = 1 << 16
KEY = 0x1234


def device(ack_every: int) -> Device:
    d = Device(1, MEM, ack_every=ack_every, max_messages=2)
    d.register_region(0, MEM, key=KEY)
    d.register_region(0, 4096, key=KEY + 1, pkey=7)
    d.set_group(2, [9, 3, 1])          # the members a chain's last hop multicasts to
    return d


def write(src: int, seq: int, off: int, payload: bytes, *, more: bool = True,
          length: int = MEM, rkey: int = KEY, flags: int = 0) -> bytes:
    f = int(Flag.ACK_REQ) | (int(Flag.MORE_FRAGS) if more else 0) | flags
    return encode(Packet(opcode=Opcode.WRITE, src=src, dst=1, rkey=rkey, seq=seq, req_id=seq,
                         addr=0, length=length, frag_off=off, flags=f, payload=payload))


def wire(outs) -> list[tuple]:
    return [(o.dest, encode(o.packet)) for o in outs]


def same_state(a: Device, b: Device) -> None:
    assert bytes(a.memory) == bytes(b.memory)
    ca, cb = a.counters(), b.counters()
    for c in (ca, cb):
        c.pop("busy_ns")
        for row in c["by_opcode"].values():
            row.pop("busy_ns")
    assert ca == cb
    assert a.next_timer() == b.next_timer()


@contextlib.contextmanager
def lane(c_path: bool):
    """Run receive_many with the C scan (when built) or with its pure-Python path."""
    saved = fast.AVAILABLE
    fast.AVAILABLE = saved and c_path
    try:
        yield
    finally:
        fast.AVAILABLE = saved


def both(datagrams, ack_every: int, now: float = 1.0, c_path: bool = True, batch=None):
    """The same datagrams one by one, and in batches of ``batch`` (default: all)."""
    seq_dev, many_dev = device(ack_every), device(ack_every)
    seq_outs = [o for d in datagrams for o in seq_dev.receive(d, now)]
    step = batch or max(1, len(datagrams))
    many_outs = []
    with lane(c_path):
        for i in range(0, len(datagrams), step):
            many_outs += many_dev.receive_many(datagrams[i:i + step], now)
    return seq_dev, many_dev, seq_outs, many_outs


# -- the run lane ------------------------------------------------------------------------------
@pytest.mark.parametrize("c_path", [True, False])
@pytest.mark.parametrize("ack_every", [1, 4, 16])
def test_a_run_of_fragments_equals_one_by_one(ack_every, c_path):
    chunk = 1000
    data = random.Random(1).randbytes(20 * chunk)
    grams = [write(9, 100, 0, data[:chunk])]            # anchors the peer's window
    grams += [write(9, 100 + i, i * chunk, data[i * chunk:(i + 1) * chunk],
                    more=i < 19, length=len(data)) for i in range(1, 20)]
    a, b, sa, sb = both(grams, ack_every, c_path=c_path)
    assert wire(sa) == wire(sb)
    same_state(a, b)
    assert bytes(b.memory[:len(data)]) == data
    acks = [decode(encode(o.packet)) for o in sb]
    assert all(p.opcode == Opcode.ACK for p in acks)
    answered = sum(max(p.addr2, 1) for p in acks)
    assert answered == 20                                # every request answered once
    assert acks[-1].seq == 119 and acks[-1].ack == 120
    if ack_every > 1:
        assert len(acks) == -(-20 // ack_every)
        assert b.counters()["acks_deferred"] == 20 - len(acks)


def test_a_bad_fragment_in_a_run_is_naked_alone_and_the_rest_applied():
    grams = [write(9, 5, 0, b"a" * 64)]
    grams += [write(9, 5 + i, 64 * i, b"b" * 64) for i in range(1, 4)]
    grams.append(write(9, 9, MEM - 8, b"c" * 64, length=2 * MEM))   # out of bounds
    grams += [write(9, 10 + i, 64 * (10 + i), b"d" * 64) for i in range(3)]
    a, b, sa, sb = both(grams, 16)
    assert wire(sa) == wire(sb)
    same_state(a, b)
    naks = [decode(encode(o.packet)) for o in sb if o.packet.opcode == Opcode.NAK]
    assert [(n.seq, n.status) for n in naks] == [(9, Status.OUT_OF_BOUNDS)]


@pytest.mark.parametrize("c_path", [True, False])
def test_a_run_past_the_end_of_the_address_space_is_refused_as_one_by_one(c_path):
    """64-bit addresses plus offsets do not wrap around into memory (the C scan's sums
    are checked for overflow)."""
    top = (1 << 64) - 64
    grams = [encode(Packet(opcode=Opcode.WRITE, src=9, dst=1, rkey=KEY, seq=70 + i,
                           req_id=70, addr=top, length=4096, frag_off=64 * i,
                           flags=Flag.ACK_REQ | Flag.MORE_FRAGS, payload=b"x" * 64))
             for i in range(4)]
    a, b, sa, sb = both(grams, 16, c_path=c_path)
    assert wire(sa) == wire(sb)
    same_state(a, b)
    assert bytes(b.memory) == bytes(MEM)
    naks = [decode(encode(o.packet)) for o in sb]
    assert {(n.opcode, n.status) for n in naks} == {(Opcode.NAK, Status.OUT_OF_BOUNDS)}


def test_deferred_ack_goes_out_at_its_deadline():
    d = device(16)
    outs = d.receive_many([write(9, 1, 0, b"x" * 8)] + [write(9, 1 + i, 8 * i, b"y" * 8)
                                                          for i in range(1, 5)], 1.0)
    assert outs == []                                    # every one deferred
    due = d.next_timer()
    assert due is not None and 1.0 < due <= 1.0 + d.ack_delay
    late = d.on_timer(due)
    assert len(late) == 1 and late[0].dest == 9
    ack = late[0].packet
    assert ack.opcode == Opcode.ACK and ack.seq == 5 and ack.addr2 == 5 and ack.ack == 6


@pytest.mark.parametrize("c_path", [True, False])
def test_put_signal_runs_fire_the_signal_once_after_the_last_byte(c_path):
    grams = [put(9, 7 + i, 1, i) for i in range(3)] + [put(9, 10 + i, 2, i) for i in range(3)]
    a, b, sa, sb = both(grams, 16, c_path=c_path)
    assert wire(sa) == wire(sb)
    same_state(a, b)
    assert int.from_bytes(bytes(b.memory[SIGNAL:SIGNAL + 8]), "little") == 2
    assert bytes(b.memory[1024:1024 + 192]) == bytes([1]) * 192
    assert b.counters()["signals"] == 2


@pytest.mark.parametrize("c_path", [True, False])
def test_a_full_message_table_refuses_the_rest_of_a_put_signal_run_busy(c_path):
    """Two messages in progress fill the table (max_messages=2): a run of a third one is
    refused BUSY from its first fragment, one by one, exactly as without the lane."""
    grams = [put(9, 20, 1, 0), put(9, 21, 2, 0)] + [put(9, 22 + i, 3, i) for i in range(3)]
    a, b, sa, sb = both(grams, 16, c_path=c_path, batch=2)
    assert wire(sa) == wire(sb)
    same_state(a, b)
    busy = [decode(encode(o.packet)) for o in sb if o.packet.opcode == Opcode.NAK]
    assert [(p.seq, p.status) for p in busy] == [(22, Status.BUSY), (23, Status.BUSY),
                                                 (24, Status.BUSY)]


def test_ack_every_is_bounded_by_the_replay_window():
    with pytest.raises(ValueError):
        Device(1, MEM, replay_window=8, ack_every=9)
    with pytest.raises(ValueError):
        Device(1, MEM, ack_every=0)


def hop(src: int, seq: int, off: int, payload: bytes, *, hop: int = 1,
        route=(9, 1, 3), more: bool = True, length: int = MEM, dtype: int = DType.FLOAT32,
        redop: int = RedOp.SUM, flags: int = 0, group: int = 2, addr2: int = 0) -> bytes:
    """A REDUCE_FWD fragment reaching device 1 at position ``hop`` of ``route``."""
    f = int(Flag.ACK_REQ) | (int(Flag.MORE_FRAGS) if more else 0) | flags
    return encode(Packet(opcode=Opcode.REDUCE_FWD, src=src, dst=1, rkey=KEY, seq=seq,
                         req_id=77, addr=0, length=length, frag_off=off, flags=f, hop=hop,
                         route=route, dtype=dtype, redop=redop, group=group, addr2=addr2,
                         imm=1, payload=payload))


CHUNK, RUN = 256, 12       # a chain message of RUN fragments of CHUNK bytes


def chain_run(ack_every: int, c_path: bool, src: int, seq: int, **hop_fields):
    """A chain message of float32 arriving at device 1 (its memory holds 0.5 each), taken
    one by one on one device and as a run on another (after its first fragment, which
    anchors the peer's window); asserts the two give the same datagrams and state and
    returns (data, the device's own data, the run's device, its answers)."""
    data = np.arange(RUN * CHUNK // 4, dtype=np.float32).tobytes()
    grams = [hop(src, seq + i, i * CHUNK, data[i * CHUNK:(i + 1) * CHUNK], more=i < RUN - 1,
                 length=len(data), flags=int(Flag.LAST_HOP_SIGNAL | Flag.RESULT_MCAST),
                 **hop_fields)
             for i in range(RUN)]
    seq_dev, many_dev = device(ack_every), device(ack_every)
    mine = np.full(RUN * CHUNK // 4, 0.5, np.float32).tobytes()
    for d in (seq_dev, many_dev):
        d.memory[:len(mine)] = mine
    seq_outs = [o for g in grams for o in seq_dev.receive(g, 1.0)]
    many_outs = many_dev.receive(grams[0], 1.0)
    with lane(c_path):
        many_outs += many_dev.receive_many(grams[1:], 1.0)
    assert wire(seq_outs) == wire(many_outs)
    same_state(seq_dev, many_dev)
    return data, mine, many_dev, many_outs


@pytest.mark.parametrize("c_path", [True, False])
@pytest.mark.parametrize("ack_every", [1, 4, 16])
def test_a_run_of_chain_hops_equals_one_by_one(ack_every, c_path):
    """Intermediate hops of a chain (SPEC §4.9): each fragment reduced with memory and
    forwarded to the next hop just before its ACK, exactly as one by one."""
    data, mine, many_dev, many_outs = chain_run(ack_every, c_path, 9, 300)
    fwd = [o for o in many_outs if o.dest == 3]
    assert len(fwd) == RUN and all(o.packet.hop == 2 and o.packet.src == 1 for o in fwd)
    got = b"".join(bytes(o.packet.payload) for o in fwd)
    assert got == (np.frombuffer(data, np.float32) + np.float32(0.5)).tobytes()
    assert bytes(many_dev.memory[:len(mine)]) == mine        # a middle hop writes nothing
    answered = sum(max(o.packet.addr2, 1) for o in many_outs if o.dest is None)
    assert answered == RUN


@pytest.mark.parametrize("c_path", [True, False])
@pytest.mark.parametrize("ack_every", [1, 4, 16])
def test_a_run_of_last_hops_equals_one_by_one(ack_every, c_path):
    """The last hop of a chain (SPEC §4.9): each fragment reduced into memory, the
    signal bumped once after the message's last byte, the result multicast to the other
    members of the group, all before its ACK, exactly as one by one."""
    word = MEM - 64
    data, _, many_dev, many_outs = chain_run(ack_every, c_path, 3, 500, hop=2,
                                             route=(9, 3, 1), addr2=word)
    result = (np.frombuffer(data, np.float32) + np.float32(0.5)).tobytes()
    assert bytes(many_dev.memory[:len(result)]) == result
    assert int.from_bytes(many_dev.memory[word:word + 8], "little") == 1
    for member in (9, 3):
        copies = [o.packet for o in many_outs if o.dest == member]
        assert [p.opcode for p in copies] == [Opcode.MULTICAST] * RUN
        assert b"".join(bytes(p.payload) for p in copies) == result
    answered = sum(max(o.packet.addr2, 1) for o in many_outs if o.dest is None)
    assert answered == RUN


@pytest.mark.parametrize("defect", ["route", "misaligned", "redop", "last", "bounds",
                                    "dtype", "group", "signal"])
def test_a_run_of_chain_hops_with_a_defect_is_answered_as_one_by_one(defect):
    """Every fragment of the run has the defect: the lane must refuse the run whole."""
    last, mcast = {"hop": 2, "route": (9, 3, 1)}, int(Flag.RESULT_MCAST)
    kw = {"route": {"route": (9, 4, 3)}, "redop": {"redop": RedOp.BXOR},
          "last": {**last, "route": (9, 3, 4)}, "dtype": {"dtype": 0x7F},
          "group": {**last, "flags": mcast, "group": 5},
          "signal": {**last, "flags": int(Flag.LAST_HOP_SIGNAL), "addr2": MEM - 4},
          }.get(defect, {})
    off = {"misaligned": 2, "bounds": MEM - 128}.get(defect, 0)
    grams = [hop(9, 400 + i, off + 64 * i, bytes(64), length=2 * MEM, **kw)
             for i in range(6)]
    seq_dev, many_dev = device(16), device(16)
    seq_outs = [o for g in grams for o in seq_dev.receive(g, 1.0)]
    many_outs = many_dev.receive(grams[0], 1.0)
    many_outs += many_dev.receive_many(grams[1:], 1.0)
    assert wire(seq_outs) == wire(many_outs)
    same_state(seq_dev, many_dev)
    assert not [o for o in many_outs if o.dest == 3 and o.packet.hop == 2] or defect == "bounds"


# -- the property ------------------------------------------------------------------------------
_kinds = st.sampled_from(["next", "next", "next", "last", "dup", "skip", "old", "badkey",
                          "partition", "oob", "retransmit", "fence", "read", "other_src",
                          "garbage", "corrupt", "put", "put", "put", "put_new", "put_bad",
                          "copy", "copy", "copy_signal", "hop", "hop", "hop", "hop_last",
                          "hop_last", "hop_last_signal", "hop_last_end", "hop_last_nogroup",
                          "hop_route", "hop_misaligned", "hop_redop", "hop_wrong"])
SIGNAL = MEM - 64


def put(src: int, seq: int, msg: int, part: int, *, word: int = SIGNAL) -> bytes:
    """Fragment ``part`` (of 3, 64 bytes each) of PUT_SIGNAL message ``msg``."""
    return encode(Packet(opcode=Opcode.PUT_SIGNAL, src=src, dst=1, rkey=KEY, seq=seq,
                         req_id=msg, addr=1024 * (msg % 8), addr2=word, imm=1, length=192,
                         frag_off=64 * part, payload=bytes([msg % 251]) * 64,
                         flags=Flag.ACK_REQ | (Flag.MORE_FRAGS if part < 2 else 0)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=st.lists(_kinds, min_size=1, max_size=40), ack_every=st.sampled_from([1, 3, 16]),
       seed=st.integers(0, 2**16), c_path=st.booleans(), batch=st.sampled_from([None, 3, 7]))
def test_receive_many_equals_receive_one_by_one(kinds, ack_every, seed, c_path, batch):
    rng = random.Random(seed)
    seqs = {9: 1000, 10: 50}
    grams = []
    msg, part = 1, 0
    for kind in kinds:
        src = 10 if kind == "other_src" else 9
        seq = seqs[src]
        off = rng.randrange(0, MEM - 256, 8)
        body = rng.randbytes(rng.choice([8, 64, 200]))
        if kind in ("next", "last", "other_src", "badkey", "partition", "oob", "retransmit",
                    "fence"):
            seqs[src] += 1
        elif kind == "skip":
            seqs[src] += 2
            seq += 1
        elif kind == "dup":
            seq -= 1
        elif kind == "old":
            seq = (seq - 5000) & 0xFFFFFFFF
        if kind in ("copy", "copy_signal"):     # a MULTICAST copy another device sent
            seqs[src] += 1
            flags = Flag.ACK_REQ | Flag.MCAST_COPY | (Flag.MORE_FRAGS if part < 2 else 0)
            grams.append(encode(Packet(
                opcode=Opcode.MULTICAST, src=src, dst=1, rkey=KEY, seq=seq, req_id=msg,
                group=3, addr=2048, addr2=SIGNAL, imm=1, length=192, frag_off=64 * part,
                payload=body[:8] * 8, flags=flags | (Flag.LAST_HOP_SIGNAL
                                                     if kind == "copy_signal" else 0))))
            part = (part + 1) % 3
            continue
        if kind.startswith("hop"):               # a chain fragment passing through
            seqs[src] += 1
            last = kind.startswith("hop_last")     # device 1 ends the route
            grams.append(hop(
                src, seq, off + (2 if kind == "hop_misaligned" else 0), body[:8] * 8,
                hop=2 if last else 1,
                route=(9, 4, 3) if kind == "hop_route" else (9, 3, 1) if last else (9, 1, 3),
                redop=RedOp.BXOR if kind == "hop_redop" else RedOp.SUM,
                dtype=DType.INT32 if kind == "hop_wrong" else DType.FLOAT32,
                flags=int(Flag.RESULT_MCAST) | (int(Flag.LAST_HOP_SIGNAL)
                                                 if kind == "hop_last_signal" else 0),
                group=5 if kind == "hop_last_nogroup" else 2, addr2=SIGNAL,
                more=kind != "hop_last_end"))
            continue
        if kind in ("put", "put_new", "put_bad"):
            seqs[src] += 1
            if kind == "put_new":
                msg, part = msg + 1, 0
            grams.append(put(src, seq, msg, part, word=SIGNAL + 4 if kind == "put_bad"
                             else SIGNAL))
            part = (part + 1) % 3
            continue
        if kind == "read":
            seqs[src] += 1
            grams.append(encode(Packet(opcode=Opcode.READ, src=src, dst=1, rkey=KEY, seq=seq,
                                       req_id=seq, addr=off, length=16,
                                       flags=Flag.ACK_REQ)))
        elif kind == "garbage":
            grams.append(rng.randbytes(rng.randrange(1, 80)))
        elif kind == "corrupt":
            g = bytearray(write(src, seq, off, body))
            g[rng.randrange(len(g))] ^= 0x40
            grams.append(bytes(g))
        else:
            grams.append(write(
                src, seq, MEM - 8 if kind == "oob" else off, body, more=kind != "last",
                rkey=KEY + 99 if kind == "badkey" else KEY + 1 if kind == "partition" else KEY,
                flags=(int(Flag.RETRANSMIT) if kind == "retransmit" else 0)
                | (int(Flag.FENCE) if kind == "fence" else 0)))
    a, b, sa, sb = both(grams, ack_every, c_path=c_path, batch=batch)
    assert wire(sa) == wire(sb)
    same_state(a, b)
    later = 5.0                                          # deferred ACKs and expiries
    assert wire(a.on_timer(later)) == wire(b.on_timer(later))
    same_state(a, b)
