"""The vocabulary of sans-I/O collective algorithms, and an in-memory driver.

Owns the contract between algorithms and whatever moves their bytes. An algorithm is a
generator that yields ``Send`` (post a message; never blocks the algorithm) and ``Recv``
(resume with the message's bytes) and returns when its rank is done. The real driver
(``netdam.collectives.p2p``) moves messages through NetDAM device memory; the simulator
moves them through a modeled network; ``run_local`` below runs every rank of a world in
one process, which is how the algorithms are tested against NumPy without any I/O.

Messages between one (sender, receiver) pair are delivered in the order they were sent
(like MPI's non-overtaking rule); ``tag`` only labels them for logs and captures.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Generator


@dataclass(frozen=True)
class Send:
    peer: int
    data: Any  # bytes-like; the driver copies or sends it before the next yield returns
    tag: str = ""


@dataclass(frozen=True)
class Recv:
    peer: int
    nbytes: int
    tag: str = ""


Algorithm = Generator[Send | Recv, Any, Any]


class ScheduleError(RuntimeError):
    """An algorithm broke the contract (deadlock, wrong size, unknown peer): our bug."""


def run_local(algorithms: list[Algorithm]) -> list[Any]:
    """Run one generator per rank to completion in this process; return their results.

    Raises ScheduleError if the ranks deadlock or a message's size is not what the
    receiver expects.
    """
    n = len(algorithms)
    queues: dict[tuple[int, int], deque] = {}
    waiting: list[Recv | None] = [None] * n
    results: list[Any] = [None] * n
    done = [False] * n
    pending_value: list[Any] = [None] * n

    def step(r: int) -> bool:
        """Advance rank r as far as it goes; return True if it moved."""
        moved = False
        while not done[r]:
            want = waiting[r]
            if want is not None:
                q = queues.get((want.peer, r))
                if not q:
                    return moved
                data = q.popleft()
                if len(data) != want.nbytes:
                    raise ScheduleError(f"rank {r} expected {want.nbytes} bytes from "
                                        f"{want.peer}, got {len(data)}")
                waiting[r] = None
                pending_value[r] = memoryview(data)
            try:
                op = algorithms[r].send(pending_value[r])
            except StopIteration as stop:
                done[r], results[r] = True, stop.value
                return True
            pending_value[r] = None
            moved = True
            if isinstance(op, Send):
                if not 0 <= op.peer < n or op.peer == r:
                    raise ScheduleError(f"rank {r} sends to bad peer {op.peer}")
                queues.setdefault((r, op.peer), deque()).append(bytes(op.data))
            elif isinstance(op, Recv):
                if not 0 <= op.peer < n or op.peer == r:
                    raise ScheduleError(f"rank {r} receives from bad peer {op.peer}")
                waiting[r] = op
            else:
                raise ScheduleError(f"rank {r} yielded {op!r}")
        return moved

    for r in range(n):  # prime: run each to its first yield
        try:
            op = next(algorithms[r])
        except StopIteration as stop:
            done[r], results[r] = True, stop.value
            continue
        if isinstance(op, Send):
            queues.setdefault((r, op.peer), deque()).append(bytes(op.data))
        elif isinstance(op, Recv):
            waiting[r] = op
        else:
            raise ScheduleError(f"rank {r} yielded {op!r}")
    while not all(done):
        if not any([step(r) for r in range(n)]):
            stuck = {r: waiting[r] for r in range(n) if not done[r]}
            raise ScheduleError(f"deadlock: ranks waiting {stuck}")
    leftover = {k: len(q) for k, q in queues.items() if q}
    if leftover:
        raise ScheduleError(f"messages never received: {leftover}")
    return results


def drive(algorithm: Algorithm, send: Callable[[Send], None],
          recv: Callable[[Recv], Any]) -> Any:
    """Run one rank's algorithm with blocking ``recv`` and non-blocking ``send``."""
    value = None
    while True:
        try:
            op = algorithm.send(value)
        except StopIteration as stop:
            return stop.value
        if isinstance(op, Send):
            send(op)
            value = None
        elif isinstance(op, Recv):
            value = recv(op)
        else:
            raise ScheduleError(f"algorithm yielded {op!r}")
