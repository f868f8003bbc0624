"""Golden vectors (SPEC §10), checked three ways: encode == bytes, decode == fields,
scapy raw() == bytes; and every spoiled vector fails decode with its documented status."""

import json

import pytest
from crc32c import crc32c
from scapy.all import raw

from netdam.wire import DType, Flag, NetDAM, Opcode, RedOp, Status, WireError, decode, encode
from netdam_proto import GOLDEN
from netdam_proto.golden import _packet

VECTORS = json.loads(GOLDEN.read_text())
ENUMS = {"opcode": Opcode, "status": Status, "dtype": DType, "redop": RedOp}


def _expected(fields: dict) -> dict:
    out = {}
    for key, value in fields.items():
        if key == "flags":
            value = sum(Flag[n] for n in value)
        elif key in ENUMS and isinstance(value, str):
            value = ENUMS[key][value]
        elif key == "route":
            value = tuple(value)
        out[key] = value
    return out


def test_crc32c_check_value():
    # The standard CRC-32C check value of RFC 3720 / the Castagnoli polynomial.
    assert crc32c(b"123456789") == 0xE3069283


def test_every_opcode_has_a_vector():
    opcodes = {_packet(v["fields"], v["payload"]).opcode for v in VECTORS["good"]}
    assert set(Opcode) <= opcodes
    assert any(op >= 0xC0 for op in opcodes)


@pytest.mark.parametrize("vec", VECTORS["good"], ids=lambda v: v["name"])
def test_encode_gives_the_bytes(vec):
    assert encode(_packet(vec["fields"], vec["payload"])).hex() == vec["hex"]


@pytest.mark.parametrize("vec", VECTORS["good"], ids=lambda v: v["name"])
def test_decode_gives_the_fields(vec):
    pkt = decode(bytes.fromhex(vec["hex"]))
    for key, value in _expected(vec["fields"]).items():
        assert getattr(pkt, key) == value, key
    assert bytes(pkt.payload).hex() == vec["payload"]


@pytest.mark.parametrize("vec", VECTORS["good"], ids=lambda v: v["name"])
def test_scapy_raw_gives_the_bytes(vec):
    data = bytes.fromhex(vec["hex"])
    layer = NetDAM(data)
    assert raw(layer) == data
    exp = _expected(vec["fields"])
    built = NetDAM(**{k: (list(v) if k == "route" else int(v)) for k, v in exp.items()},
                   data=bytes.fromhex(vec["payload"]))
    assert raw(built) == data
    assert layer.opcode == exp["opcode"] and layer.req_id == exp.get("req_id", 0)


@pytest.mark.parametrize("vec", VECTORS["bad"], ids=lambda v: v["name"])
def test_spoiled_vectors_raise_their_status(vec):
    with pytest.raises(WireError) as err:
        decode(bytes.fromhex(vec["hex"]))
    assert err.value.status == Status[vec["status"]]
    assert err.value.field == vec["field"]
    if vec["field"]:
        assert vec["field"] in str(err.value)
