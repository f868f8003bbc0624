"""The receiver's side of the byte window: the credit a device advertises (SPEC §4.7, §8.2).

Owns how many bytes of requests each sender may have in flight towards one UDP socket.
Two things bound it, and each source gets the smaller:

- the socket's receive buffer: ``share`` of it (the rest is room for small requests, a
  newcomer's first datagram and answers to the device's own forwards) split equally
  among the bulk senders (sources that sent a run of at least half a full datagram's
  bytes within the last ``idle`` seconds), each part counted in what the kernel charges
  for that source's datagrams: a 9000-byte datagram costs the buffer about 16.6 KiB;
- the device's queue for one source (``per_source`` datagrams, the fair queue's bound):
  ``share`` of it, in that source's datagrams.

A source that is not a bulk sender yet is offered the part it would get once it joins,
so its first burst does not overfill what the others were promised. Never less than
one of its datagrams. Sans-I/O: the device process tells it what it served from whom
(``served``, once per run of datagrams) and stamps ``units_for(source)`` into the ACKs
it sends there over UDP; a sender applies the latest one
(``netdam.transport.reliability``).
"""

from __future__ import annotations

from typing import Hashable

from netdam.wire.fields import CREDIT_UNIT

#: bytes of the socket buffer's bookkeeping per datagram (sk_buff and shared info), and
#: the largest datagram the kernel keeps in one power-of-two allocation (larger ones go
#: in pages and are charged about their size)
_OVERHEAD = 576
_LINEAR_MAX = 32 << 10
_MAX_UNITS = 0xFFFF          # the u16 of an ACK's group field


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
    in front of a queue of ``per_source`` datagrams per source; ``mtu`` is the datagram
    size assumed for a source not seen yet."""

    def __init__(self, rcvbuf: int, mtu: int, *, per_source: int = 256, share: float = 0.75,
                 idle: float = 0.2, period: float = 0.01):
        if min(rcvbuf, mtu, per_source) < 1 or not 0 < share <= 1 or idle <= 0 \
                or period <= 0:
            raise ValueError("rcvbuf, mtu, per_source, idle and period must be positive, "
                             "share in (0, 1]")
        self.budget = int(rcvbuf * share)         #: charged bytes, all bulk senders
        self.queue = max(1, int(per_source * share))   #: datagrams per source
        self.mtu = mtu
        self.bulk = mtu // 2                      #: bytes of a run that make a bulk sender
        self.idle, self.period = idle, period
        self._seen: dict[Hashable, tuple[float, int]] = {}   # source -> (when, size)
        # bulk sender -> (when, datagram size) of its last bulk run
        self._bulk: dict[Hashable, tuple[float, int]] = {}
        self._due = 0.0

    @property
    def active(self) -> int:
        """Bulk senders as of the last update."""
        return len(self._bulk)

    @property
    def bytes(self) -> int:
        """What a bulk sender of ``mtu``-byte datagrams is offered now, in bytes."""
        return self._part(len(self._bulk), self.mtu) * CREDIT_UNIT

    def units_for(self, source: Hashable) -> int:
        """The credit for ``source``, in ``CREDIT_UNIT``: what an ACK to it carries.
        A bulk sender's is counted in the datagrams of its bulk runs, so a small request
        between them (a credit, a signal) does not shrink it to that request's size;
        another source's in its last datagram's size."""
        bulk = self._bulk.get(source)
        if bulk is not None:
            size = bulk[1]
        else:
            seen = self._seen.get(source)
            size = self.mtu if seen is None else seen[1]
        return self._part(len(self._bulk) + (bulk is None), size)

    def served(self, source: Hashable, nbytes: int, largest: int, now: float) -> None:
        """A run of datagrams from ``source``, ``nbytes`` in all and the largest of
        ``largest`` bytes (its datagram size: only a message's last fragment is
        shorter), was served at ``now``. A run of at least ``bulk`` bytes makes it a
        bulk sender."""
        self._seen[source] = (now, max(1, largest))
        if nbytes >= self.bulk:
            self._bulk[source] = (now, max(1, largest))
        self.tick(now)

    def tick(self, now: float) -> None:
        """Forget sources that went quiet (at most every ``period`` seconds)."""
        if now >= self._due:
            self.update(now)

    def update(self, now: float) -> None:
        quiet = now - self.idle
        self._bulk = {s: v for s, v in self._bulk.items() if v[0] >= quiet}
        self._seen = {s: v for s, v in self._seen.items() if v[0] >= quiet}
        self._due = now + self.period

    def _part(self, senders: int, size: int) -> int:
        by_buffer = self.budget // max(1, senders) // datagram_charge(size) * size
        by_queue = self.queue * size
        floor = -(-size // CREDIT_UNIT)
        return min(_MAX_UNITS, max(floor, min(by_buffer, by_queue) // CREDIT_UNIT))


__all__ = ["Credit", "datagram_charge"]
