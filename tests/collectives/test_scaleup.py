"""Scale-up by loads and stores, on real clusters: ranks of one node reduce, scatter,
broadcast, gather and exchange through each other's mapped device memory without one
device operation, bit for bit in rank order, round after round (more rounds than stages,
with a late rank, and a broadcast root that would overrun a slow reader); their
point-to-point channels store pieces and credits the same way, between ranks of one node
only; the automatic choice takes it on one node only, and scale-up first below 4 MiB on
nodes of several ranks; a rank that never posts makes the others fail with a timeout
naming it; and NETDAM_LOAD_STORE=0 or a capture puts every exchange back on the devices
(where the capture sees it)."""

import io
import sys
import textwrap

import pytest

from netdam.capture.frames import netdam_frames
from netdam.cluster import LocalCluster
from netdam.launch import run_hosts
from netdam.wire import Opcode

SCRIPT = textwrap.dedent("""
    import time
    import numpy as np, netdam
    from netdam.collectives.check import make_input, reduce_all
    from netdam.errors import UsageError
    comm = netdam.init(timeout=30)
    r, n, agent, ch = comm.rank, comm.size, comm.agent, comm.channels
    assert comm.load_store_ok and ch.load_store
    stage = comm.layout.slot_bytes

    # every dtype and op, empty to a whole stage, more rounds than stages, rank 1 late
    # now and then: bit-identical to the rank-order reduction, no device operation
    ops = agent.counters["ops"]
    cases = [("float32", "sum"), ("float64", "sum"), ("int32", "max"), ("uint16", "bxor"),
             ("int64", "prod")]
    rounds = 0
    for dtype, op in cases:
        for count in (0, 1, 3001, stage // np.dtype(dtype).itemsize):
            xs = [make_input(q, count, dtype, rounds, op) for q in range(n)]
            if r == 1 and rounds % 3 == 0:
                time.sleep(0.02)
            got = comm.all_reduce(xs[r], op, algo="load_store")
            want = reduce_all(xs, op, None)          # rank order, the ALU's arithmetic
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), \\
                (dtype, op, count)
            rounds += 1
    assert rounds > comm.layout.slots
    comm.barrier()
    assert agent.counters["ops"] == ops, (agent.counters["ops"], ops)

    # the automatic choice: load_store up to a stage, then the ring (the canonical sum
    # in reproducible mode); a barrier is one round of posted words
    assert comm.algorithm_for(4096) == "load_store"
    assert comm.algorithm_for(stage + 4) == "ring"
    assert comm.algorithm_for(stage + 4, deterministic=True) == "canonical"
    before = comm.channels.load_store_rounds
    comm.barrier()
    assert comm.channels.load_store_rounds == before + 1

    # the ring's pieces and credits are stored too: no device operation, every piece
    stored = dict(ch.counters)
    big = np.full(3 * stage, r + 1, np.float32)
    got = comm.all_reduce(big, algo="ring")
    assert (got == n * (n + 1) / 2).all()
    moved = {k: ch.counters[k] - stored[k] for k in stored}
    assert moved["pieces_stored"] == moved["pieces_sent"] > 0, moved
    assert moved["credits_returned"] > 0 and agent.counters["ops"] == ops, moved

    # the other collectives in one round each, bit for bit; the automatic choice too
    xs = [make_input(q, 3001, "float32", 7, "sum") for q in range(n)]
    red = comm.reduce(xs[r], root=1)
    assert red.tobytes() == reduce_all(xs, "sum", None).tobytes() if r == 1 else red is None
    counts = [1000, 1, 2000]                   # n == 3
    got = comm.reduce_scatter(xs[r], counts=counts)
    lo = sum(counts[:r])
    assert got.tobytes() == reduce_all(xs, "sum", None)[lo:lo + counts[r]].tobytes()
    for algo in ("load_store", None):
        b = xs[r].copy()
        assert comm.broadcast(b, root=2, algo=algo) is b and b.tobytes() == xs[2].tobytes()
        g = comm.all_gather(xs[r], algo=algo)
        assert g.tobytes() == np.stack(xs).tobytes()
    parts = np.arange(n * 6, dtype=np.int32).reshape(n * 2, 3) + 1000 * r
    got = comm.all_to_all(parts)
    mine = np.arange(n * 6, dtype=np.int32).reshape(n * 2, 3)[2 * r:2 * r + 2]
    want = np.concatenate([mine + 1000 * q for q in range(n)])
    assert got.shape == parts.shape and (got == want).all(), got
    assert agent.counters["ops"] == ops, (agent.counters["ops"], ops)

    # a root that runs ahead of a slow reader waits before it reuses a stage
    for i in range(2 * comm.layout.slots + 1):
        if r == 1:
            time.sleep(0.01)
        b = np.full(1000, i if r == 0 else -1, np.int64)
        comm.broadcast(b, root=0, algo="load_store")
        assert (b == i).all(), (i, b[:3])

    # non-blocking calls complete in order, mixed with the channels' algorithms; a
    # sub-communicator of the node's ranks runs the same rounds in its own areas
    h1 = comm.all_reduce_nb(np.ones(10, np.int32), algo="load_store")
    h2 = comm.all_reduce_nb(np.full(70_000, r, np.int64), algo="ring")
    h3 = comm.broadcast_nb(np.full(5, r, np.int16), root=n - 1)
    assert (h1.wait() == n).all() and (h2.wait() == n * (n - 1) // 2).all()
    assert h3.wait().tolist() == [n - 1] * 5
    # a blocking call runs its round as one function, a non-blocking one as steps: ranks
    # that mix the two, round after round, stay in step and agree bit for bit
    for i in range(2 * comm.layout.slots + 1):
        x = make_input(r, 777, "float32", 100 + i, "sum")
        want = reduce_all([make_input(q, 777, "float32", 100 + i, "sum") for q in range(n)],
                          "sum", None)
        if (r + i) % 2:
            got = comm.all_reduce_nb(x, algo="load_store").wait()
            comm.barrier_nb().wait()
        else:
            got = comm.all_reduce(x, algo="load_store")
            comm.barrier()
        assert got.tobytes() == want.tobytes(), i
    sub = comm.split(color=r % 2, key=-r)
    members = [q for q in range(n) if q % 2 == r % 2]
    if sub.size > 1:
        assert sub.load_store_ok and sub.algorithm_for(4096) == "load_store"
    got = sub.all_reduce(np.full(1000, r, np.int64))
    assert (got == sum(members)).all(), got[:3]
    for call in (lambda big: comm.all_reduce(big, algo="load_store"),
                 lambda big: comm.broadcast(big, algo="load_store"),
                 lambda big: comm.all_gather(big, algo="load_store")):
        try:
            call(np.zeros(stage // 4 + 1, np.float32))
        except UsageError as e:
            assert "at most" in str(e), e
        else:
            raise AssertionError("a buffer beyond one stage was taken")
    assert comm.all_reduce(np.ones(4, np.float32)).tolist() == [n] * 4   # still in step
    print("rank", r, "ok", flush=True)
""")

LATE = textwrap.dedent("""
    import time
    import numpy as np, netdam
    from netdam.handle import NetdamTimeout
    comm = netdam.init(timeout=10)
    side = comm.split(0)
    comm.timeout = 2
    if comm.rank == 2:       # alive, but never posts
        time.sleep(6)
        print("rank 2 ok", flush=True)
    else:
        try:
            comm.all_reduce(np.ones(8, np.float32), algo="load_store")
        except NetdamTimeout as e:
            assert "rank 2 did not post" in str(e), e
        else:
            raise AssertionError("finished without rank 2")
        # a non-blocking call's wait names the round and the rank it waits for
        req = side.all_reduce_nb(np.ones(8, np.float32), algo="load_store")
        try:
            req.wait(timeout=1)
        except NetdamTimeout as e:
            assert "not posted by rank(s) [2]" in str(e), e
        else:
            raise AssertionError("finished without rank 2")
        print("rank", comm.rank, "ok", flush=True)
""")

OFF = textwrap.dedent("""
    import numpy as np, netdam
    from netdam.errors import UsageError
    comm = netdam.init(timeout=30)
    r, n, ch = comm.rank, comm.size, comm.channels
    assert not comm.load_store_ok and not ch.load_store
    assert comm.algorithm_for(4096) != "load_store"
    ops = comm.agent.counters["ops"]
    got = comm.all_reduce(np.full(70_000, r, np.float32), algo="ring")
    assert (got == n * (n - 1) / 2).all()
    assert ch.counters["pieces_stored"] == 0 and comm.agent.counters["ops"] > ops
    for call in (lambda x: comm.all_reduce(x, algo="load_store"),
                 lambda x: comm.broadcast(x, algo="load_store"),
                 lambda x: comm.all_gather(x, algo="load_store")):
        try:
            call(np.ones(4, np.float32))
        except UsageError as e:
            assert "this node" in str(e), e
        else:
            raise AssertionError("load_store ran without loads and stores")
    print("rank", r, "ok", flush=True)
""")

TWO_NODES = textwrap.dedent("""
    import os
    import numpy as np, netdam
    comm = netdam.init(timeout=30)
    r, n, ch = comm.rank, comm.size, comm.channels
    same = [q for q in range(n) if comm.nodes[q] == comm.nodes[r]]
    on = os.environ.get("NETDAM_LOAD_STORE", "1") == "1"
    assert [q for q in range(n) if ch.stores[q]] == (same if on else []), ch.stores
    assert not comm.load_store_ok
    # scale-up first below 4 MiB where a node's ranks store; the chain otherwise
    assert comm.algorithm_for(2 << 20) == ("hierarchical" if on else "chain")
    assert comm.algorithm_for(4 << 20) == "chain"
    got = comm.all_reduce(np.full(50_000, r + 1, np.float32), algo="hierarchical")
    assert (got == n * (n + 1) / 2).all()
    before = dict(ch.counters)
    got = comm.all_to_all(np.arange(n * 1000, dtype=np.int32) + 10_000 * r)
    assert (got.reshape(n, 1000) == np.arange(r * 1000, (r + 1) * 1000)
            + 10_000 * np.arange(n)[:, None]).all()
    moved = {k: ch.counters[k] - before[k] for k in before}
    # a piece to the other rank of this node is stored; the two across go as requests
    assert moved["pieces_stored"] == (moved["pieces_sent"] // (n - 1) if on else 0), moved
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(180)
def test_load_store_all_reduce_and_channels_on_one_node(run_job):
    with LocalCluster(nodes=1, devices_per_node=3, mem_size=64 << 20) as c:
        run_job(c, SCRIPT, 3, job="loadstore")


@pytest.mark.timeout(120)
def test_a_rank_that_never_posts_is_named_in_a_timeout(run_job):
    with LocalCluster(nodes=1, devices_per_node=3, mem_size=64 << 20) as c:
        run_job(c, LATE, 3, job="late")


@pytest.mark.timeout(120)
def test_turned_off_by_the_environment_and_refused_across_nodes(run_job):
    with LocalCluster(nodes=1, devices_per_node=2, mem_size=64 << 20) as c:
        run_job(c, OFF, 2, job="off", env={"NETDAM_LOAD_STORE": "0"})
    with LocalCluster(nodes=2, mem_size=64 << 20) as c:    # one rank per node
        run_job(c, OFF, 2, job="nodes")


@pytest.mark.timeout(120)
def test_a_captured_job_keeps_every_exchange_on_the_devices(run_job, tmp_path):
    """With a capture, ranks of one node send their pieces as datagrams again, and the
    capture holds them."""
    pcap = tmp_path / "job.pcap"
    with LocalCluster(nodes=1, devices_per_node=2, mem_size=64 << 20, pcap=pcap) as c:
        run_job(c, OFF, 2, job="captured")
    puts = [f for f in netdam_frames(pcap) if f.fields.get("opcode") == Opcode.PUT_SIGNAL]
    assert len(puts) >= 2, len(puts)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flag", ["1", "0"])
def test_two_nodes_store_inside_a_node_only(run_job, flag):
    with LocalCluster(nodes=2, devices_per_node=2, mem_size=64 << 20) as c:
        run_job(c, TWO_NODES, 4, job="two", env={"NETDAM_LOAD_STORE": flag})


@pytest.mark.timeout(60)
def test_a_bad_setting_is_refused_by_name(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("import netdam\nnetdam.init(timeout=10)\n")
    with LocalCluster(nodes=1, mem_size=1 << 20) as c:
        out = io.StringIO()
        code = run_hosts(c, 1, [sys.executable, str(script)], out=out, err=out,
                         timeout=30, extra_env={"NETDAM_LOAD_STORE": "yes"})
    text = out.getvalue()
    assert code != 0 and "NETDAM_LOAD_STORE='yes': expected 0 or 1" in text, text
