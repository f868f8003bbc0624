"""Simulated hosts: the unchanged collective generators, driven in virtual time.

Owns a host rank of the simulation: it runs a generator of
``netdam.collectives.algorithms`` (host-driven) or ``netdam.collectives.offload``
(in-network chain and aggregation tree) exactly as the communicator's progress engine
does, and moves its messages the way ``netdam.collectives.p2p`` does on the emulator:

- ``Send``: cut into pieces of the layout's slot size; a piece goes out once the
  receiver has a free slot for it (the credit word on this host's device says so), as a
  PUT_SIGNAL into the receiver's slot on the receiver's device that bumps the head word
  this host has there;
- ``Recv``: wait until the head word on this host's own device passes the piece, copy
  it out across PCIe, give the emptied slots back with an ATOMIC_FADD on the sender's
  credit word once they make a batch (``Layout.credit_batch``, half the slots; an empty
  message, a barrier's, takes no slot: it only bumps the head word);
- a callable (a device step of offload.py): it is called with a stand-in communicator
  (``SimComm``) whose agent and channels record what the step asks for (write this
  host's part into its device, send a chain descriptor, multicast, wait for a signal
  word, read the result back); the host then performs those actions in virtual time
  and resumes the generator.

Every datagram leaves through the host's PCIe link to its own device (the host-to-NIC
crossing); copies between a host and its own device cost ``TimingModel.pcie_ns``; a
host sees a word of its device change one PCIe crossing after it changed. In the
per-chunk mode a Send's pieces travel in groups of half the slots (one PUT_SIGNAL burst
and one credit per group) instead of one by one.
"""

from __future__ import annotations

import struct
from collections import deque

from netdam.agent import Addr
from netdam.collectives.schedule import Recv, ScheduleError, Send
from netdam.sim.base import WORLD_GROUP, Handle, World
from netdam.wire.codec import Packet
from netdam.wire.fields import DType, Flag, Opcode

_U64 = struct.Struct("<Q")   # an atomic operand, little-endian as in memory

WORD = 8


class Phantom:
    """A buffer that has a length and nothing else (the timing-only modes): slicing gives
    a shorter Phantom, assignment and reduction do nothing."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int):
        self.nbytes = nbytes

    def __len__(self) -> int:
        return self.nbytes

    def __getitem__(self, s: slice) -> "Phantom":
        return Phantom(len(range(*s.indices(self.nbytes))))

    def __setitem__(self, s, value) -> None:
        pass

    def __bytes__(self) -> bytes:
        raise TypeError("a Phantom buffer holds no data")


def no_reduce(dst, src) -> None:
    """The reducer of the timing-only modes."""


class SimHost:
    """One host rank: the generator, its p2p channels and its device actions."""

    def __init__(self, world: World, rank: int, port, home, *, data: bool,
                 group_pieces: int = 1):
        self.world, self.rank, self.port, self.home = world, rank, port, home
        self.member = world.host_member(rank)
        self.data = data
        self.group_pieces = group_pieces
        n = world.n
        self.sent, self.received = [0] * n, [0] * n   # pieces (what head words count)
        self.slots_sent, self.slots_received = [0] * n, [0] * n   # those not empty
        self.owed = [0] * n      # slots emptied and not yet given back, per sender
        self._outbox: deque = deque()
        self._credit_watch: set[int] = set()
        self._actions: deque = deque()
        self._recv = None
        self._req = rank << 20
        self.t = 0.0
        self.gen = None
        self.returned = False
        self.finished_at: float | None = None
        self.result = None
        self.comm = SimComm(self)

    # -- the generator ------------------------------------------------------------------
    def start(self, gen, t: float = 0.0) -> None:
        self.gen = gen
        self.world.q.at(t, self._step, t, None)

    def _step(self, t: float, value) -> None:
        t = self.t = max(t, self.t)
        gen = self.gen
        while True:
            try:
                op = gen.send(value)
            except StopIteration as stop:
                self.returned, self.result = True, stop.value
                self._maybe_finished(t)
                return
            value = None
            if isinstance(op, Send):
                self._send(op, t)
            elif isinstance(op, Recv):
                self._start_recv(op, t)
                return
            elif callable(op):
                op()
                self._run_actions(t)
                return
            else:
                raise ScheduleError(f"rank {self.rank} yielded {op!r}")

    def _maybe_finished(self, t: float) -> None:
        """Done when the generator returned and every piece has left (as on the emulator)."""
        if self.returned and not self._outbox and self.finished_at is None:
            self.finished_at = t
            self.world.finished += 1

    # -- requests -----------------------------------------------------------------------
    def next_req(self) -> int:
        self._req = (self._req + 1) & 0xFFFFFFFF
        return self._req

    def template(self, opcode: int, dest_member: int, offset: int, length: int,
                 **fields) -> Packet:
        return Packet(opcode=opcode, src=self.member, dst=dest_member, rkey=self.world.rkey,
                      addr=offset, length=length, req_id=self.next_req(), **fields)

    def request(self, template: Packet, data, t: float, parts: int = 1) -> Handle:
        h = Handle()
        self.port.send_message(template.dst - 1, template, data, h, t, parts)
        return h

    # -- p2p: sending -------------------------------------------------------------------
    def _pieces(self, nbytes: int) -> list[tuple[int, int, int]]:
        """(first piece, pieces, bytes) of each group a message of ``nbytes`` is sent in."""
        step, g = self.world.layout.slot_bytes, self.group_pieces
        total = max(1, -(-nbytes // step))
        return [(i, min(g, total - i), min(nbytes, (i + g) * step) - i * step)
                for i in range(0, total, g)]

    def _send(self, op: Send, t: float) -> None:
        data = op.data
        step = self.world.layout.slot_bytes
        for first, count, nbytes in self._pieces(len(data)):
            lo = first * step
            piece = bytes(data[lo:lo + nbytes]) if self.data else Phantom(nbytes)
            self._outbox.append((op.peer, piece, count))
        self._push(t)

    def _push(self, t: float) -> None:
        t = self.t = max(t, self.t)
        lay, w = self.world.layout, self.world
        blocked: set[int] = set()
        for _ in range(len(self._outbox)):
            peer, piece, count = self._outbox.popleft()
            k = self.slots_sent[peer]
            if peer in blocked or (len(piece) and k + count
                                   - self.home.word(lay.credits + peer * WORD) > lay.slots):
                blocked.add(peer)
                self._outbox.append((peer, piece, count))
                continue
            dest = w.device_member(peer)
            pkt = self.template(Opcode.PUT_SIGNAL, dest, lay.slot(self.rank, k), len(piece),
                                addr2=lay.heads + self.rank * WORD, imm=count,
                                flags=Flag.RELEASE)
            self.request(pkt, piece, t, count)
            self.sent[peer] += count
            if len(piece):       # an empty piece (a barrier's message) takes no slot
                self.slots_sent[peer] = k + count
        for peer in blocked:
            if peer not in self._credit_watch:
                self._credit_watch.add(peer)
                need = self.slots_sent[peer] + self._outbox_head(peer) - lay.slots
                self.home.watch(lay.credits + peer * WORD, need,
                                lambda t2, p=peer: self._credit(p, t2))
        self._maybe_finished(t)

    def _outbox_head(self, peer: int) -> int:
        return next(c for p, _, c in self._outbox if p == peer)

    def _credit(self, peer: int, t: float) -> None:
        self._credit_watch.discard(peer)
        self._push(t + self.world.poll_ns())

    # -- p2p: receiving -----------------------------------------------------------------
    def _start_recv(self, op: Recv, t: float) -> None:
        buf = bytearray(op.nbytes) if self.data else Phantom(op.nbytes)
        self._recv = (op, buf, deque(self._pieces(op.nbytes)))
        self._recv_next(t)

    def _recv_next(self, t: float) -> None:
        op, buf, groups = self._recv
        if not groups:
            self._recv = None
            self._step(t, memoryview(buf) if self.data else buf)
            return
        count = groups[0][1]
        lay = self.world.layout
        self.home.watch(lay.heads + op.peer * WORD, self.received[op.peer] + count,
                        self._recv_copy)

    def _recv_copy(self, t: float) -> None:
        op, buf, groups = self._recv
        first, count, nbytes = groups.popleft()
        w, lay = self.world, self.world.layout
        t = max(t + w.poll_ns(), self.t)
        self.received[op.peer] += count
        if nbytes:               # an empty piece took no slot: nothing to copy or give back
            k = self.slots_received[op.peer]
            if self.data:
                step = lay.slot_bytes
                for j in range(count):
                    lo = (first + j) * step
                    hi = min(lo + step, op.nbytes)
                    self.home.read_local(lay.slot(op.peer, k + j), memoryview(buf)[lo:hi])
            t += w.pcie_ns(nbytes)
            self.slots_received[op.peer] = k + count
            owed = self.owed[op.peer] + count
            if owed < lay.credit_batch:
                self.owed[op.peer] = owed
            else:                          # a batch of emptied slots goes back at once
                self.owed[op.peer] = 0
                dest = w.device_member(op.peer)
                pkt = self.template(Opcode.ATOMIC_FADD, dest, lay.credits + self.rank * WORD,
                                    8, dtype=DType.UINT64, payload=owed.to_bytes(8, "little"))
                self.request(pkt, pkt.payload, t)     # one datagram, whatever it adds
        self.t = t
        self._recv_next(t)

    # -- device steps of offload.py -----------------------------------------------------
    def record(self, *action) -> None:
        self._actions.append(action)

    def _run_actions(self, t: float) -> None:
        t = self.t = max(t, self.t)
        w = self.world
        while self._actions:
            kind, *args = self._actions.popleft()
            if kind == "write":
                offset, data = args
                self.home.write_local(offset, data)
                t += w.pcie_ns(len(data))
            elif kind == "pcie":
                t += w.pcie_ns(args[0])
            elif kind == "send":
                template, data, handle = args
                self.port.send_message(template.dst - 1, template, data, handle, t)
            elif kind == "wait":
                self.t = t
                args[0].then(self._run_actions, w.q)
                return
            elif kind == "word":
                self.t = t
                self.home.watch(args[0], args[1],
                                lambda t2: self._run_actions(t2 + w.poll_ns()))
                return
            elif kind == "each":
                self.t = t
                self._each(args[0])
                return
        self.t = t
        self._step(t, None)

    def _each(self, items: list) -> None:
        """For every (offset, value, step): once the word reaches the value, call step()
        and send what it asks for; carry on when every step ran and was answered."""
        w = self.world
        left = [len(items)]
        if not items:
            w.q.at(self.t, self._run_actions, self.t)
            return

        def answered(t: float) -> None:
            left[0] -= 1
            if left[0] == 0:
                self._run_actions(t)

        def fire(step, t: float) -> None:
            t = max(t + w.poll_ns(), self.t)
            before = len(self._actions)
            step()
            new = [self._actions.pop() for _ in range(len(self._actions) - before)][::-1]
            handles = []
            for kind, *args in new:
                if kind == "pcie":
                    t += w.pcie_ns(args[0])
                elif kind == "send":
                    template, data, handle = args
                    self.port.send_message(template.dst - 1, template, data, handle, t)
                    handles.append(handle)
                else:
                    raise ScheduleError(f"a word step may only read and send, not {kind!r}")
            self.t = max(self.t, t)
            if handles:
                _all(handles, answered, w.q)
            else:
                answered(t)

        for offset, value, step in items:
            self.home.watch(offset, value, lambda t, s=step: fire(s, t))


def _all(handles: list[Handle], then, q) -> None:
    """``then(t)`` once every handle is answered (t: the last answer)."""
    left = [len(handles)]
    latest = [0.0]

    def one(t: float) -> None:
        left[0] -= 1
        latest[0] = max(latest[0], t)
        if left[0] == 0:
            then(latest[0])

    for h in handles:
        h.then(one, q)


# -- the stand-in communicator offload.py's device steps talk to --------------------------
class SimRequest:
    """What ``reduce_chain_nb`` returns: ``wait()`` records a wait on it."""

    def __init__(self, host: SimHost, handle: Handle):
        self.host, self.handle = host, handle

    def wait(self, timeout: float | None = None) -> None:
        self.host.record("wait", self.handle)


class SimAgent:
    """Records the agent calls of offload.py's device steps (see netdam.agent.Agent)."""

    def __init__(self, host: SimHost):
        self.host = host

    def write(self, addr: Addr, data, timeout: float | None = None) -> None:
        if addr.device != self.host.home.member:
            raise ScheduleError("the simulator writes only a host's own device directly")
        self.host.record("write", addr.offset, data)

    def reduce_chain_nb(self, route, addr: Addr, length: int, *, dtype: int, op: int = 0,
                        signal: Addr | None = None, value: int = 1, group: int | None = None,
                        join: int | None = None, quiet: bool = False,
                        timeout: float | None = None) -> SimRequest:
        """``quiet`` is taken and left out: the simulated hosts take every ACK (a
        host's CPU time per ACK is not what the simulator models)."""
        route = tuple(int(d) for d in route)
        flags = (Flag.LAST_HOP_SIGNAL if signal is not None else 0) | \
                (Flag.RESULT_MCAST if group is not None else 0) | \
                (Flag.JOIN if join is not None else 0)
        to = route[0] if join is None else int(join)
        pkt = self.host.template(Opcode.REDUCE_FWD, to, addr.offset, length,
                                 dtype=dtype, redop=op, route=route, hop=0,
                                 group=group or 0, flags=flags,
                                 addr2=signal.offset if signal is not None else 0,
                                 imm=value)
        h = Handle()
        self.host.record("send", pkt, b"", h)
        return SimRequest(self.host, h)

    def answered(self, request: SimRequest) -> None:
        """A quiet request seen done: its ACK completes it here (see ``reduce_chain_nb``)."""

    def atomic_add_nb(self, addr: Addr, value: int, *,
                      timeout: float | None = None) -> SimRequest:
        operand = _U64.pack(value)      # the timing-only modes add the template's
        pkt = self.host.template(Opcode.ATOMIC_FADD, addr.device, addr.offset, 8,
                                 dtype=DType.UINT64, payload=operand)
        h = Handle()
        self.host.record("send", pkt, operand, h)
        return SimRequest(self.host, h)

    def reduce_chain(self, route, addr: Addr, length: int, **kw) -> None:
        self.reduce_chain_nb(route, addr, length, **kw).wait()

    def multicast(self, group: int, addr: Addr, data, **kw) -> None:
        self.multicast_nb(group, addr, data, **kw).wait()

    def multicast_nb(self, group: int, addr: Addr, data, *, signal: Addr | None = None,
                     value: int = 1, timeout: float | None = None,
                     flags: int = 0) -> SimRequest:
        extra = {}
        if signal is not None:
            flags |= Flag.LAST_HOP_SIGNAL
            extra = {"addr2": signal.offset, "imm": value}
        pkt = self.host.template(Opcode.MULTICAST, addr.device, addr.offset, len(data),
                                 group=group, flags=flags, **extra)
        h = Handle()
        self.host.record("send", pkt, data, h)
        return SimRequest(self.host, h)


class _SimHome:
    def __init__(self, host: SimHost):
        self.host = host

    def read_into(self, offset: int, out) -> None:
        self.host.home.read_local(offset, out)
        self.host.record("pcie", len(out))


class SimChannels:
    def __init__(self, host: SimHost):
        self.host = host
        self.home = _SimHome(host)

    def wait_word(self, offset: int, value: int, what: str = "") -> None:
        self.host.record("word", offset, value)

    def when_each(self, items, what: str = "") -> None:
        """Wait for several words, in any order: (offset, value, step) each; ``step()``
        runs once its word is reached and may read device memory and send."""
        self.host.record("each", list(items))

    def track(self, request: SimRequest) -> None:
        """A descriptor the host does not wait for: nothing to record."""


class SimComm:
    """The attributes offload.py reads from a communicator."""

    def __init__(self, host: SimHost):
        w = host.world
        self.size, self.rank, self.layout = w.n, host.rank, w.layout
        if not w.areas:     # one list for every rank (read only; n of them are n^2)
            w.areas.extend(Addr(w.device_member(r), 0) for r in range(w.n))
        self.areas = w.areas
        self.agent, self.channels = SimAgent(host), SimChannels(host)
        self.group, self.timeout = WORLD_GROUP, 30.0
        self.device_joins = True
        self.chain_blocks = 0
        self.start_rounds = [0] * w.n
        self.tree_radix = w.tree_radix
        self.tree_counts = [0] * w.n


__all__ = ["Phantom", "SimComm", "SimHost", "no_reduce"]
