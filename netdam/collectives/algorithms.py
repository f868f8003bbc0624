"""Host-driven collective algorithms as sans-I/O generators (see schedule.py).

Owns the textbook algorithms, written once and run unchanged by the real driver, the
in-memory test driver and the simulator:

- ring reduce-scatter + all-gather (bandwidth-optimal allreduce),
- recursive doubling with the MPICH fold for non-powers of two (log n steps),
- one-shot: every rank sends its whole buffer to every other and sums locally in rank
  order (one step; latency-optimal for small buffers, reproducible by construction),
- binomial-tree broadcast and reduce,
- ring all-gather(v) and reduce-scatter(v), pairwise all-to-all(v),
- dissemination barrier,
- the canonical-order allreduce of reproducible mode.

Every algorithm works on flat byte buffers (``memoryview`` of uint8) holding whole
elements, with a ``Reducer`` that applies the reduce op in place. Block boundaries come
from ``blocks()`` so that every rank agrees on them for any count and world size.

Reproducible mode (SPEC of the collectives, README "Reproducible mode"): every element of
the result is ``((x_0 op x_1) op x_2) ... op x_{n-1}`` in rank order, whatever the
algorithm, the timing or the faults.
"""

from __future__ import annotations

from typing import Callable, Sequence

from netdam.collectives.schedule import Algorithm, Recv, Send

#: reduce(dst, src): dst[i] = op(dst[i], src[i]) elementwise, in place
Reducer = Callable[[memoryview, memoryview], None]


def blocks(count: int, n: int, esize: int) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of n nearly equal blocks of ``count`` elements.

    The first ``count % n`` blocks get one element more (like numpy.array_split).
    """
    base, extra = divmod(count, n)
    out, start = [], 0
    for i in range(n):
        size = (base + (1 if i < extra else 0)) * esize
        out.append((start, start + size))
        start += size
    return out


def _block(buf: memoryview, span: tuple[int, int]) -> memoryview:
    return buf[span[0]:span[1]]


# -- allreduce ------------------------------------------------------------------------


def allreduce_ring(rank: int, n: int, buf: memoryview, esize: int, red: Reducer) -> Algorithm:
    """Ring allreduce: reduce-scatter then all-gather, 2(n-1) steps of size/n bytes."""
    if n == 1:
        return
    spans = blocks(len(buf) // esize, n, esize)
    yield from _ring_reduce_scatter(rank, n, buf, spans, red)
    yield from _ring_all_gather(rank, n, buf, spans)


def _ring_reduce_scatter(rank, n, buf, spans, red) -> Algorithm:
    """After this, rank r holds the reduced block r."""
    right, left = (rank + 1) % n, (rank - 1) % n
    for s in range(n - 1):
        out_blk, in_blk = (rank - s - 1) % n, (rank - s - 2) % n
        yield Send(right, _block(buf, spans[out_blk]), f"rs{s}")
        data = yield Recv(left, spans[in_blk][1] - spans[in_blk][0], f"rs{s}")
        red(_block(buf, spans[in_blk]), data)


def _ring_all_gather(rank, n, buf, spans) -> Algorithm:
    """Rank r starts holding block r; afterwards every rank holds every block."""
    right, left = (rank + 1) % n, (rank - 1) % n
    for s in range(n - 1):
        out_blk, in_blk = (rank - s) % n, (rank - s - 1) % n
        yield Send(right, _block(buf, spans[out_blk]), f"ag{s}")
        data = yield Recv(left, spans[in_blk][1] - spans[in_blk][0], f"ag{s}")
        _block(buf, spans[in_blk])[:] = data


def allreduce_recursive_doubling(rank: int, n: int, buf: memoryview, esize: int,
                                 red: Reducer) -> Algorithm:
    """Recursive doubling: log2(n) exchanges of the whole buffer.

    For n not a power of two, the first 2*rem ranks pair up (even sends to odd) before
    and get the result back after (MPICH's fold).
    """
    if n == 1:
        return
    p2 = 1 << (n.bit_length() - 1)
    rem = n - p2
    size = len(buf)
    if rank < 2 * rem:
        if rank % 2 == 0:
            yield Send(rank + 1, buf, "fold")
            data = yield Recv(rank + 1, size, "unfold")
            buf[:] = data
            return
        data = yield Recv(rank - 1, size, "fold")
        red(buf, data)
        vrank = rank // 2
    else:
        vrank = rank - rem
    mask = 1
    while mask < p2:
        vpeer = vrank ^ mask
        peer = vpeer * 2 + 1 if vpeer < rem else vpeer + rem
        yield Send(peer, buf, f"rd{mask}")
        data = yield Recv(peer, size, f"rd{mask}")
        red(buf, data)
        mask <<= 1
    if rank < 2 * rem:
        yield Send(rank - 1, buf, "unfold")


def allreduce_canonical(rank: int, n: int, buf: memoryview, esize: int,
                        red: Reducer) -> Algorithm:
    """Reproducible allreduce: block b is reduced by rank b in rank order 0..n-1.

    Every rank sends block b of its input to rank b; rank b computes
    ``((x_0 op x_1) op ...) op x_{n-1}`` for its block, then a ring all-gather spreads
    the result. Costs the same bytes as the ring; the order is fixed by the ranks alone.
    """
    if n == 1:
        return
    spans = blocks(len(buf) // esize, n, esize)
    yield from reduce_scatter_canonical(rank, n, buf, spans, red)
    yield from _ring_all_gather(rank, n, buf, spans)


def allreduce_one_shot(rank: int, n: int, buf: memoryview, esize: int,
                       red: Reducer) -> Algorithm:
    """One-shot allreduce: one step. Every rank sends its whole buffer to every other
    rank (n-1 messages, all in flight at once), then reduces the n buffers locally in rank
    order, ``((x_0 op x_1) op ...) op x_{n-1}``: the result is bit-identical on every rank
    and to the canonical algorithm's. Moves (n-1) x size bytes per rank, so it is for
    small buffers, where one step instead of log n or 2(n-1) is what counts."""
    if n == 1:
        return
    for s in range(1, n):   # staggered, so no peer gets everyone's message first
        yield Send((rank + s) % n, buf, "one_shot")
    parts: list = [None] * n
    for s in range(1, n):
        peer = (rank - s) % n
        parts[peer] = yield Recv(peer, len(buf), "one_shot")
    if rank > 0:            # rank order: x_0 first, then every later rank's, own included
        parts[rank] = bytes(buf)
        buf[:] = parts[0]
    for r in range(1, n):
        red(buf, memoryview(parts[r]))


# -- rooted ---------------------------------------------------------------------------


def broadcast_binomial(rank: int, n: int, buf: memoryview, root: int) -> Algorithm:
    """Binomial-tree broadcast from ``root``: ceil(log2 n) rounds."""
    vrank = (rank - root) % n
    mask = 1
    while mask < n:  # receive from the parent
        if vrank & mask:
            data = yield Recv((rank - mask) % n, len(buf), "bcast")
            buf[:] = data
            break
        mask <<= 1
    mask >>= 1
    while mask > 0:  # send to the children
        if vrank + mask < n:
            yield Send((rank + mask) % n, buf, "bcast")
        mask >>= 1


def reduce_binomial(rank: int, n: int, buf: memoryview, root: int, red: Reducer) -> Algorithm:
    """Binomial-tree reduce to ``root``; ``buf`` of the root ends with the result
    (other ranks' buffers hold partial sums afterwards)."""
    vrank = (rank - root) % n
    mask = 1
    while mask < n:
        if vrank & mask:
            yield Send((rank - mask) % n, buf, "reduce")
            return
        if vrank + mask < n:
            data = yield Recv((rank + mask) % n, len(buf), "reduce")
            red(buf, data)
        mask <<= 1


# -- gather / scatter -----------------------------------------------------------------


def all_gather_ring(rank: int, n: int, out: memoryview, spans: Sequence[tuple[int, int]]
                    ) -> Algorithm:
    """Ring all-gather(v): ``out`` holds this rank's block at spans[rank] on entry."""
    if n > 1:
        yield from _ring_all_gather(rank, n, out, spans)


def reduce_scatter_ring(rank: int, n: int, buf: memoryview,
                        spans: Sequence[tuple[int, int]], red: Reducer) -> Algorithm:
    """Ring reduce-scatter(v): afterwards spans[rank] of ``buf`` holds the reduced block."""
    if n > 1:
        yield from _ring_reduce_scatter(rank, n, buf, spans, red)


def reduce_scatter_canonical(rank: int, n: int, buf: memoryview,
                             spans: Sequence[tuple[int, int]], red: Reducer) -> Algorithm:
    """Reproducible reduce-scatter: block r reduced at rank r in rank order."""
    if n == 1:
        return
    for s in range(1, n):
        peer = (rank + s) % n
        yield Send(peer, _block(buf, spans[peer]), "canon")
    mine = _block(buf, spans[rank])
    parts: dict[int, bytes] = {rank: bytes(mine)}
    for s in range(1, n):
        peer = (rank - s) % n
        parts[peer] = yield Recv(peer, len(mine), "canon")
    mine[:] = parts[0]
    for r in range(1, n):
        red(mine, memoryview(parts[r]))


def all_to_all_pairwise(rank: int, n: int, send: memoryview,
                        send_spans: Sequence[tuple[int, int]], recv: memoryview,
                        recv_spans: Sequence[tuple[int, int]]) -> Algorithm:
    """Pairwise exchange: in step s, send to rank+s and receive from rank-s.

    ``send_spans[p]`` is what goes to p; ``recv_spans[p]`` is where p's data lands.
    """
    _block(recv, recv_spans[rank])[:] = _block(send, send_spans[rank])
    for s in range(1, n):
        to, frm = (rank + s) % n, (rank - s) % n
        yield Send(to, _block(send, send_spans[to]), f"a2a{s}")
        data = yield Recv(frm, recv_spans[frm][1] - recv_spans[frm][0], f"a2a{s}")
        _block(recv, recv_spans[frm])[:] = data


def barrier_dissemination(rank: int, n: int) -> Algorithm:
    """Dissemination barrier: ceil(log2 n) rounds of empty messages."""
    dist = 1
    while dist < n:
        yield Send((rank + dist) % n, b"", "barrier")
        yield Recv((rank - dist) % n, 0, "barrier")
        dist <<= 1


#: allreduce algorithms by name (the communicator's ``algo=`` for host-driven ones)
ALLREDUCE = {
    "ring": allreduce_ring,
    "recursive_doubling": allreduce_recursive_doubling,
    "one_shot": allreduce_one_shot,
    "canonical": allreduce_canonical,
}
