"""The in-network all_reduce (netdam.collectives.offload) back to back on a real cluster.

A round ends without a barrier: a rank leaves once its own signal says every block's
result is in its memory, and may write its next input at once. Invariant checked here:
consecutive calls with different inputs each give exactly their own sum, however far
apart the ranks run (one rank is made late at random), for the chain and the tree, on
registered buffers, on ordinary arrays and on a buffer larger than the work area (two
rounds); and the same of the devices' multicast broadcast and all_gather. Also: a
non-blocking in-network collective returns before the devices finish (so ranks may meet
elsewhere before its leader joins), a join is answered by its round's signal, not by an
ACK, and in-network requests beside another
communicator's, waited in any order, all finish with their own results, under faults."""

import textwrap

import pytest

from netdam.cluster import LocalCluster

SCRIPT = textwrap.dedent("""
    import random, time
    import numpy as np, netdam
    comm = netdam.init(timeout=30)
    r, n = comm.rank, comm.size
    late = random.Random(r)

    def expect(it, count):
        # sum over ranks of (q + 1) * (it + 1) + k: exact in float32 at these sizes
        return (n * (n + 1) // 2) * (it + 1) + n * np.arange(count, dtype=np.float64)

    for algo in ("chain", "tree"):
        b = comm.work_buffer(64 << 10, np.float32)
        for it in range(8):
            b[:] = (r + 1) * (it + 1) + np.arange(len(b))
            if late.random() < 0.3:
                time.sleep(0.005)
            got = comm.all_reduce(b, out=b, algo=algo)
            assert np.array_equal(got, expect(it, len(b))), (algo, it, got[:3])
        for it in range(4):
            x = ((r + 1) * (it + 1) + np.arange(3000)).astype(np.float32)
            got = comm.all_reduce(x, algo=algo)
            assert np.array_equal(got, expect(it, 3000)), (algo, it, got[:3])

    # a rank with an empty block joins with an empty descriptor
    for it in range(3):
        got = comm.all_reduce(np.full(3, (r + 1) * (it + 1), np.float32), algo="chain")
        assert (got == (n * (n + 1) // 2) * (it + 1)).all(), (it, got)
    # a blocking call runs its rounds as plain calls, a non-blocking one as steps: ranks
    # that mix the two, registered buffer or not, stay in step (x is staged in the work
    # area, which the registered b is: b is filled after x's call)
    b = comm.work_buffer(5000, np.float32)
    for it in range(4):
        x = ((r + 1) * (it + 1) + np.arange(3000)).astype(np.float32)
        nb = (r + it) % 2
        got = comm.all_reduce_nb(x, algo="chain").wait() if nb else \
            comm.all_reduce(x, algo="chain")
        b[:] = (r + 1) * (it + 1) + np.arange(len(b))
        if nb:
            comm.all_reduce_nb(b, out=b, algo="chain").wait()
        else:
            comm.all_reduce(b, out=b, algo="chain")
        assert np.array_equal(got, expect(it, 3000)), ("mixed", it, got[:3])
        assert np.array_equal(b, expect(it, len(b))), ("mixed, registered", it, b[:3])
    # each join went without asking for an ACK (NO_RESPONSE): its round's signal answered
    # it, or, were the round slower than the retransmission timeout, a retransmission
    rel = comm.agent.rel.counters
    before = rel["answered"] + rel["retransmitted"]
    for it in range(3):
        comm.all_reduce(np.ones(3000, np.float32), algo="chain")
    assert rel["answered"] + rel["retransmitted"] - before >= 3, rel
    # joined starts turned off: rounds open with a gathered start (rank 0 or the root leads)
    comm.device_joins = False
    for it in range(3):
        x = ((r + 1) * (it + 1) + np.arange(3000)).astype(np.float32)
        assert np.array_equal(comm.all_reduce(x, algo="chain"), expect(it, 3000)), it
        g = comm.all_gather(np.full(7, r + it, np.int32), algo="multicast")
        assert all((g[q] == q + it).all() for q in range(n)), it
        want = np.arange(100, dtype=np.int16) + it
        x = want.copy() if r == it % n else np.zeros(100, np.int16)
        assert np.array_equal(comm.broadcast(x, it % n, algo="multicast"), want), it
    comm.device_joins = True

    count = comm.layout.work_bytes // 4 + 5          # more than the work area: two rounds
    assert comm.layout.work_bytes == 16 << 20       # the layout that fits 64 MiB devices
    for it in range(2):
        x = np.full(count, (r + 1) * (it + 1), np.float32)
        got = comm.all_reduce(x, algo="chain")
        assert (got == (n * (n + 1) // 2) * (it + 1)).all(), (it, got[:3])

    # the devices' multicast: broadcast from changing roots and all_gather, back to back,
    # on a late rank, with a round beyond the work area; a registered broadcast buffer
    for it in range(6):
        root = it % n
        want = ((np.arange(5000) + it) % 251).astype(np.uint8)
        x = want.copy() if r == root else np.full(5000, 255 - r, np.uint8)
        if late.random() < 0.3:
            time.sleep(0.005)
        assert np.array_equal(comm.broadcast(x, root, algo="multicast"), want), (it, root)
        y = np.arange(3001, dtype=np.int32) + 1000 * r + it
        g = comm.all_gather(y, algo="multicast")
        assert all(np.array_equal(g[q], np.arange(3001) + 1000 * q + it)
                   for q in range(n)), it
    big = np.full(comm.layout.work_bytes // 2 + 3, r, np.int16)    # two rounds
    g = comm.all_gather(big, algo="multicast")
    assert all((g[q] == q).all() for q in range(n))
    b = comm.work_buffer(1 << 16, np.float32)
    b[:] = r
    comm.broadcast(b, n - 1, algo="multicast")
    assert (b == n - 1).all()
    comm.barrier()
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(180)
def test_in_network_allreduce_back_to_back_gives_each_call_its_own_sum(run_job):
    with LocalCluster(nodes=4, mem_size=64 << 20) as c:
        run_job(c, SCRIPT, 4, job="offload-back-to-back", timeout=150)


REPEATED = textwrap.dedent("""
    import numpy as np, netdam
    comm = netdam.init(timeout=30)
    r, n = comm.rank, comm.size
    total = n * (n + 1) // 2
    x = np.full(1 << 18, r + 1, np.float32)        # 1 MiB: the automatic choice is the chain
    assert comm.algorithm_for(x.nbytes) == "chain"
    for it in range(3):
        x[:] = (r + 1) * (it + 1)
        assert (comm.all_reduce(x, out=x) == total * (it + 1)).all(), (it, x[:3])
    x.dtype = np.int32                              # the same array, of integers now
    x[:] = (r + 1) << 24        # (small ones would add alike as float32 denormals)
    assert (comm.all_reduce(x, out=x) == total << 24).all(), x[:3]
    # a registered buffer from now on: the same call leaves it to the hosts
    b = comm.work_buffer(1 << 10, np.int32)
    b[:] = 7
    x[:] = r + 1
    assert (comm.all_reduce(x, out=x) == total).all() and (b == 7).all(), (x[:3], b[:3])
    for it in range(3):                             # and the buffer itself, again and again
        b[:] = r + it
        assert (comm.all_reduce(b, out=b) == total - n + n * it).all(), (it, b[:3])
    comm.barrier()
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(120)
def test_a_repeated_in_place_call_sees_what_changed_since_the_last(run_job):
    """An in-place in-network all_reduce that repeats the last one's arguments reuses
    their checks and choices (communicator.py); it must still notice the array's new
    dtype and a buffer registered since, which change them."""
    with LocalCluster(nodes=3, mem_size=64 << 20) as c:
        run_job(c, REPEATED, 3, job="offload-repeated")


AWAY = textwrap.dedent("""
    import time
    import numpy as np, netdam
    comm = netdam.init(timeout=30)
    r, n = comm.rank, comm.size
    b = comm.work_buffer(1 << 16, np.float32)
    comm.all_reduce(b, out=b, algo="chain")   # first contact with rank 0's device (below)
    for it in range(3):
        b[:] = r + 1 + it
        comm.barrier()
        req = comm.all_reduce_nb(b, out=b, algo="chain")
        time.sleep(0.5)     # away: no call into netdam, so this host moves nothing
        away = b.copy()     # what the devices left in the registered buffer meanwhile
        req.wait()
        want = n * (n + 1) // 2 + n * it
        assert (away == want).all(), (it, away[:3])
        assert (b == want).all()
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(120)
def test_a_nonblocking_chain_finishes_with_every_host_away(run_job):
    """Joined starts (SPEC §4.9): each rank's non-blocking call hands its descriptor to
    rank 0's device and returns; the devices start and finish every chain while no
    host calls into netdam, so the registered buffer holds the sum before anyone
    waits. (With rank 0 leading the start, nothing moved until it came back.) After a
    first call: a host's first datagram to a device goes alone (SPEC §8.3), so a JOIN
    sent while that one is unanswered waits in the host for the answer."""
    with LocalCluster(nodes=4, mem_size=64 << 20) as c:
        run_job(c, AWAY, 4, job="offload-away", timeout=90)


OVERLAP = textwrap.dedent("""
    import re
    import numpy as np, netdam
    from netdam.handle import NetdamTimeout
    comm = netdam.init(timeout=30)
    r, n = comm.rank, comm.size
    side = comm.split(0)              # another communicator of every rank
    x = np.full(4096, r + 1, np.float32)
    want = n * (n + 1) / 2

    # Ranks 1..n-1 start each in-network collective and meet rank 0 in the other
    # communicator's barrier; rank 0 (whose device is the meeting point of every joined
    # start) joins only after that barrier. A start that waited for the devices would
    # never get there.
    calls = [
        ("chain", lambda: comm.all_reduce_nb(x, algo="chain"),
         lambda got: (got == want).all()),
        ("tree", lambda: comm.all_reduce_nb(x, algo="tree"),
         lambda got: (got == want).all()),
        ("multicast broadcast", lambda: comm.broadcast_nb(x.copy(), 0, algo="multicast"),
         lambda got: (got == 1).all()),
        ("multicast all_gather", lambda: comm.all_gather_nb(x, algo="multicast"),
         lambda got: all((got[q] == q + 1).all() for q in range(n))),
    ]
    for name, start, right in calls:
        if r == 0:
            side.barrier()
            req = start()
        else:
            req = start()
            side.barrier()
        assert right(req.wait()), name

    # in-network requests beside the other communicator's ring, started together and
    # waited in orders that differ between ranks
    for it in range(8):
        y = np.full(20000 + it, r + it, np.float32)
        reqs = [comm.all_reduce_nb(y, algo="chain"), side.all_reduce_nb(y, algo="ring"),
                comm.all_reduce_nb(y, algo="tree"),
                comm.broadcast_nb(y.copy(), it % n, algo="multicast")]
        for q in (reqs if (r + it) % 2 else reqs[::-1]):
            q.wait()
        total = sum(q + it for q in range(n))
        assert all((q.result == total).all() for q in reqs[:3]), it
        assert (reqs[3].result == it % n + it).all(), it

    # a rank that never joins: the others' waits time out naming the word they wait on
    if r != 0:
        req = comm.all_reduce_nb(x, algo="chain")
        try:
            req.wait(timeout=1.0)
        except NetdamTimeout as exc:
            assert re.search(r"in-network allreduce: at \\d+ of \\d+", str(exc)), exc
        else:
            raise AssertionError("finished without rank 0")
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(150)
def test_nonblocking_in_network_collectives_return_at_once_and_finish_in_any_order(run_job):
    """Under loss, duplication, reordering and corruption."""
    with LocalCluster(nodes=3, mem_size=64 << 20, loss=0.02, dup=0.01, reorder=0.05,
                      corrupt=0.005, seed=5) as c:
        run_job(c, OVERLAP, 3, job="offload-overlap", timeout=120)

