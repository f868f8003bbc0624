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
_OVERHEAD = [overhead(hops) for hops in range(16001)]  # route length -> header bytes
_ATOMIC_RESP_BYTES = overhead(0) + 8
#: the token of a per-chunk multicast copy: its ack is counted already (Network.fan_out)
_COUNTED = Handle()
_MCAST_COPY, _LAST_SIGNAL, _RESULT_MCAST = (int(Flag.MCAST_COPY), int(Flag.LAST_HOP_SIGNAL),
                                            int(Flag.RESULT_MCAST))
_JOIN = int(Flag.JOIN)


class Frag:
    """A burst of ``npackets`` consecutive datagrams of one message."""

    __slots__ = ("pkt", "off", "payload", "npackets", "token", "sender")

    def __init__(self, pkt: Packet, off: int, payload: int, npackets: int,
                 token: Handle | None, sender: int):
        self.pkt, self.off, self.payload, self.npackets = pkt, off, payload, npackets
        self.token, self.sender = token, sender

    @property
    def wire_bytes(self) -> int:
        return self.npackets * _OVERHEAD[len(self.pkt.route)] + self.payload


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
    pkt, k = f.pkt, f.npackets
    world.net.send(src_member - 1, dest_member - 1, head, tail, k,
                   k * _OVERHEAD[len(pkt.route)] + f.payload, f, pkt.req_id,
                   (src_member << 24) | (dest_member << 8) | pkt.opcode)


def _next_hop(p: Packet, src: int, dst: int, hop: int) -> Packet:
    """``p.copy(src=src, dst=dst, hop=hop)`` without the keyword round trip (once per
    chain hop: the hot path of the in-network algorithms)."""
    return Packet(p.opcode, p.flags, p.status, p.dtype, p.redop, hop, src, dst, p.pkey,
                  p.group, p.rkey, p.seq, p.ack, p.req_id, p.addr, p.addr2, p.imm, p.length,
                  p.frag_off, p.route, p.payload, p.version)


class _Sender:
    """The one rule of the reliability core that shapes timing without loss (SPEC §8.3):
    to a peer that has not answered yet, one datagram at a time. The first datagram to
    each peer goes alone; the rest wait for its answer."""

    world: World
    member: int

    def _init_sender(self, anchors: bool) -> None:
        self._anchor: dict[int, list | bool] = {}   # peer -> waiting bursts, or True
        self.anchors = anchors

    def emit(self, dest: int, f: Frag, head: float, tail: float) -> None:
        state = self._anchor.get(dest) if self.anchors else True
        if state is True:
            _send(self.world, self.member, dest, f, head, tail)
        elif state is None:
            self._anchor[dest] = waiting = []
            if f.npackets > 1:
                per = max_payload(self.world.mtu, len(f.pkt.route))
                one = Frag(f.pkt, f.off, min(per, f.payload), 1, f.token, f.sender)
                rest = Frag(f.pkt, f.off + one.payload, f.payload - one.payload,
                            f.npackets - 1, f.token, f.sender)
                waiting.append((rest, head, tail))
                f = one
            _send(self.world, self.member, dest, f, head, head)
        else:
            state.append((f, head, tail))

    def anchoring(self, peer: int) -> bool:
        return isinstance(self._anchor.get(peer), list)

    def answered_by(self, peer: int, t: float) -> None:
        """An answer from ``peer`` arrived at ``t``: it is anchored, send what waited."""
        waiting = self._anchor.get(peer)
        if isinstance(waiting, list):
            self._anchor[peer] = True
            for f, head, tail in waiting:
                _send(self.world, self.member, peer, f, max(head, t), max(tail, t))


class ModelDevice(DeviceBase, _Sender):
    """What a host can see of a device, and the traffic the device makes."""

    def __init__(self, world: World, rank: int, gran: int | None, anchors: bool = True):
        super().__init__(world, rank)
        self._init_sender(anchors)
        self.gran = gran
        self.words: dict[int, int] = {}
        self._changed = -1         # the word a datagram changed (-2: several), for _fire
        self._landed: dict[tuple, int] = {}
        self.members = [world.device_member(r) for r in range(world.n)]
        self._joins: dict[int, dict[int, Packet]] = {}   # group -> {sender: descriptor}

    def word(self, offset: int) -> int:
        return self.words.get(offset, 0)

    def _note_change(self, offset: int) -> None:
        c = self._changed
        self._changed = offset if c == -1 or c == offset else -2

    def write_local(self, offset: int, data) -> None:
        """Sizes only: nothing to store."""

    def read_local(self, offset: int, out) -> None:
        """Sizes only: nothing to copy."""

    def deliver(self, head: float, tail: float, f: Frag) -> None:
        pkt = f.pkt
        op = pkt.opcode
        if IS_RESPONSE[op]:        # the ack of a hop or copy this device sent
            self.answered_by(f.sender, tail)
            return
        k = f.npackets
        payload = f.payload // k
        cost = self.world.costs.get((payload if payload else pkt.length) << 8 | op)
        if cost is None:
            cost = device_cost(self.world, op, payload, pkt.length)
        first, last = self.process(head, tail, k, cost)
        _HANDLERS[op](self, f, first, last)
        self._answer(f, op, first, last)
        changed = self._changed    # a watch can only come true when its word changes
        if changed != -1:
            self._changed = -1
            if changed == -2:
                self._fire(last)
            else:                  # the usual case: one word, look at its watches only
                waiting = self._watches.get(changed)
                if waiting is not None and (len(waiting) > 1 or
                                            self.words.get(changed, 0) >= waiting[0][0]):
                    self._fire_word(changed, last)

    # -- what the device does -----------------------------------------------------------
    def _answer(self, f: Frag, op: int, first: float, last: float) -> None:
        if f.token is _COUNTED:     # a multicast copy whose ack fan_out counted
            return
        atomic = op == Opcode.ATOMIC_FADD
        size = _ATOMIC_RESP_BYTES if atomic else _ACK_BYTES
        opcode = Opcode.ATOMIC_RESP if atomic else Opcode.ACK
        w, k = self.world, f.npackets
        if w.net.hop_events:    # the answer takes the request's route label (its plane)
            pkt = Packet(opcode=opcode, req_id=f.pkt.req_id)
            _send(w, self.member, f.sender, Frag(pkt, 0, k * (size - _ACK_BYTES), k, f.token,
                                                 self.member), first, last)   # not sequenced
            return
        flow = (self.member << 24) | (f.sender << 8) | opcode      # flow_id, inlined
        sender = w.net.endpoints[f.sender - 1]
        if f.token is None and not sender.anchors:     # nobody waits for this answer
            w.net.tally(flow, k, k * size, f.pkt.req_id)
            return
        head, tail = w.net.account(self.node, f.sender - 1, first, last, k, k * size,
                                   label=f.pkt.req_id, flow=flow)
        if f.token is not None:
            f.token.answered(k, tail, w.q)
        if sender.anchoring(self.member):
            w.q.at(head, sender.answered_by, self.member, head)

    def _land(self, kind: str, origin: int, f: Frag, signal: bool) -> None:
        """Data of a message from ``origin`` landed; with ``signal``, bump the signal word
        once the message is whole."""
        if not signal:
            return
        pkt = f.pkt
        if f.payload >= pkt.length and not self._landed:   # whole, nothing partial here
            self.words[pkt.addr2] = self.words.get(pkt.addr2, 0) + pkt.imm
            self._note_change(pkt.addr2)
            return
        key = (kind, origin, pkt.req_id, pkt.addr, pkt.addr2)
        got = self._landed.get(key, 0) + f.payload
        if got >= pkt.length:
            self._landed.pop(key, None)
            self.words[pkt.addr2] = self.words.get(pkt.addr2, 0) + pkt.imm
            self._note_change(pkt.addr2)
        else:
            self._landed[key] = got

    def _put_signal(self, f: Frag, first: float, last: float) -> None:
        p = f.pkt
        self._land("put", p.src, f, True)

    def _write(self, f: Frag, first: float, last: float) -> None:
        pass

    def _atomic(self, f: Frag, first: float, last: float) -> None:
        p = f.pkt
        self.words[p.addr] = self.words.get(p.addr, 0) + int.from_bytes(p.payload, "little")
        self._note_change(p.addr)

    def _multicast(self, f: Frag, first: float, last: float) -> None:
        p = f.pkt
        copy = p.flags & _MCAST_COPY
        if copy or self.member in self._group(p.group):
            self._land("mcast", p.src, f, p.flags & _LAST_SIGNAL)
        if not copy:
            self._replicate(p.copy(src=self.member, flags=p.flags | _MCAST_COPY), f, first,
                            last)

    def _replicate(self, pkt: Packet, f: Frag, first: float, last: float) -> None:
        w, me, members = self.world, self.member, self._group(pkt.group)
        if self.anchors or w.net.hop_events:
            c = Frag(pkt, f.off, f.payload, f.npackets, None, me)   # every copy's
            with w.q.batch():           # one heap entry for all the copies (engine.py)
                for m in members:
                    if m != me:
                        self.emit(m, c, first, last)
            return
        # per-chunk: the copies' flows and their acks counted once (Network.fan_out);
        # each copy still goes on the wire, booked on its route as any burst
        k = f.npackets
        w.net.fan_out(me, members, first, last, k, k * _OVERHEAD[len(pkt.route)] + f.payload,
                      Frag(pkt, f.off, f.payload, k, _COUNTED, me), pkt.opcode, Opcode.ACK,
                      k * _ACK_BYTES, pkt.req_id)

    def _group(self, group: int) -> list[int]:
        return self.members if group == WORLD_GROUP else []

    def _chain(self, f: Frag, first: float, last: float) -> None:
        p = f.pkt
        route = p.route
        if p.flags & _JOIN:         # a joined start: held until the whole group has sent
            held = self._joins.setdefault(p.group, {})
            held[p.src] = p.copy(flags=p.flags & ~_JOIN)
            if len(held) == len(self._group(p.group)):
                del self._joins[p.group]
                starts = [q for q in held.values() if q.length]   # empty: only counted
                for q in starts:             # the others' starts first, as the device does
                    if q.route[0] != self.member:
                        self.emit(q.route[0], Frag(_next_hop(q, self.member, q.route[0], 0),
                                                   0, 0, 1, None, self.member), last, last)
                for q in starts:
                    if q.route[0] == self.member:
                        self._chain(Frag(q, 0, 0, 1, None, self.member), last, last)
            return
        if p.hop == 0 and not f.payload and p.length > 0:     # a chain descriptor
            per = max_payload(self.world.mtu, len(route))
            if len(route) == 1:     # finished here, cut as the device cuts it
                for off, pay, k in split(p.length, per, self.gran):
                    self._last_hop(p, Frag(p, off, pay, k, None, self.member), last, last)
                return
            nxt = _next_hop(p, self.member, route[1], 1)
            for off, pay, k in split(p.length, per, self.gran):
                self.emit(route[1], Frag(nxt, off, pay, k, None, self.member), last, last)
        elif p.hop < len(route) - 1:
            nxt = route[p.hop + 1]
            self.emit(nxt, Frag(_next_hop(p, self.member, nxt, p.hop + 1), f.off,
                                f.payload, f.npackets, None, self.member), first, last)
        else:
            self._last_hop(p, f, first, last)

    def _last_hop(self, p: Packet, f: Frag, first: float, last: float) -> None:
        self._land("chain", p.route[0], f, p.flags & _LAST_SIGNAL)
        if p.flags & _RESULT_MCAST:
            copy = p.copy(opcode=Opcode.MULTICAST, route=(), hop=0, redop=0, src=self.member,
                          flags=_MCAST_COPY | (int(p.flags) & _LAST_SIGNAL))
            self._replicate(copy, f, first, last)


#: opcode -> what the device does with it (SPEC §4)
_HANDLERS = {
    Opcode.PUT_SIGNAL: ModelDevice._put_signal,
    Opcode.WRITE: ModelDevice._write,
    Opcode.ATOMIC_FADD: ModelDevice._atomic,
    Opcode.MULTICAST: ModelDevice._multicast,
    Opcode.REDUCE_FWD: ModelDevice._chain,
}


class ModelPort(_Sender):
    """A host's network side in the timing-only modes."""

    def __init__(self, world: World, rank: int, gran: int | None, anchors: bool = True):
        self._init_sender(anchors)
        self.world, self.rank, self.gran = world, rank, gran
        self.member = world.host_member(rank)
        self.node = world.topo.host(rank)

    def send_message(self, dest_rank: int, template: Packet, data, handle: Handle,
                     t: float, parts: int = 1) -> None:
        """``parts`` > 1: ``data`` stands for that many messages of at most a slot each
        (the per-chunk mode's group of p2p pieces), sent as one burst that counts every
        datagram they would be."""
        dest = self.world.device_member(dest_rank)
        length = len(data)
        per = max_payload(self.world.mtu, len(template.route))
        if template.opcode == Opcode.REDUCE_FWD and template.hop == 0 and not length:
            bursts = [(0, 0, 1)]
        elif parts > 1:
            slot = self.world.layout.slot_bytes
            k = sum(max(1, -(-min(slot, length - lo) // per)) for lo in range(0, length, slot))
            bursts = [(0, length, k)]
        else:
            bursts = split(length, per, self.gran)
        for off, pay, k in bursts:
            handle.pending += k
            self.emit(dest, Frag(template, off, pay, k, handle, self.member), t, t)

    def deliver(self, head: float, tail: float, f: Frag) -> None:
        self.answered_by(f.sender, tail)
        if f.token is not None:
            f.token.answered(f.npackets, tail, self.world.q)


__all__ = ["Frag", "ModelDevice", "ModelPort", "split"]
