"""The event queue runs in time order; a link serialises, queues, drops and pipelines
bursts as its rate and latency say."""

import pytest

from firmware_model.timing import FRAME_OVERHEAD
from netdam.sim.engine import EventQueue
from netdam.sim.links import Link


def test_events_run_in_time_order_ties_in_schedule_order():
    q, seen = EventQueue(), []
    for t, name in ((30, "c"), (10, "a"), (10, "b"), (20, "x")):
        q.at(t, seen.append, name)
    assert q.run() == 30
    assert seen == ["a", "b", "x", "c"]
    assert q.events == 4


def test_an_event_scheduled_in_the_past_runs_now():
    q, seen = EventQueue(), []
    q.at(50, lambda: q.at(10, seen.append, q.now))
    q.run()
    assert seen == [50]


def test_one_datagram_costs_serialisation_plus_latency():
    link = Link("a->b", "fabric", gbps=100, latency_ns=500)
    head, tail = link.carry(0.0, 0.0, 1, 1000)
    ser = (1000 + FRAME_OVERHEAD) * 8 / 100
    assert head == tail == pytest.approx(ser + 500)
    assert (link.packets, link.bytes) == (1, 1000)


def test_a_second_datagram_waits_behind_the_first():
    link = Link("a->b", "fabric", gbps=8, latency_ns=0)     # one byte per ns
    link.carry(0.0, 0.0, 1, 1000 - FRAME_OVERHEAD)
    head, _ = link.carry(10.0, 10.0, 1, 1000 - FRAME_OVERHEAD)
    assert head == pytest.approx(2000)
    assert link.peak_queue_bytes == pytest.approx(990)


def test_a_burst_pipelines_and_a_slow_upstream_spaces_it():
    link = Link("a->b", "fabric", gbps=8, latency_ns=0)
    per = 1000 - FRAME_OVERHEAD
    head, tail = link.carry(0.0, 0.0, 4, 4 * per)
    assert (head, tail) == (pytest.approx(1000), pytest.approx(4000))
    slow = Link("b->c", "fabric", gbps=8, latency_ns=0)
    head, tail = slow.carry(100.0, 9000.0, 4, 4 * per)   # the last one arrives late
    assert head == pytest.approx(1100)
    assert tail == pytest.approx(10000)


def test_a_full_queue_drops_and_counts():
    link = Link("a->b", "fabric", gbps=8, latency_ns=0, queue_bytes=1500)
    assert link.carry(0.0, 0.0, 1, 1400) is not None
    assert link.carry(0.0, 0.0, 1, 1400) is None
    assert link.dropped == 1 and link.packets == 1


def test_loss_drops_about_the_asked_share():
    import random
    link = Link("a->b", "fabric", gbps=100, latency_ns=0, loss=0.25, rng=random.Random(3))
    kept = sum(link.carry(float(i), float(i), 1, 10) is not None for i in range(4000))
    assert 2800 < kept < 3200
    assert link.dropped == 4000 - kept
