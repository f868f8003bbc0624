"""Fragmentation round-trips for every size from 0 to a few MTUs, in any order, with
duplicates, and the reassembler stays within its bounds."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdam.wire import Flag, Opcode, Packet, Status, WireError, decode, encode
from netdam.wire.fields import MAX_DATAGRAM, PAYLOAD_ALIGN
from netdam.wire.frag import Reassembler, fragment, fragment_count, fragments, max_payload

MTU = 512  # small, so a few MTUs stay cheap


def _roundtrip(size: int, mtu: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    frags = [decode(encode(f)) for f in fragment(Packet(opcode=Opcode.WRITE, req_id=9, src=4),
                                                 data, mtu)]
    assert len(frags) == fragment_count(size, mtu)
    for f in frags[:-1]:
        assert f.has(Flag.MORE_FRAGS) and len(f.payload) % PAYLOAD_ALIGN == 0
        assert len(encode(f)) <= mtu
    assert not frags[-1].has(Flag.MORE_FRAGS)
    rng = random.Random(seed)
    order = frags + rng.sample(frags, k=min(3, len(frags)))
    rng.shuffle(order)
    r = Reassembler()
    done = [out for f in order if (out := r.add(f, 0.0)) is not None]
    assert bytes(done[0]) == data


def test_every_size_up_to_a_few_mtus():
    for size in range(0, 4 * MTU + 17):
        _roundtrip(size, MTU, size)


@pytest.mark.parametrize("mtu", [256, 1500, 9000, 65000, MAX_DATAGRAM])
def test_standard_mtus(mtu):
    for size in (0, 1, max_payload(mtu), max_payload(mtu) + 1, 3 * max_payload(mtu) - 5):
        _roundtrip(size, mtu, size)


def test_fragments_are_views_not_copies():
    data = bytearray(3000)
    frags = list(fragment(Packet(opcode=Opcode.WRITE), data, 1500))
    data[0] = 7
    assert bytes(frags[0].payload[:1]) == b"\x07"


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 5000), st.sampled_from([256, 700, 1500]))
def test_property_roundtrip(size, mtu):
    _roundtrip(size, mtu, size)


def test_mtu_out_of_range():
    with pytest.raises(ValueError, match="mtu"):
        max_payload(100)


def test_reassembler_bounds_and_expiry():
    r = Reassembler(max_messages=2, max_bytes=10_000, timeout=1.0)
    first = Packet(opcode=Opcode.READ_RESP, length=4000, frag_off=0, payload=b"a" * 8,
                   flags=Flag.MORE_FRAGS)
    assert r.add(first.copy(req_id=1), 0.0) is None
    assert r.add(first.copy(req_id=2), 0.0) is None
    with pytest.raises(WireError) as err:
        r.add(first.copy(req_id=3), 0.0)
    assert err.value.status == Status.BUSY
    assert r.pending == 2 and r.pending_bytes == 8000
    assert sorted(r.expire(5.0)) == [(0, 1), (0, 2)]
    assert r.pending == 0 and r.pending_bytes == 0 and r.expired == 2
    with pytest.raises(WireError) as err:
        r.add(first.copy(req_id=4, length=20_000), 6.0)
    assert err.value.status == Status.BUSY


def test_reassembler_rejects_inconsistent_fragments():
    r = Reassembler()
    p = Packet(opcode=Opcode.READ_RESP, req_id=1, length=100, payload=b"x" * 8,
               flags=Flag.MORE_FRAGS)
    r.add(p, 0.0)
    with pytest.raises(WireError, match="length"):
        r.add(p.copy(length=200, frag_off=8), 0.0)
    with pytest.raises(WireError, match="frag_off"):
        r.add(p.copy(frag_off=96), 0.0)
    assert r.pending == 1


def test_reassembler_writes_into_the_callers_buffer_in_any_order():
    data = random.Random(9).randbytes(10_000)
    frags = list(fragment(Packet(opcode=Opcode.READ_RESP, req_id=4), data, 1500))
    random.Random(2).shuffle(frags)
    out = bytearray(len(data))
    r = Reassembler(max_bytes=100)               # the caller's buffer costs no budget
    results = [r.add(f, 0.0, into=memoryview(out)) for f in frags[:2] + frags]  # dups too
    done = [x for x in results if x is not None]
    assert len(done) == 1 and bytes(done[0]) == data and out == data
    assert r.pending == 0 and r.pending_bytes == 0
    with pytest.raises(WireError):
        r.add(frags[0], 0.0, key="other", into=memoryview(bytearray(5)))


@pytest.mark.parametrize("size", [0, 1, 1000, 4 * MTU + 3])
def test_fragments_encode_as_fragment_does(size):
    """A Fragment is the datagram ``fragment`` cuts: same bytes once its seq is set,
    one shared head, and a copy that changes only its own fields."""
    data = random.Random(size).randbytes(size)
    tpl = Packet(opcode=Opcode.WRITE, req_id=9, src=4, dst=2, rkey=7, addr=64, seq=5,
                 flags=Flag.ACK_REQ)
    want = list(fragment(tpl, data, MTU))
    got = list(fragments(tpl, data, MTU))
    assert len(got) == len(want) and len({id(f.head) for f in got}) == 1
    assert [encode(f) for f in got] == [encode(p) for p in want]      # seq 5 each
    for seq, (f, p) in enumerate(zip(got, want)):
        f.seq = p.seq = seq
        assert encode(f) == encode(p) == encode(f.packet())
        assert f == p and f.req_id == 9 and f.payload_len == len(p.payload)
    again = got[0].copy(flags=int(Flag.RETRANSMIT))
    assert again.head is got[0].head and again.flags == Flag.RETRANSMIT
    assert got[0].flags != Flag.RETRANSMIT
    with pytest.raises(AttributeError):
        got[0].copy(src=5)                 # the head's fields are the message's


def test_in_order_fragments_and_late_duplicates_count_each_byte_once():
    """Fragments in order take the reassembler's short path; duplicates of any of them
    afterwards still add nothing, and a gap is filled wherever it is."""
    data = random.Random(3).randbytes(10 * 400)
    frags = list(fragment(Packet(opcode=Opcode.WRITE, req_id=4, src=2), data, MTU))
    r = Reassembler()
    order = frags[:3] + frags[4:] + [frags[2], frags[0], frags[3]]
    done = [out for f in order if (out := r.add(f, 0.0)) is not None]
    assert [bytes(d) for d in done] == [data] and r.pending == 0
