"""Fair service of received datagrams: one bounded FIFO per source, served round robin.

Owns the queue between a device's sockets and its engine (sans-I/O: no sockets, no
clocks). The device loop drains its socket quickly into this queue, keyed by where each
datagram came from, and then serves the sources in turn, one datagram (``pop``) or one
quantum of them (``pop_run``) each per round,
so a source that floods the device waits behind itself and not in front of everyone
else. Bounds: ``per_source`` datagrams per source, ``max_bytes`` in all; a datagram
over either bound is dropped and counted (``dropped_source_full`` / ``dropped_full``),
exactly as a full link would drop it, and its sender's retransmission deals with it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Hashable


class FairQueue:
    """Round-robin queue of ``(source, item)`` with per-source and total bounds."""

    def __init__(self, per_source: int = 256, max_bytes: int = 32 << 20):
        if per_source < 1 or max_bytes < 1:
            raise ValueError("per_source and max_bytes must be positive")
        self.per_source = per_source
        self.max_bytes = max_bytes
        self._queues: OrderedDict[Hashable, deque] = OrderedDict()
        self._bytes = 0
        self._len = 0
        self.counters = {"queued": 0, "dropped_source_full": 0, "dropped_full": 0,
                         "max_sources": 0, "max_queued": 0}

    def __len__(self) -> int:
        return self._len

    @property
    def bytes(self) -> int:
        return self._bytes

    def sources(self) -> int:
        return len(self._queues)

    def push(self, source: Hashable, item: Any, size: int) -> bool:
        """Queue ``item`` (``size`` bytes) from ``source``; False if it was dropped."""
        q = self._queues.get(source)
        c = self.counters
        if q is not None and len(q) >= self.per_source:
            c["dropped_source_full"] += 1
            return False
        if self._bytes + size > self.max_bytes:
            c["dropped_full"] += 1
            return False
        self._enqueue(source, q, ((item, size),), 1, size)
        return True

    def push_run(self, source: Hashable, items: list) -> list:
        """``push`` of each of ``items`` (each ``len(item)`` bytes) in turn, in one call
        (a burst from one source); returns the items that were dropped."""
        q = self._queues.get(source)
        room = self.per_source - (0 if q is None else len(q))
        take = items if room >= len(items) else items[:max(room, 0)]
        sizes = list(map(len, take))
        if self._bytes + sum(sizes) > self.max_bytes:      # near the bound: one by one
            return [it for it, size in zip(items, map(len, items))
                    if not self.push(source, it, size)]
        c = self.counters
        if len(take) < len(items):
            c["dropped_source_full"] += len(items) - len(take)
        if take:
            self._enqueue(source, q, zip(take, sizes), len(take), sum(sizes))
        return items[len(take):]

    def _enqueue(self, source: Hashable, q: deque | None, pairs, n: int,
                 nbytes: int) -> None:
        """Append ``n`` (item, size) ``pairs`` of ``nbytes`` in all, checked against the
        bounds, to the queue ``q`` of ``source`` (None: it has none yet)."""
        c = self.counters
        if q is None:
            q = self._queues[source] = deque()
            if len(self._queues) > c["max_sources"]:
                c["max_sources"] = len(self._queues)
        q.extend(pairs)
        self._bytes += nbytes
        self._len += n
        c["queued"] += n
        if self._len > c["max_queued"]:
            c["max_queued"] = self._len

    def pop_run(self, limit: int) -> tuple[Hashable, list[Any]] | None:
        """Up to ``limit`` datagrams of the next source in round-robin order (a quantum:
        each source gets at most ``limit`` per round), or None if empty."""
        if not self._queues:
            return None
        source, q = next(iter(self._queues.items()))
        items = []
        while q and len(items) < limit:
            item, size = q.popleft()
            self._bytes -= size
            items.append(item)
        self._len -= len(items)
        if q:
            self._queues.move_to_end(source)
        else:
            del self._queues[source]
        return source, items

    def pop(self) -> tuple[Hashable, Any] | None:
        """The next datagram in round-robin order over sources, or None if empty."""
        if not self._queues:
            return None
        source, q = next(iter(self._queues.items()))
        item, size = q.popleft()
        self._bytes -= size
        self._len -= 1
        if q:
            self._queues.move_to_end(source)
        else:
            del self._queues[source]
        return source, item


__all__ = ["FairQueue"]
