"""The argument check (netdam.collectives.agree): the rows and the one-line verdict in
memory, then ranks of a real cluster that disagree. Invariant: ranks that pass a
collective different arguments all get the same UsageError before any byte of it
moves; ranks that agree get their results as without the check."""

import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdam.cluster import LocalCluster
from netdam.collectives import agree
from netdam.wire.fields import DType, RedOp


def table(*rows):
    return np.stack(rows)


def call(n=3, **kw):
    kw.setdefault("collective", "all_reduce")
    return agree.fingerprint(n, kw.pop("collective"), **kw)


def test_rows_have_one_width_whatever_the_call():
    n = 4
    rows = [call(n), call(n, collective="barrier"),
            call(n, collective="all_gather", shape=(2, 3, 4)),
            call(n, collective="all_to_allv", counts=[1, 2, 3, 4], recv_counts=[4, 3, 2, 1]),
            call(n, collective="all_gather", shape=tuple(range(1, 20)))]
    assert {len(r) for r in rows} == {agree.width(n)}
    assert all(r.dtype == np.int64 for r in rows)


def test_agreeing_ranks_pass():
    row = call(algorithm="ring", reproducible=False, dtype=np.float32,
               reduce_dtype=DType.FLOAT32, op=RedOp.SUM, count=1000)
    assert agree.disagreement(table(row, row.copy(), row.copy())) is None


@pytest.mark.parametrize("field,a,b,words", [
    ("count", 1000, 800, "all_reduce with different element counts: 1000 on ranks 0, 2; "
                         "800 on rank 1"),
    ("op", RedOp.SUM, RedOp.MAX, "different ops: sum on ranks 0, 2; max on rank 1"),
    ("dtype", np.float32, np.float64, "different dtypes: float32 on ranks 0, 2; float64"),
    ("reduce_dtype", DType.FLOAT32, DType.BFLOAT16,
     "different reduction dtypes: float32 on ranks 0, 2; bfloat16 on rank 1"),
    ("algorithm", "chain", "ring", "different algorithms: chain on ranks 0, 2; ring"),
    ("reproducible", False, True, "different reproducible modes: off on ranks 0, 2; on"),
    ("root", 0, 2, "different roots: 0 on ranks 0, 2; 2 on rank 1"),
])
def test_each_field_that_differs_is_named_with_its_ranks(field, a, b, words):
    rows = [call(**{field: v}) for v in (a, b, a)]
    assert words in agree.disagreement(table(*rows))


def test_different_collectives_are_named_before_anything_else():
    rows = [call(count=10), call(collective="barrier"), call(count=99)]
    assert agree.disagreement(table(*rows)) == \
        "different collectives: all_reduce on ranks 0, 2; barrier on rank 1"


def test_shapes_and_block_counts():
    rows = [call(collective="all_gather", shape=s) for s in ((4, 3), (4, 3), (4, 2))]
    assert agree.disagreement(table(*rows)) == \
        "all_gather with different shapes: (4, 3) on ranks 0, 1; (4, 2) on rank 2"
    rows = [call(collective="reduce_scatter", counts=c) for c in ([1, 1, 1], None, [1, 1, 1])]
    assert agree.disagreement(table(*rows)) == \
        "reduce_scatter with different block counts: [1, 1, 1] on ranks 0, 2; none on rank 1"


def test_all_to_allv_counts_are_matched_sender_to_receiver():
    # rank r sends r + p elements to p; p expects r + p from r: consistent
    good = [call(collective="all_to_allv", counts=[r + p for p in range(3)],
                 recv_counts=[q + r for q in range(3)]) for r in range(3)]
    assert agree.disagreement(table(*good)) is None
    bad = [call(collective="all_to_allv", counts=[1, 1, 1], recv_counts=[1, 1, 1]),
           call(collective="all_to_allv", counts=[1, 1, 1], recv_counts=[2, 1, 1]),
           call(collective="all_to_allv", counts=[1, 1, 1], recv_counts=[1, 1, 1])]
    assert agree.disagreement(table(*bad)) == (
        "all_to_allv with counts that do not match: rank 0 sends 1 elements to rank 1, "
        "which expects 2")


@given(st.lists(st.integers(0, 3), min_size=2, max_size=6),
       st.sampled_from(["count", "root"]))
def test_a_verdict_iff_some_row_differs_naming_each_rank_under_its_value(values, field):
    rows = [call(n=len(values), **{field: v}) for v in values]
    verdict = agree.disagreement(table(*rows))
    assert (verdict is None) == (len(set(values)) == 1)
    if verdict is not None:
        assert "\n" not in verdict
        said = {}
        for group in verdict.split(": ", 1)[1].split("; "):
            value, ranks = group.split(" on ")
            for q in ranks.removeprefix("ranks ").removeprefix("rank ").split(", "):
                assert int(q) not in said
                said[int(q)] = int(value)
        assert said == dict(enumerate(values))


def _rank_call(draw, n):
    kind = draw(st.sampled_from(["all_reduce", "reduce_scatter", "all_to_allv"]))
    small = st.integers(0, 1)
    if kind == "all_to_allv":
        return call(n, collective=kind, counts=draw(st.lists(small, min_size=n, max_size=n)),
                    recv_counts=draw(st.lists(small, min_size=n, max_size=n)))
    if kind == "reduce_scatter":
        return call(n, collective=kind, counts=draw(st.one_of(
            st.none(), st.lists(small, min_size=n, max_size=n))))
    return call(n, collective=kind, count=draw(small), root=draw(small),
                shape=draw(st.one_of(st.none(), st.lists(small, max_size=3))))


@st.composite
def tables(draw):
    n = draw(st.integers(1, 4))
    rows = [_rank_call(draw, n)]
    for _ in range(n - 1):          # often a copy of rank 0's call, so agreement happens
        rows.append(rows[0].copy() if draw(st.booleans()) else _rank_call(draw, n))
    return np.stack(rows)


@given(tables())
def test_the_max_reduction_agrees_exactly_when_the_table_does(t):
    """``checked`` runs the collective when the maximum of the ranks' bounds says they
    agree and reports ``disagreement`` of the gathered table otherwise: the two must
    never differ, or a check would pass ranks that disagree or fail with no reason."""
    n = len(t)
    top = np.max([agree.bounds(row, r, n) for r, row in enumerate(t)], axis=0)
    assert agree.agreed(top, n) == (agree.disagreement(t) is None)


SCRIPT = textwrap.dedent("""
    import os
    import numpy as np, netdam
    from netdam.errors import NetdamError, UsageError
    r0 = os.environ["NETDAM_RANK"] == "0"
    comm = netdam.init(timeout=20, check_args=r0)    # one rank asks: the whole job checks
    r, n = comm.rank, comm.size
    assert comm.check_args

    # agreeing ranks: results as always, blocking, non-blocking, in-network
    assert (comm.all_reduce(np.full(1000, r + 1, np.float32)) == n * (n + 1) / 2).all()
    h = comm.all_reduce_nb(np.ones(3 << 18, np.float32), algo="chain")
    assert (comm.broadcast(np.full(5, r, np.int16), root=1) == 1).all()
    assert (h.wait() == n).all()
    assert comm.all_gather(np.array([r, r], np.int64)).tolist() == [[q, q] for q in range(n)]
    comm.barrier()
    subs = [comm.split(0) for _ in range(3)]
    assert all(s.check_args for s in subs)

    def refused(call, words):
        try:
            call()
        except UsageError as exc:
            msg = str(exc)
            assert words in msg and "\\n" not in msg, msg
            return
        raise AssertionError("ran a collective the ranks disagree on")

    def broken(c):
        try:
            c.barrier()
        except NetdamError as exc:
            assert "broken" in str(exc), exc
        else:
            raise AssertionError("a communicator ran on after a refused collective")

    # a count that differs: every rank hears the same verdict
    refused(lambda: subs[0].all_reduce(np.ones(800 if r == 1 else 1000, np.float32)),
            "all_reduce with different element counts: 1000 on ranks 0, 2; 800 on rank 1")
    broken(subs[0])
    # different collectives
    refused(lambda: subs[1].barrier() if r == 2 else subs[1].all_reduce(np.ones(4)),
            "different collectives: all_reduce on ranks 0, 1; barrier on rank 2")
    # receive counts that do not match what is sent
    want = [2 if (r, p) == (1, 0) else 1 for p in range(n)]
    refused(lambda: subs[2].all_to_allv(np.ones(n), [1] * n, want),
            "rank 0 sends 1 elements to rank 1, which expects 2")
    # non-blocking, and an algorithm that only one rank asks for
    req = comm.all_reduce_nb(np.ones(1 << 18, np.float32), algo="chain" if r0 else "ring")
    refused(req.wait, "different algorithms: ring on ranks 1, 2; chain on rank 0")
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(120)
def test_ranks_that_disagree_all_get_the_same_error(run_job):
    with LocalCluster(nodes=3, mem_size=64 << 20) as c:
        out = run_job(c, SCRIPT, 3, job="agree")
    assert "Traceback" not in out
