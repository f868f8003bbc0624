"""Timing-only modes: bursts that carry sizes, not bytes, through a model of the device.

Owns the device of the ``sized`` mode (one burst per datagram, every hop an event) and
of the ``chunk`` mode (one burst per message or chunk, hops reserved at once, acks
carried without events). A burst is a ``Frag``: the request's header (a real
``netdam.wire.codec.Packet`` with no payload), the byte range it covers and how many
datagrams it stands for. Sizes follow the wire exactly: datagrams per message from
``netdam.wire.frag.max_payload`` for the route length, header and route bytes from
``codec.overhead``, one ACK (or an 8-byte ATOMIC_RESP) per request datagram, so the
per-link packet and byte counts equal the per-packet mode's (the tests check it).

``ModelDevice`` keeps what a host can observe of a device, its signal and credit words,
and answers each opcode the way SPEC §4 says the device does, one row per opcode in
``_HANDLERS``: land data (PUT_SIGNAL, WRITE, a multicast copy) and bump a signal once a
message has fully landed, add to a word (ATOMIC_FADD), forward or finish a chain
(REDUCE_FWD, with the chain descriptor of §4.9 and the result multicast), replicate a
multicast. Costs come from ``TimingModel`` with the same rule as the per-packet mode.
The per-packet mode, running the real device, is what this model is checked against.
"""

from __future__ import annotations

from netdam.sim.base import IS_RESPONSE, WORLD_GROUP, DeviceBase, Handle, World, device_cost
from netdam.wire.codec import Packet, overhead
from netdam.wire.fields import Flag, Opcode
from netdam.wire.frag import max_payload

_ACK_BYTES = overhead(0)
_ATOMIC_RESP_BYTES = overhead(0) + 8
_MCAST_COPY, _LAST_SIGNAL, _RESULT_MCAST = (int(Flag.MCAST_COPY), int(Flag.LAST_HOP_SIGNAL),
                                            int(Flag.RESULT_MCAST))
_ACK_PKT = Packet(opcode=Opcode.ACK)
_ATOMIC_RESP_PKT = Packet(opcode=Opcode.ATOMIC_RESP)


class Frag:
    """A burst of ``npackets`` consecutive datagrams of one message."""

    __slots__ = ("pkt", "off", "payload", "npackets", "token", "sender")

    def __init__(self, pkt: Packet, off: int, payload: int, npackets: int,
                 token: Handle | None, sender: int):
        self.pkt, self.off, self.payload, self.npackets = pkt, off, payload, npackets
        self.token, self.sender = token, sender

    @property
    def wire_bytes(self) -> int:
        return self.npackets * overhead(len(self.pkt.route)) + self.payload


def split(length: int, per_packet: int, gran: int | None) -> list[tuple[int, int, int]]:
    """(offset, payload bytes, datagrams) of the bursts of a ``length``-byte message:
    ``gran`` datagrams each (None: the whole message in one burst)."""
    frags = max(1, -(-length // per_packet))
    step = frags if gran is None else gran
    out = []
    for first in range(0, frags, step):
        k = min(step, frags - first)
        off = first * per_packet
        out.append((off, min(length, off + k * per_packet) - off, k))
    return out


def _send(world: World, src_member: int, dest_member: int, f: Frag, head: float,
          tail: float) -> None:
    world.net.send(src_member - 1, dest_member - 1, head, tail, f.npackets, f.wire_bytes, f,
                   label=f.pkt.req_id, flow=(src_member, dest_member))


class ModelDevice(DeviceBase):
    """What a host can see of a device, and the traffic the device makes."""

    def __init__(self, world: World, rank: int, gran: int | None):
        super().__init__(world, rank)
        self.gran = gran
        self.words: dict[int, int] = {}
        self._landed: dict[tuple, int] = {}
        self.members = [world.device_member(r) for r in range(world.n)]

    def word(self, offset: int) -> int:
        return self.words.get(offset, 0)

    def write_local(self, offset: int, data) -> None:
        """Sizes only: nothing to store."""

    def read_local(self, offset: int, out) -> None:
        """Sizes only: nothing to copy."""

    def deliver(self, head: float, tail: float, f: Frag) -> None:
        pkt = f.pkt
        op = pkt.opcode
        if IS_RESPONSE[op]:
            return                 # the ack of a hop or copy this device sent
        k = f.npackets
        cost = device_cost(self.world.timing, op, f.payload // k, pkt.length)
        first, last = self.process(head, tail, k, cost)
        _HANDLERS[op](self, f, first, last)
        self._answer(f, op, first, last)
        self._fire(last)

    # -- what the device does -----------------------------------------------------------
    def _answer(self, f: Frag, op: int, first: float, last: float) -> None:
        atomic = op == Opcode.ATOMIC_FADD
        size = _ATOMIC_RESP_BYTES if atomic else _ACK_BYTES
        pkt = _ATOMIC_RESP_PKT if atomic else _ACK_PKT
        w, k = self.world, f.npackets
        if w.net.hop_events:
            _send(w, self.member, f.sender, Frag(pkt, 0, k * (size - _ACK_BYTES), k, f.token,
                                                 self.member), first, last)
            return
        times = w.net.carry(self.node, f.sender - 1, first, last, k, k * size,
                            label=f.pkt.req_id, flow=(self.member, f.sender))
        if f.token is not None and times is not None:
            f.token.answered(k, times[1], w.q)

    def _land(self, key: tuple, f: Frag, signal: bool) -> None:
        """Data landed; with ``signal``, bump the signal word once the message is whole."""
        if not signal:
            return
        pkt = f.pkt
        got = self._landed.get(key, 0) + f.payload
        if got >= pkt.length:
            self._landed.pop(key, None)
            self.words[pkt.addr2] = self.words.get(pkt.addr2, 0) + pkt.imm
        else:
            self._landed[key] = got

    def _put_signal(self, f: Frag, first: float, last: float) -> None:
        p = f.pkt
        self._land(("put", p.src, p.req_id, p.addr, p.addr2), f, True)

    def _write(self, f: Frag, first: float, last: float) -> None:
        pass

    def _atomic(self, f: Frag, first: float, last: float) -> None:
        p = f.pkt
        self.words[p.addr] = self.words.get(p.addr, 0) + int.from_bytes(p.payload, "little")

    def _multicast(self, f: Frag, first: float, last: float) -> None:
        p = f.pkt
        copy = p.flags & _MCAST_COPY
        if copy or self.member in self._group(p.group):
            self._land(("mcast", p.src, p.req_id, p.addr, p.addr2), f, p.flags & _LAST_SIGNAL)
        if not copy:
            self._replicate(p.copy(src=self.member, flags=p.flags | _MCAST_COPY), f, first,
                            last)

    def _replicate(self, pkt: Packet, f: Frag, first: float, last: float) -> None:
        for m in self._group(pkt.group):
            if m != self.member:
                _send(self.world, self.member, m,
                      Frag(pkt, f.off, f.payload, f.npackets, None, self.member), first, last)

    def _group(self, group: int) -> list[int]:
        return self.members if group == WORLD_GROUP else []

    def _chain(self, f: Frag, first: float, last: float) -> None:
        p = f.pkt
        route = p.route
        if p.hop == 0 and not f.payload and p.length > 0:     # a chain descriptor
            if len(route) == 1:
                self._last_hop(p, Frag(p, 0, p.length, f.npackets, None, self.member),
                               first, last)
                return
            nxt = p.copy(src=self.member, dst=route[1], hop=1)
            per = max_payload(self.world.mtu, len(route))
            for off, pay, k in split(p.length, per, self.gran):
                _send(self.world, self.member, route[1],
                      Frag(nxt, off, pay, k, None, self.member), last, last)
        elif p.hop < len(route) - 1:
            nxt = route[p.hop + 1]
            _send(self.world, self.member, nxt,
                  Frag(p.copy(src=self.member, dst=nxt, hop=p.hop + 1), f.off, f.payload,
                       f.npackets, None, self.member), first, last)
        else:
            self._last_hop(p, f, first, last)

    def _last_hop(self, p: Packet, f: Frag, first: float, last: float) -> None:
        self._land(("chain", p.route[0], p.req_id, p.addr, p.addr2), f, p.flags & _LAST_SIGNAL)
        if p.flags & _RESULT_MCAST:
            copy = p.copy(opcode=Opcode.MULTICAST, route=(), hop=0, redop=0, src=self.member,
                          flags=_MCAST_COPY | (p.flags & _LAST_SIGNAL))
            self._replicate(copy, f, first, last)


#: opcode -> what the device does with it (SPEC §4)
_HANDLERS = {
    Opcode.PUT_SIGNAL: ModelDevice._put_signal,
    Opcode.WRITE: ModelDevice._write,
    Opcode.ATOMIC_FADD: ModelDevice._atomic,
    Opcode.MULTICAST: ModelDevice._multicast,
    Opcode.REDUCE_FWD: ModelDevice._chain,
}


class ModelPort:
    """A host's network side in the timing-only modes."""

    def __init__(self, world: World, rank: int, gran: int | None):
        self.world, self.rank, self.gran = world, rank, gran
        self.member = world.host_member(rank)
        self.node = world.topo.host(rank)

    def send_message(self, dest_rank: int, template: Packet, data, handle: Handle,
                     t: float) -> None:
        dest = self.world.device_member(dest_rank)
        length = len(data)
        if template.opcode == Opcode.REDUCE_FWD and template.hop == 0 and not length:
            bursts = [(0, 0, 1)]
        else:
            bursts = split(length, max_payload(self.world.mtu, len(template.route)), self.gran)
        for off, pay, k in bursts:
            handle.pending += k
            _send(self.world, self.member, dest, Frag(template, off, pay, k, handle,
                                                      self.member), t, t)

    def deliver(self, head: float, tail: float, f: Frag) -> None:
        if f.token is not None:
            f.token.answered(f.npackets, tail, self.world.q)


__all__ = ["Frag", "ModelDevice", "ModelPort", "split"]
