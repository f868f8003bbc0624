"""What the simulated devices and hosts of every mode share.

Owns the shared context of one run (``World``: event queue, network, timing, MTU, the
communicator's memory layout, member ids), the device's processing pipeline in virtual
time (a device executes one datagram at a time; each costs what
``firmware_model.timing.TimingModel.cost`` says), the watch on a device's memory words
that stands for a host polling its own device over PCIe, and the completion handle of a
host request.

Member ids follow the emulator: device of rank r is member r + 1, host of rank r is
member n + 1 + r; node id = member id - 1 (see topology.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from firmware_model.timing import TimingModel
from netdam.collectives.p2p import Layout
from netdam.sim.engine import EventQueue
from netdam.sim.network import Network
from netdam.sim.topology import Topology
from netdam.wire.fields import CAPS, Cap

#: opcode -> is a response (ACK, NAK, READ_RESP, ATOMIC_RESP)
IS_RESPONSE = bytes(1 if op in CAPS and CAPS[op] & Cap.RESPONSE else 0 for op in range(256))
#: the multicast group of the world (every device), as LocalCluster sets it up
WORLD_GROUP = 1


@dataclass
class World:
    """Everything the endpoints of one run share."""

    q: EventQueue
    topo: Topology
    net: Network
    timing: TimingModel
    mtu: int
    layout: Layout
    n: int
    rkey: int = 0x5EED0001
    tree_radix: int = 2        #: fan-in of the aggregation tree (the communicator's default)
    devices: list = field(default_factory=list)
    hosts: list = field(default_factory=list)
    finished: int = 0          #: hosts whose collective is done
    costs: dict = field(default_factory=dict)   #: device_cost memo
    areas: list = field(default_factory=list)   #: every rank's device memory (an Addr)

    def device_member(self, rank: int) -> int:
        return rank + 1

    def host_member(self, rank: int) -> int:
        return self.n + 1 + rank

    @staticmethod
    def node(member: int) -> int:
        return member - 1

    def pcie_ns(self, nbytes: int) -> float:
        """A host's own copy to or from its device's memory (DMA across PCIe)."""
        return self.timing.pcie_ns(nbytes)

    def poll_ns(self) -> float:
        """From a word changing in device memory to the host seeing it (one crossing)."""
        return self.timing.pcie_crossing_ns


def device_cost(world: "World", opcode: int, payload: int, length: int) -> float:
    """Busy time of one datagram: its payload, or the whole message for a descriptor
    (the same rule as the instruction table's ``operand_bytes``). Memoised per run."""
    operand = payload if payload else length
    key = operand << 8 | opcode                 # one int: no tuple per datagram
    c = world.costs.get(key)
    if c is None:
        c = world.costs[key] = world.timing.cost(opcode, operand)
    return c


class DeviceBase:
    """Pipeline and word watches of a simulated device (packet or model mode)."""

    def __init__(self, world: World, rank: int):
        self.world, self.rank = world, rank
        self.member = world.device_member(rank)
        self.node = rank
        self.busy_until = 0.0
        self.busy_ns = 0.0
        self._watches: dict[int, list[tuple[int, Callable[[float], None]]]] = {}

    def process(self, head: float, tail: float, npackets: int, cost: float
                ) -> tuple[float, float]:
        """Execute a burst arriving over [head, tail]: (first done, last done)."""
        start = head if head > self.busy_until else self.busy_until
        first = start + cost
        last = first + (npackets - 1) * cost
        self.busy_until = last          # work-conserving, like a link (links.py)
        if tail + cost > last:
            last = tail + cost
        self.busy_ns += npackets * cost
        return first, last

    # -- memory words the host watches -----------------------------------------------------
    def word(self, offset: int) -> int:
        raise NotImplementedError

    def watch(self, offset: int, value: int, then: Callable[[float], None]) -> None:
        """Call ``then(t)`` once the word at ``offset`` is at least ``value``."""
        if self.word(offset) >= value:
            self.world.q.at(self.world.q.now, then, self.world.q.now)
        else:
            self._watches.setdefault(offset, []).append((value, then))

    def _fire(self, t: float) -> None:
        if not self._watches:
            return
        for offset in list(self._watches):
            self._fire_word(offset, t)

    def _fire_word(self, offset: int, t: float) -> None:
        """Run (at ``t``) the watches on ``offset`` that its word now satisfies."""
        waiting = self._watches.get(offset)
        if waiting is None:
            return
        w = self.word(offset)
        if len(waiting) == 1 and w < waiting[0][0]:     # the usual case: not yet
            return
        ready = [cb for v, cb in waiting if w >= v]
        if ready:
            rest = [(v, cb) for v, cb in waiting if w < v]
            if rest:
                self._watches[offset] = rest
            else:
                del self._watches[offset]
            for cb in ready:
                self.world.q.at(t, cb, t)


class Handle:
    """Completion of one host request: every datagram of it answered."""

    __slots__ = ("pending", "done_at", "_then")

    def __init__(self):
        self.pending = 0
        self.done_at: float | None = None
        self._then: list[Callable[[float], None]] = []

    def answered(self, npackets: int, t: float, q: EventQueue) -> None:
        self.pending -= npackets
        if self.pending == 0:
            self.done_at = t
            for cb in self._then:
                q.at(t, cb, t)
            self._then.clear()

    def then(self, cb: Callable[[float], None], q: EventQueue) -> None:
        if self.done_at is not None:
            q.at(max(self.done_at, q.now), cb, max(self.done_at, q.now))
        else:
            self._then.append(cb)


__all__ = ["DeviceBase", "Handle", "IS_RESPONSE", "WORLD_GROUP", "World", "device_cost"]
