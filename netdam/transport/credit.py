"""The receiver's side of the byte window: the credit a device advertises (SPEC §4.7, §8.2).

Owns how many bytes of requests each sender may have in flight towards one UDP socket:
the sources that are active (that sent a run of at least half a full datagram's bytes
within the last ``idle`` seconds), the share of the socket's receive buffer they may fill
together (``share``; the rest is room for small requests, a newcomer's first datagram and
answers to the device's own forwards), and the kernel's charge for one datagram, which
that buffer is counted in. Every active source gets an equal part, never less than one
full datagram. Sans-I/O: the device process tells it which source it served, how many
bytes and when (``served``, once per run of datagrams) and stamps ``units`` into the
ACKs it sends over UDP; a sender applies the latest one (``netdam.transport.reliability``).
"""

from __future__ import annotations

from typing import Hashable

from netdam.wire.fields import CREDIT_UNIT

#: bytes of the socket buffer's bookkeeping per datagram (sk_buff and shared info), and
#: the largest datagram the kernel keeps in one power-of-two allocation (larger ones go
#: in pages and are charged about their size)
_OVERHEAD = 576
_LINEAR_MAX = 32 << 10


def datagram_charge(size: int) -> int:
    """Bytes a Linux receive buffer is charged for one UDP datagram of ``size`` bytes
    (its "truesize"), rounded up so a credit built on it never overfills the buffer: a
    small datagram is charged its power-of-two allocation (a 9000-byte one about 16.6
    KiB), a large one its size plus about a KiB."""
    if size + _OVERHEAD <= _LINEAR_MAX:
        return (1 << (size + _OVERHEAD // 2 - 1).bit_length()) + _OVERHEAD // 2
    return size + 3 * _OVERHEAD


class Credit:
    """The credit of one receive socket of ``rcvbuf`` bytes (as the kernel reports it)
    whose senders use datagrams of ``mtu`` bytes."""

    def __init__(self, rcvbuf: int, mtu: int, *, share: float = 0.75, idle: float = 0.05,
                 period: float = 0.01):
        if rcvbuf < 1 or mtu < 1 or not 0 < share <= 1 or idle <= 0 or period <= 0:
            raise ValueError("rcvbuf, mtu, idle and period must be positive, share in (0, 1]")
        self.room = int(rcvbuf // datagram_charge(mtu) * mtu * share)   #: bytes, all senders
        self.floor = -(-mtu // CREDIT_UNIT)          # one full datagram, in units
        self.bulk = mtu // 2                         #: bytes of a run that make a sender
        self.idle, self.period = idle, period
        self._last: dict[Hashable, float] = {}       # source -> when it was last served
        self._due = 0.0
        self.units = self._share(1)                  #: what an ACK carries now

    @property
    def active(self) -> int:
        """Sources that sent a bulk run within the last ``idle`` seconds (as of the last
        update)."""
        return len(self._last)

    @property
    def bytes(self) -> int:
        """The credit in bytes."""
        return self.units * CREDIT_UNIT

    def served(self, source: Hashable, nbytes: int, now: float) -> None:
        """A run of ``nbytes`` from ``source`` was served at ``now``. A run of at least
        ``bulk`` bytes makes it an active sender; a new one shrinks every part at once.
        Smaller runs (single requests, polls) live off the headroom."""
        if nbytes < self.bulk:
            return
        known = source in self._last
        self._last[source] = now
        if not known:
            self.update(now)

    def tick(self, now: float) -> None:
        """Forget sources that went quiet (at most every ``period`` seconds)."""
        if now >= self._due:
            self.update(now)

    def update(self, now: float) -> None:
        quiet = now - self.idle
        last = self._last
        for source in [s for s, t in last.items() if t < quiet]:
            del last[source]
        self.units = self._share(max(1, len(last)))
        self._due = now + self.period

    def _share(self, senders: int) -> int:
        return min(0xFFFF, max(self.floor, self.room // senders // CREDIT_UNIT))


__all__ = ["Credit", "datagram_charge"]
