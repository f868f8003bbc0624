"""The receive pool reuses a slot only when nothing refers to its bytes: a datagram a
caller kept (a slice, a NumPy array, a cffi pointer) is never overwritten by a later
receive, and a pool that runs out makes the caller allocate instead of losing data."""

import numpy as np
import pytest

from netdam.transport.rxpool import RecvPool
from netdam.wire.fields import MAX_DATAGRAM

pytestmark = pytest.mark.timeout(30)


def _receive(pool, ep, payload, sender):
    sender.sock.sendto(payload, ep.address)
    slot = pool.take()
    assert slot is not None
    r = ep.recv_into(slot, 2.0)
    assert r is not None
    return r[0]


def test_a_given_back_slot_is_received_into_again(pair):
    a, b = pair
    pool = RecvPool(MAX_DATAGRAM + 1, max_slots=4)
    view = _receive(pool, b, b"first", a)
    slot = view.obj
    assert bytes(view) == b"first"
    pool.give(view)
    assert pool.free == 1 and pool.counters == {"slots": 1, "retained": 0, "exhausted": 0}
    again = _receive(pool, b, b"second datagram", a)
    assert again.obj is slot and bytes(again) == b"second datagram"
    assert len(slot) == MAX_DATAGRAM + 1          # the export check leaves its size alone


@pytest.mark.parametrize("keep", ["slice", "numpy", "bytes-of-slice"])
def test_kept_bytes_are_never_overwritten(pair, keep):
    a, b = pair
    pool = RecvPool(MAX_DATAGRAM + 1, max_slots=1)
    first = bytes(range(256)) * 8
    view = _receive(pool, b, first, a)
    slot = view.obj
    if keep == "slice":
        kept = view[16:1024]
    elif keep == "numpy":
        kept = np.frombuffer(view, np.uint8)[16:1024]
    else:                                  # a copy keeps nothing alive: the slot comes back
        kept = bytes(view[16:1024])
    pool.give(view)
    if keep == "bytes-of-slice":
        assert pool.counters["retained"] == 0 and pool.free == 1
    else:
        assert pool.counters["retained"] == 1 and pool.free == 0
    later = _receive(pool, b, b"\xee" * len(first), a)   # a fresh slot if one was kept
    assert (later.obj is slot) == (keep == "bytes-of-slice")
    assert bytes(kept) == first[16:1024]


def test_an_exhausted_pool_says_so_and_a_bytes_datagram_passes_through(pair):
    a, b = pair
    pool = RecvPool(MAX_DATAGRAM + 1, max_slots=1)
    held = pool.take()
    assert pool.take() is None and pool.counters["exhausted"] == 1
    a.sock.sendto(b"owned", b.address)
    data, _ = b.recv_bytes(2.0)
    pool.give(data)                           # not a slot: nothing to take back
    assert pool.free == 0 and bytes(data) == b"owned"
    pool.unused(held)
    assert pool.take() is held


def test_a_view_still_exported_when_given_back_retires_its_slot(pair):
    a, b = pair
    pool = RecvPool(MAX_DATAGRAM + 1, max_slots=2)
    view = _receive(pool, b, b"abcdef", a)
    pinned = memoryview(view)                 # an export of the view itself
    pool.give(view)
    assert pool.counters["retained"] == 1 and pool.free == 0
    assert bytes(pinned) == b"abcdef"
    assert pool.take() is not None            # a replacement is made


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        RecvPool(0)
    with pytest.raises(ValueError):
        RecvPool(1024, max_slots=-1)


def test_recv_batch_takes_a_burst_into_slots_and_give_many_takes_them_back(pair):
    """One call receives what is waiting, in order, into pool slots (and into its own
    bytes once the pool is out); ``give_many`` returns the slots nothing still holds."""
    a, b = pair
    pool = RecvPool(MAX_DATAGRAM + 1, max_slots=3)
    assert b.recv_batch(pool, 8, 0.0) == [] and pool.free == 1   # nothing: slot back
    sent = [bytes([i]) * (10 + i) for i in range(5)]
    for d in sent:
        a.sock.sendto(d, b.address)
    got = b.recv_batch(pool, 8, 2.0)
    assert [bytes(v) for v, _ in got] == sent
    assert all(addr == a.address for _, addr in got)
    assert [type(v) for v, _ in got] == [memoryview] * 3 + [bytes] * 2
    assert pool.counters["exhausted"] == 3       # the last, empty try counts as well
    assert b.counters["rx_datagrams"] == 5
    kept = got[0][0][2:4]                      # something still holds the first slot
    pool.give_many([v for v, _ in got])
    assert pool.free == 2 and pool.counters["retained"] == 1
    assert bytes(kept) == bytes(sent[0][2:4])


def test_recv_batch_stops_at_its_limit_and_waits_for_a_first(pair):
    a, b = pair
    pool = RecvPool(MAX_DATAGRAM + 1, max_slots=8)
    for i in range(4):
        a.sock.sendto(bytes([i]), b.address)
    assert [bytes(v) for v, _ in b.recv_batch(pool, 3, 2.0)] == [b"\0", b"\1", b"\2"]
    assert [bytes(v) for v, _ in b.recv_batch(pool, 3, 0.0)] == [b"\3"]
    assert b.recv_batch(pool, 3, 0.02) == []           # waited, nothing came
