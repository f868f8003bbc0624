"""Synthetic netdam traffic covering the whole wire format, for tests, demos and benches.

Owns one fixed, deterministic conversation between a host (member 1) and devices 3, 4
and 5: every opcode and its answer, fragments with MORE_FRAGS, a REDUCE_FWD chain with a
route list, a MULTICAST with device-replicated copies (one to an IP multicast group),
NAKs with several statuses, a datagram dropped by fault injection and its RETRANSMIT-
flagged retransmission, an injected duplicate and a datagram with a corrupted byte (bad
CRC). ``write_sample`` records it with ``Capture`` so every reader of captures (scapy,
tshark with proto/netdam.lua, ``netdam dissect``) can be checked against the same file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from netdam.capture.pcap import Capture
from netdam.wire.codec import Packet, encode
from netdam.wire.fields import CREDIT_UNIT, UDP_PORT, DType, Flag, Opcode, RedOp, Status

HOST = ("127.0.0.1", 40001)
#: member id -> UDP endpoint; device 3 on the default port, the others on "automatic" ports
DEVICES = {3: ("127.0.0.1", UDP_PORT), 4: ("127.0.0.1", 41004), 5: ("127.0.0.2", 41005)}
MCAST_GROUP_IP = ("239.1.2.3", 41005)
T0 = 1_700_000_000.0
SAMPLE_CREDIT = 6 << 20    #: the credit device 4's ACKs carry (SPEC §8.2)


@dataclass(frozen=True)
class SampleFrame:
    """One datagram of the sample: what was sent and what the capture should say."""

    ts: float
    src: tuple[str, int]
    dst: tuple[str, int]
    datagram: bytes
    packet: Packet                 #: the packet as built (before any corruption)
    note: str | None = None
    dropped: bool = False
    corrupted: bool = False


def _endpoint(member: int) -> tuple[str, int]:
    return HOST if member == 1 else DEVICES[member]


def sample_traffic() -> list[SampleFrame]:
    """The sample conversation, in time order (100 us apart)."""
    out: list[SampleFrame] = []
    seq = {1: 0, 3: 0, 4: 0, 5: 0}

    def send(p: Packet, *, note=None, dropped=False, corrupt=False, dst_ep=None,
             auto_seq=True) -> Packet:
        if auto_seq and not Opcode(p.opcode).name.endswith(("ACK", "NAK", "_RESP")):
            seq[p.src] += 1
            p = p.copy(seq=seq[p.src])
        data = encode(p)
        if corrupt:
            flipped = bytearray(data)
            flipped[-5] ^= 0xFF          # the last payload byte
            data = bytes(flipped)
        out.append(SampleFrame(T0 + len(out) * 1e-4, _endpoint(p.src),
                               dst_ep or _endpoint(p.dst), data, p, note, dropped, corrupt))
        return p

    def ack(req: Packet, opcode=Opcode.ACK, **kw) -> Packet:
        return send(Packet(opcode=opcode, flags=Flag.ACK_VALID, src=req.dst, dst=req.src,
                           seq=req.seq, ack=req.seq + 1, req_id=req.req_id, addr=req.addr,
                           length=req.length, **kw), auto_seq=False)

    req = Flag.ACK_REQ
    r = send(Packet(opcode=Opcode.READ, flags=req, src=1, dst=3, req_id=100, addr=0x1000,
                    length=16))
    ack(r, Opcode.READ_RESP, payload=bytes(range(16)))
    r = send(Packet(opcode=Opcode.WRITE, flags=req, src=1, dst=3, req_id=101, addr=0x2000,
                    length=32, payload=b"\xab" * 32))
    ack(r)
    for off in (0, 32):   # one message in two fragments
        more = Flag.MORE_FRAGS if off == 0 else 0
        r = send(Packet(opcode=Opcode.WRITE, flags=req | more, src=1, dst=4, req_id=102,
                        addr=0x3000, length=64, frag_off=off, payload=bytes([off]) * 32))
        ack(r, group=SAMPLE_CREDIT // CREDIT_UNIT)   # over UDP an ACK carries a credit
    r = send(Packet(opcode=Opcode.ATOMIC_FADD, flags=req, src=1, dst=3, req_id=103,
                    addr=0x4000, length=8, dtype=DType.INT64, payload=(5).to_bytes(8, "big")))
    ack(r, Opcode.ATOMIC_RESP, payload=(37).to_bytes(8, "big"))
    r = send(Packet(opcode=Opcode.ATOMIC_CAS, flags=req, src=1, dst=3, req_id=104,
                    addr=0x4008, length=8, dtype=DType.UINT64, payload=bytes(8) + b"\x01" * 8))
    ack(r, Opcode.ATOMIC_RESP, payload=bytes(8))
    r = send(Packet(opcode=Opcode.REDUCE, flags=req, src=1, dst=3, req_id=105, addr=0x5000,
                    length=16, dtype=DType.FLOAT32, redop=RedOp.SUM, payload=b"\x3f\x80\0\0" * 4))
    ack(r)
    chain = (3, 4, 5)
    base = Packet(opcode=Opcode.REDUCE_FWD, flags=req | Flag.LAST_HOP_SIGNAL, src=1, dst=3,
                  req_id=106, addr=0x1_0000_6000, addr2=0x7000, imm=1, length=16,
                  dtype=DType.INT32, redop=RedOp.MAX, group=2, route=chain,
                  payload=b"\0\0\0\x07" * 4)
    r = send(base)
    for hop in (1, 2):
        send(base.copy(src=chain[hop - 1], dst=chain[hop], hop=hop))
    ack(r.copy(dst=5))          # the last hop answers the host
    r = send(Packet(opcode=Opcode.MULTICAST, flags=req, src=1, dst=3, group=7, req_id=107,
                    addr=0x8000, length=8, payload=b"\x11" * 8))
    send(r.copy(src=3, dst=4, flags=Flag.MCAST_COPY))
    send(r.copy(src=3, dst=5, flags=Flag.MCAST_COPY), dst_ep=MCAST_GROUP_IP)
    ack(r)
    r = send(Packet(opcode=Opcode.PUT_SIGNAL, flags=req, src=1, dst=4, req_id=108,
                    addr=0x9000, addr2=0x9100, imm=1, length=8, payload=b"\x22" * 8))
    ack(r)
    r = send(Packet(opcode=Opcode.FENCE, flags=req | Flag.FENCE, src=1, dst=3, req_id=109))
    ack(r)
    r = send(Packet(opcode=Opcode.MEMCPY, flags=req, src=1, dst=3, req_id=110, addr=0xA000,
                    addr2=0xB000, length=64))
    ack(r)
    r = send(Packet(opcode=Opcode.QUANT_FP8, flags=req, src=1, dst=3, req_id=111,
                    addr=0xC000, addr2=0xD000, imm=0xE000, length=64, dtype=DType.FLOAT32,
                    redop=DType.FP8_E4M3))
    ack(r)
    r = send(Packet(opcode=Opcode.DEQUANT_FP8, flags=req, src=1, dst=3, req_id=112,
                    addr=0xD000, addr2=0xC000, imm=0xE000, length=16, dtype=DType.FLOAT32,
                    redop=DType.FP8_E5M2))
    ack(r)
    # NAKs: the rejected opcode travels in imm (SPEC §7)
    naks = ((Opcode.READ, Status.OUT_OF_BOUNDS, 0xFFFF_0000, 3),
            (Opcode.WRITE, Status.BAD_KEY, 0x100, 4),
            (Opcode.ATOMIC_FADD, Status.MISALIGNED, 0x4003, 3))
    for req_id, (opcode, status, addr, dst) in enumerate(naks, start=113):
        payload = b"\x01" * 8 if opcode != Opcode.READ else b""
        r = send(Packet(opcode=opcode, flags=req, src=1, dst=dst, req_id=req_id,
                        addr=addr, length=8, rkey=0xBAD if status == Status.BAD_KEY else 0,
                        payload=payload))
        ack(r, Opcode.NAK, status=status, imm=int(opcode))
    # loss, then the retransmission; an injected duplicate of the answer
    r = send(Packet(opcode=Opcode.WRITE, flags=req, src=1, dst=3, req_id=120, addr=0x2100,
                    length=8, payload=b"\x33" * 8), note="loss", dropped=True)
    send(r.copy(flags=req | Flag.RETRANSMIT), auto_seq=False)
    a = ack(r)
    send(a, auto_seq=False, note="duplicate")
    # a corrupted datagram (bad CRC, never answered), then its retransmission
    r = send(Packet(opcode=Opcode.WRITE, flags=req, src=1, dst=4, req_id=121, addr=0x2200,
                    length=8, payload=b"\x44" * 8), note="corrupt", corrupt=True)
    send(r.copy(flags=req | Flag.RETRANSMIT), auto_seq=False)
    ack(r)
    return out


def write_sample(path: str | os.PathLike, fmt: str | None = None) -> list[SampleFrame]:
    """Write the sample conversation to ``path`` with Capture; returns its frames."""
    frames = sample_traffic()
    with Capture(path, fmt) as cap:
        for f in frames:
            cap.record(f.ts, f.src, f.dst, f.datagram, note=f.note, dropped=f.dropped)
    return frames


__all__ = ["SampleFrame", "sample_traffic", "write_sample", "HOST", "DEVICES"]
