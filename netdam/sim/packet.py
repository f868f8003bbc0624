"""Per-packet mode: real netdam datagrams through the real device and reliability cores.

Owns the simulated device of this mode (``FirmwareDevice``: an unchanged
``firmware_model.Device`` behind an unchanged ``netdam.transport.reliability`` core for
the packets it originates, exactly as the device process wraps it) and the host's port
(``PacketPort``: its own reliability core; requests cut by ``netdam.wire.frag`` and
encoded by the codec). Every request is an encoded datagram with its CRC; the device decodes,
checks, applies and answers it (answers travel as the device's ``Packet``s); data lands in device memory and is checked against
NumPy at the end. Retransmission timers run in virtual time, so injected loss is
repaired the way the emulator repairs it.
"""

from __future__ import annotations

import mmap

from firmware_model.device import Device
from firmware_model.memory import Rights
from netdam.sim.base import WORLD_GROUP, DeviceBase, Handle, World, device_cost
from netdam.sim.engine import SimError
from netdam.sim.network import flow_id
from netdam.transport.reliability import Reliability
from netdam.wire.codec import Packet, encode, overhead
from netdam.wire.fields import Opcode, Status
from netdam.wire.frag import fragment

_NAK = int(Opcode.NAK)
_U32 = int.from_bytes


class _Endpoint:
    """A node that owns a reliability core: sends, timers in virtual time."""

    def __init__(self, world: World, member: int, seed: int):
        self.world, self.member = world, member
        self.rel = Reliability(seed=seed)
        self._timer_at: float | None = None

    def pump(self, t: float) -> None:
        if not self.rel.wants_send():
            self._arm()
            return
        net, node, member, w = self.world.net, self.member - 1, self.member, self.world
        for dest, pkt in self.rel.datagrams_to_send(t * 1e-9):
            data = encode(pkt)
            net.send(node, w.node(dest), t, t, 1, len(data), data, label=pkt.req_id,
                     flow=flow_id(member, dest, pkt.opcode))
        self._arm()

    def answer(self, dest: int, pkt: Packet, t: float) -> None:
        """A response, straight back to the requester (not sequenced). Responses travel
        as the device's decoded ``Packet`` (their size is the encoded size): only
        requests need to be bytes, for the device to decode and check."""
        self.world.net.send(self.member - 1, self.world.node(dest), t, t, 1,
                            overhead(len(pkt.route)) + len(pkt.payload), pkt,
                            label=pkt.req_id,
                            flow=flow_id(self.member, dest, pkt.opcode))

    def _arm(self) -> None:
        """One retransmission timer per endpoint: when it fires it re-arms for the next
        (a timer that fires late only delays a retransmission, never loses one)."""
        if self._timer_at is not None:
            return
        nt = self.rel.next_timer()
        if nt is not None:
            self._timer_at = at = nt * 1e9
            self.world.q.at(at, self._on_timer, at)

    def _on_timer(self, at: float) -> None:
        if self._timer_at != at:
            return          # superseded by an earlier timer
        self._timer_at = None
        failed = self.rel.handle_timer(self.world.q.now * 1e-9)
        if failed:
            raise SimError(f"member {self.member}: {len(failed)} datagram(s) never "
                           f"acknowledged (the link loss is too high for the deadline)")
        self.pump(self.world.q.now)


class FirmwareDevice(DeviceBase, _Endpoint):
    """The unchanged firmware device, fed encoded datagrams in virtual time."""

    def __init__(self, world: World, rank: int, mem_size: int, seed: int):
        DeviceBase.__init__(self, world, rank)
        _Endpoint.__init__(self, world, self.member, seed)
        self._mem = mmap.mmap(-1, mem_size)       # pages appear only when touched
        self.device = Device(self.member, mem_size, memory=self._mem, mtu=world.mtu,
                             timing=world.timing)
        self.device.register_region(0, mem_size, Rights.ALL, 0, world.rkey)
        self.device.set_group(WORLD_GROUP, [world.device_member(r) for r in range(world.n)])
        self.memory = self.device.memory

    def word(self, offset: int) -> int:
        return _U32(self.memory[offset:offset + 8], "little")

    def write_local(self, offset: int, data) -> None:
        self.memory[offset:offset + len(data)] = memoryview(data).cast("B")

    def read_local(self, offset: int, out) -> None:
        out = memoryview(out).cast("B")
        out[:] = self.memory[offset:offset + len(out)]

    def deliver(self, head: float, tail: float, data) -> None:
        if isinstance(data, Packet):      # the answer to a hop or copy this device sent
            pkt = data
            if pkt.opcode == _NAK:
                raise SimError(f"device {self.member} got NAK {Status(pkt.status).name} "
                               f"from {pkt.src}")
            self.rel.on_reply(pkt.src, pkt, head * 1e-9)
            self.pump(head)
            return
        payload, length = _U32(data[36:40], "big"), _U32(data[64:68], "big")
        _, done = self.process(head, tail, 1, device_cost(self.world, data[3],
                                                          payload, length))
        outs = self.device.receive(data, done * 1e-9)
        src = _U32(data[12:14], "big")
        for out in outs:
            if out.dest is None:
                self.answer(src, out.packet, done)
            else:
                self.rel.submit(out.dest, out.packet, done * 1e-9)
        self.pump(done)
        self._fire(done)


class PacketPort(_Endpoint):
    """A host's network side in per-packet mode."""

    def __init__(self, world: World, rank: int, seed: int):
        super().__init__(world, world.host_member(rank), seed)
        self.rank = rank
        self.node = world.topo.host(rank)

    def send_message(self, dest_rank: int, template: Packet, data, handle: Handle,
                     t: float, parts: int = 1) -> None:
        dest = self.world.device_member(dest_rank)
        if template.opcode == Opcode.REDUCE_FWD and template.hop == 0 and not len(data):
            packets = [template]          # a chain descriptor: one packet, no payload
        else:
            packets = fragment(template, data, self.world.mtu)
        for pkt in packets:
            handle.pending += 1
            self.rel.submit(dest, pkt, t * 1e-9, token=handle)
        self.pump(t)

    def deliver(self, head: float, tail: float, pkt: Packet) -> None:
        if pkt.opcode == _NAK:
            raise SimError(f"host {self.member} got NAK {Status(pkt.status).name} from "
                           f"device {pkt.src} for opcode {pkt.imm}")
        q = self.world.q
        for done in self.rel.on_reply(pkt.src, pkt, head * 1e-9):
            done.token.answered(1, head, q)
        self.pump(head)


__all__ = ["FirmwareDevice", "PacketPort"]
