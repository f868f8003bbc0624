"""The host-driven algorithms, run in memory for every world size 1..8, equal NumPy.
Invariant: every algorithm ends with every rank holding MPI's answer, with no message
left unreceived and no deadlock."""

import numpy as np
import pytest

from netdam.collectives import algorithms as A
from netdam.collectives.schedule import ScheduleError, Send, run_local

SIZES = [1, 2, 3, 4, 5, 6, 7, 8]


def _sum(dst, src):
    d = np.frombuffer(dst, dtype=np.int64)
    d += np.frombuffer(src, dtype=np.int64)


def _inputs(n, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-1000, 1000, count).astype(np.int64) for _ in range(n)]


@pytest.mark.parametrize("algo", sorted(A.ALLREDUCE))
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("count", [0, 1, 7, 64])
def test_allreduce(algo, n, count):
    xs = _inputs(n, count)
    bufs = [x.copy() for x in xs]
    run_local([A.ALLREDUCE[algo](r, n, memoryview(bufs[r]).cast("B"), 8, _sum)
               for r in range(n)])
    for b in bufs:
        np.testing.assert_array_equal(b, sum(xs))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("root", [0, 2])
def test_broadcast_and_reduce(n, root):
    root %= n
    xs = _inputs(n, 9)
    bufs = [x.copy() for x in xs]
    run_local([A.broadcast_binomial(r, n, memoryview(bufs[r]).cast("B"), root)
               for r in range(n)])
    for b in bufs:
        np.testing.assert_array_equal(b, xs[root])
    bufs = [x.copy() for x in xs]
    run_local([A.reduce_binomial(r, n, memoryview(bufs[r]).cast("B"), root, _sum)
               for r in range(n)])
    np.testing.assert_array_equal(bufs[root], sum(xs))


@pytest.mark.parametrize("n", SIZES)
def test_all_gather_reduce_scatter_uneven(n):
    counts = [r + 1 for r in range(n)]  # allgatherv / reduce_scatter with uneven blocks
    spans, start = [], 0
    for c in counts:
        spans.append((start * 8, (start + c) * 8))
        start += c
    total = sum(counts)
    xs = _inputs(n, total, 1)
    outs = [np.zeros(total, np.int64) for _ in range(n)]
    for r in range(n):
        outs[r][spans[r][0] // 8:spans[r][1] // 8] = xs[r][spans[r][0] // 8:spans[r][1] // 8]
    run_local([A.all_gather_ring(r, n, memoryview(outs[r]).cast("B"), spans) for r in range(n)])
    expect = np.concatenate([xs[r][spans[r][0] // 8:spans[r][1] // 8] for r in range(n)])
    for o in outs:
        np.testing.assert_array_equal(o, expect)
    for fn in (A.reduce_scatter_ring, A.reduce_scatter_canonical):
        bufs = [x.copy() for x in xs]
        run_local([fn(r, n, memoryview(bufs[r]).cast("B"), spans, _sum) for r in range(n)])
        total_sum = sum(xs)
        for r in range(n):
            sl = slice(spans[r][0] // 8, spans[r][1] // 8)
            np.testing.assert_array_equal(bufs[r][sl], total_sum[sl])


@pytest.mark.parametrize("n", SIZES)
def test_all_to_all_uneven(n):
    # rank r sends (r + p) % 3 elements to rank p, each tagged with (r, p)
    sc = [[(r + p) % 3 for p in range(n)] for r in range(n)]
    sends, send_spans, recvs, recv_spans = [], [], [], []
    for r in range(n):
        vals = np.concatenate([np.full(sc[r][p], r * 100 + p, np.int64) for p in range(n)])
        sends.append(vals)
        send_spans.append(_spans([sc[r][p] for p in range(n)]))
        recvs.append(np.zeros(sum(sc[p][r] for p in range(n)), np.int64))
        recv_spans.append(_spans([sc[p][r] for p in range(n)]))
    run_local([A.all_to_all_pairwise(r, n, memoryview(sends[r]).cast("B"), send_spans[r],
                                     memoryview(recvs[r]).cast("B"), recv_spans[r])
               for r in range(n)])
    for r in range(n):
        expect = np.concatenate([np.full(sc[p][r], p * 100 + r, np.int64) for p in range(n)])
        np.testing.assert_array_equal(recvs[r], expect)


def _spans(counts):
    out, start = [], 0
    for c in counts:
        out.append((start * 8, (start + c) * 8))
        start += c
    return out


@pytest.mark.parametrize("n", SIZES)
def test_barrier_completes(n):
    assert run_local([A.barrier_dissemination(r, n) for r in range(n)]) == [None] * n


def test_canonical_order_is_rank_order():
    # float32 sums whose value depends on association order
    n = 5
    xs = [np.array([1e8 if r == 0 else (-1e8 if r == 1 else 1.0)] * 5, np.float32)
          for r in range(n)]

    def fsum(dst, src):
        d = np.frombuffer(dst, np.float32)
        d += np.frombuffer(src, np.float32)

    bufs = [x.copy() for x in xs]
    run_local([A.allreduce_canonical(r, n, memoryview(bufs[r]).cast("B"), 4, fsum)
               for r in range(n)])
    expect = xs[0].copy()
    for x in xs[1:]:
        expect += x
    for b in bufs:
        assert b.tobytes() == expect.tobytes()


@pytest.mark.parametrize("n", SIZES)
def test_one_shot_sums_in_rank_order_like_canonical(n):
    # float32 sums whose value depends on association order: one-shot's result is the
    # canonical algorithm's, bit for bit, on every rank
    rng = np.random.default_rng(n)
    xs = [(rng.standard_normal(33) * 10.0 ** rng.integers(-4, 8, 33)).astype(np.float32)
          for _ in range(n)]

    def fsum(dst, src):
        d = np.frombuffer(dst, np.float32)
        d += np.frombuffer(src, np.float32)

    got = {}
    for algo in ("one_shot", "canonical"):
        bufs = [x.copy() for x in xs]
        run_local([A.ALLREDUCE[algo](r, n, memoryview(bufs[r]).cast("B"), 4, fsum)
                   for r in range(n)])
        got[algo] = {b.tobytes() for b in bufs}
    expect = xs[0].copy()
    for x in xs[1:]:
        expect += x
    assert got["one_shot"] == got["canonical"] == {expect.tobytes()}


def test_deadlock_is_reported():
    def waits_forever(r):
        from netdam.collectives.schedule import Recv
        yield Recv(1 - r, 4)
    with pytest.raises(ScheduleError, match="deadlock"):
        run_local([waits_forever(0), waits_forever(1)])


def test_unreceived_message_is_reported():
    def sender():
        yield Send(1, b"abcd")

    def idle():
        return
        yield

    with pytest.raises(ScheduleError, match="never received"):
        run_local([sender(), idle()])
