"""Encode and decode netdam datagrams (SPEC §2, §3, §8).

Owns the byte layout at run time: the fixed header (struct built from proto/netdam.toml),
the route list, the payload and the CRC32C trailer. Decoding never copies the payload
(``Packet.payload`` is a memoryview into the datagram) and raises only ``WireError``,
whose ``status`` is the NAK code a device answers with and whose message names the
field and the problem. Encoding can return the datagram's parts for scatter-gather
sends so the payload is not copied there either.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields

from crc32c import crc32c

from netdam.wire.fields import (HEADER, HEADER_FIELDS, HEADER_LEN, MAGIC, ROUTE_ALIGN,
                                TRAILER_LEN, VERSION, Flag, Opcode, Status)

_TRAILER = struct.Struct("!I")
_U16 = struct.Struct("!H")

#: largest value of each header field, from its width
FIELD_MAX: dict[str, int] = {
    name: (1 << (8 * struct.calcsize("!" + letter))) - 1
    for name, letter in zip(HEADER_FIELDS, HEADER.format.lstrip("!"))
}


class WireError(ValueError):
    """Bytes that are not a valid netdam datagram (the peer's fault).

    ``status`` is the SPEC §7 code a device answers with (MALFORMED, BAD_VERSION,
    BAD_CRC); ``field`` names the header field at fault, or None.
    """

    def __init__(self, status: Status, field: str | None, problem: str):
        self.status = Status(status)
        self.field = field
        where = f"{field}: " if field else ""
        super().__init__(f"{self.status.name}: {where}{problem}")


@dataclass(slots=True)
class Packet:
    """One netdam datagram, decoded. Field names follow SPEC §2 (``route`` and
    ``payload`` follow the fixed header). Integers everywhere; the enums in
    ``netdam.wire.fields`` name them."""

    opcode: int = Opcode.READ
    flags: int = 0
    status: int = 0
    dtype: int = 0
    redop: int = 0
    hop: int = 0
    src: int = 0
    dst: int = 0
    pkey: int = 0
    group: int = 0
    rkey: int = 0
    seq: int = 0
    ack: int = 0
    req_id: int = 0
    addr: int = 0
    addr2: int = 0
    imm: int = 0
    length: int = 0
    frag_off: int = 0
    route: tuple[int, ...] = ()
    payload: bytes | bytearray | memoryview = b""
    version: int = VERSION

    def copy(self, **changes) -> "Packet":
        """A shallow copy with some fields changed (on the hot path: no dataclasses.replace)."""
        p = Packet(self.opcode, self.flags, self.status, self.dtype, self.redop, self.hop,
                   self.src, self.dst, self.pkey, self.group, self.rkey, self.seq, self.ack,
                   self.req_id, self.addr, self.addr2, self.imm, self.length, self.frag_off,
                   self.route, self.payload, self.version)
        for name, value in changes.items():
            setattr(p, name, value)
        return p

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    @property
    def payload_len(self) -> int:
        return len(self.payload)

    @property
    def nhops(self) -> int:
        return len(self.route)

    def describe(self) -> dict:
        """The header as a dict of field -> value (payload as its length), for logs."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "payload"}
        d["payload_len"] = len(self.payload)
        return d


def route_bytes(n: int) -> int:
    """Bytes occupied by a route list of n entries, padding included (SPEC §2.2)."""
    raw = 2 * n
    return raw + (-raw) % ROUTE_ALIGN


def overhead(nhops: int = 0) -> int:
    """Bytes of a datagram that are not payload."""
    return HEADER_LEN + route_bytes(nhops) + TRAILER_LEN


def _header(p: Packet, payload_len: int) -> bytes:
    try:
        return HEADER.pack(MAGIC, p.version, p.opcode, p.flags, p.status, p.dtype, p.redop,
                           p.hop, len(p.route), 0, p.src, p.dst, p.pkey, p.group, p.rkey,
                           p.seq, p.ack, p.req_id, payload_len, p.addr, p.addr2, p.imm,
                           p.length, p.frag_off)
    except Exception as exc:  # struct.error: a field out of range
        bad = [n for n in HEADER_FIELDS if n in Packet.__slots__
               and not 0 <= int(getattr(p, n)) <= FIELD_MAX[n]]
        raise WireError(Status.MALFORMED, bad[0] if bad else None,
                        f"cannot encode: {exc}") from None


def _route(route: tuple[int, ...]) -> bytes:
    if not route:
        return b""
    if len(route) > FIELD_MAX["nhops"]:
        raise WireError(Status.MALFORMED, "nhops", f"{len(route)} route entries, max 255")
    out = bytearray(route_bytes(len(route)))
    for i, hop in enumerate(route):
        _U16.pack_into(out, 2 * i, hop)
    return bytes(out)


def encode_parts(p: Packet) -> tuple[bytes, memoryview | bytes, bytes]:
    """(header+route, payload, trailer): the datagram as three buffers, for sendmsg.

    The payload is returned as given, not copied; the CRC covers header, route, payload.
    """
    payload = p.payload
    n = len(payload)
    head = _header(p, n) + _route(p.route) if p.route else _header(p, n)
    crc = crc32c(payload, crc32c(head)) if n else crc32c(head)
    return head, payload, _TRAILER.pack(crc)


def encode_head(p: Packet) -> bytes:
    """Header and route of ``p`` with ``payload_len`` 0: the part of a datagram that a
    burst of fragments shares (``fast.Burst`` stamps each one's own fields and CRC)."""
    return _header(p, 0) + _route(p.route)


def encode(p: Packet) -> bytes:
    """The datagram as one bytes object (copies the payload once)."""
    head, payload, trailer = encode_parts(p)
    return b"".join((head, payload, trailer))


def encode_into(buf: bytearray | memoryview, p: Packet) -> int:
    """Write the datagram into ``buf`` (preallocated, reused); returns its length."""
    head, payload, trailer = encode_parts(p)
    n, m = len(head), len(payload)
    end = n + m + TRAILER_LEN
    if end > len(buf):
        raise WireError(Status.MALFORMED, "payload_len",
                        f"datagram of {end} bytes does not fit a {len(buf)}-byte buffer")
    mv = memoryview(buf)
    mv[:n] = head
    mv[n:n + m] = payload
    mv[n + m:end] = trailer
    return end


def decode(data: bytes | bytearray | memoryview, *, check_crc: bool = True) -> Packet:
    """Parse one datagram. The payload is a view into ``data`` (not copied).

    Raises WireError (and nothing else) for anything that is not a well-formed netdam
    datagram, in this order: too short or bad magic (not netdam at all), CRC mismatch
    (SPEC §3: nothing in a damaged datagram is believed), bad version, lengths that do
    not add up (SPEC §2.3). Opcode, dtype and the rest are not judged here: that is
    the device's business (SPEC §7).
    """
    mv = memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    total = len(mv)
    if total < HEADER_LEN + TRAILER_LEN:
        raise WireError(Status.MALFORMED, None,
                        f"datagram of {total} bytes is shorter than header + trailer "
                        f"({HEADER_LEN + TRAILER_LEN})")
    (magic, version, opcode, flags, status, dtype, redop, hop, nhops, _rsvd, src, dst,
     pkey, group, rkey, seq, ack, req_id, payload_len, addr, addr2, imm, length,
     frag_off) = HEADER.unpack_from(mv)
    if magic != MAGIC:
        raise WireError(Status.MALFORMED, "magic", f"0x{magic:04X}, expected 0x{MAGIC:04X}")
    body_end = total - TRAILER_LEN
    if check_crc:  # before any other field: a damaged header must not be believed (§3)
        (crc,) = _TRAILER.unpack_from(mv, body_end)
        actual = crc32c(mv[:body_end])
        if crc != actual:
            raise WireError(Status.BAD_CRC, "crc",
                            f"trailer 0x{crc:08X}, computed 0x{actual:08X}")
    if version != VERSION:
        raise WireError(Status.BAD_VERSION, "version", f"{version}, this side speaks {VERSION}")
    rlen = route_bytes(nhops) if nhops else 0
    expected = HEADER_LEN + rlen + payload_len + TRAILER_LEN
    if expected != total:
        raise WireError(Status.MALFORMED, "payload_len",
                        f"header says {payload_len} payload bytes and {nhops} route entries "
                        f"({expected} bytes in all), datagram has {total}")
    if nhops and hop > nhops:
        raise WireError(Status.MALFORMED, "hop", f"hop {hop} beyond {nhops} route entries")
    route = tuple(_U16.unpack_from(mv, HEADER_LEN + 2 * i)[0]
                  for i in range(nhops)) if nhops else ()
    start = HEADER_LEN + rlen
    return Packet(opcode, flags, status, dtype, redop, hop, src, dst, pkey, group, rkey,
                  seq, ack, req_id, addr, addr2, imm, length, frag_off, route,
                  mv[start:body_end], version)


def peek_header(data: bytes | memoryview) -> dict:
    """The fixed header's fields without any validation (for diagnostics of bad input)."""
    if len(data) < HEADER_LEN:
        raise WireError(Status.MALFORMED, None, f"{len(data)} bytes, header needs {HEADER_LEN}")
    return dict(zip(HEADER_FIELDS, HEADER.unpack_from(data)))


__all__ = ["Packet", "WireError", "Flag", "encode", "encode_head", "encode_parts",
           "encode_into", "decode", "peek_header", "overhead", "route_bytes", "FIELD_MAX"]
