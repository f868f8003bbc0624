"""Codec properties. Invariant: any byte string either decodes or raises WireError,
never anything else; decode(encode(p)) == p for every opcode."""

import struct
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdam.wire import (FIELD_MAX, HEADER_LEN, Flag, Opcode, Packet, Status, WireError,
                         decode, encode, encode_into, encode_parts, overhead)
from netdam.wire.fields import HEADER_FIELDS

INT_FIELDS = ("opcode", "flags", "status", "dtype", "redop", "src", "dst", "pkey", "group",
              "rkey", "seq", "ack", "req_id", "addr", "addr2", "imm", "length", "frag_off")


@st.composite
def packets(draw, opcode=None):
    values = {f: draw(st.integers(0, FIELD_MAX[f])) for f in INT_FIELDS}
    if opcode is not None:
        values["opcode"] = opcode
    route = tuple(draw(st.lists(st.integers(0, 0xFFFF), max_size=12)))
    values["hop"] = draw(st.integers(0, len(route))) if route else 0
    payload = draw(st.binary(max_size=300))
    return Packet(**values, route=route, payload=payload)


def _same(a: Packet, b: Packet) -> bool:
    return a.describe() == b.describe() and bytes(a.payload) == bytes(b.payload)


@pytest.mark.parametrize("opcode", [int(o) for o in Opcode] + [0xC0, 0xFE])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_roundtrip_every_opcode(opcode, data):
    p = data.draw(packets(opcode))
    assert _same(decode(encode(p)), p)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_wire_error(blob):
    try:
        decode(blob)
    except WireError as exc:
        assert isinstance(exc.status, Status)
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(packets(), st.data())
def test_truncated_or_flipped_raise_only_wire_error(p, data):
    raw = bytearray(encode(p))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(WireError):  # a single flipped bit is always caught (CRC32C)
        decode(bytes(raw))


@settings(max_examples=100, deadline=None)
@given(packets())
def test_encode_parts_and_encode_into_agree(p):
    whole = encode(p)
    head, payload, trailer = encode_parts(p)
    assert head + bytes(payload) + trailer == whole
    buf = bytearray(len(whole) + 10)
    assert encode_into(buf, p) == len(whole)
    assert bytes(buf[:len(whole)]) == whole
    assert len(whole) == overhead(len(p.route)) + len(p.payload)


def test_decode_does_not_copy_the_payload():
    raw = bytearray(encode(Packet(opcode=Opcode.WRITE, payload=b"abcd")))
    p = decode(raw)
    raw[HEADER_LEN] = ord("z")
    assert bytes(p.payload) == b"zbcd"


def test_error_names_field_and_problem():
    raw = bytearray(encode(Packet(opcode=Opcode.WRITE, payload=b"abcd")))
    struct.pack_into("!H", raw, 0, 0x1234)
    with pytest.raises(WireError, match=r"MALFORMED: magic: 0x1234"):
        decode(bytes(raw))


def test_out_of_range_field_is_a_wire_error_naming_it():
    with pytest.raises(WireError, match="src"):
        encode(Packet(src=1 << 16))


def test_check_crc_can_be_skipped_for_diagnostics():
    raw = bytearray(encode(Packet(opcode=Opcode.WRITE, flags=Flag.ACK_REQ, payload=b"x")))
    raw[-1] ^= 0xFF
    with pytest.raises(WireError):
        decode(bytes(raw))
    assert decode(bytes(raw), check_crc=False).payload.tobytes() == b"x"


def test_packet_fields_keep_the_headers_order():
    """The hot paths build packets positionally (a reply, an ACK, an agent's request):
    Packet's fields must stay in the header's order, then route, payload, version."""
    wire = [f for f in HEADER_FIELDS if f not in ("magic", "version", "nhops", "rsvd",
                                                     "payload_len")]
    assert [f.name for f in fields(Packet)] == wire + ["route", "payload", "version"]
