"""Receive buffers a device reuses, so taking a datagram off its socket allocates nothing.

Owns the slots a device process receives UDP datagrams into (``recvfrom_into``) and
the rule for taking them back. A datagram waits in the fair queue and passes through
the engine as a memoryview of its slot; the engine copies whatever it keeps past
``receive_many`` (a held request, a payload it must be able to retransmit), the same
contract the shared-memory rings already rely on. The pool checks that contract
instead of trusting it: a slot whose bytes are still exported when it comes back
(something kept a view of them) is left to whoever holds it and never written again,
and a fresh slot takes its place (counted as ``retained``). Slots are created on first
need, up to ``max_slots``; past that the caller receives into a new ``bytes`` (counted
as ``exhausted``), so a long queue costs allocations, never datagrams.
"""

from __future__ import annotations


class RecvPool:
    """Up to ``max_slots`` reusable receive buffers of ``slot_bytes`` each."""

    __slots__ = ("slot_bytes", "max_slots", "_free", "counters")

    def __init__(self, slot_bytes: int, max_slots: int = 256):
        if slot_bytes < 1 or max_slots < 0:
            raise ValueError("slot_bytes must be positive and max_slots not negative")
        self.slot_bytes = slot_bytes
        self.max_slots = max_slots
        self._free: list[bytearray] = []
        self.counters = {"slots": 0, "retained": 0, "exhausted": 0}

    @property
    def free(self) -> int:
        """Slots ready to receive into."""
        return len(self._free)

    def take(self) -> bytearray | None:
        """A slot to receive into, or None when every slot is out (allocate instead)."""
        if self._free:
            return self._free.pop()
        c = self.counters
        if c["slots"] < self.max_slots:
            c["slots"] += 1
            return bytearray(self.slot_bytes)
        c["exhausted"] += 1
        return None

    def unused(self, slot: bytearray) -> None:
        """A slot taken but not received into (nothing was waiting)."""
        self._free.append(slot)

    def give(self, view) -> None:
        """Hand back the datagram ``view`` (a memoryview of a slot, as the receive made
        it; anything else, such as a ``bytes`` from an exhausted pool, is ignored). The
        view is released; its slot is reused only if nothing else still refers to it."""
        self.give_many((view,))

    def give_many(self, views) -> None:
        """``give`` of each view, in one call."""
        free = self._free
        for view in views:
            if type(view) is not memoryview:
                continue
            slot = view.obj
            try:
                view.release()
                slot.append(0)      # refused while any view of the slot is alive
            except BufferError:
                self._retire()
                continue
            del slot[-1]
            free.append(slot)

    def _retire(self) -> None:
        """A slot stays with whoever kept a view of it; a fresh one replaces it."""
        self.counters["retained"] += 1
        self.counters["slots"] -= 1


__all__ = ["RecvPool"]
