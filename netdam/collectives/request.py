"""A collective in flight: the progress engine that runs an algorithm's generator.

Owns ``Request``: what a communicator queues for each collective (communicator.py's
``_start``) and what a non-blocking call returns. ``_advance`` runs the generator until
it blocks, handing each step to its executor: a ``Send`` or ``Recv`` (schedule.py) to
the rank's channels (p2p.py), a ``Gated`` wait for device words (steps.py) to its own
``ready``, a callable (a device step of an offloaded algorithm, offload.py) is called.
``test`` and ``wait`` drive the communicator's queue and, by MPI's progress rule, the
other communicators of its family.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from netdam.agent import NetdamTimeout
from netdam.collectives.schedule import Recv, ScheduleError, Send
from netdam.collectives.steps import Gated

if TYPE_CHECKING:
    from netdam.collectives.communicator import Communicator


class Request:
    """A collective in flight: ``test()`` advances it without blocking, ``wait()`` until
    done (returns its result)."""

    def __init__(self, comm: "Communicator", name: str, gen, finish: Callable[[], Any]):
        self.comm, self.name, self._gen, self._finish = comm, name, gen, finish
        self._value: Any = None
        self._recv: tuple[Recv, bytearray, int] | None = None
        self._gated: Gated | None = None   # a step waiting for words (steps.py)
        self._started = False
        self._returned = False
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None

    def _advance(self) -> bool:
        """Run until blocked; True when the algorithm has returned and every piece it sent
        has left this rank (a piece still waiting for credit would otherwise be stranded
        when the rank moves on to another communicator)."""
        ch = self.comm.channels
        if self._returned:
            return not ch.queued_pieces
        while True:
            if self._recv is not None:
                op, buf, i = self._recv
                i = ch.recv_some(op, buf, i)
                if i < ch.pieces(op.nbytes):
                    self._recv = (op, buf, i)
                    return False
                self._recv, self._value = None, memoryview(buf)
            if self._gated is not None:
                if not self._gated.ready():
                    return False
                step, self._gated = self._gated, None
                self._value = step.proceed()
            try:
                op = self._gen.send(self._value) if self._started else next(self._gen)
            except StopIteration:
                self._returned = True
                return not ch.queued_pieces
            self._started, self._value = True, None
            if isinstance(op, Send):
                ch.send(op)
            elif isinstance(op, Recv):
                self._recv = (op, bytearray(op.nbytes), 0)
            elif isinstance(op, Gated):    # runs once the words it waits for are in
                self._gated = op
            elif callable(op):             # a step of an offloaded algorithm
                self._value = op()
            else:
                raise ScheduleError(f"{self.name} yielded {op!r}")

    def test(self) -> bool:
        self.comm._progress()
        if not self.finished:
            self.comm._progress_others()
        return self.finished

    def done(self) -> bool:
        return self.test()

    def wait(self, timeout: float | None = None):
        bound = self.comm.timeout if timeout is None else timeout
        deadline = time.monotonic() + bound
        while not self.finished:
            self.comm._progress()
            if self.finished:
                break
            self.comm._progress_others()
            if time.monotonic() > deadline:
                self.comm.broken = self.comm.broken or f"{self.name} timed out"
                waiting = "" if self._gated is None else f" ({self._gated.stalled()})"
                raise NetdamTimeout(f"rank {self.comm.rank}: {self.name} did not finish "
                                    f"within {bound:g} s{waiting}")
            self.comm.channels.idle()
        if self.error is not None:
            raise self.error
        return self.result


__all__ = ["Request"]
