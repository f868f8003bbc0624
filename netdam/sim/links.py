"""Links of the simulated network: bandwidth, latency, a FIFO queue, loss, counters.

Owns what one direction of one cable does to a burst of datagrams. A *burst* is one or
more consecutive datagrams of one message travelling together: in per-packet modes a
burst is one datagram; in the per-chunk mode it is a train of up to a chunk's worth.
``carry`` takes the time the burst's first datagram is ready to go (``head``) and the
time its last one is (``tail``), serialises the train behind whatever is queued, and
returns the times they are ready at the far end. The train keeps the packet-level
pipelining: the next hop may start on the first datagram while the rest are still on
the wire, and a slower upstream link spaces the datagrams out (the link keeps only the
train's serialisation time for itself: other bursts use the gaps).

Serialisation counts each datagram's Ethernet/IP/UDP framing (``timing.FRAME_OVERHEAD``);
the byte counters count netdam datagram bytes, as a capture's flows do. A queue of
``queue_bytes`` drops (tail drop) a burst that does not fit; ``loss`` drops datagrams at
random (seeded). Both drops are counted.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field

from firmware_model.timing import FRAME_OVERHEAD

_LONG_WALK = 8   # gaps a reserve() search went through before it remembers the stretch


@dataclass(eq=False, slots=True)
class Link:
    """One direction of one cable between two simulated nodes."""

    name: str
    kind: str                 #: "fabric", "scale-up" or "pcie"
    gbps: float               #: line rate, Gbit/s
    latency_ns: float         #: propagation + PHY + switch traversal, one way
    queue_bytes: int | None = None   #: None: unbounded
    loss: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)
    free_at: float = 0.0      #: when the wire is next idle (carry; reserve keeps a calendar)
    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    peak_queue_bytes: float = 0.0
    # reserve(): booked intervals [start, end), sorted and disjoint; arrays of doubles,
    # not lists of float objects: the search walks them, and at 1,024 ranks a list's
    # floats lie scattered over a gigabyte (a cache miss each)
    _starts: array = field(default_factory=lambda: array("d"), init=False, repr=False)
    _ends: array = field(default_factory=lambda: array("d"), init=False, repr=False)
    ns_per_byte: float = field(default=0.0, init=False, repr=False)
    # reserve(): a stretch [_skip_from, _skip_to) of the calendar whose every free gap is
    # shorter than _skip_ser (found by a long search; gaps only ever shrink, so it stays
    # true): a later search for a burst at least that long goes past it in one step
    _skip_from: float = field(default=0.0, init=False, repr=False)
    _skip_to: float = field(default=0.0, init=False, repr=False)
    _skip_ser: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self):
        if self.gbps <= 0 or self.latency_ns < 0:
            raise ValueError(f"link {self.name}: rate must be positive, latency >= 0")
        self.ns_per_byte = 8.0 / self.gbps

    @property
    def busy_ns(self) -> float:
        """Time the wire was busy: its datagrams' bytes and framing (exact integers),
        converted once."""
        return (self.bytes + self.packets * FRAME_OVERHEAD) * self.ns_per_byte

    def ser_ns(self, npackets: int, nbytes: int) -> float:
        """Time on the wire of ``npackets`` datagrams totalling ``nbytes``."""
        return (nbytes + npackets * FRAME_OVERHEAD) * self.ns_per_byte

    def carry(self, head: float, tail: float, npackets: int, nbytes: int
              ) -> tuple[float, float] | None:
        """Send a burst; (head, tail) ready times at the far end, or None if dropped."""
        backlog = (self.free_at - head) / self.ns_per_byte if self.free_at > head else 0.0
        if backlog > self.peak_queue_bytes:
            self.peak_queue_bytes = backlog
        if self.queue_bytes is not None and backlog + nbytes > self.queue_bytes:
            self.dropped += npackets
            return None
        if self.loss and self.rng.random() < self.loss:
            self.dropped += npackets
            return None
        wire = nbytes + npackets * FRAME_OVERHEAD
        ser = wire * self.ns_per_byte
        first = ser / npackets
        start = head if head > self.free_at else self.free_at
        end = start + ser
        self.free_at = end              # work-conserving: the gaps of a slow train are
        if tail + first > end:          # free for other bursts; this one still cannot
            end = tail + first          # finish before its last datagram has come in
        self.packets += npackets
        self.bytes += nbytes
        lat = self.latency_ns
        return start + first + lat, end + lat

    def reserve(self, head: float, tail: float, npackets: int, nbytes: int, now: float
                ) -> tuple[float, float]:
        """``carry`` for a burst booked ahead of time (the per-chunk mode books every hop
        of a route when the burst leaves): the link keeps a calendar of booked intervals
        and puts the burst in the first gap at or after ``head`` that holds it, so a
        burst booked later but arriving earlier still goes first. Intervals over before
        ``now`` are forgotten. No queue limit or loss here (validate() refuses them)."""
        starts, ends = self._starts, self._ends
        if ends and ends[0] <= now:
            drop = bisect_right(ends, now)
            del starts[:drop], ends[:drop]
        wire = nbytes + npackets * FRAME_OVERHEAD
        ser = wire * self.ns_per_byte
        first = ser / npackets
        start = head
        n = len(ends)
        if not n or start >= ends[-1]:          # after everything booked: the common case
            i = n
        else:
            i = bisect_right(ends, start)      # the first interval still busy at head
            walk_from = start
            if self._skip_from <= start < self._skip_to and ser >= self._skip_ser:
                # no gap before _skip_to holds this burst: past the interval busy there
                walk_from = self._skip_from
                i = bisect_right(ends, self._skip_to)
                start = ends[i]
                i += 1
            first_i = i
            while i < n and starts[i] < start + ser:
                start = ends[i]                # does not fit before it: go after it
                i += 1
            if i - first_i >= _LONG_WALK:      # remember the stretch it went through
                self._skip_from, self._skip_to, self._skip_ser = walk_from, starts[i - 1], ser
        end = start + ser
        if i > 0 and ends[i - 1] == start:     # touches the one before: extend it
            ends[i - 1] = end
            if i < n and starts[i] == end:
                ends[i - 1] = ends[i]
                del starts[i], ends[i]
        elif i < n and starts[i] == end:
            starts[i] = start
        else:
            starts.insert(i, start)
            ends.insert(i, end)
        if tail + first > end:
            end = tail + first
        self.packets += npackets
        self.bytes += nbytes
        lat = self.latency_ns
        return start + first + lat, end + lat

    def account(self, head: float, tail: float, npackets: int, nbytes: int
                ) -> tuple[float, float]:
        """Count a burst of small answers (the per-chunk mode's acks) without booking
        the wire for them: they add under 1 % of its busy time and would only cut the
        calendar into slivers. The burst itself goes at line rate, never queued."""
        wire = nbytes + npackets * FRAME_OVERHEAD
        ser = wire * self.ns_per_byte
        self.packets += npackets
        self.bytes += nbytes
        lat = self.latency_ns
        return head + ser / npackets + lat, max(tail, head + ser) + lat

    def utilisation(self, elapsed_ns: float) -> float:
        return self.busy_ns / elapsed_ns if elapsed_ns > 0 else 0.0


__all__ = ["Link"]
