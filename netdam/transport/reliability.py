"""The sans-I/O reliability core: sequence numbers, acks, retransmission, send window (SPEC §8).

Owns, for one local endpoint talking to many peers, everything SPEC §8.1-§8.2 asks of a
sender: the per-peer 32-bit sequence counter (serial arithmetic from
``netdam.wire.seqnum``), the table of outstanding datagrams, cumulative and selective
acknowledgement, retransmission on timeout with exponential backoff (flag RETRANSMIT),
a send window per peer bounded both in sequence span (never more than ``window``
numbers in flight, so a receiver's replay window always covers them) and in bytes (the
credit the receiver advertises in its ACKs, SPEC §8.2, so a burst fits its socket buffer
together with its other senders'; ``max_bytes`` until it has advertised one, and for the
expected answers that must fit our own), and giving up at a deadline.

It never touches a socket or a clock: it is fed packets and ``now`` and is asked for the
datagrams to send and for its next timer (the aioquic pattern).

Two kinds of datagram (``submit(..., needs_reply=...)``):

- plain requests (WRITE, REDUCE, FENCE...) are retired by the reply that echoes their
  ``seq`` (selective ack; a coalesced ACK answers a run of them, SPEC §4.7) or by a
  cumulative ``ack`` beyond them;
- requests whose *answer* matters (READ, atomics) are retired only when the caller says
  the answer is complete (``on_reply(..., final=True)``); a cumulative ack merely marks
  them delivered, and they are retransmitted until their answer arrives (the receiver
  answers a duplicate with its saved response, SPEC §8.3).

Every datagram the core emits carries ACK_REQ; retransmissions also carry RETRANSMIT.
A caller may send a request with NO_RESPONSE when it will see the request's effect some
other way (a joined chain start, answered by the round's signal word): ``answered``
retires it then, and a retransmission, the effect being late, goes without NO_RESPONSE
so that the receiver answers it (SPEC §8.2). Such an answer takes as long as the
effect, not the path, so it is no RTT sample; it is a sample of a second estimate, kept
per peer in the same way (RFC 6298 §2), which times quiet requests alone: a round
slower than the path's RTO is waited for, not resent every time. A quiet request resent
all the same doubles that timeout until an answer comes to a first copy (Karn's rule,
RFC 6298 §5.7), so a round longer than any timeout so far is learnt in a few calls. It
never takes more than half of what is left to a request's deadline, so a lost quiet
request is still resent before it fails.
A ``token`` chosen by the caller comes back with each retired or failed datagram.

Timers are kept per *flight*: the datagrams to one peer that one ``datagrams_to_send``
call let go together and that share a deadline (the fragments of a message, as a
rule) share one send time, one RTO and one timer, so a 16 MiB WRITE arms a few timers,
not 259. A flight's timer is stale once every datagram of it is retired (a count, not
a search); a retransmitted datagram leaves its flight for one of its own, with the
backed-off RTO.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable, NamedTuple

from netdam.wire.codec import Packet
from netdam.wire.fields import CREDIT_UNIT, Flag, Opcode
from netdam.wire.seqnum import seq_add, seq_diff

_SEQ_MASK = (1 << 32) - 1
# plain ints: IntFlag arithmetic builds enum members, too slow for the per-datagram path
_ACK_REQ, _ACK_VALID, _RETRANSMIT = int(Flag.ACK_REQ), int(Flag.ACK_VALID), int(Flag.RETRANSMIT)
_NO_RESPONSE = int(Flag.NO_RESPONSE)
_ACK = int(Opcode.ACK)


@dataclass(frozen=True)
class RelConfig:
    """Knobs of the reliability core. Times in seconds."""

    window: int = 1024          #: max sequence span in flight per peer (<= replay window)
    max_bytes: int = 2 << 20    #: bytes in flight per peer before it advertises a credit,
    #: and always for expected answers (a READ's), which land in our own socket buffer
    rto_initial: float = 0.1    #: retransmission timeout before any RTT sample
    rto_min: float = 0.03       #: loopback RTTs are tiny, but a busy peer stalls for ms
    rto_max: float = 0.5
    backoff: float = 2.0        #: RTO multiplier per retransmission of one datagram
    quiet_max: float = 5.0      #: longest wait for a quiet request's answer before a resend
    deadline: float = 5.0       #: give up on a datagram this long after submit (default)
    max_queue: int = 1 << 20    #: datagrams queued (not yet sent) per peer; more fail

    def __post_init__(self):
        if not 1 <= self.window <= 1 << 30:
            raise ValueError(f"window {self.window} out of range")
        if self.max_bytes < 1 or self.rto_min <= 0 or self.backoff < 1 or self.max_queue < 1:
            raise ValueError("max_bytes, max_queue, rto_min and backoff must be positive")


def _smoothed(srtt: float | None, var: float, sample: float) -> tuple[float, float]:
    """One step of RFC 6298 §2's estimator: the smoothed mean and mean deviation after
    ``sample`` (the first sample sets both)."""
    if srtt is None:
        return sample, sample / 2
    return 0.875 * srtt + 0.125 * sample, 0.75 * var + 0.25 * abs(srtt - sample)


class Retired(NamedTuple):    # a tuple: one is made per datagram on the hot path
    """A datagram is done: its answer arrived (or a cumulative ack covered it)."""

    peer: Hashable
    seq: int
    token: Any


class Failed(NamedTuple):
    """The core gave up on a datagram at its deadline (SPEC §7 TIMEOUT, never on the wire)."""

    peer: Hashable
    seq: int
    token: Any
    tries: int


class _Flight:
    """Datagrams to one peer sent in one go with one deadline: ``count`` sequence
    numbers from ``seq``, of which ``live`` are still outstanding in this flight."""

    __slots__ = ("seq", "count", "live", "sent", "rto", "due", "tries")

    def __init__(self, seq: int, sent: float, rto: float, due: float, tries: int = 1):
        self.seq = seq
        self.count = self.live = 1
        self.sent = sent                 # when its datagrams went (RTT samples, Karn)
        self.rto = rto
        self.due = due                   # when its timer fires: now + rto, or the deadline
        self.tries = tries               # transmissions of its datagrams so far


class _Entry:
    __slots__ = ("seq", "packet", "token", "needs_reply", "size", "answer", "deadline",
                 "flight", "delivered")

    def __init__(self, packet, token, needs_reply, size, deadline, answer=False):
        # seq and flight are set when the datagram is sent
        self.answer = answer             # size counts an expected answer, not the request
        self.packet = packet
        self.token = token
        self.needs_reply = needs_reply
        self.size = size
        self.deadline = deadline
        self.delivered = False


class _Peer:
    __slots__ = ("next_seq", "base", "cum", "outstanding", "queue", "bytes", "credit",
                 "srtt", "rttvar", "rto", "anchored", "qsrtt", "qvar", "qrto")

    def __init__(self, initial_seq: int, rto: float):
        self.next_seq = initial_seq
        self.base = initial_seq          # oldest sequence number possibly outstanding
        self.cum = initial_seq           # highest cumulative ack seen
        self.outstanding: dict[int, _Entry] = {}
        self.queue: deque[_Entry] = deque()
        self.bytes = 0
        self.credit = 0                  # bytes the peer's last ACK allowed (0: none yet)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = rto
        # Until the peer has answered once, only one datagram is in flight: the receiver
        # anchors its replay window at the first sequence number it sees (SPEC §8.3), so
        # that number must be our first one, not a later one overtaking a lost first.
        self.anchored = False
        # the same estimate for how long the answer of a quiet request takes (None: as
        # the RTO until one has come)
        self.qsrtt: float | None = None
        self.qvar = 0.0
        self.qrto: float | None = None


def _quiet_wait(p: _Peer) -> float:
    """The timeout of a quiet request to ``p``: the learnt one, never under the path's."""
    return p.rto if p.qrto is None else max(p.rto, p.qrto)


class Reliability:
    """Sender-side reliability for one endpoint and all of its peers (SPEC §8.2).

    Drive it with ``submit`` (queue a request), ``datagrams_to_send(now)`` (what to put
    on the wire now), ``on_reply(peer, packet, now)`` (a response arrived),
    ``handle_timer(now)`` (at or after ``next_timer()``). Sans-I/O.
    """

    def __init__(self, config: RelConfig | None = None, *, seed: int | None = None,
                 initial_seq: int | None = None):
        self.config = config or RelConfig()
        self._rng = random.Random(seed)
        self._initial_seq = initial_seq
        self._peers: dict[Hashable, _Peer] = {}
        self._timers: list[tuple[float, int, Hashable, _Flight]] = []
        self._ready: deque[tuple[Hashable, _Entry]] = deque()   # retransmissions due
        self._tick = 0
        self._queued = 0      # datagrams submitted and not yet sent (all peers)
        self._overflow: list[Failed] = []   # refused by a full queue: fail at next timer
        self.counters = {"sent": 0, "retransmitted": 0, "retired": 0, "answered": 0,
                         "failed": 0, "duplicate_replies": 0, "window_stalls": 0,
                         "queue_full": 0}

    # -- peers ---------------------------------------------------------------------------
    def _peer(self, peer: Hashable) -> _Peer:
        p = self._peers.get(peer)
        if p is None:
            init = (self._initial_seq if self._initial_seq is not None
                    else self._rng.getrandbits(32))
            p = self._peers[peer] = _Peer(init & _SEQ_MASK, self.config.rto_initial)
        return p

    def next_seq(self, peer: Hashable) -> int:
        """The sequence number the next new datagram to ``peer`` will carry."""
        return self._peer(peer).next_seq

    def in_flight(self, peer: Hashable | None = None) -> int:
        """Datagrams sent and not yet retired (to ``peer``, or to all peers)."""
        peers = self._peers.values() if peer is None else [self._peer(peer)]
        return sum(len(p.outstanding) for p in peers)

    def queued(self, peer: Hashable | None = None) -> int:
        """Datagrams submitted but held back by the send window."""
        peers = self._peers.values() if peer is None else [self._peer(peer)]
        return sum(len(p.queue) for p in peers)

    def credit(self, peer: Hashable) -> int:
        """Bytes of requests ``peer`` last allowed in flight (its ACKs' credit, SPEC
        §8.2); 0 while it has advertised none (``max_bytes`` applies)."""
        return self._peer(peer).credit

    def rto(self, peer: Hashable) -> float:
        return self._peer(peer).rto

    def idle(self) -> bool:
        return not self._queued and not self._overflow and \
            not any(p.outstanding for p in self._peers.values())

    # -- sending -------------------------------------------------------------------------
    def submit(self, peer: Hashable, packet: Packet, now: float, *, token: Any = None,
               needs_reply: bool = False, size: int | None = None,
               deadline: float | None = None) -> None:
        """Queue ``packet`` for ``peer``. The core assigns ``seq`` and sets ACK_REQ.

        ``size`` is the length of an expected answer (a READ's), which counts against
        ``max_bytes`` whatever the peer's credit; by default the datagram counts its
        payload against the peer's credit. ``deadline`` is absolute.
        A peer whose queue already holds ``max_queue`` datagrams refuses it: it fails
        (``Failed`` with ``seq`` None, ``tries`` 0) at the next ``handle_timer``.
        """
        n = len(packet.payload) if size is None else size
        dl = now + self.config.deadline if deadline is None else deadline
        p = self._peer(peer)
        if len(p.queue) >= self.config.max_queue:
            self.counters["queue_full"] += 1
            self._overflow.append(Failed(peer, None, token, 0))
            return
        p.queue.append(_Entry(packet, token, needs_reply, n, dl, size is not None))
        self._queued += 1

    def submit_many(self, peer: Hashable, packets, now: float, *, token: Any = None,
                    needs_reply: bool = False, deadline: float | None = None) -> None:
        """``submit`` of each packet (the fragments of one message), in one call."""
        dl = now + self.config.deadline if deadline is None else deadline
        p = self._peer(peer)
        room = self.config.max_queue - len(p.queue)
        if room < len(packets):
            self.counters["queue_full"] += len(packets) - max(room, 0)
            self._overflow += [Failed(peer, None, token, 0)] * (len(packets) - max(room, 0))
            packets = packets[:max(room, 0)]
        p.queue.extend(_Entry(pkt, token, needs_reply, len(pkt.payload), dl)
                       for pkt in packets)
        self._queued += len(packets)

    def wants_send(self) -> bool:
        """True when ``datagrams_to_send`` may have something (cheap: for hot loops)."""
        return bool(self._queued or self._ready)

    def datagrams_to_send(self, now: float) -> list[tuple[Hashable, Packet]]:
        """Retransmissions that are due, then new datagrams the window admits."""
        out: list[tuple[Hashable, Packet]] = []
        ready = self._ready
        while ready:
            peer, e = ready.popleft()
            p = self._peers.get(peer)
            if p is None or p.outstanding.get(e.seq) is not e:
                continue
            self._arm(peer, e, now)
            self.counters["retransmitted"] += 1
            # a datagram sent without asking for its ACK (its answer comes another way,
            # ``answered``) asks for it once that answer is late
            out.append((peer, e.packet.copy(flags=(int(e.packet.flags) | _RETRANSMIT)
                                            & ~_NO_RESPONSE)))
        if not self._queued:
            self.counters["sent"] += len(out)
            return out
        window, max_bytes = self.config.window, self.config.max_bytes
        timers, tick = self._timers, self._tick
        for peer, p in self._peers.items():
            q = p.queue
            if not q:
                continue
            # the loop of one peer, with its state in locals (one pass per datagram)
            outstanding, seq, nbytes, rto = p.outstanding, p.next_seq, p.bytes, p.rto
            span = (seq - p.base) & _SEQ_MASK      # numbers in flight (<= window)
            credit = p.credit or max_bytes
            first_span, flight, deadline, alone = span, None, None, False
            while q:
                e = q[0]
                if span >= window or (outstanding and (not p.anchored or nbytes + e.size > (
                        max_bytes if e.answer else credit))):
                    self.counters["window_stalls"] += 1
                    break
                q.popleft()
                e.seq = seq
                pkt = e.packet
                pkt.seq = seq
                flags = int(pkt.flags)
                pkt.flags = flags | _ACK_REQ
                outstanding[seq] = e
                nbytes += e.size
                quiet = flags & _NO_RESPONSE
                if e.deadline != deadline or quiet or alone:   # a new flight: a new
                    if flight is not None:          # deadline, or a quiet request's own
                        flight.count = flight.live = (seq - flight.seq) & _SEQ_MASK
                    deadline, alone = e.deadline, bool(quiet)
                    wait = rto if not quiet else \
                        min(_quiet_wait(p), max(rto, (deadline - now) / 2))  # room to resend
                    flight = _Flight(seq, now, wait, min(now + wait, deadline))
                    tick += 1
                    heapq.heappush(timers, (flight.due, tick, peer, flight))
                e.flight = flight
                out.append((peer, pkt))
                seq = (seq + 1) & _SEQ_MASK
                span += 1
            if flight is not None:
                flight.count = flight.live = (seq - flight.seq) & _SEQ_MASK
            p.next_seq, p.bytes = seq, nbytes
            self._queued -= span - first_span
        self._tick = tick
        self.counters["sent"] += len(out)
        return out

    def _arm(self, peer: Hashable, e: _Entry, now: float) -> None:
        """Send ``e`` again: it leaves its flight for one of its own, the RTO backed off."""
        old = e.flight
        old.live -= 1
        rto = min(old.rto * self.config.backoff, self.config.rto_max)
        e.flight = f = _Flight(e.seq, now, rto, min(now + rto, e.deadline), old.tries + 1)
        self._tick += 1
        heapq.heappush(self._timers, (f.due, self._tick, peer, f))

    # -- receiving -----------------------------------------------------------------------
    def on_reply(self, peer: Hashable, reply: Packet, now: float, *,
                 final: bool = True) -> list[Retired]:
        """A response from ``peer`` arrived: apply its cumulative ack (with ACK_VALID)
        and its echoed ``seq`` as a selective ack. ``final=False`` says the reply is
        only part of the answer (a READ_RESP fragment of an incomplete message): the
        request then stays outstanding. Returns the datagrams retired by this reply."""
        p = self._peers.get(peer)
        if p is None:
            return []
        done: list[Retired] = []
        e = p.outstanding.get(reply.seq)
        if e is not None:
            e.delivered = True
            p.anchored = True
            if final or not e.needs_reply:
                self._retire(peer, p, e, now, done)
        elif final:
            self.counters["duplicate_replies"] += 1
        run = 0
        if reply.opcode == _ACK:
            run = reply.addr2
            if reply.group:          # the receiver's credit (SPEC §4.7, §8.2)
                p.credit = reply.group * CREDIT_UNIT
        if run > 1:     # a coalesced ACK answers seq - run + 1 .. seq (SPEC §4.7)
            p.anchored = True
            outstanding, pop, retired = p.outstanding, p.outstanding.pop, 0
            run = min(run, self.config.window)
            for k in range(1, run):
                e = pop((reply.seq - k) & _SEQ_MASK, None)
                if e is not None:     # retired (the RTT was sampled on the echoed seq)
                    e.flight.live -= 1
                    p.bytes -= e.size
                    retired += 1
                    done.append(Retired(peer, e.seq, e.token))
            self.counters["retired"] += retired
            # nothing of the run is outstanding now: the oldest outstanding number (and
            # where the cumulative ack below starts) need not walk through it one by one
            into = seq_diff(p.base, (reply.seq - run + 1) & _SEQ_MASK)
            if 0 <= into < run and reply.seq not in outstanding:
                p.base = (reply.seq + 1) & _SEQ_MASK
        if reply.flags & _ACK_VALID:
            ack = reply.ack
            if seq_diff(ack, p.cum) > 0 and seq_diff(ack, p.next_seq) <= 0:
                start = p.cum if seq_diff(p.cum, p.base) > 0 else p.base
                p.cum = ack
                s = start
                while s != ack:
                    e = p.outstanding.get(s)
                    if e is not None:
                        if e.needs_reply:
                            e.delivered = True
                        else:
                            self._retire(peer, p, e, now, done)
                    s = (s + 1) & _SEQ_MASK
        self._advance(p)
        return done

    def complete(self, peer: Hashable, seq: int, now: float) -> list[Retired]:
        """Retire ``seq`` explicitly (its answer is complete by other means)."""
        p = self._peers.get(peer)
        e = p.outstanding.get(seq) if p else None
        if e is None:
            return []
        done: list[Retired] = []
        self._retire(peer, p, e, now, done)
        self._advance(p)
        return done

    def answered(self, peer: Hashable, token: Any, now: float) -> list[Retired]:
        """Retire the outstanding datagrams to ``peer`` of ``token``: the caller knows
        they arrived by other means (a NO_RESPONSE request whose effect it has seen).
        That is as good as an answer for the first-contact rule: the peer has seen
        our numbers, so it no longer gets one datagram at a time."""
        p = self._peers.get(peer)
        if p is None:
            return []
        done: list[Retired] = []
        for e in [e for e in p.outstanding.values() if e.token is token]:
            self._retire(peer, p, e, now, done)
        if done:
            p.anchored = True
        self.counters["answered"] += len(done)
        self._advance(p)
        return done

    def _retire(self, peer, p: _Peer, e: _Entry, now: float, done: list) -> None:
        del p.outstanding[e.seq]
        p.bytes -= e.size
        f = e.flight
        f.live -= 1
        if e.packet.flags & _NO_RESPONSE:    # its answer's delay is the effect's
            self._quiet_sample(p, now - f.sent if f.tries == 1 else None)
        elif f.tries == 1:                   # Karn: sample only datagrams sent once
            self._sample(p, now - f.sent)
        self.counters["retired"] += 1
        done.append(Retired(peer, e.seq, e.token))

    def _sample(self, p: _Peer, rtt: float) -> None:
        c = self.config
        p.srtt, p.rttvar = _smoothed(p.srtt, p.rttvar, rtt)
        p.rto = min(max(p.srtt + 4 * p.rttvar, c.rto_min), c.rto_max)

    def _quiet_sample(self, p: _Peer, wait: float | None) -> None:
        """A quiet request was answered ``wait`` after its only copy went, or (None)
        after it was resent: the timeout used was short, and it doubles."""
        c = self.config
        if wait is None:
            p.qrto = min(2 * _quiet_wait(p), c.quiet_max)
            return
        p.qsrtt, p.qvar = _smoothed(p.qsrtt, p.qvar, wait)
        p.qrto = min(max(p.qsrtt + 4 * p.qvar, c.rto_min), c.quiet_max)

    def quiet_timeout(self, peer: Hashable) -> float:
        """How long a quiet request to ``peer`` is now given before it is resent."""
        return _quiet_wait(self._peer(peer))

    @staticmethod
    def _advance(p: _Peer) -> None:
        base, nxt, out = p.base, p.next_seq, p.outstanding
        while base != nxt and base not in out:
            base = (base + 1) & _SEQ_MASK
        p.base = base

    # -- timers --------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """When ``handle_timer`` or ``datagrams_to_send`` next has work (None: nothing
        outstanding). Retransmissions already due make it a time in the past."""
        if self._overflow:
            return 0.0                 # already due
        if self._ready:
            return self._ready[0][1].flight.due
        timers = self._timers
        while timers:
            due, _, _, flight = timers[0]
            if flight.live:
                return due
            heapq.heappop(timers)
        if self._queued:
            return min(p.queue[0].deadline for p in self._peers.values() if p.queue)
        return None

    def handle_timer(self, now: float) -> list[Failed]:
        """Schedule due retransmissions (sent by ``datagrams_to_send``) and give up on
        datagrams, sent or still queued, whose deadline has passed (and datagrams a full
        queue refused)."""
        failed, self._overflow = self._overflow, []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, peer, flight = heapq.heappop(timers)
            p = self._peers.get(peer)
            if not flight.live or p is None:
                continue
            out, gone = p.outstanding, False
            for k in range(flight.count):
                seq = (flight.seq + k) & _SEQ_MASK
                e = out.get(seq)
                if e is None or e.flight is not flight:
                    continue
                if now >= e.deadline:
                    del out[seq]
                    p.bytes -= e.size
                    flight.live -= 1
                    gone = True
                    failed.append(Failed(peer, seq, e.token, flight.tries))
                else:
                    self._ready.append((peer, e))
            if gone:
                self._advance(p)
        for peer, p in self._peers.items() if self._queued else ():
            if p.queue and p.queue[0].deadline <= now:
                keep = deque()
                for e in p.queue:
                    if e.deadline <= now:
                        failed.append(Failed(peer, None, e.token, 0))
                    else:
                        keep.append(e)
                self._queued -= len(p.queue) - len(keep)
                p.queue = keep
        self.counters["failed"] += len(failed)
        return failed

    def cancel(self, peer: Hashable, token_pred) -> int:
        """Forget queued datagrams to ``peer`` whose token satisfies ``token_pred``
        (an operation failed; its unsent fragments need not go). Returns how many."""
        p = self._peers.get(peer)
        if p is None:
            return 0
        keep = deque(e for e in p.queue if not token_pred(e.token))
        n = len(p.queue) - len(keep)
        p.queue = keep
        self._queued -= n
        return n


__all__ = ["RelConfig", "Reliability", "Retired", "Failed", "seq_add"]
