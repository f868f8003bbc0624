"""The golden vectors of SPEC §10: one datagram per opcode and per error case.

Owns the list of cases. ``python -m netdam_proto.golden`` writes proto/golden.json once;
after that the JSON file is the reference (hex + fields) and tests/proto/test_golden.py
checks the codec and the scapy layer against it, so any change to the bytes on the wire
shows up as a failing vector rather than passing silently.
"""

from __future__ import annotations

import json
import sys

from netdam_proto import GOLDEN

#: (name, header fields, payload hex) of well-formed datagrams, one per opcode
GOOD = [
    ("read", dict(opcode="READ", flags=["ACK_REQ"], src=1, dst=2, pkey=7, rkey=0x11223344,
                  seq=100, req_id=1, addr=0x1000, length=64), ""),
    ("read_resp", dict(opcode="READ_RESP", flags=["ACK_VALID"], src=2, dst=1, pkey=7, seq=100,
                       ack=101, req_id=1, addr=0x1000, length=8), "0001020304050607"),
    ("write", dict(opcode="WRITE", flags=["ACK_REQ"], src=1, dst=2, pkey=7, rkey=0x11223344,
                   seq=101, req_id=2, addr=0x2000, length=16),
     "00112233445566778899aabbccddeeff"),
    ("write_fragment", dict(opcode="WRITE", flags=["ACK_REQ", "MORE_FRAGS"], src=1, dst=2,
                            rkey=0x11223344, seq=102, req_id=3, addr=0x2000, length=4096,
                            frag_off=1024), "deadbeefdeadbeef"),
    ("ack", dict(opcode="ACK", flags=["ACK_VALID"], src=2, dst=1, seq=101, ack=102, req_id=2),
     ""),
    ("nak", dict(opcode="NAK", flags=["ACK_VALID"], status="OUT_OF_BOUNDS", src=2, dst=1,
                 seq=103, ack=104, req_id=4, addr=0xFFFF0000, length=64, imm=0x03), ""),
    ("atomic_fadd", dict(opcode="ATOMIC_FADD", flags=["ACK_REQ"], dtype="UINT64", src=1,
                         dst=2, rkey=0x11223344, seq=104, req_id=5, addr=0x40, length=8),
     "0100000000000000"),
    ("atomic_cas", dict(opcode="ATOMIC_CAS", flags=["ACK_REQ"], dtype="UINT64", src=1, dst=2,
                        rkey=0x11223344, seq=105, req_id=6, addr=0x48, length=16),
     "00000000000000002a00000000000000"),
    ("atomic_resp", dict(opcode="ATOMIC_RESP", flags=["ACK_VALID"], dtype="UINT64", src=2,
                         dst=1, seq=105, ack=106, req_id=6, addr=0x48, length=8),
     "0000000000000000"),
    ("reduce", dict(opcode="REDUCE", flags=["ACK_REQ"], dtype="FLOAT32", redop="SUM", src=1,
                    dst=2, rkey=0x11223344, seq=106, req_id=7, addr=0x3000, length=8),
     "0000803f00000040"),
    ("reduce_fwd", dict(opcode="REDUCE_FWD", flags=["ACK_REQ", "LAST_HOP_SIGNAL",
                                                    "RESULT_MCAST"],
                        dtype="BFLOAT16", redop="MAX", hop=1, route=[10, 11, 12], src=10,
                        dst=11, group=3, rkey=0x55667788, seq=7, req_id=8, addr=0x4000,
                        addr2=0x8, imm=1, length=4), "803f0040"),
    ("multicast", dict(opcode="MULTICAST", flags=["ACK_REQ"], src=1, dst=2, group=3,
                       rkey=0x11223344, seq=107, req_id=9, addr=0x5000, length=4), "cafef00d"),
    ("multicast_copy", dict(opcode="MULTICAST", flags=["MCAST_COPY"], src=2, dst=3, group=3,
                            rkey=0x11223344, req_id=9, addr=0x5000, length=4), "cafef00d"),
    ("put_signal", dict(opcode="PUT_SIGNAL", flags=["ACK_REQ", "RELEASE"], src=1, dst=2,
                        rkey=0x11223344, seq=108, req_id=10, addr=0x6000, addr2=0x10, imm=1,
                        length=4), "01020304"),
    ("fence", dict(opcode="FENCE", flags=["ACK_REQ", "FENCE"], src=1, dst=2, seq=109,
                   req_id=11), ""),
    ("memcpy", dict(opcode="MEMCPY", flags=["ACK_REQ"], src=1, dst=2, rkey=0x11223344,
                    seq=110, req_id=12, addr=0x1000, addr2=0x7000, length=256), ""),
    ("quant_fp8", dict(opcode="QUANT_FP8", flags=["ACK_REQ"], dtype="FLOAT32",
                       redop=13, src=1, dst=2, rkey=0x11223344, seq=111, req_id=13,
                       addr=0x8000, addr2=0x9000, imm=0x9800, length=512), ""),
    ("dequant_fp8", dict(opcode="DEQUANT_FP8", flags=["ACK_REQ"], dtype="BFLOAT16",
                         redop=14, src=1, dst=2, rkey=0x11223344, seq=112, req_id=14,
                         addr=0x9000, addr2=0xA000, imm=0x9800, length=128), ""),
    ("user_defined", dict(opcode=0xC0, flags=["ACK_REQ"], src=1, dst=2, rkey=0x11223344,
                          seq=113, req_id=15, addr=0x1000, length=4), "00ff00ff"),
    ("seq_wrap", dict(opcode="WRITE", src=1, dst=2, rkey=0x11223344, seq=0xFFFFFFFF,
                      req_id=0xFFFFFFFF, addr=0xFFFFFFFFFFFFFFF8, length=0), ""),
]

#: (name, how to spoil a good datagram, expected status, expected field)
BAD = [
    ("truncated_header", ("truncate", 40), "MALFORMED", None),
    ("bad_magic", ("poke", 0, "ffff"), "MALFORMED", "magic"),
    ("truncated_payload", ("truncate", -6), "BAD_CRC", "crc"),
    ("trailing_garbage", ("append", "00"), "BAD_CRC", "crc"),
    ("bad_crc", ("poke", 80, "ff"), "BAD_CRC", "crc"),
    ("damaged_version", ("poke", 2, "09"), "BAD_CRC", "crc"),
    ("bad_version", ("poke_recrc", 2, "09"), "BAD_VERSION", "version"),
    ("payload_len_too_long", ("poke_recrc", 36, "00000040"), "MALFORMED", "payload_len"),
    ("hop_beyond_route", ("poke_recrc", 9, "09"), "MALFORMED", "hop"),
    ("route_longer_than_datagram", ("poke_recrc", 10, "40"), "MALFORMED", "payload_len"),
]


def _packet(fields: dict, payload_hex: str):
    from netdam.wire import DType, Flag, Opcode, Packet, RedOp, Status

    f = dict(fields)
    enums = {"opcode": Opcode, "status": Status, "dtype": DType, "redop": RedOp}
    for key, enum in enums.items():
        if isinstance(f.get(key), str):
            f[key] = enum[f[key]]
    flags = 0
    for name in f.pop("flags", []):
        flags |= Flag[name]
    f["flags"] = flags
    f["route"] = tuple(f.get("route", ()))
    return Packet(**f, payload=bytes.fromhex(payload_hex))


def spoil(data: bytes, how: tuple) -> bytes:
    kind = how[0]
    if kind == "truncate":
        return data[:how[1]]
    if kind == "append":
        return data + bytes.fromhex(how[1])
    off, patch = how[1], bytes.fromhex(how[2])
    out = data[:off] + patch + data[off + len(patch):]
    if kind == "poke_recrc":  # keep the CRC right so the check behind it is reached
        from crc32c import crc32c
        out = out[:-4] + crc32c(out[:-4]).to_bytes(4, "big")
    return out


def build() -> dict:
    from netdam.wire import encode

    good = []
    for name, fields, payload in GOOD:
        good.append({"name": name, "fields": fields, "payload": payload,
                     "hex": encode(_packet(fields, payload)).hex()})
    base = bytes.fromhex(good[[g["name"] for g in good].index("reduce_fwd")]["hex"])
    bad = [{"name": name, "spoil": list(how), "status": status, "field": field,
            "hex": spoil(base, how).hex()} for name, how, status, field in BAD]
    return {"spec": "netdam wire format version 1 (proto/SPEC.md §10)", "good": good,
            "bad": bad}


def main() -> int:
    GOLDEN.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
