"""Shared fixtures for the device tests: a device driven with encoded datagrams only."""

from __future__ import annotations

import pytest

from firmware_model import Device, Rights
from netdam.wire.codec import Packet, decode, encode
from netdam.wire.fields import Flag, Opcode


class Rig:
    """One device plus one requester (member id ``src``) talking to it with datagrams.

    Every request goes through ``encode`` -> ``Device.receive``; every answer is
    re-encoded and decoded, so the device only ever emits valid datagrams.
    """

    def __init__(self, device_id: int = 1, mem_size: int = 1 << 16, src: int = 100,
                 rights: Rights = Rights.ALL, **kw):
        self.dev = Device(device_id, mem_size, **kw)
        self.region = self.dev.register_region(0, mem_size // 2, rights, pkey=7)
        self.src = src
        self.seq = 1000
        self.req = 0
        self.now = 0.0

    def packet(self, opcode: int, **fields) -> Packet:
        """A request with sensible defaults: next seq and req_id, ACK_REQ, the region."""
        self.req += 1
        base = dict(opcode=opcode, src=self.src, dst=self.dev.device_id,
                    rkey=self.region.key, pkey=self.region.pkey, seq=self.seq,
                    req_id=self.req, flags=Flag.ACK_REQ)
        if "seq" not in fields:
            self.seq += 1
        base.update(fields)
        payload = base.get("payload", b"")
        base.setdefault("length", len(payload))
        return Packet(**base)

    def send(self, pkt: Packet, now: float | None = None) -> list:
        outs = self.dev.receive(encode(pkt), self.now if now is None else now)
        return [(o.dest, decode(encode(o.packet))) for o in outs]

    def request(self, opcode: int, **fields) -> list:
        return self.send(self.packet(opcode, **fields))

    def one(self, opcode: int, **fields) -> Packet:
        outs = self.request(opcode, **fields)
        assert len(outs) == 1, outs
        return outs[0][1]

    def open(self) -> None:
        """A first request, so the device knows where this requester's seqs start
        (SPEC_device §4.1: the first request seen sets the window's base)."""
        self.request(Opcode.WRITE, addr=self.dev.mem_size // 2 - 8, payload=bytes(8))

    def snapshot(self) -> bytes:
        return bytes(self.dev.memory)


@pytest.fixture
def rig() -> Rig:
    return Rig()


@pytest.fixture
def make_rig():
    return Rig


def is_nak(pkt: Packet, status: int) -> bool:
    return pkt.opcode == Opcode.NAK and pkt.status == status
