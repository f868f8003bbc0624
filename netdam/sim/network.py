"""The simulated network: moves bursts of datagrams hop by hop in virtual time.

Owns the walk of a burst along its route (one event per hop, ``Link.carry`` deciding the
times; or, in the per-chunk mode, every hop booked at once when the burst leaves, in the
first gap of each link's calendar, which saves the events), delivery to the endpoint at
the far end, and the per-flow counters: packets and bytes per (source member,
destination member, opcode), counted once per datagram sent, as a capture's flows count
them (one int per flow, ``datagrams << 48 | bytes``: a large run counts millions of
flows, and an int is smaller than a list and needs no new object to add to). The
per-chunk mode's acks nobody waits for are tallied and put on their links at the end
(``settle``), and its multicasts are counted once for all their copies (``fan_out``).
Endpoints (simulated devices and hosts, packet or model mode) register by node id and
receive ``deliver(head, tail, body)``."""

from __future__ import annotations

from collections import Counter
from itertools import chain

from netdam.sim.engine import EventQueue
from netdam.sim.topology import Topology


def flow_id(src: int, dst: int, opcode: int) -> int:
    """The flow (source member, destination member, opcode) as one int: a large run
    counts millions of flows, and an int key is smaller and hashes faster than a tuple
    (members stay below 2**16, opcodes below 2**8). Hot callers inline the expression."""
    return (src << 24) | (dst << 8) | opcode


_BYTES = (1 << 48) - 1     # the bytes of a packed count


class Network:
    def __init__(self, q: EventQueue, topo: Topology, *, hop_events: bool = True):
        self.q, self.topo = q, topo
        self.hop_events = hop_events    #: False: carry every hop at once (per-chunk mode)
        self.endpoints: dict[int, object] = {}
        self._deliver: dict[int, object] = {}
        #: flow_id(src member, dst member, opcode) -> datagrams << 48 | bytes
        self.flow_counts: dict[int, int] = {}
        self.dropped = 0
        self._tallies: dict[int, int] = {}   # flow << 16 | plane -> datagrams << 48 | bytes
        #: multicasts counted once for all their copies (``fan_out``): flows_of expands them
        self.fans: list[tuple] = []
        self._fans_settled = 0

    def attach(self, node: int, endpoint) -> None:
        self.endpoints[node] = endpoint
        self._deliver[node] = endpoint.deliver    # one bound method, not one per burst

    @property
    def flows(self) -> dict[tuple[int, int, int], tuple[int, int]]:
        """(src member, dst member, opcode) -> (datagrams, bytes), in first-counted order
        (tallied answers count when ``settle`` puts them on their links)."""
        return flows_of(self.flow_counts, self.fans)

    def send(self, a: int, b: int, head: float, tail: float, npackets: int, nbytes: int,
             body, label: int = 0, flow: int | None = None) -> None:
        """Put a burst on the wire at node ``a`` for node ``b`` (``flow``: a flow_id)."""
        if flow is not None:
            counts = self.flow_counts
            counts[flow] = counts.get(flow, 0) + (npackets << 48) + nbytes
        route = self.topo.route(a, b, label)
        if not route:
            self.q.at(head, self._deliver[b], head, tail, body)
        elif not self.hop_events:
            now = self.q.now
            for link in route:
                head, tail = link.reserve(head, tail, npackets, nbytes, now)
            self.q.at(head, self._deliver[b], head, tail, body)
        else:
            i = 0
            if a >= self.topo.n:     # a host's own PCIe uplink: only it sends there, in
                times = route[0].carry(head, tail, npackets, nbytes)   # time order: exact
                if times is None:
                    self.dropped += npackets
                    return
                head, tail = times
                i = 1
                if len(route) == 1:
                    self.q.at(head, self._deliver[b], head, tail, body)
                    return
            self.q.at(head, self._hop, route, i, head, tail, npackets, nbytes, body, b)

    def account(self, a: int, b: int, head: float, tail: float, npackets: int, nbytes: int,
                *, label: int = 0, flow: int | None = None) -> tuple[float, float]:
        """A burst of answers nobody needs to see arrive (acks in the per-chunk mode):
        counted on every link of its route (``Link.account``), no event; returns its
        (head, tail) arrival times."""
        if flow is not None:
            counts = self.flow_counts
            counts[flow] = counts.get(flow, 0) + (npackets << 48) + nbytes
        for link in self.topo.route(a, b, label):
            head, tail = link.account(head, tail, npackets, nbytes)
        return head, tail

    def tally(self, flow: int, npackets: int, nbytes: int, label: int = 0) -> None:
        """Count a burst of answers whose arrival nobody waits for (the per-chunk mode's
        acks between devices) on ``flow`` (a flow_id: its ends are the route): added up
        per flow and plane, put on the flow and its links by ``settle`` (serialisation is
        linear in datagrams and bytes, so the sums are exact)."""
        key = (flow << 16) | (label % self.topo.planes)
        tallies = self._tallies
        tallies[key] = tallies.get(key, 0) + (npackets << 48) + nbytes

    def fan_out(self, src: int, members: list[int], head: float, tail: float,
                npackets: int, nbytes: int, body, opcode: int, answer: int,
                answer_bytes: int, label: int = 0) -> None:
        """The per-chunk mode's multicast: a burst from member ``src`` to every other
        member of ``members`` (one copy each, booked on its route as any burst, delivered
        as one run of events), its flows and the copies' answers back (``answer``
        opcode, ``answer_bytes`` each) counted once for all of them: the flows when asked
        for (``flows_of``), the answers on their links at ``settle``."""
        self.fans.append((src, members, opcode, npackets, nbytes, answer, answer_bytes,
                          label % self.topo.planes))
        q, route, deliver = self.q, self.topo.route, self._deliver
        a, now = src - 1, q.now
        with q.batch():                 # one heap entry for all the copies (engine.py)
            for m in members:
                if m != src:
                    b = m - 1
                    h, t = head, tail
                    for link in route(a, b, label):
                        h, t = link.reserve(h, t, npackets, nbytes, now)
                    q.at(h, deliver[b], h, t, body)

    def settle(self) -> None:
        """Put the tallied answers on their flows and links (before reading either)."""
        self._settle_fans()
        route, counts = self.topo.route, self.flow_counts
        for key, both in self._tallies.items():
            flow = key >> 16
            counts[flow] = counts.get(flow, 0) + both
            npackets, nbytes = both >> 48, both & _BYTES
            for link in route((flow >> 24) - 1, ((flow >> 8) & 0xFFFF) - 1, key & 0xFFFF,
                              False):
                link.packets += npackets
                link.bytes += nbytes
        self._tallies.clear()

    def _settle_fans(self) -> None:
        """The answers to the copies ``fan_out`` counted, every member's to the source, on
        the links of their routes: how often each link is used, then added at once."""
        route = self.topo.route
        uses: dict[tuple[int, int], Counter] = {}     # (datagrams, bytes) -> link: times
        for src, members, _, npackets, _, _, nbytes, plane in self.fans[self._fans_settled:]:
            used = uses.get((npackets, nbytes))
            if used is None:
                used = uses[(npackets, nbytes)] = Counter()
            dst = src - 1
            used.update(chain.from_iterable(route(m - 1, dst, plane, False)
                                            for m in members if m != src))
        self._fans_settled = len(self.fans)
        for (npackets, nbytes), used in uses.items():
            for link, times in used.items():
                link.packets += times * npackets
                link.bytes += times * nbytes

    def _hop(self, route, i, head, tail, npackets, nbytes, body, dst) -> None:
        times = route[i].carry(head, tail, npackets, nbytes)
        if times is None:
            self.dropped += npackets
            return
        head, tail = times
        i += 1
        if i < len(route):
            self.q.at(head, self._hop, route, i, head, tail, npackets, nbytes, body, dst)
        else:
            self.q.at(head, self._deliver[dst], head, tail, body)


def flows_of(counts: dict[int, int], fans: list[tuple] = ()
             ) -> dict[tuple[int, int, int], tuple[int, int]]:
    """``Network.flow_counts`` and ``fans`` as (src member, dst member, opcode) ->
    (datagrams, bytes)."""
    if fans:
        counts = dict(counts)
        for src, members, opcode, npackets, nbytes, answer, answer_bytes, _ in fans:
            there, back = (npackets << 48) + nbytes, (npackets << 48) + answer_bytes
            for m in members:
                if m != src:
                    key = (src << 24) | (m << 8) | opcode
                    counts[key] = counts.get(key, 0) + there
                    key = (m << 24) | (src << 8) | answer
                    counts[key] = counts.get(key, 0) + back
    return {(k >> 24, (k >> 8) & 0xFFFF, k & 0xFF): (v >> 48, v & _BYTES)
            for k, v in counts.items()}


__all__ = ["Network", "flow_id", "flows_of"]
