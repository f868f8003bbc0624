"""The simulator's virtual clock and event queue.

Owns time inside a simulation: a heap of (time, tick, callback, args) and ``now``, the
time of the event being run. Times are float nanoseconds from the start of the run. No
wall clock anywhere: the same run gives the same answer on any machine, however loaded.
Ties run in the order they were scheduled (the tick), so a run is deterministic.
"""

from __future__ import annotations

import heapq
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

    def at(self, t: float, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` at time ``t`` (never earlier than now)."""
        self._tick += 1
        heapq.heappush(self._heap, (t if t > self.now else self.now, self._tick, fn, args))

    def run(self, until: float = float("inf"), stop: Callable[[], bool] | None = None
            ) -> float:
        """Run events until none is left, ``until`` is passed or ``stop()`` is true
        (``stop`` is asked after every event: keep it cheap)."""
        heap, pop = self._heap, heapq.heappop
        n = 0
        while heap and heap[0][0] <= until:
            t, _, fn, args = pop(heap)
            self.now = t
            n += 1
            fn(*args)
            if stop is not None and stop():
                break
        self.events += n
        return self.now

    def __len__(self) -> int:
        return len(self._heap)


__all__ = ["EventQueue", "SimError"]
