"""The host agent's completer (Linux rxe's word): answers in, results out.

Owns what becomes of a datagram that reaches a host agent: taking answers off its UDP
socket (a burst at a time, into a small ``RecvPool``) and off its shared-memory response
rings, checking them (``codec.decode``, or the C scan of a burst), and turning each into
its operation's result. An ACK (or a coalesced one, SPEC §4.7) retires requests, a NAK
fails its operation with ``NakError`` (or, when it can only mean a copy damaged on the
way, is left to retransmission), an ATOMIC_RESP carries the old value, READ_RESP
fragments land in the caller's buffer through the reassembler. The READ_RESP fragments
of one message that arrive together are checked, copied into that buffer and counted at
once (``fast.Batch.msg_run``, ``Reassembler.add_run``): the same results as one by one,
for one Python pass per run instead of one per datagram.

A mixin of ``netdam.agent.Agent``: it works on the agent's own tables (``links``,
``rel``, ``reasm``, the pending READs, the counters).
"""

from __future__ import annotations

import collections
import struct
import time

from netdam.handle import NakError
from netdam.transport.rxpool import RecvPool
from netdam.wire import fast
from netdam.wire.codec import Packet, WireError, decode
from netdam.wire.fields import MAX_DATAGRAM, Opcode, Status

_U64 = struct.Struct("<Q")
_READ_RESP = int(Opcode.READ_RESP)
_BURST = 64          # datagrams taken off the socket per call
#: NAK statuses that can only mean our well-formed request was damaged on the way
_DAMAGED_IN_TRANSIT = frozenset({Status.MALFORMED, Status.BAD_VERSION, Status.BAD_CRC})


class Completer:
    """Taking answers and completing operations, for ``Agent``."""

    def _completer_init(self) -> None:
        self.rxpool = RecvPool(MAX_DATAGRAM + 1, _BURST)

    def _take(self, timeout: float = 0.0, *, ready: bool = False) -> int:
        """Drain what has arrived (UDP and every shared-memory response ring), waiting
        up to ``timeout`` for a first datagram on the socket (a doorbell of a ring
        counts); ``ready``: a poll just saw one waiting. Returns how many datagrams
        were taken."""
        n = 0
        udp = self.udp
        r = udp.recv(timeout) if ready or timeout > 0 or udp.waiting() else None
        if r is not None:
            n = 1
            self._dispatch(*r)            # one alone, as the answer to a request mostly is
            while udp.waiting():          # the rest of a burst: scanned together
                grams = udp.recv_batch(self.rxpool, _BURST, 0.0)
                if not grams:             # poll() also reports a socket error
                    break
                n += len(grams)
                self._dispatch_burst(grams)
        for link in self._shm_links:
            shm = link.shm
            view = shm.recv()
            while view is not None:
                if self.capture is not None and view:
                    self.capture.record(None, link.addr, self.udp.address, view)
                self._dispatch(view, None)
                del view
                shm.release()
                n += 1
                view = shm.recv()
        if n:
            self._pump(time.monotonic())
        return n

    def _dispatch_burst(self, grams) -> None:
        """Complete what a burst off the socket answers; its slots go back to the pool."""
        views = [v for v, _ in grams]
        if len(views) > 1 and fast.AVAILABLE:
            self._complete_scanned(views)
        else:
            for view in views:
                self._dispatch(view, None)
        self.rxpool.give_many(views)     # the scan's hold on them is gone by now

    def _complete_scanned(self, views) -> None:
        batch = fast.Batch(views)
        hdrs, i, n = batch.hdrs, 0, len(views)
        while i < n:
            h = hdrs[i]
            if h.ok and h.opcode == _READ_RESP:
                run = batch.msg_run(i, _READ_RESP)
                if run.count > 1:
                    self._read_resp_run(batch, i, i + run.count, run)
                    i += run.count
                    continue
            self._dispatch(views[i], None, scanned=bool(h.ok))
            i += 1

    def _dispatch(self, view, _addr, *, scanned: bool = False) -> None:
        """Complete what ``view`` answers; ``scanned``: the C scan of its burst has
        checked its CRC and lengths already (``decode`` need not do the CRC again)."""
        if not view:
            return                    # a doorbell: something arrived on a ring
        try:
            pkt = decode(view, check_crc=not scanned)
        except WireError as exc:
            key = "dropped_crc" if exc.status == Status.BAD_CRC else "dropped_malformed"
            self.counters[key] += 1
            return
        handler = _HANDLERS.get(pkt.opcode)
        if handler is None or pkt.src not in self.links:
            self.counters["unexpected"] += 1
            return
        handler(self, pkt, time.monotonic())

    def _on_ack(self, pkt: Packet, now: float) -> None:
        # a coalesced ACK retires a run of datagrams, mostly of one operation
        for h, n in collections.Counter(r.token for r in
                                        self.rel.on_reply(pkt.src, pkt, now)).items():
            self._datagram_done(h, n)

    def _on_nak(self, pkt: Packet, now: float) -> None:
        if pkt.status in _DAMAGED_IN_TRANSIT:
            # this agent only encodes well-formed requests: the device saw a damaged
            # copy (decode checks lengths before the CRC); the retransmission repairs it
            self.counters["naks_damaged"] += 1
            return
        for r in self.rel.on_reply(pkt.src, pkt, now):
            self.counters["naks"] += 1
            h = r.token
            self._finish(h, NakError(pkt.status, pkt.src, h.what))

    def _on_atomic(self, pkt: Packet, now: float) -> None:
        (old,) = _U64.unpack_from(pkt.payload) if len(pkt.payload) >= 8 else (None,)
        for r in self.rel.on_reply(pkt.src, pkt, now):
            r.token.result = old
            self._datagram_done(r.token)

    def _on_read_resp(self, pkt: Packet, now: float) -> None:
        key = (pkt.src, pkt.req_id)
        out = self._read_buffer(key, pkt, pkt.length, now)
        if out is None:
            return
        try:                                   # fragments land in the result directly
            whole = self.reasm.add(pkt, now, key, into=out)
        except WireError:
            self.counters["dropped_malformed"] += 1
            return
        self._read_answered(key, pkt, whole, now)

    def _read_resp_run(self, batch, i: int, j: int, run) -> None:
        """Datagrams ``i:j`` of a scanned burst, READ_RESP fragments of one message (as
        ``msg_run`` found): what ``_on_read_resp`` does for each, at once. Their
        reliability is that of the last one (all answer one request, and the device
        stamped them together)."""
        first, last = batch.hdrs[i], batch.hdrs[j - 1]
        self.counters["answers_in_runs"] += j - i
        if first.src not in self.links:
            self.counters["unexpected"] += j - i
            return
        key, now = (first.src, first.req_id), time.monotonic()
        out = self._read_buffer(key, last, first.length, now, j - i)
        if out is None:
            return
        try:
            whole = self.reasm.add_run(key, first.length, batch, i, j, run, now, into=out)
        except WireError:
            self.counters["dropped_malformed"] += j - i
            return
        self._read_answered(key, last, whole, now)

    def _read_buffer(self, key, reply, length: int, now: float, count: int = 1):
        """Where the answers of the READ ``key`` land (its part of the caller's buffer),
        or None: a late duplicate of a finished READ (``reply`` only acknowledges), or
        ``count`` answers whose ``length`` is not what was asked (dropped)."""
        entry = self._reads.get(key)
        if entry is None:
            self.rel.on_reply(key[0], reply, now, final=False)
            return None
        h, off, n = entry
        if length != n:                        # not the answer to what we asked
            self.counters["dropped_malformed"] += count
            return None
        return memoryview(h.result).cast("B")[off:off + n]

    def _read_answered(self, key, reply, whole, now: float) -> None:
        """``reply`` added to the READ ``key``: it stays outstanding until ``whole``."""
        if whole is None:
            self.rel.on_reply(key[0], reply, now, final=False)
            return
        del self._reads[key]
        for r in self.rel.on_reply(key[0], reply, now):
            self._datagram_done(r.token)


#: reply opcode -> handler
_HANDLERS = {
    int(Opcode.ACK): Completer._on_ack,
    int(Opcode.NAK): Completer._on_nak,
    int(Opcode.ATOMIC_RESP): Completer._on_atomic,
    int(Opcode.READ_RESP): Completer._on_read_resp,
}

__all__ = ["Completer"]
