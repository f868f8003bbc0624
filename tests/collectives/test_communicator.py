"""Communicator features beyond the matrix, on a real cluster: sub-communicators that
run collectives at the same time, non-blocking collectives completing in order, in-place
and out-of-place forms, and argument errors as one readable UsageError."""

import textwrap

import pytest

from netdam.cluster import LocalCluster

SCRIPT = textwrap.dedent("""
    import numpy as np, netdam
    from netdam.errors import UsageError
    comm = netdam.init(timeout=30)
    r, n = comm.rank, comm.size

    # sub-communicators: evens and odds reduce at the same time
    sub = comm.split(color=r % 2, key=-r)          # reversed order inside each group
    members = [q for q in range(n) if q % 2 == r % 2]
    assert sub.size == len(members) and sub.rank == sorted(members, reverse=True).index(r)
    got = sub.all_reduce(np.full(1000, r, np.int64))
    assert (got == sum(members)).all(), got[:3]
    none = comm.split(color=None if r == 0 else 1)
    assert (none is None) == (r == 0)
    if none is not None:
        assert none.all_reduce(np.ones(3, np.int32)).tolist() == [n - 1] * 3

    # non-blocking: started together, finished in order, overlapping local work
    a = np.arange(5000, dtype=np.float64) * (r + 1)
    h1 = comm.all_reduce_nb(a)
    h2 = comm.broadcast_nb(np.full(7, r, np.int16), root=n - 1)
    h3 = comm.barrier_nb()
    busy = sum(i * i for i in range(1000))         # the host does something else
    assert np.array_equal(h1.wait(), np.arange(5000) * (n * (n + 1) / 2))
    assert h2.wait().tolist() == [n - 1] * 7 and h3.wait() is None and h1.done()

    # automatic choice: one rank per device here, so latency vs bandwidth by size, and
    # the devices' chain for the bandwidth sizes
    assert comm.algorithm_for(4096) == "recursive_doubling"
    assert comm.algorithm_for(4096, deterministic=True) == "one_shot"
    assert comm.algorithm_for(256 << 10) == "recursive_doubling"
    assert comm.algorithm_for(4 << 20) == "chain"
    assert comm.algorithm_for(4 << 20, deterministic=True) == "chain"

    # in place and out of place
    x = np.full(10, r + 1, np.int32)
    y = comm.all_reduce(x)
    assert (x == r + 1).all() and (y == n * (n + 1) // 2).all()
    comm.all_reduce(x, out=x)
    assert (x == n * (n + 1) // 2).all()

    # a registered buffer (the device's work area): the in-network all_reduce works on
    # it in place, with no copy into the device; an ordinary array is copied in
    b = comm.work_buffer(128 << 10, np.float32)
    copies = comm.agent.counters["direct_writes"]
    b[:] = r + 1
    got = comm.all_reduce(b, out=b, algo="chain")
    assert np.shares_memory(got, b) and (b == n * (n + 1) / 2).all()
    assert comm.agent.counters["direct_writes"] == copies
    plain = comm.all_reduce(np.full(128 << 10, r + 1, np.float32), algo="chain")
    assert (plain == n * (n + 1) / 2).all() and comm.agent.counters["direct_writes"] > copies
    # while the registered buffer holds data, the automatic choice keeps other arrays
    # out of the work area (an explicit chain above did overwrite it)
    b[:] = 7
    assert comm.algorithm_for(4 << 20) == "ring"
    big = comm.all_reduce(np.ones(1 << 20, np.float32))          # 4 MiB: auto
    c = comm.broadcast(np.full(1 << 16, r, np.float32), 0)      # 256 KiB: auto
    assert (big == n).all() and (c == 0).all() and (b == 7).all()
    assert comm.all_reduce(b, out=b).tolist()[:2] == [7 * n] * 2   # the buffer itself
    # an array inside the registered buffer but not at its start would overlap the
    # in-network algorithms' staging: refused before anything is sent, the buffer intact
    for call in (lambda: comm.all_reduce(b[4:], algo="chain"),
                 lambda: comm.broadcast(b[4:], algo="multicast"),
                 lambda: comm.all_gather(b, algo="multicast")):
        try:
            call()
        except UsageError as exc:
            assert "registered buffer" in str(exc), exc
        else:
            raise AssertionError("staged an array that overlaps the registered buffer")
    assert (b == 7 * n).all()
    try:
        comm.work_buffer(1 << 30, np.float32)
    except UsageError as exc:
        assert "work area" in str(exc)
    else:
        raise AssertionError("a work buffer larger than the work area")

    # bad arguments: one readable error, nothing sent
    for call in (lambda: comm.all_reduce(x, op="avg"), lambda: comm.broadcast(x, root=n),
                 lambda: comm.all_reduce(np.zeros(3, np.float32), op="bxor"),
                 lambda: comm.all_to_all(np.zeros(n + 1)),
                 lambda: comm.all_reduce(x, algo="magic"),
                 lambda: comm.broadcast(x, algo="chain"),
                 lambda: comm.all_gather(x, algo="binomial"),
                 lambda: comm.split("red"), lambda: comm.split(-1),
                 lambda: comm.split(1, key=0.5)):
        try:
            call()
        except UsageError as exc:
            assert str(exc) and "\\n" not in str(exc)
        else:
            raise AssertionError("accepted a bad argument")
    comm.barrier()
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n", [3, 4])
def test_split_nonblocking_inplace_and_errors(run_job, n):
    with LocalCluster(nodes=n, mem_size=64 << 20) as c:
        run_job(c, SCRIPT, n, job=f"comm{n}")


#: both scripts end with the two communicators' results checked
BOTH_RIGHT = """
want = n * (n + 1) / 2
assert (got_a == want).all() and (got_b == 2 * want).all(), (got_a[:2], got_b[:2])
print("rank", r, "ok", flush=True)
"""

CROSSED = """
import os
import numpy as np, netdam
comm = netdam.init(timeout=10)
algo = os.environ["CROSSED_ALGO"]
r, n = comm.rank, comm.size
a, b = comm.split(0), comm.split(0)          # two communicators of every rank
x = np.full(1 << 14, r + 1, np.float32)
# each communicator sees its collectives in one order on every rank, as MPI asks; the
# ranks start, and wait on, the two communicators' requests in different orders
if r % 2 == 0:
    ra = a.all_reduce(x, algo=algo, block=False)
    rb = b.all_reduce(2 * x, algo=algo, block=False)
    got_b, got_a = rb.wait(), ra.wait()
else:
    rb = b.all_reduce(2 * x, algo=algo, block=False)
    ra = a.all_reduce(x, algo=algo, block=False)
    got_a, got_b = ra.wait(), rb.wait()
""" + BOTH_RIGHT

BLOCKING_ACROSS = """
import os
import numpy as np, netdam
comm = netdam.init(timeout=8)
algo = os.environ["CROSSED_ALGO"]
r, n = comm.rank, comm.size
a = comm.split(0)
x = np.full(1 << 14, r + 1, np.float32)
y = comm.work_buffer(x.size) if algo == "chain" else 2 * x
y[:] = 2 * (r + 1)
# a blocking call on the world while a request of the split is pending: rank 0 blocks
# on the world first, the others wait on the split first, so the split's request must
# advance inside rank 0's blocking call (MPI's progress rule)
ra = a.all_reduce(x, algo="ring", block=False)
if r == 0:
    got_b = comm.all_reduce(y, out=y, algo=algo)
    got_a = ra.wait()
else:
    got_a = ra.wait()
    got_b = comm.all_reduce(y, out=y, algo=algo)
""" + BOTH_RIGHT


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script,algo,nodes,per_node", [
    (CROSSED, "ring", 3, 1), (CROSSED, "load_store", 1, 3),
    (BLOCKING_ACROSS, "chain", 3, 1), (BLOCKING_ACROSS, "load_store", 1, 3),
], ids=["crossed-ring", "crossed-load_store", "blocking-chain", "blocking-load_store"])
def test_requests_of_two_communicators_finish_in_whatever_order_ranks_take_them(
        run_job, script, algo, nodes, per_node):
    """Requests of two communicators waited in different orders; a blocking call on one
    while the other's request is pending."""
    with LocalCluster(nodes=nodes, devices_per_node=per_node, mem_size=64 << 20) as c:
        run_job(c, script, 3, job="crossed", env={"CROSSED_ALGO": algo})
