"""The host agent's progress engine (a mixin of ``netdam.agent.Agent``): how it waits.

Owns ``Agent.progress``: one turn of timers, answers and sends, then, when nothing
happened and the caller may wait, a sleep that something ends. Over UDP that is poll()
on the agent's socket, which answers wake. With devices on this node's shared memory, a
device rings a doorbell (an empty datagram) when it puts an answer on a ring while we
sleep, and, for a sleep that watches words of its memory (a caller's ``watch=``, or a
``wait_signal`` that looks at its word in place), when one of them arrives: the watch's
doorbell has a socket of its own (``WatchBell``), so a caller that needs no answer
meanwhile (``answers=False``) sleeps through them. Every sleep is bounded by the agent's
retransmission timers and the caller's timeout, so a lost doorbell costs one sleep,
never a hang. Also: the signal waiters' steps, and failing what the reliability core
gave up on with ``NetdamTimeout`` naming the device, its address and path.

It works on the agent's own tables (``links``, ``rel``, ``udp``, the waiters, the
counters) and its completer's ``_take``.
"""

from __future__ import annotations

import time

from netdam.errors import UsageError
from netdam.handle import Handle, NetdamTimeout
from netdam.transport.shm import WATCH_MAX
from netdam.transport.udp import SPIN_TURN


class Waiting:
    """The progress engine, for ``Agent``."""

    def _wait(self, h: Handle, timeout: float | None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        while not h.finished:
            now = time.monotonic()
            if end is not None and now >= end:
                raise NetdamTimeout(f"{h.what} on device {h.device}: not done after "
                                    f"{timeout} s")
            limit = h.deadline - now + 0.01
            if end is not None:
                limit = min(limit, end - now)
            self.progress(max(limit, 0.0))

    def can_watch(self, device: int) -> bool:
        """Whether ``progress(watch=...)`` can watch words of ``device``: it is on this
        node's shared memory."""
        link = self.links.get(device)
        return link is not None and link.kind == "shm"

    def progress(self, timeout: float = 0.0, *, watch=None, answers: bool = True) -> int:
        """Timers, sends and receives; waits up to ``timeout`` for something to arrive.
        Returns how many datagrams were taken.

        ``watch=(device, [(offset, value), ...])``: up to ``WATCH_MAX`` u64 words of a
        device on this node's shared memory (``can_watch``), offsets in its memory. A
        sleep then lasts the whole ``timeout`` (or until a timer of ours is due) unless an
        answer arrives or the device sees one of the words reach its value (unsigned
        >=): its doorbell wakes us then (netdam.transport.shm). The caller looks at the
        words again after the call; a watch that holds already is no reason to sleep.
        ``answers=False``: the caller needs no answer before a word arrives, so answers
        do not end such a sleep (they wait in the socket and are taken after it; our
        retransmission timers still bound it)."""
        if watch is not None and not self.can_watch(watch[0]):
            raise UsageError(f"device {watch[0]} is not on this node's shared memory: "
                             "its words cannot be watched")
        rel = self.rel
        # answers that came while we were away first: a datagram whose answer is waiting
        # in our socket is not late, however long the caller kept us from looking
        n = self._take()
        now = time.monotonic()
        nt = rel.next_timer()
        if nt is not None and nt <= now:
            self._expire(now)
        finished = self._run_waiters(now) if self._waiters else 0
        self._pump(now)
        ut = self.udp.next_timer()
        if ut is not None:
            self.udp.flush(now)
        if n or finished:            # a signal waiter that finished: no sleep after it
            self._backoff.reset()
            return n
        if timeout <= 0:
            return 0
        nt = rel.next_timer()             # after the pump: retransmissions re-arm there
        wait = timeout
        for t in (nt, ut, self._waiter_due() if self._waiters else None):
            if t is not None and t - now < wait:
                wait = max(0.0, t - now)
        pause = self._backoff.pause(wait)
        if not pause:                          # spinning: an answer is usually near
            if self._shm_links:                # (a ring is looked at by the next turn)
                n = self._take()
            else:                              # no second poll for what this one saw
                n = self._take(ready=True) if self.udp.readable(
                    now + min(wait, SPIN_TURN)) else 0
        elif self._shm_links:
            watches = self._watches(watch)
            if watches is None:
                if self._prepare_sleep():
                    self.counters["sleeps"] += 1
                    n = self._take(pause)      # a doorbell or a datagram wakes us
                    self._awake()
            elif not answers or self._prepare_sleep():  # (no answer: no ring rings)
                armed = self._arm(watches)
                if armed is not None:          # else a word is there: no sleep
                    self.counters["sleeps"] += 1
                    self._bell.sleep(wait, answers=answers)   # ... or a watched word
                    for shm in armed:
                        shm.unwatch()
                if answers:
                    self._awake()
                n = self._take()
        else:
            self.counters["sleeps"] += 1
            n = self._take(wait)
        if n:
            self._backoff.reset()
        return n

    def _expire(self, now: float) -> None:
        for f in self.rel.handle_timer(now):
            h = f.token
            if not h.finished:
                self.counters["timeouts"] += 1
                link = self.links[h.device]
                self._finish(h, NetdamTimeout(
                    f"{h.what} on device {h.device} ({link.addr[0]}:{link.addr[1]} via "
                    f"{link.kind}): no response within {h.timeout:g} s"))

    def _watches(self, watch) -> dict | None:
        """What a sleep watches, per device: the caller's words and those of the signal
        waiters that look in place; None if nothing, or more words of one device than a
        watch holds (``WATCH_MAX``)."""
        out = {} if watch is None else {watch[0]: list(watch[1])}
        for w in self._waiters:
            c = w.watch
            if c is not None:
                out.setdefault(c[0], []).append(c[1:])
        if not out or any(len(conds) > WATCH_MAX for conds in out.values()):
            return None
        return out

    def _arm(self, watches: dict) -> list | None:
        """Arm every device's watch; the rings armed, or None (nothing left armed) if a
        word is there already."""
        armed = []
        for dev, conds in watches.items():
            shm = self.links[dev].shm
            if not shm.watch(conds):
                for other in armed:
                    other.unwatch()
                return None
            armed.append(shm)
        return armed

    def _prepare_sleep(self) -> bool:
        for i, link in enumerate(self._shm_links):
            if not link.shm.prepare_sleep():
                for other in self._shm_links[:i]:
                    other.shm.awake()
                return False
        return True

    def _awake(self) -> None:
        for link in self._shm_links:
            link.shm.awake()

    # -- wait_signal's waiters -------------------------------------------------------
    def _run_waiters(self, now: float) -> int:
        """Step every signal waiter; returns how many finished."""
        keep = []
        for w in self._waiters:
            if not w.step(self, now):
                keep.append(w)
        finished = len(self._waiters) - len(keep)
        self._waiters = keep
        return finished

    def _waiter_due(self) -> float | None:
        return min((w.next_poll for w in self._waiters), default=None)
