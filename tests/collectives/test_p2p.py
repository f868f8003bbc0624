"""Point-to-point channels on a real cluster: an empty message (a barrier's) takes no slot
and is given no credit back, the slots of the data messages around it stay in step on
both sides, and emptied slots go back in batches (one ATOMIC_FADD per
``Layout.credit_batch`` slots), never more than a batch short per sender, also when
messages of many more pieces than slots make senders wait for them; and a rank whose
home device is on its node never waits on a timer."""

import textwrap

import pytest

from netdam.cluster import LocalCluster

SCRIPT = textwrap.dedent("""
    import numpy as np, netdam
    comm = netdam.init(timeout=30)
    r, n, ch = comm.rank, comm.size, comm.channels
    rounds = (n - 1).bit_length()              # a dissemination barrier's rounds
    slots = comm.layout.slots

    # more barriers than a channel has slots, none waiting for a credit
    before = dict(ch.counters)
    k = slots + 3
    for _ in range(k):
        comm.barrier()
    moved = {key: ch.counters[key] - before[key] for key in before}
    assert moved["pieces_sent"] == moved["pieces_received"] == k * rounds, moved
    assert moved["credits_returned"] == moved["credit_waits"] == moved["credit_adds"] == 0, moved
    assert moved["bytes_sent"] == moved["bytes_received"] == 0, moved

    # data messages between barriers: each piece takes a slot, the slots come back in
    # batches, and every result is right though the head words also counted the empty
    # pieces
    before, owed_before = dict(ch.counters), ch.credits_owed
    batch = comm.layout.credit_batch
    for i in range(2 * slots + 1):
        size = (300_000, 70_000)[i % 2]        # two pieces of 256 KiB, then one
        got = comm.all_reduce(np.full(size, i + r, np.float32), algo="ring")
        assert (got == n * i + n * (n - 1) / 2).all(), (i, got[:3])
        comm.barrier()
    moved = {key: ch.counters[key] - before[key] for key in before}
    data = moved["pieces_received"] - (2 * slots + 1) * rounds
    owed = ch.credits_owed
    assert data > 0 and moved["credits_returned"] + owed - owed_before == data, moved
    assert moved["credit_adds"] * batch == moved["credits_returned"] > 0, moved
    assert 0 <= owed < batch * (n - 1), owed

    # messages of three times as many pieces as the inbox has slots: senders wait for
    # credits that come back in batches, and nothing deadlocks or goes wrong
    before = dict(ch.counters)
    count = n * 3 * slots * comm.layout.slot_bytes // 4
    got = comm.all_reduce(np.full(count, r + 1, np.float32), algo="ring")
    assert (got == n * (n + 1) / 2).all()
    moved = {key: ch.counters[key] - before[key] for key in before}
    assert moved["credit_waits"] > 0, moved

    # every wait of this rank slept until an answer or a watched word woke it: its home
    # device is on its node, so no wait fell back to sleeping on a timer
    assert ch.counters["sleeps_woken"] > 0 and ch.counters["sleeps_timed"] == 0, ch.counters
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(120)
def test_empty_messages_take_no_slot_and_no_credit(run_job):
    with LocalCluster(nodes=3, mem_size=64 << 20) as c:
        run_job(c, SCRIPT, 3, job="p2p")
