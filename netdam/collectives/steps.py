"""Steps that wait: what an algorithm's generator yields when it must wait for memory
words that others bump or store (a device's signal word, a peer's posted word).

Owns the contract between the algorithms (offload.py, scaleup.py, moe.py) and the
progress engine (``Request`` in request.py). A ``Gated`` step is ready or not:

- ``ready()`` reads each word it waits for once and never blocks longer; a word found
  short is noted with the rank's channels, so the rank's next sleep watches it (the home
  device rings a doorbell when it arrives) or sleeps as long as a device wait does;
- once ready, the request runs ``then`` (if any) and resumes the generator with what it
  returns.

A request whose step is not ready moves on: its other requests, of this communicator
and of the others, advance meanwhile (MPI's progress rule), and a non-blocking call
returns at once, so an in-network ``all_reduce_nb`` leaves the host free while the
devices reduce. Called (``step()``), a step waits as long as it must and then runs
``then``: the blocking path of a call with nothing queued, and what the simulator does
(its stand-in channels record the wait, netdam.sim.hosts).
"""

from __future__ import annotations

import time


class Gated:
    """A step to run once ``ready()``; ``then`` (a callable, or None) runs after."""

    __slots__ = ()
    then = None

    def ready(self) -> bool:
        raise NotImplementedError

    def wait(self) -> None:
        """Block until ready (raises ``NetdamTimeout`` at the communicator's timeout)."""
        raise NotImplementedError

    def stalled(self) -> str:
        """What the step still waits for, for a timeout's message."""
        raise NotImplementedError

    def proceed(self):
        """Run ``then`` (once ready); its value resumes the generator."""
        return None if self.then is None else self.then()

    def __call__(self):
        self.wait()
        return self.proceed()


class DeviceWords(Gated):
    """A wait for home words the devices bump (``WordWait``, ``WhenEach``): the Pacer
    learns how long it took, and while it lasts the rank dozes as ``wait_word`` does."""

    __slots__ = ("comm", "what", "since")

    def __init__(self, comm, what: str):
        self.comm, self.what = comm, what
        self.since: float | None = None

    def _settle(self, done: bool) -> bool:
        """``ready()``'s answer, once its words have been read (``done``: all in)."""
        ch = self.comm.channels
        if done:
            if self.since is not None:
                ch.waited_on_device(self.what, self.since)
            return True
        if self.since is None:
            self.since = time.monotonic()
        ch.waiting_on_device(self.what, self.since)
        return False


class WordWait(DeviceWords):
    """Ready once the home word at ``offset`` (in this rank's area) reaches ``value``:
    a device's signal word counting finished blocks, a start word counting ranks in."""

    __slots__ = ("offset", "value", "then")

    def __init__(self, comm, offset: int, value: int, what: str, then=None):
        super().__init__(comm, what)
        self.offset, self.value, self.then = offset, value, then

    def ready(self) -> bool:
        return self._settle(self.comm.channels.reached(self.offset, self.value))

    def wait(self) -> None:
        self.comm.channels.wait_word(self.offset, self.value, self.what)

    def stalled(self) -> str:
        word = self.comm.channels.home.word(self.offset)
        return f"{self.what}: at {word} of {self.value}"


class WhenEach(DeviceWords):
    """Run ``step()`` for each ``(offset, value, step)`` once the home word at ``offset``
    reaches ``value``, in whatever order they get there (a fixed order could wait on a
    rank that waits on this one); ready once every step has run."""

    __slots__ = ("pending",)

    def __init__(self, comm, watches, what: str):
        super().__init__(comm, what)
        self.pending = list(watches)

    def ready(self) -> bool:
        self.pending = self.comm.channels.run_reached(self.pending)
        return self._settle(not self.pending)

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        self.comm.channels.when_each(pending, self.what)

    def stalled(self) -> str:
        return f"{self.what}: {len(self.pending)} words short"


__all__ = ["DeviceWords", "Gated", "WhenEach", "WordWait"]
