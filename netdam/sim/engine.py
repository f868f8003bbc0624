"""The simulator's virtual clock and event queue.

Owns time inside a simulation: a heap of (time, tick, callback, args) and ``now``, the
time of the event being run. Times are float nanoseconds from the start of the run. No
wall clock anywhere: the same run gives the same answer on any machine, however loaded.
Ties run in the order they were scheduled (the tick), so a run is deterministic.

A burst of events scheduled together (``batch()``: a device replicating a multicast to
a thousand members) goes on the heap as one sorted *run* that stands for all of them,
keyed by its earliest (time, tick): the heap pops exactly the same events in the same
order, but stays small (at 1,024 ranks a million multicast copies are pending at once,
and popping from a heap that size costs cache misses at every level).
"""

from __future__ import annotations

import heapq
from contextlib import contextmanager
from typing import Callable


class SimError(RuntimeError):
    """The simulated system broke a rule (a NAK, a deadlock, a wrong result): a bug or a
    configuration the model cannot run, never a user typo (that is a UsageError)."""


class EventQueue:
    """``at(t, fn, *args)`` schedules; ``run()`` drains in time order."""

    def __init__(self):
        self.now = 0.0
        self.events = 0          #: events run so far (a measure of simulation work)
        self._heap: list = []
        self._tick = 0
        self._held: list | None = None   # events of an open batch()

    def at(self, t: float, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` at time ``t`` (never earlier than now)."""
        self._tick += 1
        event = (t if t > self.now else self.now, self._tick, fn, args)
        if self._held is None:
            heapq.heappush(self._heap, event)
        else:
            self._held.append(event)

    @contextmanager
    def batch(self):
        """Events scheduled inside go on the heap as one run (same order as ``at``)."""
        if self._held is not None:      # nested: the outer batch takes them
            yield
            return
        self._held = run = []
        try:
            yield
        finally:
            self._held = None
            if len(run) > 1:
                run.sort(reverse=True)  # (time, tick) unique: the next event is last
                head = run[-1]
                # a run's entry: its head's (time, tick), no callback, the run itself
                heapq.heappush(self._heap, (head[0], head[1], None, run))
            elif run:
                heapq.heappush(self._heap, run[0])

    def run(self, until: float = float("inf"), stop: Callable[[], bool] | None = None
            ) -> float:
        """Run events until none is left, ``until`` is passed or ``stop()`` is true
        (``stop`` is asked after every event: keep it cheap). An event of a run counts as
        the one event it is; the run's entry stays on the heap under its next event's
        (time, tick) (one ``heapreplace``, not a pop and a push)."""
        heap, pop, replace = self._heap, heapq.heappop, heapq.heapreplace
        n = 0
        while heap and heap[0][0] <= until:
            t, _, fn, args = heap[0]
            if fn is None:              # a run: its earliest event
                run = args
                t, _, fn, args = run.pop()
                if run:
                    head = run[-1]
                    replace(heap, (head[0], head[1], None, run))
                else:
                    pop(heap)
            else:
                pop(heap)
            self.now = t
            n += 1
            fn(*args)
            if stop is not None and stop():
                break
        self.events += n
        return self.now

    def __len__(self) -> int:
        return sum(len(e[3]) if e[2] is None else 1 for e in self._heap)


__all__ = ["EventQueue", "SimError"]
