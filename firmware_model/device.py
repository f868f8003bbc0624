"""The device: a NetDAM responder, sans-I/O (SPEC §4, §7, §8; SPEC_device §1-§9).

Owns the path of one datagram through a device: decode, the replay window of its sender,
ordering (hold or apply), the instruction table's checks and handler, the reply's
cumulative ack, counters. ``Device.receive(data, now)`` takes bytes and returns the
datagrams to send as ``Out(dest, packet)``; ``next_timer`` / ``on_timer`` expire held
requests and idle state. No sockets, clocks or sleeps: the same object runs behind UDP,
behind shared-memory rings and inside the simulator.

The device never raises from ``receive``/``handle``/``on_timer`` and never half-applies:
every check of a request (instruction table ``validate``, then ``Memory.check`` of every
operand) passes before its handler writes anything. A rejection is a status value that
becomes a NAK in one place (``instructions.make_nak``).
"""

from __future__ import annotations

import heapq

import numpy as np

from firmware_model import alu
from firmware_model.counters import Counters, opcode_name
from firmware_model.instructions import (Context, Instruction, InstructionError,
                                         InstructionTable, Out, make_ack, make_nak, nak_for)
from firmware_model.memory import Memory, Region, Rights
from firmware_model.replay import Held, MessageTracker, PeerState, PeerTable, Verdict
from firmware_model.runs import WriteRuns
from firmware_model.timing import TimingModel
from netdam.wire.codec import Packet, WireError, decode, overhead, peek_header
from netdam.wire.fields import CAPS, DEFAULT_MTU, MAGIC, Cap, Flag, Opcode, Status
from netdam.wire.frag import Fragment, max_payload

# plain ints for the hot path: IntFlag arithmetic goes through the enum machinery
_RESPONDS = int(Cap.RESPONDS)
_ACK_REQ, _NO_RESPONSE = int(Flag.ACK_REQ), int(Flag.NO_RESPONSE)
_ACK_VALID = int(Flag.ACK_VALID)
_RETRANSMIT = int(Flag.RETRANSMIT)
_MORE_FRAGS = int(Flag.MORE_FRAGS)
_ACK = int(Opcode.ACK)
_IS_RESPONSE = frozenset(op for op, caps in CAPS.items() if caps & Cap.RESPONSE)
_OVERHEAD = [overhead(n) for n in range(256)]   # bytes besides the payload, by route length
_ANY_MEMBER = 0xFFFF   # dst that every device accepts (SPEC §2.1)

MEMBER_MAX = 0xFFFE
GROUP_MAX = 0xFFFF
_ORDER_FLAGS = int(Flag.FENCE | Flag.RELEASE)


class Device(WriteRuns):
    """One emulated NetDAM device: memory, regions, instruction table, responder.

    Limits (SPEC_device §9): ``replay_window`` seqs per peer, ``max_peers`` peers (least
    recently seen evicted), a peer forgotten after ``peer_timeout`` s of silence, at most
    ``max_held`` held requests per peer and ``max_held_bytes`` in all, a held request
    NAKed BUSY after ``hold_timeout`` s, ``max_messages`` fragmented signal messages in
    progress (expiring after ``peer_timeout``), and the joined chain starts held for a
    group that never completes (SPEC §4.9, dropped after ``peer_timeout``).

    ACK coalescing (SPEC §4.7): with ``ack_every`` > 1, the ACKs of consecutive requests
    of one peer that were applied OK and carry MORE_FRAGS are deferred and sent as one
    ACK answering the whole run, when the message's last fragment is applied, after
    ``ack_every`` requests, or ``ack_delay`` s after the first deferred one. Only
    positive answers are coalesced; every NAK goes out on its own. 1 (the default)
    answers every request with its own ACK.

    ``answer_views``: a READ's answer may carry a view of device memory instead of a
    copy; the caller then sends (or copies) every answer before the device runs again,
    as the device process does. The default copies, for callers that hold answers
    back while the memory may change (the simulator delivers them later).
    """

    def __init__(self, device_id: int, mem_size: int = 1 << 20, *, memory=None,
                 mtu: int = DEFAULT_MTU, timing: TimingModel | None = None,
                 replay_window: int = 4096, max_peers: int = 1024,
                 peer_timeout: float = 30.0, hold_timeout: float = 1.0,
                 max_held: int = 1024, max_held_bytes: int = 64 << 20,
                 max_messages: int = 4096, ack_every: int = 1, ack_delay: float = 1e-3,
                 answer_views: bool = False):
        if not 0 <= device_id <= MEMBER_MAX:
            raise ValueError(f"device id {device_id} outside 0..{MEMBER_MAX}")
        max_payload(mtu)  # validates the MTU
        if hold_timeout <= 0 or max_held < 1 or max_held_bytes < 0:
            raise ValueError("hold_timeout, max_held and max_held_bytes must be positive")
        if not 1 <= ack_every <= replay_window or ack_delay <= 0:
            raise ValueError(f"ack_every must be in 1..{replay_window} (the replay window) "
                             "and ack_delay positive")
        self.ack_every = ack_every
        self.ack_delay = ack_delay
        self.device_id = device_id
        self.mtu = mtu
        self.timing = timing or TimingModel()
        self.hold_timeout = hold_timeout
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self._mem = Memory(mem_size, memory)
        self._table = InstructionTable()
        self._tracker = MessageTracker(max_messages, peer_timeout)
        self._peer_timeout = peer_timeout    # also how long a joined start waits (§4.9)
        self._ctx = Context(device_id, self._mem, mtu, self._tracker)
        self._ctx.answer_views = answer_views
        self._peers = PeerTable(replay_window, max_peers, peer_timeout)
        self._counters = Counters()
        self._holds: list[tuple[float, int, int, int]] = []   # (deadline, tick, peer, seq)
        self._acks: list[tuple[float, int, int]] = []         # (due, tick, peer): deferred
        self._held_bytes = 0
        self._tick = 0

    # -- memory and regions --------------------------------------------------------------
    @property
    def memory(self) -> memoryview:
        """Writable uint8 view of the whole device memory."""
        return self._mem.view

    @property
    def mem_size(self) -> int:
        return self._mem.size

    def array(self, dtype) -> np.ndarray:
        """The whole memory as a NumPy array (a NumPy dtype or a wire DType code)."""
        return self._mem.array(dtype)

    def register_region(self, base: int, length: int, rights: Rights = Rights.ALL,
                        pkey: int = 0, key: int | None = None) -> Region:
        return self._mem.register(base, length, rights, pkey, key)

    def deregister_region(self, key: int) -> Region:
        """Revoke ``key`` (KeyError if unknown): its next request fails BAD_KEY."""
        return self._mem.deregister(key)

    def region(self, key: int) -> Region | None:
        return self._mem.region(key)

    def regions(self) -> list[Region]:
        return self._mem.regions()

    # -- groups, chains, instructions ----------------------------------------------------
    def set_group(self, group_id: int, members) -> None:
        """Multicast group ``group_id`` = member device ids (may include this device);
        an empty ``members`` removes the group. Joined starts held for the group
        (SPEC §4.9) are dropped: they counted the old members."""
        self._set(self._ctx.groups, group_id, members)
        self._ctx.drop_joins(group_id)

    def set_chain(self, chain_id: int, members) -> None:
        """Route used by a REDUCE_FWD that carries no route list (nhops = 0)."""
        self._set(self._ctx.chains, chain_id, members)

    @staticmethod
    def _set(table: dict, ident: int, members) -> None:
        if not 0 <= ident <= GROUP_MAX:
            raise ValueError(f"id {ident} outside 0..{GROUP_MAX}")
        members = tuple(int(m) for m in members)
        if any(not 0 <= m <= MEMBER_MAX for m in members):
            raise ValueError(f"member ids must be in 0..{MEMBER_MAX}: {members}")
        if members:
            table[ident] = members
        else:
            table.pop(ident, None)

    def groups(self) -> dict[int, tuple[int, ...]]:
        return dict(self._ctx.groups)

    def register_instruction(self, opcode: int, handler, caps: int, **kw) -> Instruction:
        """User-defined instruction (see ``InstructionTable.register_instruction``)."""
        return self._table.register_instruction(opcode, handler, caps, **kw)

    # -- the datagram path ---------------------------------------------------------------
    def receive(self, data, now: float) -> list[Out]:
        """One datagram in, datagrams out. Never raises."""
        c = self._counters
        try:
            c.add("rx_packets")
            c.add("rx_bytes", len(data))
            try:
                pkt = decode(data)
            except WireError as exc:
                return self._sent(self._undecodable(data, exc))
            return self._sent(self._handle(pkt, now, len(data)))
        except Exception:   # a bug: count it, never take the caller down
            c.add("internal_errors")
            return []

    def handle(self, pkt: Packet, now: float) -> list[Out]:
        """Same as ``receive`` for an already decoded packet. Never raises."""
        c = self._counters
        try:
            size = _OVERHEAD[len(pkt.route)] + len(pkt.payload)
            c.add("rx_packets")
            c.add("rx_bytes", size)
            return self._sent(self._handle(pkt, now, size))
        except Exception:
            c.add("internal_errors")
            return []

    def _undecodable(self, data, exc: WireError) -> list[Out]:
        """SPEC §3, §9: a bad CRC is dropped; a netdam header we can read gets a NAK."""
        if exc.status == Status.BAD_CRC:
            self._counters.add("dropped_crc")
            return []
        try:
            h = peek_header(data)
        except WireError:
            h = None
        if h is None or h["magic"] != MAGIC:
            self._counters.add("dropped_malformed")
            return []
        self._counters.rejected(exc.status)
        nak = make_nak(self.device_id, exc.status, src=h["src"], seq=h["seq"],
                       req_id=h["req_id"], opcode=h["opcode"], addr=h["addr"],
                       length=h["length"], frag_off=h["frag_off"], pkey=h["pkey"],
                       rkey=h["rkey"])
        return self._stamp([Out(None, nak)], self._peers.get(h["src"]), None)

    def _handle(self, pkt: Packet, now: float, size: int) -> list[Out]:
        self._ctx.now = now
        if pkt.flags & _RETRANSMIT:
            self._counters.add("rx_retransmits")
        if pkt.opcode in _IS_RESPONSE:
            # a response reached a device: NAK it, except a NAK (no NAK storms)
            self._counters.add("responses_ignored")
            if pkt.opcode == Opcode.NAK:
                return []
            return self._reject(pkt, Status.UNKNOWN_OPCODE, self._peers.get(pkt.src), None)
        row = self._table.get(pkt.opcode)
        self._counters.request(row.name if row else opcode_name(pkt.opcode), size)
        if pkt.dst != self.device_id and pkt.dst != _ANY_MEMBER:
            # SPEC §8.5: meant for another member; nothing applied, no window touched.
            # The NAK speaks for the member named, so that the sender can match it.
            self._counters.rejected(Status.WRONG_DEVICE)
            return [Out(None, nak_for(pkt.dst, pkt, Status.WRONG_DEVICE))]
        if not pkt.flags & _ACK_REQ:
            # unsequenced (no ACK_REQ): applied on arrival, no replay window, never held
            return self._execute(row, pkt, self._peers.get(pkt.src), None, record=False)
        peer, evicted = self._peers.touch(pkt.src, pkt.seq, now)
        for st in evicted:
            self._drop_held(st)
            self._counters.add("peers_evicted")
        verdict = peer.window.classify(pkt.seq)
        if verdict is Verdict.OUT_OF_WINDOW:
            return self._reject(pkt, Status.SEQ_OUT_OF_WINDOW, peer, None)
        if verdict is not Verdict.NEW:
            self._counters.add("duplicates")
            if verdict is Verdict.HELD:
                return []   # the held original will answer
            return self._replay(row, pkt, peer)
        if self._blocked(row, pkt, peer):
            return self._hold(pkt, peer, now)
        outs = self._execute(row, pkt, peer, None)
        return outs + self._release(peer, None) if peer.held else outs

    # -- executing -----------------------------------------------------------------------
    def _apply(self, row: Instruction | None, pkt: Packet) -> tuple[int, list[Out]]:
        """Check, then apply. (status, datagrams); status != OK means nothing changed."""
        if row is None:
            return Status.UNKNOWN_OPCODE, []
        ctx = self._ctx
        st = row.validate(ctx, pkt)
        if not st:
            for access in row.operands(ctx, pkt):
                st = self._mem.check(pkt.rkey, pkt.pkey, access)
                if st:
                    break
        if st:
            return st, []
        try:
            outs = list(row.handler(ctx, pkt) or ())
        except (InstructionError, alu.AluError) as exc:
            return exc.status or Status.USER_ERROR, []
        except Exception:
            if not row.user:
                raise
            return Status.USER_ERROR, []
        if not row.bits & _RESPONDS and pkt.flags & _ACK_REQ:
            outs.append(Out(None, make_ack(self.device_id, pkt)))
        if pkt.flags & _NO_RESPONSE:
            outs = [o for o in outs if o.dest is not None]
        return Status.OK, outs

    def _execute(self, row: Instruction | None, pkt: Packet, peer: PeerState | None,
                 reply_dest: int | None, record: bool = True) -> list[Out]:
        st, outs = self._apply(row, pkt)
        name = row.name if row else opcode_name(pkt.opcode)
        if st:
            self._counters.busy(name, self.timing.pipeline_ns)
            if record and peer is not None:
                if st == Status.BUSY:
                    peer.window.forget(pkt.seq)   # resources: a retry is a new attempt
                else:
                    peer.window.record(pkt.seq, st)
            return self._reject(pkt, st, peer, reply_dest, count=True)
        self._counters.busy(name, self.timing.cost(pkt.opcode, row.operand_bytes(pkt),
                                                   row.bits))
        if record and peer is not None:
            saved = None
            if row.saves_replies:
                saved = tuple(o.packet.copy(payload=bytes(o.packet.payload))
                              for o in outs if o.dest is None)
            peer.window.record(pkt.seq, Status.OK, saved)
            if self.ack_every > 1 and reply_dest is None and outs \
                    and outs[-1].dest is None and outs[-1].packet.opcode == _ACK:
                outs = self._coalesce(outs, pkt, peer)
        return self._stamp(outs, peer, reply_dest)

    def _coalesce(self, outs: list[Out], pkt: Packet, peer: PeerState) -> list[Out]:
        """Defer the ACK that ends ``outs`` while a run of fragments goes on; answer the
        run with one ACK (``addr2`` = how many requests it answers) when it ends."""
        ack = outs[-1].packet
        prev, n = peer.ack, 1
        if prev is not None:
            if (prev.seq + 1) & 0xFFFFFFFF == ack.seq:
                n = peer.ack_count + 1
            else:                                  # not contiguous: the old run ends
                outs = [self._ack_out(peer)] + outs
        if pkt.flags & _MORE_FRAGS and n < self.ack_every:
            if peer.ack is None:
                peer.ack_due = self._ctx.now + self.ack_delay
                self._tick += 1
                heapq.heappush(self._acks, (peer.ack_due, self._tick, pkt.src))
            peer.ack, peer.ack_count = ack, n
            self._counters.add("acks_deferred")
            return outs[:-1]
        peer.ack, peer.ack_count = None, 0
        if n > 1:
            ack.addr2 = n
        return outs

    def _ack_out(self, peer: PeerState) -> Out:
        """The deferred ACK of ``peer``, answering its run, taken out of the peer."""
        ack, n = peer.ack, peer.ack_count
        peer.ack, peer.ack_count = None, 0
        if n > 1:
            ack.addr2 = n
        return Out(None, ack)

    def _reject(self, pkt: Packet, status: int, peer: PeerState | None,
                reply_dest: int | None, count: bool = True) -> list[Out]:
        if count:
            self._counters.rejected(status)
        return self._stamp([Out(None, nak_for(self.device_id, pkt, status))], peer, reply_dest)

    def _replay(self, row: Instruction | None, pkt: Packet, peer: PeerState) -> list[Out]:
        """Answer a duplicate the way the original was answered (SPEC §8.3)."""
        if row is not None and row.reruns:
            return self._execute(row, pkt, peer, None, record=False)
        status, saved = peer.window.outcome(pkt.seq)
        if status:
            return self._reject(pkt, status, peer, None, count=False)
        if pkt.flags & _NO_RESPONSE:
            return []
        if saved is not None:
            outs = [Out(None, p.copy()) for p in saved]
        elif row is not None and not row.has(Cap.RESPONDS):
            outs = [Out(None, make_ack(self.device_id, pkt))]
        else:
            outs = []
        return self._stamp(outs, peer, None)

    def _stamp(self, outs: list[Out], peer: PeerState | None,
               reply_dest: int | None) -> list[Out]:
        """Replies carry the peer's cumulative ack; from a timer they go to the peer id."""
        stamped = []
        for out in outs:
            if out.dest is None:
                p = out.packet
                if peer is not None:
                    p.flags |= _ACK_VALID
                    # the fragments of one answer share their head, and one ack
                    (p.head if type(p) is Fragment else p).ack = peer.window.cum
                if reply_dest is not None:
                    out = Out(reply_dest, p)
            stamped.append(out)
        return stamped

    def _sent(self, outs: list[Out]) -> list[Out]:
        nbytes = forwarded = 0
        for dest, p in outs:
            nbytes += _OVERHEAD[len(p.route)] + len(p.payload)
            if dest is not None and p.opcode not in _IS_RESPONSE:
                forwarded += 1       # a request for another device (chain hop, copy)
        if outs:
            c = self._counters
            c.add("tx_packets", len(outs))
            c.add("tx_bytes", nbytes)
            if forwarded:
                c.add("forwarded", forwarded)
        return outs

    # -- ordering: FENCE / RELEASE / ACQUIRE ---------------------------------------------
    def _blocked(self, row: Instruction | None, pkt: Packet, peer: PeerState) -> bool:
        flags = pkt.flags | (row.implied if row else 0)
        if flags & _ORDER_FLAGS and not peer.window.done_before(pkt.seq):
            return True
        return bool(peer.held) and peer.acquire_pending_before(pkt.seq, Flag.ACQUIRE)

    def _hold(self, pkt: Packet, peer: PeerState, now: float) -> list[Out]:
        size = len(pkt.payload)
        if len(peer.held) >= self.max_held or self._held_bytes + size > self.max_held_bytes:
            return self._reject(pkt, Status.BUSY, peer, None)
        deadline = now + self.hold_timeout
        peer.held[pkt.seq] = Held(pkt.copy(payload=bytes(pkt.payload)), deadline, size)
        peer.window.hold(pkt.seq)
        self._held_bytes += size
        self._tick += 1
        heapq.heappush(self._holds, (deadline, self._tick, pkt.src, pkt.seq))
        self._counters.add("held")
        return []

    def _release(self, peer: PeerState, reply_dest: int | None) -> list[Out]:
        """Apply every held request of ``peer`` whose condition now holds, in seq order."""
        outs: list[Out] = []
        progress = True
        while progress and peer.held:
            progress = False
            for seq in peer.held_in_order():
                held = peer.held[seq]
                row = self._table.get(held.packet.opcode)
                if self._blocked(row, held.packet, peer):
                    continue
                del peer.held[seq]
                self._held_bytes -= held.size
                outs += self._execute(row, held.packet, peer, reply_dest)
                progress = True
                break
        return outs

    def _drop_held(self, peer: PeerState) -> None:
        for held in peer.held.values():
            self._held_bytes -= held.size
        peer.held.clear()

    # -- timers --------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """When ``on_timer`` next has work (None: nothing pending)."""
        holds = self._holds
        while holds:
            deadline, _, src, seq = holds[0]
            peer = self._peers.get(src)
            held = peer.held.get(seq) if peer else None
            if held is not None and held.deadline == deadline:
                break
            heapq.heappop(holds)
        acks = self._acks
        while acks:
            due, _, src = acks[0]
            peer = self._peers.get(src)
            if peer is not None and peer.ack is not None and peer.ack_due == due:
                break
            heapq.heappop(acks)
        times = [t for t in (holds[0][0] if holds else None, acks[0][0] if acks else None,
                             self._peers.next_deadline(),
                             self._tracker.next_deadline(), self._joins_deadline())
                 if t is not None]
        return min(times) if times else None

    def _joins_deadline(self) -> float | None:
        since = self._ctx.join_since
        return min(since.values()) + self._peer_timeout if since else None

    def on_timer(self, now: float) -> list[Out]:
        """Expire held requests (NAK BUSY to their peer id), idle peers, stale messages."""
        try:
            self._ctx.now = now
            outs: list[Out] = []
            holds = self._holds
            while holds and holds[0][0] <= now:
                deadline, _, src, seq = heapq.heappop(holds)
                peer = self._peers.get(src)
                held = peer.held.get(seq) if peer else None
                if held is None or held.deadline != deadline:
                    continue
                del peer.held[seq]
                self._held_bytes -= held.size
                peer.window.forget(seq)
                self._counters.add("hold_expired")
                outs += self._reject(held.packet, Status.BUSY, peer, src)
                outs += self._release(peer, src)
            acks = self._acks
            while acks and acks[0][0] <= now:
                due, _, src = heapq.heappop(acks)
                peer = self._peers.get(src)
                if peer is not None and peer.ack is not None and peer.ack_due == due:
                    outs += self._stamp([self._ack_out(peer)], peer, src)
            for _, peer in self._peers.expire(now):
                self._drop_held(peer)
                self._counters.add("peers_expired")
            self._counters.add("signals_expired", self._tracker.expire(now))
            self._counters.add("joins_expired",
                               self._ctx.expire_joins(now - self._peer_timeout))
            return self._sent(outs)
        except Exception:
            self._counters.add("internal_errors")
            return []

    # -- counters ------------------------------------------------------------------------
    def counters(self) -> dict:
        """A JSON-serialisable snapshot of the counters (SPEC_device §9)."""
        snap = self._counters.snapshot()
        snap["signals"] = self._ctx.signals
        snap["joins_held"] = sum(len(h) for h in self._ctx.joins.values())
        snap["joins_started"] = self._ctx.joins_started
        snap["peers"] = len(self._peers)
        snap["held_now"] = sum(len(p.held) for _, p in self._peers.items())
        snap["messages_in_progress"] = len(self._tracker)
        return snap


__all__ = ["Device", "Out"]
