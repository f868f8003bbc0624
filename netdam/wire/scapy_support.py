"""Behaviour of the scapy layer that is not a table (SPEC §3, §7).

The generated ``scapy_layer.NetDAM`` borrows these functions: the CRC32C trailer
computed at build time, the one-line summary, request/response matching for
``sr()`` / ``answers()``, and trailing-byte handling.
"""

from __future__ import annotations

import struct

from crc32c import crc32c

from netdam.wire.fields import CAPS, RESPONSE, Cap, Opcode, Status


def post_build(self, pkt: bytes, pay: bytes) -> bytes:
    """Fill the CRC32C trailer (SPEC §3) when the user left ``crc`` unset."""
    if self.crc is None:
        pkt = pkt[:-4] + struct.pack("!I", crc32c(pkt[:-4]))
    return pkt + pay


def _name(enum, value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return f"0x{value:02X}"


def mysummary(self) -> str:
    op = _name(Opcode, self.opcode)
    text = (f"NetDAM {op} {self.src}->{self.dst} seq={self.seq} req={self.req_id} "
            f"addr=0x{self.addr:x} len={self.length}")
    if self.opcode == Opcode.NAK:
        text += f" status={_name(Status, self.status)}"
    return text


def answers(self, other) -> bool:
    """True when this packet is the ACK, NAK or response of request ``other``."""
    if not hasattr(other, "req_id") or self.req_id != other.req_id:
        return False
    if self.src != other.dst and other.dst != 0xFFFF:
        return False
    try:
        req = Opcode(other.opcode)
    except ValueError:
        return self.opcode == Opcode.NAK
    if CAPS[req] & Cap.RESPONSE:
        return False
    return self.opcode in (Opcode.ACK, Opcode.NAK) or RESPONSE.get(req) == self.opcode


def hashret(self) -> bytes:
    return struct.pack("!I", self.req_id)


def extract_padding(self, s: bytes):
    return b"", s
