"""Scale-up collectives: ranks of one node that load and store each other's device memory.

Owns the ``load_store`` all_reduce and barrier. When every rank of a communicator maps every
rank's area of its home device (all their devices are on this node's shared memory and
their regions grant it: ``Channels.load_store``), a small all_reduce needs no device
operation and no message, as NCCL's one-shot all_reduce inside an NVLink domain reads
its peers' buffers:

- each rank copies its input into its own *stage*, a slot of its own area that no
  channel uses (``Layout.slot(rank, k)``: nobody sends to itself), and then stores the
  round number in its own *posted* word (its head word for itself, which no channel
  uses either): the data is in memory before the word says so (stores stay in order on
  this CPU, ``netdam.transport.shm.ORDERED_CPU``);
- each rank waits until every other rank's posted word has reached the round and reduces
  the n stages in rank order, ``((x_0 op x_1) op ...) op x_{n-1}``, into its result:
  bit-identical on every rank and to the canonical algorithm's (reproducible mode).

Rounds rotate over the ``Layout.slots`` stages. A rank writes round k's stage only after
it has read every peer's stage of round k-1, and it reads a peer's stage of round k only
once that peer has posted round k, hence after that peer finished round k-1; so, with two
stages or more, no stage is overwritten while anyone still reads it. The message size is
at most one stage (``load_store_max``). A barrier is a round without data: post, then
wait for every rank's word.

Waiting: a rank that finds a peer's word short yields its CPU (the peer is usually
runnable, and on a busy machine a sleep costs a wake-up) for ``p2p.YIELD_SPIN``, then
sleeps in pauses that double up to ``p2p.P2P_SLEEP_MAX``; a peer that never posts makes
it raise ``NetdamTimeout`` naming that peer at the communicator's timeout. Like the in-network
algorithms' device steps, the wait runs inside the request's progress, so a
non-blocking call of this algorithm returns once its result is in.

No device takes part, so no datagram shows the exchange: a capture of a job (or
``load_store=False``) turns load/store off (``netdam.api``).
"""

from __future__ import annotations

import os
import time

from netdam.collectives.p2p import P2P_SLEEP_MAX, SLEEP_MIN, WORD, YIELD_SPIN
from netdam.handle import NetdamTimeout


def load_store_max(comm) -> int:
    """The largest all_reduce (bytes per rank) ``load_store`` takes: one stage."""
    return comm.layout.slot_bytes


def allreduce_load_store(comm, buf: memoryview, red):
    """One rank's ``load_store`` all_reduce of ``buf`` in place (module docstring): a
    generator that stages and posts at once, then yields the wait-and-reduce step."""
    lay, k = comm.layout, _post(comm, buf)
    nb = len(buf)

    def gather() -> None:
        for p, area in enumerate(comm.channels.stores):
            if p != comm.rank:
                _wait_posted(comm, p, k)
            at = lay.slot(p, k)                   # rank p's stage in its own area
            src = area.view[at:at + nb].data
            if p == 0:
                buf[:] = src
            else:
                red(buf, src)
    yield gather


def barrier_load_store(comm):
    """A barrier of the same rounds: post, then wait until every rank has posted."""
    k = _post(comm, b"")

    def wait() -> None:
        for p in range(comm.size):
            if p != comm.rank:
                _wait_posted(comm, p, k)
    yield wait


def _post(comm, data) -> int:
    """Start this rank's next round: stage ``data``, then store the round number in the
    posted word; returns the round."""
    ch, lay, rank = comm.channels, comm.layout, comm.rank
    k = ch.load_store_rounds = ch.load_store_rounds + 1
    mine, stage = ch.stores[rank], lay.slot(rank, k)
    if len(data):
        mine.view[stage:stage + len(data)] = data
    mine.words[lay.heads // WORD + rank] = k       # posted: after the data
    return k


def _wait_posted(comm, peer: int, k: int) -> None:
    words, at = comm.channels.stores[peer].words, comm.layout.heads // WORD + peer
    if words[at] >= k:
        return
    start = time.monotonic()
    pause = SLEEP_MIN
    while words[at] < k:
        waited = time.monotonic() - start
        if waited > comm.timeout:
            raise NetdamTimeout(f"rank {comm.rank}: all_reduce(load_store) round {k}: "
                                f"rank {peer} did not post within {comm.timeout:g} s")
        if waited < YIELD_SPIN:
            os.sched_yield()
        else:
            time.sleep(pause)
            pause = min(pause * 2, P2P_SLEEP_MAX)
