"""Whether every rank called a collective with the same arguments (NETDAM_CHECK_ARGS).

Owns the argument check a communicator runs before each collective when its
``check_args`` is on, as PyTorch's ``TORCH_DISTRIBUTED_DEBUG=DETAIL`` does: without it,
ranks that disagree (a different count, dtype, op, root or algorithm, or a different
collective altogether) run out of step and get wrong results or a timeout, as with MPI
or NCCL. A call is summed up as one row of integers of the same length on every rank
(``fingerprint``). Before any byte of the collective moves, the ranks take the
element-wise maximum of a vector made from their rows (``bounds``: the row, its
negation, and an all_to_allv's counts as matrices), one recursive-doubling all_reduce
of log2(n) steps, and every rank learns whether all rows agree (``agreed``). Only if
they do not, the ranks all-gather their rows; every rank reads the same table, so
every rank raises the same error (``disagreement`` says which) and none runs the
collective. The vectors and rows have the same size whatever the arguments, so the
check itself cannot go out of step.

Sans-I/O: ``fingerprint``, ``bounds``, ``agreed`` and ``disagreement`` are plain
functions of their arguments; ``checked`` is the generator that the communicator's
progress engine runs (the exchanges over the ranks' channels, then the collective's own
generator).

What is compared, per collective: its name; the algorithm each rank runs (after the
automatic choice, which depends on per-rank state such as a registered buffer);
reproducible mode; dtype (and a reduction's element type); op; root; the element
count; the shape where the collective needs one (all_gather and all_to_all stack or
split rows); a reduce_scatter's block counts; an all_to_allv's send counts against the
receivers' receive counts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from firmware_model import alu
from netdam.collectives import algorithms as A
from netdam.errors import UsageError
from netdam.wire.fields import DType, RedOp

#: every collective a communicator checks, by the index its rows carry
COLLECTIVES = ("all_reduce", "reduce", "broadcast", "all_gather", "reduce_scatter",
               "all_to_all", "all_to_allv", "barrier", "moe_dispatch", "moe_combine")
#: every algorithm name the collectives choose from ("" where a collective has one)
ALGORITHMS = ("", "ring", "recursive_doubling", "one_shot", "load_store", "chain", "tree",
              "hierarchical", "canonical", "binomial", "multicast")
#: the scalar columns of a row, in order (an unused one holds ``UNSET``)
SCALARS = ("collective", "algorithm", "reproducible", "dtype", "reduce_dtype", "op",
           "root", "count", "experts")
#: dimensions of a shape kept one by one; a longer shape's last column holds the
#: product of the rest
SHAPE_DIMS = 8
UNSET = -1


def width(n: int) -> int:
    """Integers per row for a communicator of ``n`` ranks: the scalars, the shape
    (its length and ``SHAPE_DIMS`` dimensions), and two vectors of ``n`` counts."""
    return len(SCALARS) + 1 + SHAPE_DIMS + 2 * n


def fingerprint(n: int, collective: str, *, algorithm: str = "",
                reproducible: bool | None = None, dtype=None,
                reduce_dtype: int | None = None, op: int | None = None,
                root: int | None = None, count: int | None = None,
                experts: int | None = None, shape: Sequence[int] | None = None,
                counts: Sequence[int] | None = None,
                recv_counts: Sequence[int] | None = None) -> np.ndarray:
    """This rank's row for a call of ``collective`` on a communicator of ``n`` ranks.
    ``counts``: a reduce_scatter's block counts, or an all_to_allv's send counts (then
    with ``recv_counts``). ``dtype``: the arrays' NumPy dtype; ``reduce_dtype``: the
    element type a reduction computes in (``DType``), which ``dtype=`` may override."""
    row = np.full(width(n), UNSET, np.int64)
    scalars = (COLLECTIVES.index(collective), ALGORITHMS.index(algorithm), reproducible,
               None if dtype is None else ord(np.dtype(dtype).char), reduce_dtype, op,
               root, count, experts)
    for i, value in enumerate(scalars):
        if value is not None:
            row[i] = int(value)
    at = len(SCALARS)
    if shape is not None:
        dims = [int(d) for d in shape]
        if len(dims) > SHAPE_DIMS:
            dims[SHAPE_DIMS - 1:] = [int(np.prod(dims[SHAPE_DIMS - 1:], dtype=np.int64))]
        row[at] = len(shape)
        row[at + 1:at + 1 + len(dims)] = dims
    at += 1 + SHAPE_DIMS
    for vector in (counts, recv_counts):
        if vector is not None:
            row[at:at + n] = [int(c) for c in vector]
        at += n
    return row


#: how a message names a column's values, where they differ
LABELS = {"algorithm": "algorithms", "reproducible": "reproducible modes",
          "dtype": "dtypes", "reduce_dtype": "reduction dtypes", "op": "ops",
          "root": "roots", "count": "element counts",
          "experts": "expert counts"}


def _name(column: str, value: int) -> str:
    if value == UNSET:
        return "none"
    if column == "collective":
        return COLLECTIVES[value]
    if column == "algorithm":
        return ALGORITHMS[value] or "none"
    if column == "reproducible":
        return "on" if value else "off"
    if column == "dtype":
        return np.dtype(chr(value)).name
    if column == "reduce_dtype":
        return DType(value).name.lower()
    if column == "op":
        return RedOp(value).name.lower()
    return str(value)


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _spread(values: list) -> str:
    """value on ranks ...; other value on ranks ... (the most common first)."""
    by: dict = {}
    for r, v in enumerate(values):
        by.setdefault(v, []).append(r)
    parts = sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))
    return "; ".join(f"{v} on {_ranks(rs)}" for v, rs in parts)


def disagreement(table: np.ndarray) -> str | None:
    """What the ranks' rows (``table[r]`` is rank r's ``fingerprint``) disagree on, in
    one line that follows "the ranks called "; None when they agree. The collectives
    are compared first: where they differ, nothing else is comparable."""
    n = len(table)
    names = [_name("collective", int(v)) for v in table[:, 0]]
    if len(set(names)) > 1:
        return f"different collectives: {_spread(names)}"
    what = names[0]
    for i, column in enumerate(SCALARS[1:], 1):
        values = table[:, i]
        if (values != values[0]).any():
            return (f"{what} with different {LABELS[column]}: "
                    + _spread([_name(column, int(v)) for v in values]))
    at = len(SCALARS)
    shapes = table[:, at:at + 1 + SHAPE_DIMS]
    if (shapes != shapes[0]).any():
        return f"{what} with different shapes: " + _spread([
            "none" if row[0] == UNSET else
            str(tuple(int(d) for d in row[1:1 + min(int(row[0]), SHAPE_DIMS)]))
            for row in shapes])
    at += 1 + SHAPE_DIMS
    sent, wanted = table[:, at:at + n], table[:, at + n:at + 2 * n]
    if (wanted == UNSET).all():            # one vector: the same on every rank
        if (sent != sent[0]).any():
            return f"{what} with different block counts: " + _spread([
                "none" if (row == UNSET).all() else str(row.tolist()) for row in sent])
        return None
    for r in range(n):                     # rank r sends sent[r, p] to p, who wants
        for p in range(n):                 # wanted[p, r] from r
            if sent[r, p] != wanted[p, r]:
                return (f"{what} with counts that do not match: rank {r} sends "
                        f"{sent[r, p]} elements to rank {p}, which expects {wanted[p, r]}")
    return None


def _split(row: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A row's scalar and shape columns, and its two count vectors."""
    at = len(SCALARS) + 1 + SHAPE_DIMS
    return row[:at], row[at:at + n], row[at + n:at + 2 * n]


def bounds(row: np.ndarray, rank: int, n: int) -> np.ndarray:
    """The vector whose element-wise maximum over the ranks says whether their rows
    agree (``agreed``). First the columns every rank must have alike (the scalars, the
    shape, and the block counts unless they are an all_to_allv's send counts, that is
    unless ``recv_counts`` is set), then their negations, so that the maximum carries
    the minimum too; then the send counts as row ``rank`` of an n x n matrix and the
    receive counts as column ``rank`` of another, every other entry ``UNSET`` (a count
    is never negative), so that the maximum holds every rank's sends and receives.
    Every call carries the matrices, whatever its collective (the ranks may not agree
    on that either): 2 n^2 integers, 1 KiB at 8 ranks, 64 KiB at 64."""
    alike, sent, wanted = _split(row, n)
    pair = bool((wanted != UNSET).any())     # an all_to_allv: the counts go apart
    alike = np.concatenate([alike, np.full(n, UNSET, np.int64) if pair else sent])
    sends = np.full((n, n), UNSET, np.int64)
    wants = np.full((n, n), UNSET, np.int64)
    if pair:
        sends[rank, :] = sent
        wants[:, rank] = wanted              # wants[p, r]: what r expects from p
    return np.concatenate([alike, -alike, sends.ravel(), wants.ravel()])


def agreed(top: np.ndarray, n: int) -> bool:
    """Whether the ranks' rows agree, from the element-wise maximum of their
    ``bounds``: each alike column's maximum equals its minimum (minus the maximum of
    its negation), and what each rank sends each other is what that one expects."""
    k = (len(top) - 2 * n * n) // 2
    high, low = top[:k], -top[k:2 * k]
    sends, wants = top[2 * k:2 * k + n * n], top[2 * k + n * n:]
    return bool((high == low).all() and (sends == wants).all())


def checked(rank: int, n: int, row: np.ndarray, collective):
    """The generator of a checked call: learn whether every rank's ``row`` agrees
    (``bounds``, ``agreed``: one all_reduce); if not, gather the rows and raise
    ``UsageError`` on every rank (``disagreement``); else run ``collective`` (the
    call's own generator) and return its value."""
    top = bounds(row, rank, n)
    yield from A.allreduce_recursive_doubling(rank, n, memoryview(top).cast("B"),
                                              top.itemsize, _MAX)
    if agreed(top, n):
        return (yield from collective)
    table = np.empty((n, len(row)), np.int64)
    table[rank] = row
    step = row.nbytes
    yield from A.all_gather_ring(rank, n, memoryview(table).cast("B"),
                                 [(r * step, (r + 1) * step) for r in range(n)])
    raise UsageError(f"the ranks called {disagreement(table)} (argument check)")


_MAX = alu.reducer(DType.INT64, RedOp.MAX)


__all__ = ["ALGORITHMS", "COLLECTIVES", "SCALARS", "agreed", "bounds", "checked",
           "disagreement", "fingerprint", "width"]
