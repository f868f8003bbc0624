"""Fragmentation and reassembly of messages larger than one datagram (SPEC §2.4).

Owns how a message is cut into self-describing fragments (each carries the message's
``req_id``, total ``length`` and its own ``frag_off``; all but the last carry
MORE_FRAGS and a multiple of PAYLOAD_ALIGN bytes) and how a receiver puts them back
together with bounded memory. Sans-I/O: the reassembler is fed packets and ``now``.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, fields
from typing import Hashable, Iterator

from netdam.wire.codec import Packet, WireError, overhead
from netdam.wire.fields import MAX_DATAGRAM, MIN_MTU, PAYLOAD_ALIGN, Flag, Status


_MORE = int(Flag.MORE_FRAGS)
#: the header fields all fragments of a message share, in ``Packet``'s field order
#: between ``flags`` and ``length`` (each fragment is then one positional constructor)
_SHARED = ("status", "dtype", "redop", "hop", "src", "dst", "pkey", "group", "rkey", "seq",
           "ack", "req_id", "addr", "addr2", "imm")
assert tuple(f.name for f in fields(Packet)) == (
    "opcode", "flags", *_SHARED, "length", "frag_off", "route", "payload", "version")


def max_payload(mtu: int, nhops: int = 0) -> int:
    """Payload bytes one datagram of ``mtu`` bytes carries (a multiple of PAYLOAD_ALIGN)."""
    if not MIN_MTU <= mtu <= MAX_DATAGRAM:
        raise ValueError(f"mtu {mtu} outside {MIN_MTU}..{MAX_DATAGRAM}")
    room = mtu - overhead(nhops)
    return room - room % PAYLOAD_ALIGN


def fragment(template: Packet, data, mtu: int, *, base: int = 0) -> Iterator[Packet]:
    """Cut ``data`` into packets shaped like ``template`` (SPEC §2.4).

    Each fragment's payload is a view of ``data`` (no copy). ``base`` is added to every
    ``frag_off`` when ``data`` is a slice of a larger message; ``length`` is then the
    template's own. A zero-length message is one packet with no payload.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    t = template
    length = t.length if base else total
    step = max_payload(mtu, len(t.route))
    if total == 0:
        yield t.copy(frag_off=base, length=length, payload=b"", flags=int(t.flags) & ~_MORE)
        return
    same = tuple(getattr(t, name) for name in _SHARED)   # one constructor per fragment
    op, route, version = t.opcode, t.route, t.version
    more, last = int(t.flags) | _MORE, int(t.flags) & ~_MORE
    for off in range(0, total, step):
        end = min(off + step, total)
        flags = more if end < total or base + end < length else last
        yield Packet(op, flags, *same, length, base + off, route, view[off:end], version)


class Fragment:
    """One fragment of an outgoing message, cheap enough to make by the thousand: the
    message's header ``head`` (a Packet shared by all of its fragments, never changed
    once cut) and the fields a fragment has of its own. Any other header field reads
    through to ``head``, so a Fragment encodes, compares and prints like the Packet
    ``packet()`` returns; the reliability core sets ``seq`` and ``flags`` on it, and a
    burst stamps the fragments of one head together (``UdpEndpoint.send_many``)."""

    __slots__ = ("head", "req_id", "flags", "seq", "frag_off", "payload")

    def __init__(self, head: Packet, flags: int, frag_off: int, payload, seq: int = 0):
        self.head = head
        self.req_id = head.req_id        # read per fragment by bursts: a slot, not a lookup
        self.flags = flags
        self.seq = seq
        self.frag_off = frag_off
        self.payload = payload

    def __getattr__(self, name: str):
        if name == "head":               # not set yet: no recursion through head
            raise AttributeError(name)
        return getattr(self.head, name)

    @property
    def payload_len(self) -> int:
        return len(self.payload)

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    def packet(self) -> Packet:
        """This fragment as a Packet of its own."""
        return self.head.copy(flags=self.flags, seq=self.seq, frag_off=self.frag_off,
                              payload=self.payload)

    def copy(self, **changes) -> "Fragment":
        """A copy with some of its own fields changed (the head's, ``req_id`` among
        them, are not its to change)."""
        f = Fragment(self.head, self.flags, self.frag_off, self.payload, self.seq)
        for name, value in changes.items():
            setattr(f, name, value)
        return f

    def __eq__(self, other) -> bool:
        if isinstance(other, Fragment):
            other = other.packet()
        return self.packet() == other

    __hash__ = None

    def __repr__(self) -> str:
        return f"Fragment({self.packet()!r})"


def fragments(template: Packet, data, mtu: int) -> Iterator[Fragment]:
    """``fragment`` as Fragments: the same datagrams, one shared head for all of them."""
    view = memoryview(data).cast("B")
    total = len(view)
    step = max_payload(mtu, len(template.route))
    head = template.copy(length=total, payload=b"", frag_off=0)
    more, last, seq = int(template.flags) | _MORE, int(template.flags) & ~_MORE, template.seq
    if total == 0:
        yield Fragment(head, last, 0, b"", seq)
        return
    for off in range(0, total, step):
        end = off + step
        yield Fragment(head, more if end < total else last, off, view[off:end], seq)


def fragment_count(length: int, mtu: int, nhops: int = 0) -> int:
    """How many datagrams ``fragment`` makes of a message of ``length`` bytes."""
    return max(1, -(-length // max_payload(mtu, nhops)))


@dataclass
class _Partial:
    buf: bytearray | memoryview
    started: float
    spans: list[tuple[int, int]] = field(default_factory=list)  # merged [start, end)
    received: int = 0
    own: int = 0          # bytes of buf that count against the budget (0: the caller's)

    def add(self, start: int, end: int) -> int:
        """Record [start, end); return how many bytes were new."""
        spans = self.spans
        if not spans or spans[-1][1] == start:   # in order: the common case, no search
            if spans:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
            self.received += end - start
            return end - start
        i = bisect_left(spans, (start, start))
        if i and spans[i - 1][1] >= start:
            i -= 1
        new_start, new_end, covered = start, end, 0
        j = i
        while j < len(spans) and spans[j][0] <= end:
            s, e = spans[j]
            covered += max(0, min(e, end) - max(s, start))
            new_start, new_end = min(new_start, s), max(new_end, e)
            j += 1
        spans[i:j] = [(new_start, new_end)]
        fresh = (end - start) - covered
        self.received += fresh
        return fresh


class Reassembler:
    """Puts fragmented messages back together, bounded in count, bytes and time.

    ``add`` returns the complete message (a bytearray of ``length`` bytes) when its
    last missing byte arrives, else None. Duplicate and overlapping fragments are
    harmless. Raises WireError(BUSY) when the bounds are full and WireError(MALFORMED)
    for a fragment that contradicts its message; either way nothing else is disturbed.
    """

    def __init__(self, *, max_messages: int = 1024, max_bytes: int = 256 << 20,
                 timeout: float = 10.0):
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._partial: dict[Hashable, _Partial] = {}
        self._bytes = 0
        self.expired = 0

    @property
    def pending(self) -> int:
        return len(self._partial)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def add(self, pkt: Packet, now: float, key: Hashable | None = None,
            into=None) -> bytearray | memoryview | None:
        """Add a fragment. ``into``: a writable buffer of the message's length that the
        fragments are written to directly (no reassembly buffer of our own; it is then
        what a complete message returns)."""
        key = (pkt.src, pkt.req_id) if key is None else key
        length, off, n = pkt.length, pkt.frag_off, len(pkt.payload)
        if off + n > length:
            raise WireError(Status.MALFORMED, "frag_off",
                            f"fragment [{off}, {off + n}) beyond message length {length}")
        part = self._entry(key, length, into)
        if part is None:
            if off == 0 and n == length:  # a whole message in one datagram
                if into is None:
                    return bytearray(pkt.payload)
                into[:] = pkt.payload
                return into
            part = self._start(key, length, now, into)
        if n:
            part.buf[off:off + n] = pkt.payload
            part.add(off, off + n)
        return self._done(key, part)

    def add_run(self, key: Hashable, length: int, batch, start: int, stop: int, run,
                now: float, into=None) -> bytearray | memoryview | None:
        """``add`` of datagrams ``start:stop`` of a scanned ``fast.Batch``: fragments
        of one message of ``length`` bytes, each within it, as ``Batch.msg_run`` found
        them (``run``). Their payloads are copied in C, and their bytes are counted at
        once when each starts where the one before ended."""
        part = self._entry(key, length, into)
        if part is None:
            if run.uniform and run.lo == 0 and run.hi == length:   # all of it, here
                buf = bytearray(length) if into is None else into
                batch.copy_fragments(buf, start, stop)
                return buf
            part = self._start(key, length, now, into)
        batch.copy_fragments(part.buf, start, stop)
        if run.uniform:
            part.add(run.lo, run.hi)
        else:
            for h in batch.hdrs[start:stop]:
                part.add(h.frag_off, h.frag_off + h.payload_len)
        return self._done(key, part)

    def _entry(self, key: Hashable, length: int, into) -> _Partial | None:
        """The message ``key`` being reassembled (None: none yet), checked against the
        ``length`` a fragment says and the caller's buffer ``into``."""
        part = self._partial.get(key)
        if part is None:
            if into is not None and len(into) != length:
                raise WireError(Status.MALFORMED, "length",
                                f"fragment says length {length}, expected {len(into)}")
        elif len(part.buf) != length:
            raise WireError(Status.MALFORMED, "length",
                            f"fragment says length {length}, message started as {len(part.buf)}")
        return part

    def _start(self, key: Hashable, length: int, now: float, into) -> _Partial:
        """A message's first fragment (not all of it): its entry, within the bounds."""
        if len(self._partial) >= self.max_messages:
            raise WireError(Status.BUSY, None,
                            f"{len(self._partial)} messages already in reassembly")
        own = 0 if into is not None else length
        if self._bytes + own > self.max_bytes:
            raise WireError(Status.BUSY, "length",
                            f"message of {length} bytes exceeds reassembly budget "
                            f"({self._bytes} of {self.max_bytes} in use)")
        part = self._partial[key] = _Partial(bytearray(length) if into is None else into,
                                             now, own=own)
        self._bytes += own
        return part

    def _done(self, key: Hashable, part: _Partial) -> bytearray | memoryview | None:
        """The message if its last missing byte has arrived (its entry goes), else None."""
        if part.received >= len(part.buf):
            del self._partial[key]
            self._bytes -= part.own
            return part.buf
        return None

    def discard(self, key: Hashable) -> bool:
        part = self._partial.pop(key, None)
        if part is not None:
            self._bytes -= part.own
        return part is not None

    def expire(self, now: float) -> list[Hashable]:
        """Drop messages older than ``timeout``; return their keys."""
        old = [k for k, p in self._partial.items() if now - p.started > self.timeout]
        for k in old:
            self.discard(k)
        self.expired += len(old)
        return old

    def next_deadline(self) -> float | None:
        if not self._partial:
            return None
        return min(p.started for p in self._partial.values()) + self.timeout
