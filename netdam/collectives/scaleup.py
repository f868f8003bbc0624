"""Scale-up collectives: ranks of one node that load and store each other's device memory.

Owns the ``load_store`` collectives (all_reduce, reduce, reduce_scatter, broadcast,
all_gather, all_to_all of equal parts) and barrier. When every rank of a communicator
maps every rank's area of its home device (all their devices are on this node's shared
memory and their regions grant it: ``Channels.load_store``), a collective of at most one
slot per rank needs no device operation and no message, as NCCL's one-shot all_reduce
inside an NVLink domain reads its peers' buffers. Each is one *round*:

- each rank copies what it contributes into its own *stage*, a slot of its own area that
  no channel uses (``Layout.slot(rank, k)``: nobody sends to itself), and then stores the
  round number in its own *posted* word (its head word for itself, which no channel
  uses either): the data is in memory before the word says so (stores stay in order on
  this CPU, ``netdam.transport.shm.ORDERED_CPU``);
- each rank waits until the ranks it reads from have posted the round and reads their
  stages in place: an all_reduce folds all n in rank order, ``((x_0 op x_1) op ...) op
  x_{n-1}``, bit-identical on every rank and to the canonical algorithm's (reproducible
  mode); a reduce does so at the root, a reduce_scatter block by block; a broadcast
  copies the root's stage, an all_gather every stage, an all_to_all its own part of
  every stage. A barrier is a round without data.

Rounds rotate over the ``Layout.slots`` stages (the round number picks one). Before a
rank writes round k's stage, it waits until every rank has posted round k - slots + 1,
which each posts only after it finished round k - slots, the last one to read that
stage. In the symmetric collectives that has happened already; a broadcast's root or a
reduce's contributors may otherwise run ahead of their readers.

Waiting: each step of a round is a ``Posted`` step, to run once given ranks have posted
a given round. A request's progress runs it only when they have, and otherwise moves on,
so a non-blocking call returns at once and ranks may wait on the requests of different
communicators in different orders. A blocking call with nothing queued runs the steps
inline and waits as for any stored word (``Channels.wait_stored``: it yields its CPU,
since the peer is usually runnable and on a busy machine a sleep costs a wake-up, then
pauses as ``p2p.Pacer`` says); a peer that never posts makes it raise ``NetdamTimeout``
naming that peer at the communicator's timeout.

No device takes part, so no datagram shows the exchange: a capture of a job (or
``load_store=False``) turns load/store off (``netdam.api``).
"""

from __future__ import annotations

from netdam.collectives.p2p import WORD
from netdam.collectives.steps import Gated


def load_store_max(comm) -> int:
    """The most bytes one rank stages in a round: one slot."""
    return comm.layout.slot_bytes


class Posted(Gated):
    """A step that may run once the ranks ``peers`` have posted round ``k`` (``steps``):
    called, it waits as long as it must (the blocking path, which names a rank that
    never posts) and runs ``then``."""

    __slots__ = ("comm", "k", "peers", "then")

    def __init__(self, comm, k: int, peers, then):
        self.comm, self.k, self.then = comm, k, then
        self.peers = [p for p in peers if p != comm.rank]

    def _late(self) -> list[int]:
        """The peers that have not posted round k yet."""
        stores, k = self.comm.channels.stores, self.k
        return [p for p in self.peers if stores[p].words[_posted(self.comm, p)] < k]

    def ready(self) -> bool:
        ch = self.comm.channels
        if not self._late():
            ch.peers_posted()
            return True
        ch.waiting_on_peers()
        return False

    def wait(self) -> None:
        for p in self._late():     # (mostly none: a glance at each word first)
            _wait_posted(self.comm, p, self.k)

    def stalled(self) -> str:
        return f"round {self.k} not posted by rank(s) {self._late()}"


def allreduce_load_store(comm, buf: memoryview, red):
    """One rank's ``load_store`` all_reduce of ``buf`` in place (module docstring): a
    generator of ``Posted`` steps: stage and post, then reduce every stage."""
    k = yield from _post(comm, buf)
    yield Posted(comm, k, range(comm.size),
                 lambda: _fold(comm, k, buf, 0, red, range(comm.size)))


def allreduce_now(comm, buf: memoryview, red) -> None:
    """``allreduce_load_store`` run to its end by the caller: the same round for a
    blocking call that runs inline (``Communicator._start``), without the generator and
    its steps, which cost a 4 KiB call about 4.5 of its 36.5 us of CPU (BENCHMARKS.md)."""
    k = _round_now(comm, buf)
    _fold(comm, k, buf, 0, red, range(comm.size))


def reduce_load_store(comm, buf: memoryview, root: int, red):
    """The reduce: every rank stages ``buf``; the root folds the stages in rank order
    into its ``buf``, the others are done once they have posted."""
    k = yield from _post(comm, buf)
    if comm.rank == root:
        yield Posted(comm, k, range(comm.size),
                     lambda: _fold(comm, k, buf, 0, red, range(comm.size)))


def reduce_scatter_load_store(comm, buf: memoryview, spans, red):
    """The reduce_scatter: every rank stages its whole ``buf``; rank r folds block r
    (``spans[r]``) of every stage in rank order into that block of its ``buf``."""
    k = yield from _post(comm, buf)
    lo, hi = spans[comm.rank]
    yield Posted(comm, k, range(comm.size),
                 lambda: _fold(comm, k, buf[lo:hi], lo, red, range(comm.size)))


def broadcast_load_store(comm, buf: memoryview, root: int):
    """The broadcast: the root stages ``buf``, every other rank copies it out."""
    k = yield from _post(comm, buf if comm.rank == root else b"")
    if comm.rank != root:
        yield Posted(comm, k, (root,), lambda: _fold(comm, k, buf, 0, None, (root,)))


def all_gather_load_store(comm, buf: memoryview, spans):
    """The all_gather: every rank stages its own span of ``buf`` and copies every other
    rank's stage into that rank's span."""
    lo, hi = spans[comm.rank]
    k = yield from _post(comm, buf[lo:hi])

    def gather() -> None:
        for p in range(comm.size):
            if p != comm.rank:
                a, b = spans[p]
                _fold(comm, k, buf[a:b], 0, None, (p,))
    yield Posted(comm, k, range(comm.size), gather)


def all_to_all_load_store(comm, src: memoryview, dst: memoryview, part: int):
    """The all_to_all of equal parts: every rank stages its whole ``src``; rank r copies
    part r of every rank's stage into that rank's part of ``dst``."""
    k = yield from _post(comm, src)

    def gather() -> None:
        at = comm.rank * part
        for p in range(comm.size):
            _fold(comm, k, dst[p * part:(p + 1) * part], at, None, (p,))
    yield Posted(comm, k, range(comm.size), gather)


def barrier_load_store(comm):
    """A barrier of the same rounds: post, then wait until every rank has posted."""
    k = yield from _post(comm, b"")
    yield Posted(comm, k, range(comm.size), lambda: None)


def barrier_now(comm) -> None:
    """``barrier_load_store`` run to its end by the caller, as ``allreduce_now``."""
    _round_now(comm, b"")


def _fold(comm, k: int, out: memoryview, at: int, red, ranks) -> None:
    """``out`` = the bytes at offset ``at`` of the round-k stages of ``ranks``, folded
    with ``red`` in that order (``red`` None: one rank, copied); every one of them has
    posted round k."""
    lay, stores, nb = comm.layout, comm.channels.stores, len(out)
    first = True
    for p in ranks:
        start = lay.slot(p, k) + at               # rank p's stage in its own area
        src = stores[p].view[start:start + nb]
        if first:
            out[:] = src
            first = False
        else:
            red(out, src)


def _post(comm, data):
    """Start this rank's next round (``k = yield from _post(...)``): stage ``data``, then
    store the round number in the posted word. The stage was last used ``slots`` rounds
    ago, so this is a ``Posted`` step for the round after that one: once every rank has
    posted it, each has read the stage."""
    k = _next_round(comm)
    yield Posted(comm, k - comm.layout.slots + 1, range(comm.size),
                 lambda: _stage(comm, k, data))
    return k


def _round_now(comm, data) -> int:
    """This rank's next round, all of it here: wait until every rank has read the stage
    it reuses, stage ``data`` and post, wait until every rank has posted; returns k."""
    k = _next_round(comm)
    _await_round(comm, k - comm.layout.slots + 1)
    _stage(comm, k, data)
    _await_round(comm, k)
    return k


def _next_round(comm) -> int:
    ch = comm.channels
    k = ch.load_store_rounds = ch.load_store_rounds + 1
    return k


def _stage(comm, k: int, data) -> None:
    """Copy ``data`` into this rank's round-k stage, then post round k."""
    rank = comm.rank
    mine = comm.channels.stores[rank]
    if len(data):
        at = comm.layout.slot(rank, k)
        mine.view[at:at + len(data)] = data
    mine.words[_posted(comm, rank)] = k   # posted: after the data


def _await_round(comm, k: int) -> None:
    """Block until every other rank has posted round ``k`` (mostly they have: a glance
    at each word), as a called ``Posted`` step does."""
    stores, rank = comm.channels.stores, comm.rank
    for p in range(comm.size):
        if p != rank and stores[p].words[_posted(comm, p)] < k:
            _wait_posted(comm, p, k)


def _posted(comm, rank: int) -> int:
    """The index of ``rank``'s posted word among its area's words: its head word for
    itself, which no channel uses."""
    return comm.layout.heads // WORD + rank


def _wait_posted(comm, peer: int, k: int) -> None:
    comm.channels.wait_stored(
        peer, _posted(comm, peer), k, comm.timeout,
        lambda: f"rank {comm.rank}: load_store round {k}: rank {peer} did not post within "
                f"{comm.timeout:g} s")
