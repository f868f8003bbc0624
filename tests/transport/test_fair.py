"""The fair receive queue. Invariant: sources are served one datagram each in turn,
nothing is held beyond the per-source and total bounds, and every drop is counted."""

import pytest

from netdam.transport.fair import FairQueue


def test_round_robin_between_a_flood_and_a_trickle():
    q = FairQueue(per_source=100, max_bytes=1 << 20)
    for i in range(50):
        q.push("flood", ("f", i), 10)
    q.push("trickle", ("t", 0), 10)
    q.push("trickle", ("t", 1), 10)
    order = [q.pop()[1] for _ in range(5)]
    assert order == [("f", 0), ("t", 0), ("f", 1), ("t", 1), ("f", 2)]
    assert len(q) == 47 and q.sources() == 1


def test_a_quantum_per_source_per_round():
    q = FairQueue(per_source=100, max_bytes=1 << 20)
    for i in range(5):
        q.push("flood", i, 10)
    q.push("trickle", "t", 10)
    assert q.pop_run(3) == ("flood", [0, 1, 2])
    assert q.pop_run(3) == ("trickle", ["t"])
    assert q.pop_run(3) == ("flood", [3, 4])
    assert q.pop_run(3) is None and len(q) == 0 and q.bytes == 0


def test_bounds_drop_and_count():
    q = FairQueue(per_source=3, max_bytes=100)
    assert [q.push("a", i, 10) for i in range(5)] == [True] * 3 + [False] * 2
    assert q.counters["dropped_source_full"] == 2
    assert q.push("b", 0, 80) is False and q.counters["dropped_full"] == 1
    assert q.push("b", 0, 70) is True and q.bytes == 100
    while q.pop() is not None:
        pass
    assert len(q) == 0 and q.bytes == 0 and q.sources() == 0
    assert q.counters["max_queued"] == 4


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        FairQueue(per_source=0)


@pytest.mark.parametrize("burst", [1, 3, 8])
def test_push_run_is_push_of_each(burst):
    """The same queue, counters and drops as ``push`` of each item, at both bounds."""
    one, many = FairQueue(per_source=5, max_bytes=60), FairQueue(per_source=5, max_bytes=60)
    items = [bytes([i]) * (4 + i % 3) for i in range(13)]
    kept = [it for it in items[:9] if one.push("a", it, len(it))]
    kept += [it for it in items[9:] if one.push("b", it, len(it))]
    dropped = many.push_run("a", items[:9][:burst]) + many.push_run("a", items[:9][burst:])
    dropped += many.push_run("b", items[9:])
    assert sorted(dropped + kept) == sorted(items)
    assert many.counters == one.counters and many.bytes == one.bytes
    drain = [[], []]
    for k, q in enumerate((one, many)):
        while (r := q.pop()) is not None:
            drain[k].append(r)
    assert drain[0] == drain[1] and drain[1]
