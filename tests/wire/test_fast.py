"""The C fast path against the Python codec. Invariant: for any bytes, ``Batch`` accepts
exactly what ``decode`` accepts and reads the same fields; a ``Burst`` puts on the wire
exactly the bytes ``encode`` makes of the same fragments."""

import random
import socket

import pytest
from crc32c import crc32c as reference_crc
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import INT_FIELDS, packets

from netdam.transport.udp import UdpEndpoint
from netdam.wire import Flag, Opcode, Packet, WireError, decode, encode, fast
from netdam.wire.frag import Reassembler, fragment

pytestmark = pytest.mark.skipif(not fast.AVAILABLE, reason="the C fast path is not built")


KERNELS = {0: "table", 1: "sse4.2", 2: "vpclmulqdq"}


@pytest.fixture(params=sorted(KERNELS), ids=KERNELS.values())
def crc_kernel(request):
    """Each CRC32C kernel in turn (skipped where this CPU lacks it), then the default."""
    got = fast.select_crc(request.param)
    try:
        if got != KERNELS[request.param]:
            pytest.skip(f"this CPU has no {KERNELS[request.param]} kernel (using {got})")
        assert fast.crc_kernel() == got
        yield got
    finally:
        fast.select_crc()


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 767, 768, 769, 1023, 1024, 1025, 1279, 1280,
                               1281, 1535, 1536, 6143, 6144, 6145, 8192, 24575, 24576,
                               24577, 49151, 49152, 49153, 65000, 65507, 200003])
def test_crc32c_equals_the_reference(n, crc_kernel):
    rng = random.Random(n)
    for skew in range(3):                        # unaligned starts too
        data = rng.randbytes(n + skew)[skew:]
        start = rng.getrandbits(32) if skew else 0
        assert fast.crc32c(data, start) == reference_crc(data, start)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=5000), start=st.integers(0, 2**32 - 1),
       split=st.integers(0, 5000))
def test_crc32c_kernels_agree_and_continue(data, start, split):
    """Every kernel gives the reference CRC, and a CRC continued over two parts equals
    the CRC of the whole."""
    split = min(split, len(data))
    want = reference_crc(data, start)
    try:
        for widest in KERNELS:
            fast.select_crc(widest)
            assert fast.crc32c(data, start) == want
            assert fast.crc32c(data[split:], fast.crc32c(data[:split], start)) == want
    finally:
        fast.select_crc()


def _fields(h) -> dict:
    return {f: getattr(h, f) for f in INT_FIELDS}


@settings(max_examples=200, deadline=None)
@given(pkts=st.lists(packets(), min_size=1, max_size=8), seed=st.integers(0, 2**16))
def test_batch_accepts_what_decode_accepts_and_reads_the_same_fields(pkts, seed):
    rng = random.Random(seed)
    grams = []
    for p in pkts:
        g = bytearray(encode(p))
        damage = rng.random()
        if damage < 0.2:
            g[rng.randrange(len(g))] ^= 1 << rng.randrange(8)       # a flipped bit
        elif damage < 0.3:
            g = g[:rng.randrange(len(g))]                            # truncated
        elif damage < 0.35:
            g = bytearray(rng.randbytes(rng.randrange(120)))         # not netdam at all
        grams.append(bytes(g))
    batch = fast.Batch(grams)
    for g, h in zip(grams, batch.hdrs):
        try:
            p = decode(g)
        except WireError:
            assert h.ok == 0
            continue
        assert h.ok == 1
        want = {f: getattr(p, f) for f in INT_FIELDS}
        assert _fields(h) == want
        assert (h.nhops, h.hop, h.payload_len) == (len(p.route), p.hop, len(p.payload))
        assert bytes(g[h.payload_at:h.payload_at + h.payload_len]) == bytes(p.payload)


def test_copy_payloads_writes_each_fragment_at_its_offset():
    data = random.Random(3).randbytes(5000)
    tmpl = Packet(opcode=Opcode.WRITE, addr=100, flags=Flag.ACK_REQ)
    grams = [encode(f) for f in fragment(tmpl, data, 1100)]
    memory = bytearray(6000)
    fast.Batch(grams).copy_payloads(memory, 0, len(grams))
    assert memory[100:5100] == data and not any(memory[:100]) and not any(memory[5100:])


def test_msg_run_takes_one_messages_fragments_and_copy_fragments_places_them():
    data = random.Random(4).randbytes(5000)
    mine = [encode(f) for f in fragment(Packet(opcode=Opcode.READ_RESP, src=2, req_id=7),
                                        data, 1100)]
    other = encode(Packet(opcode=Opcode.READ_RESP, src=2, req_id=8, length=3, payload=b"abc"))
    grams = [mine[1], mine[2], mine[0], mine[3], other, mine[4]]
    batch = fast.Batch(grams)
    run = batch.msg_run(0, int(Opcode.READ_RESP))
    assert run.count == 4 and not run.uniform          # mine[0] comes after mine[2]
    assert (run.lo, run.hi) == (0, len(data) - len(decode(mine[4]).payload))
    in_order = fast.Batch(mine).msg_run(0, int(Opcode.READ_RESP))
    assert in_order.uniform and (in_order.count, in_order.lo, in_order.hi) == (5, 0, 5000)
    assert batch.msg_run(4, int(Opcode.READ_RESP)).count == 1
    assert batch.msg_run(0, int(Opcode.WRITE)).count == 0
    out = bytearray(len(data))
    batch.copy_fragments(out, 0, 4)
    batch.copy_fragments(out, 5, 6)
    assert out == data
    damaged = bytearray(mine[3])
    damaged[-1] ^= 1
    assert fast.Batch(mine[:3] + [bytes(damaged)]).msg_run(0, int(Opcode.READ_RESP)).count == 3


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, 6000), seed=st.integers(0, 2**16), cuts=st.integers(1, 6))
def test_add_run_completes_where_add_does_with_the_same_bytes(size, seed, cuts):
    """Fragments in any order, with duplicates, handed over in runs of one message
    (``Batch.msg_run``) complete the message at the same fragment as one by one."""
    rng = random.Random(seed)
    data = rng.randbytes(size)
    frags = [encode(f) for f in fragment(Packet(opcode=Opcode.READ_RESP, src=2, req_id=7),
                                         data, 700)]
    order = frags + rng.choices(frags, k=rng.randrange(3))
    rng.shuffle(order)
    one = Reassembler()
    done_at = [k for k, g in enumerate(order) if one.add(decode(g), 0.0) is not None]
    runs = Reassembler()
    edges = sorted({0, len(order), *(rng.randrange(len(order) + 1) for _ in range(cuts))})
    got = []
    for lo, hi in zip(edges, edges[1:]):
        batch = fast.Batch(order[lo:hi])
        run = batch.msg_run(0, int(Opcode.READ_RESP))
        assert run.count == hi - lo
        whole = runs.add_run((2, 7), size, batch, 0, hi - lo, run, 0.0)
        if whole is not None:
            got.append((hi, bytes(whole)))
    first = next((hi for lo, hi in zip(edges, edges[1:]) if lo <= done_at[0] < hi), None)
    assert got and got[0] == (first, data)


@pytest.mark.parametrize("addr", [0, 4099])
def test_copy_payloads_of_a_bulk_message_streams_the_same_bytes(addr):
    """Messages of 4 MiB and more are copied with streaming stores (fastpath.c,
    STREAM_MIN): same bytes at any alignment, nothing written around them."""
    data = random.Random(addr).randbytes((4 << 20) + 777)
    tmpl = Packet(opcode=Opcode.WRITE, addr=addr, flags=Flag.ACK_REQ)
    grams = [encode(f) for f in fragment(tmpl, data, 9000)]
    memory = bytearray(b"\xa5" * (addr + len(data) + 4099))
    batch = fast.Batch(grams)
    assert batch.hdrs[0].length == len(data)
    batch.copy_payloads(memory, 0, len(grams))
    assert memory[addr:addr + len(data)] == data
    assert memory[:addr] == b"\xa5" * addr and memory[addr + len(data):] == b"\xa5" * 4099


def _fragments(n_bytes: int, mtu: int) -> list[Packet]:
    data = random.Random(n_bytes).randbytes(n_bytes)
    tmpl = Packet(opcode=Opcode.WRITE, src=3, dst=4, rkey=0xABCD, pkey=2, req_id=77,
                  addr=4096, flags=Flag.ACK_REQ)
    frags = list(fragment(tmpl, data, mtu))
    for i, f in enumerate(frags):
        f.seq = (0xFFFFFFFE + i) & 0xFFFFFFFF     # wraps
        f.flags |= Flag.RETRANSMIT if i == 1 else 0
    return frags


def _burst(frags):
    return fast.Burst(encode(frags[0])[:72], [f.seq for f in frags],
                      [f.frag_off for f in frags], [int(f.flags) for f in frags],
                      [f.payload for f in frags])


def test_burst_datagrams_are_what_encode_makes():
    frags = _fragments(10_000, 1500)
    burst = _burst(frags)
    assert [burst.datagram(i) for i in range(burst.n)] == [encode(f) for f in frags]
    assert [burst.size(i) for i in range(burst.n)] == [len(encode(f)) for f in frags]
    assert [burst.bytes_of(k) for k in range(burst.n + 1)] == [
        sum(len(encode(f)) for f in frags[:k]) for k in range(burst.n + 1)]


def test_a_burst_crosses_a_real_socket_in_order():
    frags = _fragments(60_000, 9000)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert _burst(frags).send(tx, rx.getsockname()) == len(frags)
        got = [rx.recv(65536) for _ in frags]
        assert got == [encode(f) for f in frags]
    finally:
        rx.close()
        tx.close()


def test_send_many_counts_what_it_sent():
    frags = _fragments(60_000, 9000)
    with UdpEndpoint(mtu=9000) as a, UdpEndpoint(mtu=9000) as b:
        a.send_many(frags, b.address)
        got = []
        while len(got) < len(frags):
            r = b.recv(5.0)
            assert r is not None, "a datagram of the burst never arrived"
            got.append(bytes(r[0]))
        assert got == [encode(f) for f in frags]
        assert a.counters["tx_datagrams"] == len(frags)
        assert a.counters["tx_bytes"] == sum(map(len, got))


def test_send_many_of_different_messages_sends_each_as_encoded():
    """A NAK and an ACK of one request id are not fragments of one message: each goes
    out exactly as encoded, never stamped from the other's header."""
    ack = Packet(opcode=Opcode.ACK, src=1, dst=9, req_id=5, seq=10, addr2=4,
                 flags=Flag.ACK_VALID, ack=11)
    nak = Packet(opcode=Opcode.NAK, src=1, dst=9, req_id=5, seq=11, status=5, imm=3,
                 flags=Flag.ACK_VALID, ack=11)
    with UdpEndpoint() as a, UdpEndpoint() as b:
        a.send_many([ack, nak], b.address)
        got = [bytes(b.recv(5.0)[0]) for _ in range(2)]
    assert got == [encode(ack), encode(nak)]
