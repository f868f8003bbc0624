"""Point-to-point messages between ranks through NetDAM device memory.

Owns how a host-driven algorithm's ``Send`` / ``Recv`` (schedule.py) become device
operations. Every rank has a *home* device (one of its node's devices) and an *inbox*
there: per sender, a ring of ``slots`` slots of ``slot_bytes`` and a head word; and per
receiver, a credit word. A message is cut into pieces of at most ``slot_bytes``:

- the sender waits for a free slot (``sent - credits < slots``, reading its own credit
  word), then PUT_SIGNALs the piece into the receiver's slot and adds 1 to the head
  word the receiver keeps for it: the data is visible before the count (SPEC §4.10);
- the receiver waits until that head word passes the piece's number, copies the piece
  out of its home device's memory, and gives slots back with an ATOMIC_FADD on the
  sender's credit word (an add, so reordered credits never go backwards): one add per
  ``Layout.credit_batch`` slots it has emptied (half the slots), not one per piece.

Batched credits cannot deadlock. A sender waits only while ``slots`` of its pieces are
unread or emptied-but-not-given-back, and at most ``credit_batch - 1`` (fewer than
``slots``) are the latter, so some are unread. The receiver reads a channel's pieces in
order: before it can wait for the piece the sender holds back, it reads those, and with
them its emptied slots of that sender reach a batch, which it gives back. (MPI
implementations batch their eager-protocol credits likewise: a small message then costs
about one request instead of two.)

An empty message (a barrier's) is one piece that takes no slot: its PUT_SIGNAL only
bumps the head word, waits for no credit (only behind earlier pieces to the same peer)
and is given no credit back, so a barrier round costs one request per rank instead of
two. Slots are therefore numbered by the non-empty pieces of a channel, head words by
all of its pieces.

Reading home-device memory is a zero-copy view of the device's shared memory when the
host is on the device's node (the scale-up path), else READs. Sends are non-blocking and
progress whenever the rank waits, so no algorithm deadlocks on flow control.

Scale-up by loads and stores (``stores``): where this rank maps a peer's area writable
(the peer's home device is on this node's shared memory, its region grants it, and this
CPU keeps stores in order, ``shm.ORDERED_CPU``), a piece to that peer is copied into its
slot and then its head word is incremented by a plain store, and a credit back to it is
added to its credit word the same way: each of those words has one writer, so no atomic
is needed, and the data is in memory before the count (SPEC §4.10's order, kept by the
CPU instead of the device). No device operation, answer or wake-up is involved. The
protocol and the words are the same, so either side may use either path. A device sees
no such store and rings no doorbell for it, so a rank waiting only for words its peers
store yields its CPU for ``YIELD_SPIN`` and then pauses as ``Pacer`` says (never a
watch).

Waiting: every check of a home word that comes up short (a head word, a credit word,
an offload word) is noted; when a rank has nothing to do it sleeps in the agent with a
watch on those words (``Agent.progress(watch=...)``), so its home device's doorbell wakes
it when one arrives. Answers to its own requests do not wake it then (they are taken
when it wakes), unless some of its requests wait in the agent for room in the window;
a rank waiting for answers alone sleeps until one comes. Nothing is slept through on a
timer. Where the home device is not on this node, or a rank waits on more words than a
watch holds, it polls instead, as ``Pacer`` says.

Layout of one rank's area on its home device, for a communicator of ``n`` ranks
(``Layout``): head words [n x 8], credit words [n x 8], slots [n x slots x slot_bytes],
then the offload work area used by the in-network algorithms, its result signal word
and one aggregation word per block (the aggregation tree). Nobody sends to itself, so a
rank's own head word and slots are free: the load_store collectives use them as its
posted word and stages (``scaleup``).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from netdam.agent import Addr, Agent, NetdamTimeout
from netdam.collectives.schedule import Recv, Send
from netdam.errors import NetdamError
from netdam.transport.shm import ORDERED_CPU, WATCH_MAX

WORD = 8
#: after a wait starts, re-check this long without sleeping (an answer is often already
#: on its way, and on a busy machine every sleep costs a context switch)
SPIN = 30e-6
#: while a rank waits only for words its peers store themselves (load/store channels),
#: yield its CPU this long before sleeping: the peer that will store is runnable
YIELD_SPIN = 500e-6
#: shortest sleep while waiting
SLEEP_MIN = 50e-6
#: longest sleep while waiting on another rank's message
P2P_SLEEP_MAX = 1e-3
#: longest sleep while waiting on a word the devices will bump: the pacer's quarter of
#: the time waited bounds the lateness of a short wait; a long one (a 16 MiB chain takes
#: a few hundred ms here) wakes its host every 20 ms instead of every 2 ms, which cut a
#: registered chain's host CPU from 16 ms to under 5 ms per call
WAIT_SLEEP_MAX = 20e-3


@dataclass(frozen=True)
class Layout:
    """Offsets inside one rank's area of its home device (all ranks compute the same;
    each computed once, since every collective step asks for some)."""

    n: int
    slots: int = 4
    slot_bytes: int = 256 << 10
    work_bytes: int = 16 << 20

    @cached_property
    def heads(self) -> int:
        return 0

    @cached_property
    def credits(self) -> int:
        return self.n * WORD

    @cached_property
    def slot_base(self) -> int:
        return 2 * self.n * WORD

    @cached_property
    def slot_end(self) -> int:
        """End of the words and slots (what a load/store channel maps)."""
        return self.slot_base + self.n * self.slots * self.slot_bytes

    @cached_property
    def work(self) -> int:
        """Offset of the offload work area (64-byte aligned)."""
        return (self.slot_end + 63) // 64 * 64

    @cached_property
    def offload_signal(self) -> int:
        """Bumped once per finished block of an in-network collective (result landed)."""
        return self.work + self.work_bytes

    def aggregate_word(self, block: int) -> int:
        """Bumped once per contribution to ``block`` this aggregation node folded in."""
        return self.offload_signal + WORD * (1 + block)

    @cached_property
    def chain_ready(self) -> int:
        """On the leading rank's device: bumped once per round by every other rank whose
        input is in place, where ``device_joins`` is off (``offload.gathered_start``)."""
        return self.aggregate_word(self.n)

    @cached_property
    def size(self) -> int:
        return (self.chain_ready + WORD + 63) // 64 * 64

    @cached_property
    def credit_batch(self) -> int:
        """Slots a receiver gives back to a sender in one ATOMIC_FADD."""
        return max(1, self.slots // 2)

    def slot(self, sender: int, index: int) -> int:
        return self.slot_base + (sender * self.slots + index % self.slots) * self.slot_bytes


class Pacer:
    """How long a rank sleeps while it waits for a word in its home memory (nothing
    wakes a host when a device bumps one, so it polls).

    Every wake-up costs a context switch and a pass of the progress loop, CPU that the
    devices doing the work could use; every sleep may oversleep. So: re-check without
    sleeping for ``SPIN``; then sleep until half the time this kind of wait has lately
    taken at the least (``short``: follows a shorter wait at once, a longer one slowly),
    and after that a quarter of the time waited so far (at least ``SLEEP_MIN``, at most
    the caller's bound). A wait then takes a handful of wake-ups, and ends at most about
    a quarter later than the word arrived, or half the shortest recent wait."""

    def __init__(self):
        self.short: dict[str, float] = {}

    def pause(self, kind: str, waited: float, longest: float) -> None:
        if waited < SPIN:
            return
        planned = max(self.short.get(kind, 0.0) / 2 - waited, waited / 4, SLEEP_MIN)
        time.sleep(min(planned, longest))

    def took(self, kind: str, waited: float) -> None:
        """A wait of this kind ended after ``waited`` seconds."""
        old = self.short.get(kind)
        self.short[kind] = waited if old is None or waited < old else \
            old + (waited - old) / 8


@dataclass(frozen=True)
class StoreArea:
    """A rank's area mapped writable in this process: its bytes, and its head and
    credit words as u64. Memoryviews, not arrays: an element of one is a Python int
    and a slice a view, where NumPy makes a scalar or an array object each time (a
    load/store round reads about fifteen words and four stages)."""

    view: memoryview
    words: memoryview


class _HomeMemory:
    """This rank's own area on its home device: a mapped view, or READs when remote."""

    def __init__(self, agent: Agent, base: Addr, size: int):
        self.agent, self.base = agent, base
        try:
            self.view = agent.map_device_memory(base, size, write=False)
        except (PermissionError, NetdamError):
            self.view = None
        if self.view is None:
            self.words = None
        else:    # little-endian u64s; a memoryview where native, as StoreArea's
            whole = self.view[:size - size % 8]
            self.words = memoryview(whole).cast("Q") if sys.byteorder == "little" \
                else whole.view("<u8")

    @property
    def mapped(self) -> bool:
        return self.view is not None

    def word(self, offset: int) -> int:
        if self.words is not None:
            return int(self.words[offset // WORD])
        return int.from_bytes(self.agent.read(self.base + offset, WORD), "little")

    def read_into(self, offset: int, out: memoryview) -> None:
        if self.view is not None:
            out[:] = self.view[offset:offset + len(out)].data
        else:
            out[:] = self.agent.read(self.base + offset, len(out))


class Channels:
    """All point-to-point channels of one rank in one communicator."""

    def __init__(self, agent: Agent, rank: int, areas: list[Addr], layout: Layout, *,
                 timeout: float = 30.0, load_store: bool = True):
        self.agent, self.rank, self.areas, self.layout = agent, rank, areas, layout
        self.timeout = timeout
        self.home = _HomeMemory(agent, areas[rank], layout.size)
        n = layout.n
        self.sent = [0] * n        # pieces sent to each peer (what its head word counts)
        self.received = [0] * n    # pieces received from each peer
        self.slots_sent = [0] * n      # of those, pieces that took a slot (not empty)
        self.slots_received = [0] * n
        self._owed = [0] * n           # slots emptied and not yet given back, per sender
        self._outbox: deque[tuple[int, bytes]] = deque()  # pieces waiting for credit
        self._inflight: deque = deque()                   # handles of posted operations
        self._idle_since: float | None = None   # when this rank last moved (p2p waits)
        self.pacer = Pacer()
        base = areas[rank]
        self._watchable = (self.home.mapped and agent.can_watch(base.device)
                           and base.offset % WORD == 0)
        self._wants: dict[int, int] = {}     # home words found short since the last sleep
        self._peer_wait = False              # waiting on words peers store in their areas
        self._device_wait: tuple[str, float] | None = None   # (what, since): device words
        #: per rank, its area mapped for this rank's loads and stores, or None
        self.stores: list[StoreArea | None] = [self._map_area(p) if load_store else None
                                               for p in range(n)]
        self.load_store_rounds = 0    # rounds of the load_store collectives (scaleup.py)
        # the head and credit words that peers store into this rank's area (a peer
        # decides as this rank does: its device on this node, the same grants)
        self._stored_words = {o for p in range(n) if p != rank and self.stores[p]
                              for o in (layout.heads + p * WORD, layout.credits + p * WORD)}
        self.counters = {"pieces_sent": 0, "pieces_received": 0, "bytes_sent": 0,
                         "bytes_received": 0, "credit_waits": 0, "credits_returned": 0,
                         "credit_adds": 0, "pieces_stored": 0, "sleeps_woken": 0,
                         "sleeps_timed": 0}

    def _map_area(self, rank: int) -> StoreArea | None:
        """Rank ``rank``'s words and slots mapped writable, when its home device is on
        this node's shared memory and grants it (and this CPU orders stores)."""
        lay, area = self.layout, self.areas[rank]
        if not ORDERED_CPU or area.offset % WORD:
            return None
        try:
            view = self.agent.map_device_memory(area, lay.slot_end)
        except (PermissionError, NetdamError):
            return None
        mem = memoryview(view).cast("B")
        return StoreArea(mem, mem[:lay.slot_base].cast("Q"))   # (ORDERED_CPU: x86)

    @property
    def load_store(self) -> bool:
        """Whether this rank reaches every rank's area with loads and stores."""
        return all(self.stores)

    def reset(self) -> None:
        """Zero this rank's head, credit and offload-signal words (before the job's
        start-up barrier: nobody sends to a rank that has not reset)."""
        lay, home = self.layout, self.areas[self.rank]
        self.agent.write(home, bytes(lay.slot_base), timeout=self.timeout)
        if lay.work_bytes:
            self.agent.write(home + lay.offload_signal, bytes(lay.size - lay.offload_signal),
                             timeout=self.timeout)
        self.sent = [0] * lay.n
        self.received = [0] * lay.n
        self.slots_sent = [0] * lay.n
        self.slots_received = [0] * lay.n
        self._owed = [0] * lay.n
        self.load_store_rounds = 0

    # -- sending ---------------------------------------------------------------------------
    @property
    def queued_pieces(self) -> int:
        """Pieces sent by the algorithm but still waiting here for a free slot."""
        return len(self._outbox)

    def pieces(self, nbytes: int) -> int:
        return max(1, -(-nbytes // self.layout.slot_bytes))

    def send(self, op: Send) -> None:
        data = memoryview(op.data).cast("B")
        step = self.layout.slot_bytes
        stored = self.stores[op.peer] is not None   # copied into its slot by _push
        for i in range(self.pieces(len(data))):
            piece = data[i * step:(i + 1) * step]
            self._outbox.append((op.peer, piece if stored else bytes(piece)))
        self._idle_since = None    # a new phase of the algorithm: its waits start now
        self._push()
        if stored and self._outbox:   # pieces still waiting for a slot: keep a copy
            self._outbox = deque((p, bytes(piece)) for p, piece in self._outbox)

    def _push(self) -> None:
        """Post queued pieces that have a free slot (in order per peer)."""
        lay, blocked = self.layout, set()
        for _ in range(len(self._outbox)):
            peer, piece = self._outbox.popleft()
            k = self.slots_sent[peer]
            if peer in blocked or (piece and k - self.home.word(lay.credits + peer * WORD)
                                   >= lay.slots):
                if peer not in blocked:
                    self._want(lay.credits + peer * WORD, k - lay.slots + 1)
                blocked.add(peer)
                self._outbox.append((peer, piece))
                continue
            area = self.stores[peer]
            if area is not None:      # scale-up: store the piece, then its count
                if piece:
                    at = lay.slot(self.rank, k)
                    area.view[at:at + len(piece)] = piece
                area.words[lay.heads // WORD + self.rank] += 1   # its one writer: us
                self.counters["pieces_stored"] += 1
            else:
                dst = self.areas[peer]
                self._inflight.append(self.agent.put_signal_nb(
                    dst + lay.slot(self.rank, k), piece,
                    dst + (lay.heads + self.rank * WORD), 1, timeout=self.timeout))
            self.sent[peer] += 1
            if piece:        # an empty piece (a barrier's message) takes no slot
                self.slots_sent[peer] = k + 1
            self.counters["pieces_sent"] += 1
            self.counters["bytes_sent"] += len(piece)
        if blocked:
            self.counters["credit_waits"] += 1

    def track(self, h) -> None:
        """An operation of the rank's that nobody waits for (a chain descriptor): its
        failure is raised by a later ``progress``, as a posted piece's is."""
        self._inflight.append(h)

    def _reap(self) -> None:
        while self._inflight and self._inflight[0].done():
            self._inflight.popleft().wait(0)  # raises the operation's error, if any

    # -- receiving -------------------------------------------------------------------------
    @property
    def credits_owed(self) -> int:
        """Slots this rank has emptied and not yet given back (fewer than a batch per
        sender)."""
        return sum(self._owed)

    def recv_some(self, op: Recv, buf: bytearray, i: int) -> int:
        """Copy pieces i, i+1, ... of message ``op`` into ``buf`` as far as they have
        arrived; return the index of the first piece still missing."""
        lay, step = self.layout, self.layout.slot_bytes
        view = memoryview(buf)
        total = self.pieces(op.nbytes)
        head = lay.heads + op.peer * WORD
        while i < total:
            k = self.received[op.peer]
            if self.home.word(head) <= k:
                self._want(head, k + 1)
                return i
            chunk = view[i * step:min((i + 1) * step, op.nbytes)]
            self.received[op.peer] = k + 1
            if len(chunk):       # an empty piece took no slot: nothing to give back
                j = self.slots_received[op.peer]
                self.home.read_into(lay.slot(op.peer, j), chunk)
                self.slots_received[op.peer] = j + 1
                self._give_back(op.peer)
            self.counters["pieces_received"] += 1
            self.counters["bytes_received"] += len(chunk)
            self._moved()
            i += 1
        return i

    def _give_back(self, peer: int) -> None:
        """One more slot of ``peer`` emptied: give a batch back when there is one."""
        lay, owed = self.layout, self._owed[peer] + 1
        if owed < lay.credit_batch:
            self._owed[peer] = owed
            return
        self._owed[peer] = 0
        area = self.stores[peer]
        if area is not None:
            area.words[lay.credits // WORD + self.rank] += owed   # its one writer: us
        else:
            self._inflight.append(self.agent.atomic_add_nb(
                self.areas[peer] + (lay.credits + self.rank * WORD), owed,
                timeout=self.timeout))
        self.counters["credits_returned"] += owed
        self.counters["credit_adds"] += 1

    def reached(self, offset: int, value: int) -> bool:
        """Whether the home word at ``offset`` has reached ``value``; a word found short
        is noted, so that the next sleep watches it."""
        if self.home.word(offset) >= value:
            return True
        self._want(offset, value)
        return False

    def run_reached(self, watches) -> list:
        """Run ``step()`` for each ``(offset, value, step)`` whose home word has reached
        ``value`` (each word read once, as ``reached``); return the others."""
        short = []
        for w in watches:
            if self.reached(w[0], w[1]):
                w[2]()
            else:
                short.append(w)
        return short

    def wait_word(self, offset: int, value: int, what: str) -> None:
        """Wait until the home word at ``offset`` reaches ``value``.

        The devices are doing the work meanwhile, so the host sleeps as ``Pacer`` says,
        at most ``WAIT_SLEEP_MAX`` at a time."""
        start = time.monotonic()
        deadline = start + self.timeout
        self._idle_since = None
        while not self.reached(offset, value):
            now = time.monotonic()
            if now > deadline:
                raise NetdamTimeout(f"rank {self.rank}: {what} not reached within "
                                    f"{self.timeout:g} s (at {self.home.word(offset)} of "
                                    f"{value})")
            self.progress()
            self._doze(what, now - start, busy=False)
        self.pacer.took(what, time.monotonic() - start)

    def wait_stored(self, peer: int, index: int, value: int, timeout: float, what) -> None:
        """Wait until word ``index`` of rank ``peer``'s stored area (``stores[peer]``)
        reaches ``value``: a word another rank of this node stores, which no device sees
        and no doorbell announces. Yields the CPU for ``YIELD_SPIN`` (the rank that will
        store it may be waiting for one), then pauses as ``Pacer`` says, at most
        ``P2P_SLEEP_MAX``; past ``timeout`` seconds raises ``NetdamTimeout`` with the
        message ``what()``."""
        words = self.stores[peer].words
        if words[index] >= value:
            return
        start = time.monotonic()
        while words[index] < value:
            waited = time.monotonic() - start
            if waited > timeout:
                raise NetdamTimeout(what())
            if waited < YIELD_SPIN:
                os.sched_yield()
            else:
                self.pacer.pause("stored", waited, P2P_SLEEP_MAX)
        self.pacer.took("stored", time.monotonic() - start)

    def when_each(self, watches, what: str) -> None:
        """Run ``step()`` for each ``(offset, value, step)`` once the home word at
        ``offset`` reaches ``value``, in whatever order they get there; return when all
        have run. Sleeps like ``wait_word`` while none is ready."""
        pending = list(watches)
        start = time.monotonic()
        self._idle_since = None
        while pending:
            short = self.run_reached(pending)
            moved, pending = len(short) < len(pending), short
            if not pending:
                break
            now = time.monotonic()
            if now > start + self.timeout:
                raise NetdamTimeout(f"rank {self.rank}: {what} not complete within "
                                    f"{self.timeout:g} s ({len(pending)} words short)")
            self.progress()
            self._doze(what, now - start, busy=moved)
        self.pacer.took(what, time.monotonic() - start)

    # -- progress ---------------------------------------------------------------------------
    def progress(self) -> None:
        """Post what has credit, retire what finished, let the agent move datagrams."""
        self._push()
        self._reap()
        if self._inflight or not self.agent.rel.idle():
            self.agent.progress(0.0)

    def _want(self, offset: int, value: int) -> None:
        """A check of the home word at ``offset`` found it short of ``value``."""
        self._wants[offset] = value

    def _watch_sleep(self, longest: float) -> bool:
        """Sleep in the agent on a watch of the words found short since the last sleep
        (woken by the home device when one arrives), or, with no such word and requests
        in flight, until an answer comes (at most ``longest``); False where neither can
        be done (then nothing happened)."""
        wants, self._wants = self._wants, {}
        if not wants and self._inflight:          # only answers to wait for
            self.agent.progress(longest)
        elif not self._watchable or not wants or len(wants) > WATCH_MAX or \
                not self._stored_words.isdisjoint(wants):   # no device sees those
            self.counters["sleeps_timed"] += 1
            return False
        else:
            # The words are what this rank waits for: answers to its requests need not
            # wake it, unless some of its requests wait for room in the window. A word
            # or the agent's timers end the sleep; its bound only caps a lost doorbell
            # (and how late a failed request's answer is seen).
            base, agent = self.areas[self.rank], self.agent
            agent.progress(WAIT_SLEEP_MAX, watch=(base.device, [(base.offset + o, v)
                                                                for o, v in wants.items()]),
                           answers=bool(agent.rel.queued()))
        self.counters["sleeps_woken"] += 1
        return True

    def waiting_on_device(self, what: str, since: float) -> None:
        """The next ``idle`` waits for home words that devices bump (found short by
        ``reached``), as ``wait_word`` would (``steps.WordWait``): on a watch of them,
        or paused as ``Pacer`` says for ``what`` (waiting since ``since``)."""
        self._device_wait = (what, since)

    def waited_on_device(self, what: str, since: float) -> None:
        """A wait for device words that began at ``since`` is over (``Pacer`` learns
        how long such waits take)."""
        self._device_wait = None
        self.pacer.took(what, time.monotonic() - since)

    def waiting_on_peers(self) -> None:
        """The next ``idle`` waits for words other ranks store into their own areas (a
        load/store round's posted words), which no device sees."""
        self._peer_wait = True

    def peers_posted(self) -> None:
        """Those words have arrived: the wait for them is over."""
        self._moved()

    def idle(self) -> None:
        """Nothing to do right now (waiting for a peer's message or an
        acknowledgement): sleep on a watch; waiting only for words peers store (which no
        device sees), yield the CPU for ``YIELD_SPIN`` first; else, or after that, a
        short pause as ``Pacer`` says, at most ``P2P_SLEEP_MAX``. Waiting for device
        words (``waiting_on_device``), doze as ``wait_word`` does."""
        peers, self._peer_wait = self._peer_wait, False
        device, self._device_wait = self._device_wait, None
        if device is not None and not peers:
            self._doze(device[0], time.monotonic() - device[1], busy=False)
            return
        stored = not self._inflight and (peers or self._wants and
                                         self._stored_words.issuperset(self._wants))
        if not stored and self._watch_sleep(P2P_SLEEP_MAX):
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        elif stored and now - self._idle_since < YIELD_SPIN:
            self._wants.clear()
            os.sched_yield()      # the peer that will store may be waiting for a CPU
        else:
            self.pacer.pause("p2p", now - self._idle_since, P2P_SLEEP_MAX)

    def _moved(self) -> None:
        """A piece arrived: the wait for it is over."""
        if self._idle_since is not None:
            self.pacer.took("p2p", time.monotonic() - self._idle_since)
            self._idle_since = None

    def _doze(self, what: str, waited: float, busy: bool) -> None:
        """Pause while waiting on device words: the p2p pause while this rank has work
        of its own in flight (or just moved), else as ``Pacer`` says for ``what``."""
        if busy or self._inflight or self._outbox:
            self.idle()
        elif not self._watch_sleep(WAIT_SLEEP_MAX):
            self.pacer.pause(what, waited, WAIT_SLEEP_MAX)

    def flush(self) -> None:
        """Wait until every posted piece and credit has been acknowledged."""
        deadline = time.monotonic() + self.timeout
        while self._outbox or self._inflight:
            self.progress()
            if time.monotonic() > deadline:
                raise NetdamTimeout(f"rank {self.rank}: {len(self._outbox)} queued and "
                                    f"{len(self._inflight)} posted operations not done "
                                    f"within {self.timeout:g} s")
            self.idle()


def as_bytes(a: np.ndarray) -> memoryview:
    """A flat writable byte view of a C-contiguous array."""
    return memoryview(a).cast("B") if a.size else memoryview(bytearray())


def address_of(buf) -> int:
    """Where a non-empty C-contiguous buffer (an array or a memoryview) starts in memory.
    Asked several times per in-network call (is this the registered buffer?): through
    ctypes a writable one costs a third of NumPy's ``.ctypes`` (0.3 against 1.2 us
    warm, and an order more right after a wake-up); a read-only or strided array goes
    through NumPy."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buf))
    except (TypeError, ValueError):    # ctypes maps writable contiguous buffers only
        arr = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, np.uint8)
        return arr.ctypes.data
