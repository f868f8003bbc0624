"""Runs of WRITE / PUT_SIGNAL / MULTICAST-copy / chain-hop fragments in one pass: the
batch lane.

Owns ``Device.receive_many``: for a list of datagrams, the same memory, replay windows,
counters, signals and answers as ``Device.receive`` of each in turn, in the same order,
but cheaper where bulk transfers spend their time (SPEC_device §4-§5). Consecutive
plain fragments of one opcode from one peer, with consecutive sequence numbers, form a
run: WRITE or PUT_SIGNAL with flags ACK_REQ and MORE_FRAGS only, MULTICAST copies to
apply here (MCAST_COPY, perhaps LAST_HOP_SIGNAL), or REDUCE_FWD fragments at one hop
of one in-packet route (SPEC §4.9, as ``_chain`` takes them: at an intermediate hop each
is reduced with this device's memory and forwarded to the next hop; at the last hop
``chain_last_hop`` reduces it into memory, signals and multicasts the result; either
way its datagrams are made just before its ACK; the chain descriptor stays one by one).
A run whose requests are all new, of one region and aimed at this device, with nothing
of that peer held, is checked once (``Memory.check`` over the run's hull and over each
signal word, the window over its sequence numbers), its payloads are written (WRITE:
all copies at once; the others one by one through ``write_and_signal`` or
``chain_last_hop``, so a signal fires after its message's last byte and a full message
table refuses the rest BUSY exactly as it would), its window slots
are recorded at once, and its ACKs are made exactly where the one-by-one path makes them
(coalesced or not, stamped with the cumulative ack of that moment). Any other datagram,
and the part of a run that fails a check, takes the one-by-one path, which answers it as
it always would.

The run's checks are the rows' (``instructions``): dtype known, fragment within its
message, the fragment's range writable under (rkey, pkey), and the signal word of a
PUT_SIGNAL or of a copy with LAST_HOP_SIGNAL. The scan (CRC32C and the header fields)
and the copies run in C (``netdam.wire.fast``) when it is built.

A mixin of ``firmware_model.device.Device``: it works on the device's own tables.
"""

from __future__ import annotations

import heapq
import struct

from firmware_model import alu
from firmware_model.instructions import (FORWARD_KEEP, SIGNAL_NEED, InstructionError, Out,
                                         chain_last_hop, make_ack, signal_key,
                                         write_and_signal)
from firmware_model.memory import WRITE_ANY, Access, Rights
from netdam.wire import fast
from netdam.wire.codec import Packet, WireError, decode, overhead
from netdam.wire.fields import DTYPE_SIZE, HEADER_LEN, VERSION, Flag, Opcode

_WRITE, _PUT_SIGNAL = int(Opcode.WRITE), int(Opcode.PUT_SIGNAL)
_MULTICAST, _REDUCE_FWD = int(Opcode.MULTICAST), int(Opcode.REDUCE_FWD)
_ACK_REQ, _MORE = int(Flag.ACK_REQ), int(Flag.MORE_FRAGS)
_ACK_VALID, _COPY = int(Flag.ACK_VALID), int(Flag.MCAST_COPY)
_SIGNAL, _RESULT_MCAST = int(Flag.LAST_HOP_SIGNAL), int(Flag.RESULT_MCAST)
#: the opcodes the lane takes, and the flags their runs' requests may carry
_PLAIN = {_WRITE: frozenset({_ACK_REQ, _ACK_REQ | _MORE}),
          _PUT_SIGNAL: frozenset({_ACK_REQ, _ACK_REQ | _MORE}),
          _MULTICAST: frozenset(_ACK_REQ | _COPY | more | sig       # a copy to apply here
                                for more in (0, _MORE) for sig in (0, _SIGNAL)),
          _REDUCE_FWD: frozenset(_ACK_REQ | more | sig | res        # the flags of a chain
                                 for more in (0, _MORE) for sig in (0, _SIGNAL)
                                 for res in (0, _RESULT_MCAST))}
_HOP_NEED = (Rights.REDUCE,)
_NONE = frozenset()
_ANY = 0xFFFF
_MASK = 0xFFFFFFFF
_MIN_RUN = 2
_WRITE_FLAGS = (_ACK_REQ, _ACK_REQ | _MORE)      # a WRITE run's flags, as _PLAIN says
_DTYPES = sum(1 << d for d in DTYPE_SIZE)         # the known dtypes, as a bit mask


class WriteRuns:
    """``receive_many`` for ``Device`` (see the module docstring)."""

    def receive_many(self, datagrams, now: float) -> list:
        """``receive`` of each datagram in turn, with runs of fragments applied in one
        pass. Never raises."""
        n = len(datagrams)
        if n < _MIN_RUN:
            return [o for d in datagrams for o in self.receive(d, now)]
        batch = None
        if fast.AVAILABLE:
            batch = fast.Batch(datagrams)
            heads = [h if h.ok else None for h in batch.hdrs]
        else:
            heads = []
            for d in datagrams:
                try:
                    heads.append(decode(d))
                except WireError:
                    heads.append(None)
        outs: list[Out] = []
        i = 0
        while i < n:
            h = heads[i]
            j = i + 1
            if h is not None and batch is not None and h.opcode == _WRITE \
                    and h.flags in _PLAIN[_WRITE]:     # the bulk case: grouped in C
                checked = batch.write_run(i, _WRITE, _WRITE_FLAGS, self.device_id, _ANY,
                                          _DTYPES)
                j = i + checked.count
                if j - i >= _MIN_RUN:
                    outs += self._run(datagrams, heads, batch, i, j, now, checked)
                else:
                    outs += self._single(datagrams, heads, batch, i, now)
                i = j
                continue
            if h is not None and h.flags in _PLAIN.get(h.opcode, _NONE):
                op, src, seq = h.opcode, h.src, h.seq
                plain = _PLAIN[op]
                chain = (h.req_id, h.hop) if op == _REDUCE_FWD else None
                while j < n:
                    g = heads[j]
                    seq = (seq + 1) & _MASK
                    if g is None or g.opcode != op or g.flags not in plain \
                            or g.src != src or g.seq != seq \
                            or (chain is not None and (g.req_id, g.hop) != chain):
                        break           # a chain's run is one message at one hop
                    j += 1
            if j - i >= _MIN_RUN:
                outs += self._run(datagrams, heads, batch, i, j, now)
            else:
                outs += self._single(datagrams, heads, batch, i, now)
            i = j
        return outs

    def _single(self, datagrams, heads, batch, i: int, now: float) -> list:
        h = heads[i]
        if h is None:                 # refused: ``receive`` answers it as it always would
            return self.receive(datagrams[i], now)
        if batch is not None:         # the C scan checked CRC and lengths: no second CRC
            try:
                h = decode(datagrams[i], check_crc=False)
            except WireError:         # not expected (the scan accepts what decode does)
                return self.receive(datagrams[i], now)
        return self.handle(h, now)

    def _run(self, datagrams, heads, batch, i: int, j: int, now: float,
             checked=None) -> list:
        """Datagrams ``i:j``, a run; ``checked`` is what ``Batch.write_run`` found about
        a WRITE run (else the checks are made here)."""
        run = heads[i:j]
        first = run[0]
        peer = self._peers.get(first.src)
        outs, done = [], 0
        payload = None
        if first.opcode == _REDUCE_FWD:
            ok = batch is not None and self._hops_ok(datagrams, run, i)
        elif checked is not None:
            payload = checked.payload
            ok = checked.uniform and not self._mem.check(
                first.rkey, first.pkey, Access(checked.lo, checked.hi - checked.lo, WRITE_ANY))
        else:
            ok = self._run_writable(run)
        if peer is not None and not peer.held and peer.window.all_new(first.seq, len(run)) \
                and ok:
            try:
                outs, done = self._apply_run(datagrams, run, batch, i, peer, now, payload)
            except Exception:   # a bug: count it, never take the caller down
                self._counters.add("internal_errors")
                return []
        return outs + [o for k in range(i + done, j)
                       for o in self._single(datagrams, heads, batch, k, now)]

    def _run_writable(self, run) -> bool:
        """Would every request of the run pass its row's checks?"""
        first = run[0]
        rkey, pkey, me = first.rkey, first.pkey, self.device_id
        lo = hi = first.addr + first.frag_off
        words = set()
        for h in run:
            if h.rkey != rkey or h.pkey != pkey or (h.dst != me and h.dst != _ANY) \
                    or h.nhops or h.dtype not in DTYPE_SIZE \
                    or h.frag_off + h.payload_len > h.length:
                return False
            start = h.addr + h.frag_off
            end = start + h.payload_len
            lo = start if start < lo else lo
            hi = end if end > hi else hi
            if h.opcode == _PUT_SIGNAL or h.flags & _SIGNAL:
                words.add(h.addr2)
        check = self._mem.check
        return not check(rkey, pkey, Access(lo, hi - lo, WRITE_ANY)) and not any(
            check(rkey, pkey, Access(w, 8, SIGNAL_NEED, 8)) for w in words)

    def _hops_ok(self, datagrams, run, i: int) -> bool:
        """Would every request of a REDUCE_FWD run pass ``_chain_validate`` and its
        operand check at one position of the same in-packet route: an intermediate hop,
        or the last one (then also the signal words and the result's group)?"""
        first = run[0]
        nhops, hop, dtype, redop = first.nhops, first.hop, first.dtype, first.redop
        esize = DTYPE_SIZE.get(dtype)
        if not nhops or hop >= nhops or esize is None or alu.check(dtype, redop):
            return False
        last = hop + 1 == nhops
        route = _route_bytes(datagrams[i], nhops)
        if struct.unpack_from("!H", route, 2 * hop)[0] != self.device_id:
            return False
        rkey, pkey, me = first.rkey, first.pkey, self.device_id
        groups = self._ctx.groups
        lo = hi = first.addr + first.frag_off
        words = set()
        for k, h in enumerate(run):
            n = h.payload_len
            start = h.addr + h.frag_off
            if h.rkey != rkey or h.pkey != pkey or (h.dst != me and h.dst != _ANY) \
                    or h.nhops != nhops or h.hop != hop or h.dtype != dtype \
                    or h.redop != redop or not n or h.frag_off + n > h.length \
                    or start % esize or n % esize \
                    or (k and _route_bytes(datagrams[i + k], nhops) != route):
                return False
            if last:
                if h.flags & _RESULT_MCAST and h.group not in groups:
                    return False
                if h.flags & _SIGNAL:
                    words.add(h.addr2)
            lo = start if start < lo else lo
            hi = start + n if start + n > hi else hi
        check = self._mem.check
        return not check(rkey, pkey, Access(lo, hi - lo, _HOP_NEED)) and not any(
            check(rkey, pkey, Access(w, 8, SIGNAL_NEED, 8)) for w in words)

    def _hops(self, datagrams, run, i: int) -> list[list[Out]]:
        """Each fragment of a checked REDUCE_FWD run as ``_chain`` takes it: at an
        intermediate hop reduced with this device's memory and forwarded to the next
        hop; at the last hop reduced into memory, signalled and multicast
        (``chain_last_hop``). The datagrams each request makes, one list per request;
        fewer lists than requests when a full message table stops the run."""
        first = run[0]
        route = struct.unpack(f"!{first.nhops}H", _route_bytes(datagrams[i], first.nhops))
        if first.hop + 1 == first.nhops:
            return self._last_hops(datagrams, run, i, route)
        nxt, hop = route[first.hop + 1], first.hop + 1
        mem, me = self._mem.view, self.device_id
        dtype, redop = first.dtype, first.redop
        reduce_into = alu.reduce_into
        outs = []
        for k, h in enumerate(run):
            at, n = h.payload_at, h.payload_len
            acc = bytearray(memoryview(datagrams[i + k])[at:at + n])
            start = h.addr + h.frag_off
            reduce_into(acc, mem[start:start + n], dtype, redop)
            outs.append([Out(nxt, Packet(_REDUCE_FWD, h.flags & FORWARD_KEEP, 0, dtype, redop,
                                         hop, me, nxt, h.pkey, h.group, h.rkey, 0, 0,
                                         h.req_id, h.addr, h.addr2, h.imm, h.length,
                                         h.frag_off, route, acc, VERSION))])
        return outs

    def _last_hops(self, datagrams, run, i: int, route: tuple[int, ...]) -> list[list[Out]]:
        """The last hop of each fragment: ``chain_last_hop`` itself, skipping only the
        decoding and the checks the run passed as a whole."""
        ctx, outs = self._ctx, []
        for k, h in enumerate(run):
            at, n = h.payload_at, h.payload_len
            pkt = Packet(_REDUCE_FWD, h.flags, 0, h.dtype, h.redop, h.hop, h.src, h.dst,
                         h.pkey, h.group, h.rkey, h.seq, h.ack, h.req_id, h.addr, h.addr2,
                         h.imm, h.length, h.frag_off, route,
                         memoryview(datagrams[i + k])[at:at + n], VERSION)
            try:
                outs.append(chain_last_hop(ctx, pkt, route))
            except InstructionError:   # BUSY: the rest is refused one by one, as always
                break
        return outs

    def _signalled(self, datagrams, run, batch, i: int) -> int:
        """The handler of PUT_SIGNAL (or of a MULTICAST copy) for each fragment in turn;
        how many were applied (the first one the message table has no room for stops
        the run there)."""
        ctx = self._ctx
        for k, h in enumerate(run):
            if batch is None:
                payload = h.payload
            else:
                payload = memoryview(datagrams[i + k])[h.payload_at:h.payload_at
                                                        + h.payload_len]
            if h.opcode == _PUT_SIGNAL:
                key = signal_key("put", h.src, h)
            else:
                key = signal_key("mcast", h.src, h) if h.flags & _SIGNAL else None
            try:
                write_and_signal(ctx, h, key, payload)
            except InstructionError:
                return k
        return len(run)

    def _apply_run(self, datagrams, run, batch, i: int, peer, now: float,
                   payload: int | None = None):
        """Apply the run (or its first part); (answers, how many requests applied).
        ``payload``: the run's payload bytes, when the caller knows them."""
        first = run[0]
        window = peer.window
        self._ctx.now = now
        self._peers.touch(first.src, first.seq, now)
        fwd = None
        if first.opcode == _REDUCE_FWD:
            fwd = self._hops(datagrams, run, i)
            if len(fwd) < len(run):
                if not fwd:
                    return [], 0
                run = run[:len(fwd)]
        elif first.opcode != _WRITE:
            k = self._signalled(datagrams, run, batch, i)
            if not k:
                return [], 0
            run = run[:k]
        elif batch is not None:
            batch.copy_payloads(self._mem.bytes, i, i + len(run))
        else:
            mem = self._mem.view
            for h in run:
                start = h.addr + h.frag_off
                mem[start:start + h.payload_len] = h.payload
        k = len(run)
        in_order = first.seq == window.cum
        window.record_run(first.seq, k)
        final_cum = window.cum

        def stamped(ack, idx: int) -> Out:
            """As ``_stamp``: the cumulative ack right after request ``idx`` applied."""
            ack.flags |= _ACK_VALID
            ack.ack = (first.seq + idx + 1) & _MASK if in_order and idx < k - 1 else final_cum
            return Out(None, ack)

        me, every, outs = self.device_id, self.ack_every, []
        if every == 1:
            for idx, h in enumerate(run):
                if fwd:
                    outs += fwd[idx]
                outs.append(stamped(make_ack(me, h), idx))
        else:                   # what _coalesce does, request by request
            prev, count = peer.ack, 0
            pending = prev is not None
            if pending:
                if (prev.seq + 1) & _MASK == first.seq:
                    count = peer.ack_count
                else:
                    outs.append(stamped(self._ack_out(peer).packet, 0))
                    pending = False
            deferred = 0
            for idx, h in enumerate(run):
                count += 1
                if fwd:
                    outs += fwd[idx]
                if h.flags & _MORE and count < every:
                    if not pending:
                        peer.ack_due = now + self.ack_delay
                        self._tick += 1
                        heapq.heappush(self._acks, (peer.ack_due, self._tick, h.src))
                        pending = True
                    deferred += 1
                    continue
                ack = make_ack(me, h)
                if count > 1:
                    ack.addr2 = count
                outs.append(stamped(ack, idx))
                pending, count = False, 0
            if pending:
                if deferred:
                    peer.ack = make_ack(me, run[-1])
                peer.ack_count = count
            else:
                peer.ack, peer.ack_count = None, 0
            if deferred:
                self._counters.add("acks_deferred", deferred)
        c = self._counters
        op = first.opcode
        row = self._table.get(op)
        if payload is None:
            payload = sum(h.payload_len for h in run)
        nbytes = k * overhead(first.nhops) + payload
        c.add("rx_packets", k)
        c.add("rx_bytes", nbytes)
        c.request(row.name, nbytes, k)
        c.busy(row.name, self.timing.run_cost(op, k, payload, row.caps))
        return self._sent(outs), k


def _route_bytes(datagram, nhops: int) -> bytes:
    """The route list of a datagram, as it is on the wire (SPEC §2.2)."""
    return bytes(memoryview(datagram)[HEADER_LEN:HEADER_LEN + 2 * nhops])


__all__ = ["WriteRuns"]
