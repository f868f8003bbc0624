"""Links of the simulated network: bandwidth, latency, a FIFO queue, loss, counters.

Owns what one direction of one cable does to a burst of datagrams. A *burst* is one or
more consecutive datagrams of one message travelling together: in per-packet modes a
burst is one datagram; in the per-chunk mode it is a train of up to a chunk's worth.
``carry`` takes the time the burst's first datagram is ready to go (``head``) and the
time its last one is (``tail``), serialises the train behind whatever is queued, and
returns the times they are ready at the far end. The train keeps the packet-level
pipelining: the next hop may start on the first datagram while the rest are still on
the wire, and a slower upstream link spaces the datagrams out.

Serialisation counts each datagram's Ethernet/IP/UDP framing (``timing.FRAME_OVERHEAD``);
the byte counters count netdam datagram bytes, as a capture's flows do. A queue of
``queue_bytes`` drops (tail drop) a burst that does not fit; ``loss`` drops datagrams at
random (seeded). Both drops are counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from firmware_model.timing import FRAME_OVERHEAD


@dataclass(eq=False)
class Link:
    """One direction of one cable between two simulated nodes."""

    name: str
    kind: str                 #: "fabric", "scale-up" or "pcie"
    gbps: float               #: line rate, Gbit/s
    latency_ns: float         #: propagation + PHY + switch traversal, one way
    queue_bytes: int | None = None   #: None: unbounded
    loss: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)
    free_at: float = 0.0      #: when the wire is next idle
    packets: int = 0
    bytes: int = 0
    busy_ns: float = 0.0
    dropped: int = 0
    peak_queue_bytes: float = 0.0

    def __post_init__(self):
        if self.gbps <= 0 or self.latency_ns < 0:
            raise ValueError(f"link {self.name}: rate must be positive, latency >= 0")
        self.ns_per_byte = 8.0 / self.gbps

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
        ser = self.ser_ns(npackets, nbytes)
        first = ser / npackets
        start = head if head > self.free_at else self.free_at
        end = start + ser
        if tail + first > end:          # the upstream delivers slower than we send
            end = tail + first
        self.free_at = end
        self.packets += npackets
        self.bytes += nbytes
        self.busy_ns += ser
        lat = self.latency_ns
        return start + first + lat, end + lat

    def utilisation(self, elapsed_ns: float) -> float:
        return self.busy_ns / elapsed_ns if elapsed_ns > 0 else 0.0


__all__ = ["Link"]
