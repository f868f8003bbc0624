"""What one operation of the host agent is addressed to and how it ends (SPEC §4, §7).

Owns ``Addr`` (a global address: device + offset, with the region's keys), ``Handle``
(one operation in flight: ``done()`` / ``wait(timeout)``) and the two ways an operation
fails: ``NakError`` (a device refused it; carries the SPEC §7 status) and
``NetdamTimeout`` (no answer within the bound; names the device and the operation).
The agent (netdam.agent) creates and completes handles; callers only wait on them.
``SignalWaiter`` is the operation behind ``wait_signal``: READs of a signal word until
it reaches a value or the handle's deadline.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netdam.errors import NetdamError
from netdam.wire.fields import Status

if TYPE_CHECKING:
    from netdam.agent import Agent


class NetdamTimeout(NetdamError, TimeoutError):
    """No answer within the bound: names the device and the operation (status TIMEOUT)."""

    status = Status.TIMEOUT


class NakError(NetdamError):
    """A device refused a request: ``status`` is the SPEC §7 code."""

    def __init__(self, status: int, device: int, what: str):
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.device = device
        name = getattr(self.status, "name", str(status))
        super().__init__(f"{what} on device {device} was refused: {name}")


@dataclass(frozen=True)
class Addr:
    """A global address: byte ``offset`` in the memory of member ``device``. ``rkey`` and
    ``pkey`` default to those of the device's region that contains the offset."""

    device: int
    offset: int = 0
    rkey: int | None = None
    pkey: int | None = None

    def __add__(self, n: int) -> "Addr":
        return Addr(self.device, self.offset + n, self.rkey, self.pkey)


class Handle:
    """One operation in flight. ``done()`` never blocks; ``wait(timeout)`` drives the
    agent until the operation finished and returns its result or raises its error."""

    __slots__ = ("agent", "what", "device", "remaining", "result", "error", "finished",
                 "queued", "deadline", "timeout", "__weakref__")

    def __init__(self, agent: "Agent", what: str, device: int, timeout: float):
        self.agent = agent
        self.what = what
        self.device = device
        self.remaining = 0
        self.result = None
        self.error: BaseException | None = None
        self.finished = False
        self.queued = False
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def done(self) -> bool:
        return self.finished

    def wait(self, timeout: float | None = None):
        """The result (READ: the bytes; atomics: the old value; else None)."""
        if not self.finished:
            self.agent._wait(self, timeout)
        self.agent._consume(self)
        if self.error is not None:
            raise self.error
        return self.result

    def __repr__(self) -> str:
        state = "done" if self.finished else "pending"
        return f"<Handle {self.what} device={self.device} {state}>"


_U64 = struct.Struct("<Q")


class SignalWaiter:
    """Polls a signal word with READs until it reaches ``value`` or the handle's
    deadline; ``finish(handle, error=None)`` completes the handle (the agent's). Given
    ``word`` (a mapped view of the signal word, on this node's shared memory), it looks
    there instead and sends no READ: ``watch`` then names the word for the agent's
    sleeps."""

    __slots__ = ("h", "signal", "value", "interval", "read", "next_poll", "finish", "word")

    def __init__(self, h: Handle, signal: Addr, value: int, interval: float, finish,
                 word=None):
        self.h, self.signal, self.value, self.interval = h, signal, value % (1 << 64), interval
        self.finish = finish
        self.read: Handle | None = None
        self.word = word
        self.next_poll = 0.0 if word is None else h.deadline

    @property
    def watch(self) -> tuple[int, int, int] | None:
        """(device, offset, value) of a word looked at in place, else None."""
        return None if self.word is None else (self.signal.device, self.signal.offset,
                                               self.value)

    def step(self, agent: "Agent", now: float) -> bool:
        """Advance; True when the waiter is finished (its handle completed)."""
        h = self.h
        if self.word is not None:
            word = int(self.word[0])
            if word >= self.value:
                h.result = word
                self.finish(h)
                return True
        elif self.read is not None and self.read.finished:
            r, self.read = self.read, None
            if r.error is not None:
                self.finish(h, r.error)
                return True
            (word,) = _U64.unpack_from(r.result)
            if word >= self.value:
                h.result = word
                self.finish(h)
                return True
            self.next_poll = now + self.interval
        if now >= h.deadline:
            agent.counters["timeouts"] += 1
            self.finish(h, NetdamTimeout(f"{h.what} on device {h.device}: signal not "
                                         f"reached within {h.timeout:g} s"))
            return True
        if self.word is None and self.read is None and now >= self.next_poll:
            self.read = agent.read_nb(self.signal, 8, timeout=max(h.deadline - now, 0.001))
            self.read.queued = True   # internal: never shows in the completion queue
            self.next_poll = h.deadline
        return False
