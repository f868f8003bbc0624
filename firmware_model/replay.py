"""Per-peer delivery state: replay window, held requests, message progress (SPEC_device §4, §5).

Owns what a device remembers about the requests of each peer (keyed by the header's
``src``) so that a sequenced request (flag ACK_REQ) is applied at most once and answered
the same way every time it is seen:

- ``ReplayWindow``: the cumulative ack (first seq not yet completed contiguously) and, for
  every seq in ``[cum - size, cum + size)``, whether it is unseen, held, or completed with
  which status; plus the saved responses of non-idempotent requests that answer with data
  (atomics). Memory: ``2 * size`` bytes per peer plus the saved responses.
- ``PeerTable``: at most ``max_peers`` peers, least recently seen evicted first, and a peer
  silent for ``timeout`` seconds forgotten.
- ``MessageTracker``: how many distinct bytes of a fragmented message have been written,
  so a signal fires only after the last one (PUT_SIGNAL, REDUCE_FWD's last hop); bounded
  in count and expiring.

Sans-I/O: every method takes ``now``; nothing here reads a clock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Hashable

from netdam.wire.seqnum import seq_add, seq_diff

_SEQ_MASK = 0xFFFFFFFF
_EMPTY = 0
_HELD = 1
_DONE = 2          # slot value = _DONE + status


class Verdict(Enum):
    """What a sequenced request is, relative to its peer's window."""

    NEW = "new"                      # never seen: apply it
    DUPLICATE = "duplicate"          # completed before: answer from the saved outcome
    HELD = "held"                    # seen and waiting for an ordering condition
    OUT_OF_WINDOW = "out_of_window"  # too old or too far ahead: NAK SEQ_OUT_OF_WINDOW


class ReplayWindow:
    """Replay window of one peer (SPEC_device §4.1).

    The first sequenced request of a peer sets ``cum`` to its seq. A seq up to ``size``
    behind ``cum`` that was never seen (it arrived after a later one) is still new.
    """

    def __init__(self, size: int, first_seq: int):
        if not 1 <= size <= 1 << 30:
            raise ValueError(f"replay window {size} out of range 1..2^30")
        self.size = size
        self.cum = first_seq & 0xFFFFFFFF
        self._abs = 1 << 40                # absolute position of cum (never wraps)
        self._ring = bytearray(2 * size)
        self._saved: dict[int, Any] = {}   # seq -> saved responses

    def _index(self, seq: int) -> int:
        return (self._abs + seq_diff(seq, self.cum)) % len(self._ring)

    def classify(self, seq: int) -> Verdict:
        d = seq_diff(seq, self.cum)
        if d >= self.size or d < -self.size:
            return Verdict.OUT_OF_WINDOW
        ring = self._ring
        slot = ring[(self._abs + d) % len(ring)]      # _index, with d known
        if slot == _EMPTY:
            return Verdict.NEW
        return Verdict.HELD if slot == _HELD else Verdict.DUPLICATE

    def hold(self, seq: int) -> None:
        self._ring[self._index(seq)] = _HELD

    def forget(self, seq: int) -> None:
        """Back to unseen (a held request expired or was refused for lack of resources)."""
        if self.classify(seq) is not Verdict.OUT_OF_WINDOW:
            self._ring[self._index(seq)] = _EMPTY
            self._saved.pop(seq, None)

    def record(self, seq: int, status: int, saved: Any = None) -> None:
        """``seq`` completed with ``status``; keep ``saved`` to answer its duplicates."""
        ring, n = self._ring, len(self._ring)
        ring[self._index(seq)] = _DONE + int(status)
        if saved is not None:
            self._saved[seq] = saved
        at = self._abs
        if ring[at % n] < _DONE:
            return                        # a gap before it: cum stays
        size, cum, saved_ = self.size, self.cum, self._saved
        while ring[at % n] >= _DONE:
            # cum - size leaves the window and cum + size enters: they share a slot
            ring[(at + size) % n] = _EMPTY
            if saved_:
                saved_.pop((cum - size) & _SEQ_MASK, None)
            cum = (cum + 1) & _SEQ_MASK
            at += 1
        self.cum, self._abs = cum, at

    def all_new(self, first: int, count: int) -> bool:
        """Are ``first .. first + count - 1`` all in the window and never seen?"""
        d = seq_diff(first, self.cum)
        if d < -self.size or d + count > self.size:
            return False
        ring, n = self._ring, len(self._ring)
        i = (self._abs + d) % n
        if i + count <= n:
            return not any(ring[i:i + count])
        return not any(ring[i:]) and not any(ring[:i + count - n])

    def record_run(self, first: int, count: int, status: int = 0) -> None:
        """``record`` of ``first .. first + count - 1`` (all new), in one pass."""
        ring, n, size = self._ring, len(self._ring), self.size
        d = seq_diff(first, self.cum)
        i = (self._abs + d) % n
        mark = bytes([_DONE + int(status)]) * count
        if i + count <= n:
            ring[i:i + count] = mark
        else:
            ring[i:] = mark[:n - i]
            ring[:i + count - n] = mark[n - i:]
        if d == 0 and not self._saved:
            # the run starts at cum: cum moves past it; the slots of cum - size ..
            # (which become cum + size ..) are cleared, as record does one at a time
            j = (self._abs + size) % n
            if j + count <= n:
                ring[j:j + count] = bytes(count)
            else:
                ring[j:] = bytes(n - j)
                ring[:j + count - n] = bytes(j + count - n)
            self.cum = seq_add(self.cum, count)
            self._abs += count
        while ring[self._abs % n] >= _DONE:
            ring[(self._abs + size) % n] = _EMPTY
            self._saved.pop(seq_add(self.cum, -size), None)
            self.cum = seq_add(self.cum, 1)
            self._abs += 1

    def outcome(self, seq: int) -> tuple[int, Any]:
        """(status, saved responses or None) of a completed seq."""
        return self._ring[self._index(seq)] - _DONE, self._saved.get(seq)

    def done_before(self, seq: int) -> bool:
        """Has every seq before ``seq`` completed (the FENCE / RELEASE condition)?"""
        return seq_diff(seq, self.cum) <= 0


@dataclass
class Held:
    """A sequenced request waiting for an ordering condition (its payload is a copy)."""

    packet: Any
    deadline: float
    size: int


@dataclass
class PeerState:
    window: ReplayWindow
    last_seen: float
    held: dict[int, Held] = field(default_factory=dict)
    held_bytes: int = 0
    ack: Any = None          #: the ACK deferred to answer a run of requests (SPEC §4.7)
    ack_count: int = 0       #: requests that ACK answers (the run ends at its seq)
    ack_due: float = 0.0     #: when it goes out even if the run has not ended

    def acquire_pending_before(self, seq: int, acquire_flag: int) -> bool:
        """Is a held ACQUIRE request of this peer earlier than ``seq``?"""
        return any(h.packet.flags & acquire_flag and seq_diff(s, seq) < 0
                   for s, h in self.held.items())

    def held_in_order(self) -> list[int]:
        cum = self.window.cum
        return sorted(self.held, key=lambda s: seq_diff(s, cum))


class PeerTable:
    """Per-peer state, bounded (``max_peers``, LRU) and expiring (``timeout`` seconds)."""

    def __init__(self, window: int, max_peers: int, timeout: float):
        if max_peers < 1 or timeout <= 0:
            raise ValueError("max_peers and peer_timeout must be positive")
        ReplayWindow(window, 0)  # validates the size
        self.window = window
        self.max_peers = max_peers
        self.timeout = timeout
        self._peers: OrderedDict[int, PeerState] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, peer: int) -> PeerState | None:
        return self._peers.get(peer)

    def touch(self, peer: int, seq: int, now: float) -> tuple[PeerState, list[PeerState]]:
        """The state of ``peer`` (created with ``seq`` as its base if unknown), marked
        seen at ``now``; also returns the states evicted to make room."""
        evicted: list[PeerState] = []
        st = self._peers.get(peer)
        if st is None:
            while len(self._peers) >= self.max_peers:
                evicted.append(self._peers.popitem(last=False)[1])
                self.evicted += 1
            st = self._peers[peer] = PeerState(ReplayWindow(self.window, seq), now)
        else:
            self._peers.move_to_end(peer)
            st.last_seen = now
        return st, evicted

    def items(self):
        return self._peers.items()

    def expire(self, now: float) -> list[tuple[int, PeerState]]:
        """Forget peers silent for ``timeout``; returns them."""
        gone = []
        while self._peers:
            peer, st = next(iter(self._peers.items()))
            if now - st.last_seen < self.timeout:
                break
            del self._peers[peer]
            gone.append((peer, st))
        self.expired += len(gone)
        return gone

    def next_deadline(self) -> float | None:
        if not self._peers:
            return None
        return next(iter(self._peers.values())).last_seen + self.timeout


@dataclass
class _Progress:
    length: int
    started: float
    info: Any
    spans: list[tuple[int, int]] = field(default_factory=list)
    received: int = 0

    def add(self, start: int, end: int) -> None:
        spans = self.spans
        i = bisect_left(spans, (start, start))
        if i and spans[i - 1][1] >= start:
            i -= 1
        lo, hi, covered, j = start, end, 0, i
        while j < len(spans) and spans[j][0] <= end:
            s, e = spans[j]
            covered += max(0, min(e, end) - max(s, start))
            lo, hi = min(lo, s), max(hi, e)
            j += 1
        spans[i:j] = [(lo, hi)]
        self.received += (end - start) - covered


class MessageTracker:
    """Distinct bytes written per message, to fire a signal after the last one.

    At most ``max_messages`` messages in progress; one older than ``timeout`` is dropped
    (its signal never fires; the sender's retransmission or deadline deals with it).
    """

    def __init__(self, max_messages: int = 4096, timeout: float = 30.0):
        self.max_messages = max_messages
        self.timeout = timeout
        self._msgs: OrderedDict[Hashable, _Progress] = OrderedDict()
        self.expired = 0

    def __len__(self) -> int:
        return len(self._msgs)

    def has_room(self, key: Hashable) -> bool:
        return key in self._msgs or len(self._msgs) < self.max_messages

    def add(self, key: Hashable, length: int, start: int, end: int, now: float,
            info: Any = None) -> Any | None:
        """Record bytes ``[start, end)`` of message ``key`` (``length`` bytes in all).

        Returns the message's ``info`` (as first given) when its last byte arrived, else
        None. Callers check ``has_room`` first; a full table raises OverflowError.
        """
        prog = self._msgs.get(key)
        if prog is None:
            if end - start >= length:
                return info
            if len(self._msgs) >= self.max_messages:
                raise OverflowError("message table full")
            prog = self._msgs[key] = _Progress(length, now, info)
        if end > start:
            prog.add(start, end)
        if prog.received >= prog.length:
            del self._msgs[key]
            return prog.info
        return None

    def expire(self, now: float) -> int:
        n = 0
        while self._msgs:
            key, prog = next(iter(self._msgs.items()))
            if now - prog.started < self.timeout:
                break
            del self._msgs[key]
            n += 1
        self.expired += n
        return n

    def next_deadline(self) -> float | None:
        if not self._msgs:
            return None
        return next(iter(self._msgs.values())).started + self.timeout


__all__ = ["Verdict", "ReplayWindow", "Held", "PeerState", "PeerTable", "MessageTracker"]
