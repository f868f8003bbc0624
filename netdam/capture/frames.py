"""Capture records decoded as netdam packets: the model every capture tool reads.

Owns the step from a link-layer record (``pcap.read_frames``) to a ``Frame``: the UDP
endpoints (Ethernet with VLAN tags, Linux cooked SLL/SLL2, BSD loopback and raw IP are
unpacked with ``struct``; any other link type is dissected by scapy), and the netdam
datagram decoded with the codec. A datagram that fails to decode (bad CRC, lengths that
do not add up) is kept with its error and, when its header is readable, its header
fields: captures are where broken packets must stay visible.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Iterator

from netdam.capture.pcap import read_frames
from netdam.wire.codec import Packet, WireError, decode, peek_header
from netdam.wire.fields import HEADER_LEN, MAGIC, UDP_PORT, Opcode, Status

Endpoint = tuple[str, int]

_ETHERTYPE_IP4, _ETHERTYPE_IP6 = 0x0800, 0x86DD
_VLAN = (0x8100, 0x88A8, 0x9100)
_MAGIC_BYTES = struct.pack("!H", MAGIC)


@dataclass
class Frame:
    """One netdam datagram found in a capture."""

    number: int                       #: record number in the file (1-based)
    time: float                       #: wall-clock seconds
    src: Endpoint
    dst: Endpoint
    datagram: bytes
    fields: dict = field(default_factory=dict)   #: header fields (empty if unreadable)
    packet: Packet | None = None      #: decoded (also for a bad CRC: decoded without it)
    error: str | None = None          #: why the codec refused it, None when valid
    note: str | None = None           #: capture note (fault injection) of the record

    @property
    def size(self) -> int:
        return len(self.datagram)

    def get(self, name: str) -> int | None:
        return self.fields.get(name)

    @property
    def opcode_name(self) -> str:
        return enum_name(Opcode, self.fields.get("opcode"))

    @property
    def status_name(self) -> str:
        return enum_name(Status, self.fields.get("status"))

    @property
    def crc_ok(self) -> bool:
        return not (self.error or "").startswith("BAD_CRC")


def enum_name(enum, value: int | None) -> str:
    if value is None:
        return "?"
    try:
        return enum(value).name
    except ValueError:
        return f"0x{value:02X}"


def endpoint_text(ep: Endpoint) -> str:
    ip, port = ep
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _ip(payload: bytes, ethertype: int):
    """(src ip, dst ip, udp datagram) of an IP packet carrying UDP, or None."""
    if ethertype == _ETHERTYPE_IP4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        if payload[9] != 17 or len(payload) < ihl + 8:
            return None
        frag = struct.unpack_from("!H", payload, 6)[0]
        if frag & 0x1FFF:                 # a later IP fragment: no UDP header here
            return None
        total = struct.unpack_from("!H", payload, 2)[0]
        return (socket.inet_ntop(socket.AF_INET, payload[12:16]),
                socket.inet_ntop(socket.AF_INET, payload[16:20]),
                payload[ihl:total if total >= ihl + 8 else len(payload)])
    if ethertype == _ETHERTYPE_IP6 and len(payload) >= 48:
        if payload[6] != 17:              # extension headers are not followed
            return None
        plen = struct.unpack_from("!H", payload, 4)[0]
        return (socket.inet_ntop(socket.AF_INET6, payload[8:24]),
                socket.inet_ntop(socket.AF_INET6, payload[24:40]), payload[40:40 + plen])
    return None


def _network(linktype: int, data: bytes):
    """(ethertype, network-layer bytes) of a link-layer frame, or None for a link type
    that is not unpacked here."""
    if linktype == 1:                                   # Ethernet
        if len(data) < 14:
            return 0, b""
        et, off = struct.unpack_from("!H", data, 12)[0], 14
        while et in _VLAN and len(data) >= off + 4:
            et, off = struct.unpack_from("!H", data, off + 2)[0], off + 4
        return et, data[off:]
    if linktype == 113 and len(data) >= 16:             # Linux cooked (SLL)
        return struct.unpack_from("!H", data, 14)[0], data[16:]
    if linktype == 276 and len(data) >= 20:             # Linux cooked v2 (SLL2)
        return struct.unpack_from("!H", data, 0)[0], data[20:]
    if linktype in (0, 108) and len(data) >= 4:         # BSD loopback (host / network order)
        family = struct.unpack_from("<I" if linktype == 0 else "!I", data, 0)[0]
        if family == 2:
            return _ETHERTYPE_IP4, data[4:]
        return (_ETHERTYPE_IP6 if family in (10, 24, 28, 30) else 0), data[4:]
    if linktype in (12, 101, 228, 229) and data:        # raw IP
        return (_ETHERTYPE_IP4 if data[0] >> 4 == 4 else _ETHERTYPE_IP6), data
    return None


def _scapy_udp(linktype: int, data: bytes):
    """Fallback for other link types: let scapy find the IP/UDP layers."""
    from scapy.config import conf
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    cls = conf.l2types.num2layer.get(linktype)
    if cls is None:
        return None
    pkt = cls(data)
    udp = pkt.getlayer(UDP)
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if udp is None or ip is None:
        return None
    return ip.src, ip.dst, bytes(udp)


def udp_of(linktype: int, data: bytes):
    """(src endpoint, dst endpoint, UDP payload) of a captured frame, or None."""
    net = _network(linktype, data)
    if net is None:
        got = _scapy_udp(linktype, data)
    else:
        got = _ip(net[1], net[0])
    if got is None:
        return None
    sip, dip, udp = got
    if len(udp) < 8:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", udp, 0)
    payload = udp[8:ulen] if 8 <= ulen <= len(udp) else udp[8:]
    return (sip, sport), (dip, dport), bytes(payload)


def looks_like_netdam(payload: bytes, sport: int, dport: int) -> bool:
    return payload[:2] == _MAGIC_BYTES or UDP_PORT in (sport, dport)


def decode_frame(number: int, ts: float, src: Endpoint, dst: Endpoint, datagram: bytes,
                 note: str | None = None) -> Frame:
    """A Frame of one datagram: decoded, or kept with its error."""
    frame = Frame(number, ts, src, dst, datagram, note=note)
    try:
        frame.packet = decode(datagram)
    except WireError as exc:
        frame.error = str(exc)
        if exc.status == Status.BAD_CRC:
            frame.packet = decode(datagram, check_crc=False)
        elif len(datagram) >= HEADER_LEN:
            frame.fields = peek_header(datagram)
            frame.fields.pop("magic", None)
    if frame.packet is not None:
        frame.fields = frame.packet.describe()
        frame.fields["payload_len"] = len(frame.packet.payload)
    return frame


def netdam_frames(path: str | os.PathLike, stats: dict | None = None) -> Iterator[Frame]:
    """Every netdam datagram of the capture ``path`` (other traffic is skipped and
    counted in ``stats['skipped']`` when a dict is given)."""
    for rec in read_frames(path):
        got = udp_of(rec.linktype, rec.data)
        if got is None or not looks_like_netdam(got[2], got[0][1], got[1][1]):
            if stats is not None:
                stats["skipped"] = stats.get("skipped", 0) + 1
            continue
        yield decode_frame(rec.number, rec.time, got[0], got[1], got[2], rec.note)


__all__ = ["Frame", "Endpoint", "decode_frame", "endpoint_text", "enum_name",
           "netdam_frames", "udp_of"]
