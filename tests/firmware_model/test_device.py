"""The device driven by datagrams alone. Invariant: every request is either applied
exactly once and answered, or rejected with a NAK naming why and leaving memory as it was."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from conftest import Rig, is_nak
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_model import Device, Out, Rights, alu
from netdam.wire.codec import Packet, encode
from netdam.wire.fields import DType, Flag, Opcode, RedOp, Status
from netdam.wire.frag import Reassembler, fragment

U64 = struct.Struct("<Q")


def u64(n: int) -> bytes:
    return U64.pack(n & (2**64 - 1))


def word(rig: Rig, addr: int) -> int:
    return U64.unpack(bytes(rig.dev.memory[addr:addr + 8]))[0]


# -- happy paths ---------------------------------------------------------------------------
def test_write_then_read_and_ack_fields(rig):
    ack = rig.one(Opcode.WRITE, addr=64, payload=b"netdam!!")
    assert ack.opcode == Opcode.ACK and ack.src == 1 and ack.dst == rig.src
    assert ack.seq == 1000 and ack.req_id == 1 and ack.imm == Opcode.WRITE
    assert ack.has(Flag.ACK_VALID) and ack.ack == 1001
    resp = rig.one(Opcode.READ, addr=64, length=8)
    assert resp.opcode == Opcode.READ_RESP and bytes(resp.payload) == b"netdam!!"
    assert resp.req_id == 2 and resp.seq == 1001 and resp.ack == 1002


def test_a_request_for_another_member_is_refused_and_not_applied(rig):
    """SPEC §8.5: WRONG_DEVICE, in the name of the member the request named, no window
    touched (the next in-sequence request from the same sender still applies)."""
    before = rig.snapshot()
    nak = rig.one(Opcode.WRITE, addr=64, payload=b"misrouted", dst=rig.dev.device_id + 1)
    assert is_nak(nak, Status.WRONG_DEVICE) and nak.src == rig.dev.device_id + 1
    assert not nak.has(Flag.ACK_VALID) and rig.snapshot() == before
    assert rig.one(Opcode.WRITE, addr=64, payload=b"any", dst=0xFFFF).opcode == Opcode.ACK
    assert bytes(rig.dev.memory[64:67]) == b"any"


def test_read_is_fragmented_to_the_mtu_and_reassembles(make_rig):
    rig = make_rig(mtu=512, mem_size=1 << 16)
    data = random.Random(1).randbytes(5000)
    rig.dev.memory[100:5100] = data
    outs = rig.request(Opcode.READ, addr=100, length=5000)
    assert len(outs) > 5
    r = Reassembler()
    done = None
    for _, p in reversed(outs):   # any order
        assert p.opcode == Opcode.READ_RESP and p.req_id == rig.req and len(encode(p)) <= 512
        done = r.add(p, 0.0) or done
    assert bytes(done) == data


def test_write_fragments_apply_independently_in_any_order(rig):
    data = random.Random(2).randbytes(3000)
    frags = list(fragment(Packet(opcode=Opcode.WRITE), data, 512))
    random.Random(3).shuffle(frags)
    for f in frags:
        outs = rig.request(Opcode.WRITE, addr=1024, payload=f.payload, length=3000,
                           frag_off=f.frag_off, flags=f.flags | Flag.ACK_REQ)
        assert outs[0][1].opcode == Opcode.ACK
    assert bytes(rig.dev.memory[1024:4024]) == data


def test_atomics(rig):
    rig.dev.memory[8:16] = u64(40)
    old = rig.one(Opcode.ATOMIC_FADD, addr=8, payload=u64(2))
    assert old.opcode == Opcode.ATOMIC_RESP and bytes(old.payload) == u64(40)
    assert word(rig, 8) == 42
    rig.one(Opcode.ATOMIC_FADD, addr=8, payload=u64(-43))   # wraps
    assert word(rig, 8) == 2**64 - 1
    miss = rig.one(Opcode.ATOMIC_CAS, addr=8, payload=u64(5) + u64(7))
    assert bytes(miss.payload) == u64(-1) and word(rig, 8) == 2**64 - 1
    hit = rig.one(Opcode.ATOMIC_CAS, addr=8, payload=u64(-1) + u64(7))
    assert bytes(hit.payload) == u64(-1) and word(rig, 8) == 7


@pytest.mark.parametrize("dtype,np_dtype", [(DType.FLOAT32, np.float32),
                                            (DType.INT32, np.int32)])
def test_reduce_sum(rig, dtype, np_dtype):
    a = np.arange(64, dtype=np_dtype)
    b = np.arange(64, dtype=np_dtype) * 3
    rig.dev.memory[256:256 + a.nbytes] = a.tobytes()
    rig.one(Opcode.REDUCE, addr=256, payload=b.tobytes(), dtype=dtype, redop=RedOp.SUM)
    got = np.frombuffer(bytes(rig.dev.memory[256:256 + a.nbytes]), np_dtype)
    np.testing.assert_array_equal(got, a + b)


def test_multicast_applies_locally_and_replicates(rig):
    rig.dev.set_group(5, (1, 2, 3))
    outs = rig.request(Opcode.MULTICAST, addr=512, payload=b"x" * 16, group=5)
    copies = [(d, p) for d, p in outs if d is not None]
    assert sorted(d for d, _ in copies) == [2, 3]
    for d, p in copies:
        assert p.opcode == Opcode.MULTICAST and p.has(Flag.MCAST_COPY) and p.dst == d
        assert p.src == 1 and bytes(p.payload) == b"x" * 16 and not p.has(Flag.ACK_REQ)
    assert [p.opcode for d, p in outs if d is None] == [Opcode.ACK]
    assert bytes(rig.dev.memory[512:528]) == b"x" * 16
    # a copy is applied and never replicated again
    outs = rig.request(Opcode.MULTICAST, addr=600, payload=b"y" * 8, group=5,
                       flags=Flag.ACK_REQ | Flag.MCAST_COPY)
    assert [d for d, _ in outs] == [None] and bytes(rig.dev.memory[600:608]) == b"y" * 8


def test_multicast_from_a_non_member_only_replicates(rig):
    rig.dev.set_group(6, (2, 3))
    outs = rig.request(Opcode.MULTICAST, addr=512, payload=b"z" * 8, group=6)
    assert sorted(d for d, _ in outs if d is not None) == [2, 3]
    assert bytes(rig.dev.memory[512:520]) == bytes(8)


def test_memcpy_overlapping(rig):
    rig.dev.memory[0:16] = bytes(range(16))
    rig.one(Opcode.MEMCPY, addr=0, addr2=4, length=12)
    assert bytes(rig.dev.memory[0:16]) == bytes([0, 1, 2, 3]) + bytes(range(12))


def test_fence_opcode_is_acked(rig):
    ack = rig.one(Opcode.FENCE)
    assert ack.opcode == Opcode.ACK and ack.imm == Opcode.FENCE


def test_put_signal_single_datagram(rig):
    rig.one(Opcode.PUT_SIGNAL, addr=64, payload=b"a" * 24, addr2=1024, imm=3)
    assert bytes(rig.dev.memory[64:88]) == b"a" * 24 and word(rig, 1024) == 3


def test_quant_and_dequant_fp8_match_the_alu(rig):
    x = (np.random.default_rng(4).standard_normal(300) * 10).astype(np.float32)
    rig.dev.memory[0:x.nbytes] = x.tobytes()
    rig.one(Opcode.QUANT_FP8, addr=0, length=x.nbytes, dtype=DType.FLOAT32,
            redop=DType.FP8_E4M3, addr2=4096, imm=8192)
    q, scales = alu.quantize_fp8(x.tobytes(), DType.FLOAT32, DType.FP8_E4M3, 128)
    assert bytes(rig.dev.memory[4096:4096 + 300]) == bytes(q)
    assert bytes(rig.dev.memory[8192:8192 + 12]) == bytes(scales) and len(scales) == 12
    rig.one(Opcode.DEQUANT_FP8, addr=4096, length=300, dtype=DType.FLOAT32,
            redop=DType.FP8_E4M3, addr2=12288, imm=8192)
    back = alu.dequantize_fp8(q, scales, DType.FP8_E4M3, DType.FLOAT32, 128)
    assert bytes(rig.dev.memory[12288:12288 + 1200]) == bytes(back)


def test_no_response_suppresses_the_ack_but_not_a_nak(rig):
    assert rig.request(Opcode.WRITE, addr=0, payload=b"q" * 8,
                       flags=Flag.ACK_REQ | Flag.NO_RESPONSE) == []
    assert bytes(rig.dev.memory[0:8]) == b"q" * 8
    (_, nak), = rig.request(Opcode.WRITE, addr=0, payload=b"q" * 8, rkey=rig.region.key ^ 1,
                            flags=Flag.ACK_REQ | Flag.NO_RESPONSE)
    assert is_nak(nak, Status.BAD_KEY)


def test_unsequenced_requests_are_applied_on_arrival(rig):
    pkt = rig.packet(Opcode.REDUCE, addr=0, payload=u64(1), dtype=DType.UINT64,
                     redop=RedOp.SUM, flags=0)
    assert rig.send(pkt) == [] and rig.send(pkt) == []
    assert word(rig, 0) == 2   # no ACK_REQ: no replay window, no dedupe (SPEC_device §4)


# -- errors --------------------------------------------------------------------------------
def _write(**kw):
    return dict(opcode=Opcode.WRITE, addr=64, payload=b"w" * 8, **kw)


ERRORS = [
    ("unknown opcode", dict(opcode=0x20), Status.UNKNOWN_OPCODE),
    ("unregistered user opcode", dict(opcode=0xC5), Status.UNKNOWN_OPCODE),
    ("response sent to a device", dict(opcode=Opcode.ACK), Status.UNKNOWN_OPCODE),
    ("bad key", _write(rkey=12345), Status.BAD_KEY),
    ("bad partition", _write(pkey=8), Status.BAD_PARTITION),
    ("beyond the region", dict(opcode=Opcode.WRITE, addr=(1 << 15) - 4, payload=b"w" * 8),
     Status.OUT_OF_BOUNDS),
    ("64-bit wrap-around", dict(opcode=Opcode.WRITE, addr=2**64 - 4, payload=b"w" * 8),
     Status.OUT_OF_BOUNDS),
    ("fragment offset wraps", dict(opcode=Opcode.READ, addr=2**64 - 1, length=2),
     Status.OUT_OF_BOUNDS),
    ("memcpy destination outside", dict(opcode=Opcode.MEMCPY, addr=0, addr2=1 << 15,
                                        length=8), Status.OUT_OF_BOUNDS),
    ("atomic misaligned", dict(opcode=Opcode.ATOMIC_FADD, addr=4, payload=u64(1)),
     Status.MISALIGNED),
    ("reduce misaligned", dict(opcode=Opcode.REDUCE, addr=2, payload=bytes(8),
                               dtype=DType.FLOAT32, redop=RedOp.SUM), Status.MISALIGNED),
    ("signal word misaligned", dict(opcode=Opcode.PUT_SIGNAL, addr=0, payload=b"s" * 8,
                                    addr2=12, imm=1), Status.MISALIGNED),
    ("unknown dtype", _write(dtype=99), Status.BAD_DTYPE),
    ("reduce on raw bytes", dict(opcode=Opcode.REDUCE, addr=0, payload=bytes(8),
                                 dtype=DType.NONE, redop=RedOp.SUM), Status.BAD_DTYPE),
    ("quant from an int", dict(opcode=Opcode.QUANT_FP8, addr=0, length=8, dtype=DType.INT32,
                               redop=DType.FP8_E4M3, addr2=64, imm=128), Status.BAD_DTYPE),
    ("bitwise op on floats", dict(opcode=Opcode.REDUCE, addr=0, payload=bytes(8),
                                  dtype=DType.FLOAT32, redop=RedOp.BXOR), Status.BAD_REDOP),
    ("unknown redop", dict(opcode=Opcode.REDUCE, addr=0, payload=bytes(8),
                           dtype=DType.INT32, redop=99), Status.BAD_REDOP),
    ("short atomic operand", dict(opcode=Opcode.ATOMIC_FADD, addr=8, payload=bytes(4)),
     Status.LENGTH_MISMATCH),
    ("cas needs 16 bytes", dict(opcode=Opcode.ATOMIC_CAS, addr=8, payload=bytes(8)),
     Status.LENGTH_MISMATCH),
    ("read with a payload", dict(opcode=Opcode.READ, addr=0, length=8, payload=bytes(8)),
     Status.LENGTH_MISMATCH),
    ("fragment beyond its message", dict(opcode=Opcode.WRITE, addr=0, payload=bytes(16),
                                         length=16, frag_off=8), Status.LENGTH_MISMATCH),
    ("unknown multicast group", dict(opcode=Opcode.MULTICAST, addr=0, payload=bytes(8),
                                     group=77), Status.BAD_GROUP),
    ("chain route names another device", dict(opcode=Opcode.REDUCE_FWD, addr=0,
                                              payload=bytes(8), dtype=DType.INT32,
                                              redop=RedOp.SUM, route=(1, 2), hop=1),
     Status.BAD_GROUP),
    ("chain without route or chain id", dict(opcode=Opcode.REDUCE_FWD, addr=0,
                                             payload=bytes(8), dtype=DType.INT32,
                                             redop=RedOp.SUM), Status.BAD_GROUP),
    ("seq far ahead of the window", _write(seq=1000 + 5000), Status.SEQ_OUT_OF_WINDOW),
]


@pytest.mark.parametrize("what,fields,status", ERRORS, ids=[e[0] for e in ERRORS])
def test_each_error_is_a_nak_and_changes_nothing(make_rig, what, fields, status):
    rig = make_rig()
    rig.request(Opcode.WRITE, addr=0, payload=bytes(range(1, 65)))   # sets the window base
    before = rig.snapshot()
    pkt = rig.packet(**fields)
    (dest, nak), = rig.send(pkt)
    assert dest is None and is_nak(nak, status), (nak, status)
    assert nak.src == rig.dev.device_id and nak.dst == rig.src
    assert (nak.seq, nak.req_id, nak.imm) == (pkt.seq, pkt.req_id, pkt.opcode)
    assert (nak.addr, nak.length, nak.frag_off) == (pkt.addr, pkt.length, pkt.frag_off)
    assert nak.has(Flag.ACK_VALID) and len(nak.payload) == 0
    assert rig.snapshot() == before
    assert rig.dev.counters()["naks"][status.name] == 1


def test_access_denied_per_right(make_rig):
    for rights, opcode, fields in [
            (Rights.READ, Opcode.WRITE, dict(payload=bytes(8))),
            (Rights.WRITE, Opcode.READ, dict(length=8)),
            (Rights.READ | Rights.WRITE, Opcode.ATOMIC_FADD, dict(payload=u64(1))),
            (Rights.ALL & ~Rights.REDUCE, Opcode.REDUCE,
             dict(payload=bytes(8), dtype=DType.INT32, redop=RedOp.SUM)),
            (Rights.READ, Opcode.PUT_SIGNAL, dict(payload=bytes(8), addr2=64)),
            (Rights.WRITE, Opcode.MEMCPY, dict(addr2=64, length=8))]:
        rig = make_rig(rights=rights)
        before = rig.snapshot()
        (_, nak), = rig.request(opcode, addr=0, **fields)
        assert is_nak(nak, Status.ACCESS_DENIED), (rights, opcode)
        assert rig.snapshot() == before


def test_remote_write_right_allows_writes(make_rig):
    rig = make_rig(rights=Rights.REMOTE_WRITE)
    assert rig.one(Opcode.WRITE, addr=0, payload=b"r" * 8).opcode == Opcode.ACK


def test_revoked_key_fails_at_once(rig):
    rig.one(Opcode.WRITE, addr=0, payload=b"k" * 8)
    rig.dev.deregister_region(rig.region.key)
    assert is_nak(rig.one(Opcode.WRITE, addr=0, payload=b"k" * 8), Status.BAD_KEY)


def test_a_held_request_with_a_revoked_key_fails_when_released(rig):
    """Revocation reaches requests already in flight: one held for ordering is checked
    again when it is released, and fails BAD_KEY without touching memory."""
    rig.open()
    gap = rig.packet(Opcode.WRITE, addr=0, payload=b"a" * 8)
    fenced = rig.packet(Opcode.WRITE, addr=8, payload=b"h" * 8,
                        flags=Flag.ACK_REQ | Flag.FENCE)
    assert rig.send(fenced) == []
    key = rig.region.key
    rig.dev.deregister_region(key)
    outs = rig.send(gap)
    assert [(p.opcode, p.status, p.seq) for _, p in outs] == [
        (Opcode.NAK, Status.BAD_KEY, gap.seq), (Opcode.NAK, Status.BAD_KEY, fenced.seq)]
    assert bytes(rig.dev.memory[0:16]) == bytes(16)
    assert rig.dev.counters()["naks"]["BAD_KEY"] == 2


def _raw(pkt: Packet, **header) -> bytes:
    """Encode, patch header bytes, fix the CRC."""
    data = bytearray(encode(pkt))
    for offset, fmt, value in header.values():
        struct.pack_into(fmt, data, offset, value)
    body = data[:-4]
    return bytes(body) + struct.pack("!I", crc32c(body))


def test_malformed_and_bad_version_are_naked_from_the_header(rig):
    pkt = rig.packet(Opcode.WRITE, addr=0, payload=bytes(8))
    outs = rig.dev.receive(_raw(pkt, plen=(36, "!I", 9)), 0.0)
    assert len(outs) == 1 and is_nak(outs[0].packet, Status.MALFORMED)
    assert outs[0].packet.seq == pkt.seq and outs[0].packet.dst == rig.src
    outs = rig.dev.receive(_raw(pkt, ver=(2, "!B", 2)), 0.0)
    assert is_nak(outs[0].packet, Status.BAD_VERSION) and outs[0].packet.req_id == pkt.req_id
    counters = rig.dev.counters()
    assert counters["naks"] == {"MALFORMED": 1, "BAD_VERSION": 1}
    assert rig.snapshot() == bytes(len(rig.dev.memory))


def test_bad_crc_is_dropped_and_counted(rig):
    data = bytearray(encode(rig.packet(Opcode.WRITE, addr=0, payload=b"c" * 8)))
    data[-1] ^= 1
    assert rig.dev.receive(bytes(data), 0.0) == []
    assert rig.dev.counters()["dropped_crc"] == 1
    assert rig.dev.receive(b"not netdam at all" * 5, 0.0) == []
    assert rig.dev.counters()["dropped_malformed"] == 1


def test_a_nak_is_never_answered(rig):
    nak = Packet(opcode=Opcode.NAK, status=Status.BAD_KEY, src=rig.src, dst=1)
    assert rig.send(nak) == [] and rig.dev.counters()["responses_ignored"] == 1


# -- exactly once --------------------------------------------------------------------------
NON_IDEMPOTENT = [
    (Opcode.ATOMIC_FADD, dict(addr=8, payload=u64(3))),
    (Opcode.ATOMIC_CAS, dict(addr=8, payload=u64(0) + u64(9))),
    (Opcode.REDUCE, dict(addr=16, payload=u64(5), dtype=DType.UINT64, redop=RedOp.SUM)),
    (Opcode.PUT_SIGNAL, dict(addr=32, payload=b"p" * 8, addr2=48, imm=1)),
    (Opcode.REDUCE_FWD, dict(addr=16, payload=u64(5), dtype=DType.UINT64, redop=RedOp.SUM,
                             route=(1,), hop=0)),
    (Opcode.WRITE, dict(addr=40, payload=b"i" * 8)),
    (Opcode.MULTICAST, dict(addr=40, payload=b"m" * 8, group=3)),
    (Opcode.ATOMIC_FADD, dict(addr=4, payload=u64(3))),      # NAKed: same NAK again
]


@pytest.mark.parametrize("opcode,fields", NON_IDEMPOTENT,
                         ids=[f"{op.name}-{i}" for i, (op, _) in enumerate(NON_IDEMPOTENT)])
def test_duplicates_are_applied_once_and_answered_alike(make_rig, opcode, fields):
    rig = make_rig()
    rig.dev.set_group(3, (1, 2))
    first = rig.packet(opcode, **fields)
    second = rig.packet(Opcode.WRITE, addr=200, payload=b"2" * 8)
    # reordered: the later seq arrives first, then the original twice
    rig.send(second)
    a = rig.send(first)
    after = rig.snapshot()
    b = rig.send(first.copy(flags=first.flags | Flag.RETRANSMIT))
    assert rig.snapshot() == after
    replies = lambda outs: [encode(p) for d, p in outs if d is None]
    assert replies(a) == replies(b) and replies(a)
    assert all(d is None for d, _ in b)         # a duplicate is never forwarded again
    assert rig.dev.counters()["duplicates"] == 1


def test_duplicate_read_is_executed_again(rig):
    rig.dev.memory[0:8] = b"11111111"
    pkt = rig.packet(Opcode.READ, addr=0, length=8)
    assert bytes(rig.send(pkt)[0][1].payload) == b"11111111"
    rig.dev.memory[0:8] = b"22222222"
    assert bytes(rig.send(pkt)[0][1].payload) == b"22222222"


def test_cumulative_ack_follows_gaps(rig):
    p0, p1, p2 = (rig.packet(Opcode.WRITE, addr=8 * i, payload=bytes(8)) for i in range(3))
    assert rig.send(p0)[0][1].ack == 1001
    assert rig.send(p2)[0][1].ack == 1001     # 1001 missing
    assert rig.send(p1)[0][1].ack == 1003


def test_seq_far_behind_is_out_of_window(make_rig):
    rig = make_rig(replay_window=16)
    for _ in range(40):
        rig.request(Opcode.WRITE, addr=0, payload=bytes(8))
    (_, nak), = rig.request(Opcode.WRITE, addr=0, payload=bytes(8), seq=1000)
    assert is_nak(nak, Status.SEQ_OUT_OF_WINDOW)


def test_an_earlier_seq_of_a_new_peer_is_still_applied(rig):
    late = rig.packet(Opcode.WRITE, addr=0, payload=b"e" * 8)
    rig.request(Opcode.WRITE, addr=8, payload=b"f" * 8)   # the earlier seq arrives second
    assert rig.send(late)[0][1].opcode == Opcode.ACK
    assert bytes(rig.dev.memory[0:16]) == b"e" * 8 + b"f" * 8


# -- ordering ------------------------------------------------------------------------------
def test_fence_flag_holds_until_the_gap_fills(rig):
    rig.open()
    gap = rig.packet(Opcode.WRITE, addr=0, payload=b"a" * 8)
    fenced = rig.packet(Opcode.WRITE, addr=0, payload=b"b" * 8, flags=Flag.ACK_REQ | Flag.FENCE)
    assert rig.send(fenced) == []
    assert rig.dev.counters()["held"] == 1 and bytes(rig.dev.memory[0:8]) == bytes(8)
    assert rig.send(fenced) == []                      # duplicate of a held request
    outs = rig.send(gap)
    assert [p.seq for _, p in outs] == [gap.seq, fenced.seq]
    assert bytes(rig.dev.memory[0:8]) == b"b" * 8       # applied after the earlier write
    assert outs[-1][1].ack == fenced.seq + 1


def test_fence_opcode_acks_only_after_earlier_requests(rig):
    rig.open()
    gap = rig.packet(Opcode.WRITE, addr=0, payload=b"a" * 8)
    assert rig.request(Opcode.FENCE) == []
    outs = rig.send(gap)
    assert [p.opcode for _, p in outs] == [Opcode.ACK, Opcode.ACK]
    assert outs[1][1].imm == Opcode.FENCE


def test_release_put_signal_after_data(rig):
    rig.open()
    data = rig.packet(Opcode.WRITE, addr=0, payload=b"d" * 64, length=64)
    sig = rig.packet(Opcode.PUT_SIGNAL, addr=64, payload=b"", addr2=1024, imm=1,
                     flags=Flag.ACK_REQ | Flag.RELEASE)
    rig.send(sig)
    assert word(rig, 1024) == 0
    rig.send(data)
    assert word(rig, 1024) == 1 and bytes(rig.dev.memory[0:64]) == b"d" * 64


def test_acquire_holds_later_requests(rig):
    rig.open()
    gap = rig.packet(Opcode.WRITE, addr=0, payload=b"g" * 8)
    acq = rig.packet(Opcode.ATOMIC_FADD, addr=8, payload=u64(1),
                     flags=Flag.ACK_REQ | Flag.ACQUIRE | Flag.FENCE)
    later = rig.packet(Opcode.WRITE, addr=16, payload=b"l" * 8)
    assert rig.send(acq) == [] and rig.send(later) == []
    assert bytes(rig.dev.memory[16:24]) == bytes(8)
    outs = rig.send(gap)
    assert [p.opcode for _, p in outs] == [Opcode.ACK, Opcode.ATOMIC_RESP, Opcode.ACK]
    assert bytes(rig.dev.memory[16:24]) == b"l" * 8 and word(rig, 8) == 1


def test_held_request_expires_with_busy(make_rig):
    rig = make_rig(hold_timeout=0.5)
    rig.open()
    rig.packet(Opcode.WRITE, addr=0, payload=bytes(8))          # never delivered
    fenced = rig.packet(Opcode.WRITE, addr=8, payload=b"h" * 8,
                        flags=Flag.ACK_REQ | Flag.FENCE)
    rig.send(fenced, now=10.0)
    assert rig.dev.next_timer() == pytest.approx(10.5)
    assert rig.dev.on_timer(10.4) == []
    outs = rig.dev.on_timer(10.5)
    assert len(outs) == 1 and outs[0].dest == rig.src
    assert is_nak(outs[0].packet, Status.BUSY) and outs[0].packet.seq == fenced.seq
    assert bytes(rig.dev.memory[8:16]) == bytes(8)
    c = rig.dev.counters()
    assert c["hold_expired"] == 1 and c["naks"]["BUSY"] == 1


def test_hold_queue_is_bounded(make_rig):
    rig = make_rig(max_held=1)
    rig.open()
    rig.packet(Opcode.WRITE, addr=0, payload=bytes(8))          # the gap
    rig.request(Opcode.FENCE)
    (_, nak), = rig.request(Opcode.FENCE)
    assert is_nak(nak, Status.BUSY)


# -- put-signal ordering -------------------------------------------------------------------
def test_signal_fires_only_after_every_fragment(rig):
    data = random.Random(5).randbytes(2000)
    frags = list(fragment(Packet(opcode=Opcode.PUT_SIGNAL, addr=0, addr2=4096, imm=7,
                                 req_id=55, src=rig.src, dst=1, rkey=rig.region.key,
                                 pkey=rig.region.pkey, flags=Flag.ACK_REQ), data, 512))
    order = frags + [frags[1]]
    random.Random(6).shuffle(order)
    seqs = {id(f): 2000 + i for i, f in enumerate(frags)}
    applied = set()
    for f in order:
        rig.send(f.copy(seq=seqs[id(f)]))
        applied.add(id(f))
        expect = 7 if len(applied) == len(frags) else 0
        assert word(rig, 4096) == expect
    assert bytes(rig.dev.memory[0:2000]) == data and rig.dev.counters()["signals"] == 1


# -- limits and timers ---------------------------------------------------------------------
def test_the_limits_table_carries_the_engines_defaults():
    import inspect
    from netdam import limits
    engine = inspect.signature(Device).parameters
    rows = [row for row in limits.LIMITS if row.part == "engine"]
    assert rows and all(engine[row.name].default == row.default for row in rows)


def test_peers_are_bounded_and_expire(make_rig):
    rig = make_rig(max_peers=2, peer_timeout=5.0)
    for src in (1, 2, 3):
        rig.request(Opcode.WRITE, addr=0, payload=bytes(8), src=100 + src)
    c = rig.dev.counters()
    assert c["peers"] == 2 and c["peers_evicted"] == 1
    assert rig.dev.next_timer() == pytest.approx(5.0)
    rig.dev.on_timer(5.0)
    c = rig.dev.counters()
    assert c["peers"] == 0 and c["peers_expired"] == 2 and rig.dev.next_timer() is None


def test_counters_are_plain_json(rig):
    import json
    rig.request(Opcode.WRITE, addr=0, payload=bytes(8))
    rig.request(Opcode.WRITE, addr=0, payload=bytes(8), rkey=1)
    c = json.loads(json.dumps(rig.dev.counters()))
    assert c["by_opcode"]["WRITE"]["packets"] == 2 and c["naks"] == {"BAD_KEY": 1}
    assert c["rx_packets"] == 2 and c["tx_packets"] == 2 and c["busy_ns"] > 0


def test_shared_buffer_backs_the_memory():
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(create=True, size=4096)
    try:
        dev = Device(3, 4096, memory=shm.buf)
        key = dev.register_region(0, 4096).key
        dev.handle(Packet(opcode=Opcode.WRITE, dst=3, rkey=key, addr=10, length=3, payload=b"shm"),
                   0.0)
        assert bytes(shm.buf[10:13]) == b"shm"
        del dev
    finally:
        shm.close()
        shm.unlink()


# -- fuzz ----------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_any_bytes_never_raise_nor_change_memory(blobs):
    rig = Rig(mem_size=4096)
    rig.dev.memory[:] = bytes(range(256)) * 16
    before = rig.snapshot()
    for blob in blobs:
        outs = rig.dev.receive(blob, 0.0)
        assert all(isinstance(o, Out) for o in outs)
    assert rig.snapshot() == before
    assert rig.dev.counters()["internal_errors"] == 0


@settings(max_examples=200, deadline=None)
@given(opcode=st.integers(0, 255), flags=st.integers(0, 0xFFFF),
       dtype=st.integers(0, 20), redop=st.integers(0, 20), addr=st.integers(0, 2**64 - 1),
       length=st.integers(0, 2**16), frag_off=st.integers(0, 2**16),
       rkey=st.integers(0, 2**32 - 1), payload=st.binary(max_size=64),
       route=st.lists(st.integers(0, 5), max_size=3), group=st.integers(0, 3),
       seq=st.integers(0, 2**32 - 1))
def test_well_formed_requests_with_a_wrong_key_change_nothing(opcode, flags, dtype, redop,
                                                              addr, length, frag_off, rkey,
                                                              payload, route, group, seq):
    rig = Rig(mem_size=4096)
    rig.dev.set_group(1, (1, 2))
    rig.dev.memory[:] = bytes(range(256)) * 16
    before = rig.snapshot()
    if rkey == rig.region.key:
        rkey ^= 1
    pkt = Packet(opcode=opcode, flags=flags, dtype=dtype, redop=redop, addr=addr,
                 length=length, frag_off=frag_off, rkey=rkey, payload=payload,
                 route=tuple(route), hop=0, group=group, seq=seq, src=9, dst=1)
    rig.dev.receive(encode(pkt), 0.0)
    rig.dev.on_timer(100.0)
    assert rig.snapshot() == before
    assert rig.dev.counters()["internal_errors"] == 0
