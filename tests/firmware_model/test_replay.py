"""Replay window, peer table and message tracker. Invariant: a seq inside the window is
new exactly once; the cumulative ack is the first seq not yet completed contiguously."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_model.replay import MessageTracker, PeerTable, ReplayWindow, Verdict
from netdam.wire.fields import Status
from netdam.wire.seqnum import seq_add, seq_diff


def test_new_duplicate_and_out_of_window():
    w = ReplayWindow(8, 100)
    assert w.classify(100) is Verdict.NEW
    w.record(100, Status.OK)
    assert w.cum == 101 and w.classify(100) is Verdict.DUPLICATE
    assert w.classify(101 + 8) is Verdict.OUT_OF_WINDOW
    assert w.classify(101 + 7) is Verdict.NEW
    assert w.classify(101 - 9) is Verdict.OUT_OF_WINDOW
    assert w.classify(99) is Verdict.NEW          # before the base, never seen


def test_out_of_order_completion_advances_cum():
    w = ReplayWindow(16, 0)
    for s in (2, 1, 4):
        w.record(s, Status.OK)
    assert w.cum == 0
    w.record(0, Status.OK)
    assert w.cum == 3
    w.record(3, Status.BAD_KEY)
    assert w.cum == 5 and w.outcome(3) == (Status.BAD_KEY, None)


def test_held_is_not_completed_and_forget_resets():
    w = ReplayWindow(8, 10)
    w.hold(10)
    assert w.classify(10) is Verdict.HELD and w.cum == 10 and not w.done_before(11)
    w.forget(10)
    assert w.classify(10) is Verdict.NEW
    w.record(10, Status.OK, saved=("resp",))
    assert w.outcome(10) == (Status.OK, ("resp",)) and w.done_before(11)


def test_wraps_around_2_32_and_reuses_slots():
    start = 2**32 - 50
    w = ReplayWindow(10, start)
    rng = random.Random(0)
    seqs = [seq_add(start, i) for i in range(300)]
    for block in range(0, 300, 5):      # reorder within a block smaller than the window
        chunk = seqs[block:block + 5]
        rng.shuffle(chunk)
        for s in chunk:
            assert w.classify(s) is Verdict.NEW
            w.record(s, Status.OK, saved=s)
            assert w.classify(s) is Verdict.DUPLICATE
    assert w.cum == seq_add(start, 300)
    assert w.outcome(seqs[-1]) == (Status.OK, seqs[-1])
    assert w.classify(seqs[200]) is Verdict.OUT_OF_WINDOW


def test_window_size_is_validated():
    with pytest.raises(ValueError):
        ReplayWindow(0, 0)


def test_peer_table_lru_and_expiry():
    t = PeerTable(window=8, max_peers=2, timeout=10.0)
    t.touch(1, 0, 0.0)
    t.touch(2, 0, 1.0)
    t.touch(1, 5, 2.0)                  # 1 is now the most recent
    _, evicted = t.touch(3, 0, 3.0)
    assert len(evicted) == 1 and t.get(2) is None and t.get(1) is not None
    assert t.next_deadline() == 12.0
    assert [p for p, _ in t.expire(12.0)] == [1] and len(t) == 1


def test_message_tracker_counts_distinct_bytes():
    m = MessageTracker(max_messages=2, timeout=5.0)
    assert m.add("a", 100, 0, 40, 0.0, info="A") is None
    assert m.add("a", 100, 0, 40, 0.0) is None        # a duplicate adds nothing
    assert m.add("a", 100, 30, 90, 0.0) is None
    assert m.add("a", 100, 90, 100, 0.0) == "A" and len(m) == 0
    assert m.add("z", 0, 0, 0, 0.0, info="Z") == "Z"   # empty message: at once


def test_message_tracker_is_bounded_and_expires():
    m = MessageTracker(max_messages=1, timeout=5.0)
    m.add("a", 10, 0, 5, 1.0)
    assert not m.has_room("b") and m.has_room("a")
    with pytest.raises(OverflowError):
        m.add("b", 10, 0, 5, 1.0)
    assert m.next_deadline() == 6.0 and m.expire(6.0) == 1 and m.next_deadline() is None


class _Model:
    """The replay window as sets: what SPEC_device §4.1 says, with no ring of slots."""

    def __init__(self, size: int, first: int):
        self.size, self.cum, self.done, self.held = size, first, {}, set()

    def classify(self, seq: int) -> Verdict:
        d = seq_diff(seq, self.cum)
        if d >= self.size or d < -self.size:
            return Verdict.OUT_OF_WINDOW
        if seq in self.held:
            return Verdict.HELD
        return Verdict.DUPLICATE if seq in self.done else Verdict.NEW

    def record(self, seq: int, status: int, saved=None) -> None:
        self.held.discard(seq)
        self.done[seq] = (status, saved)
        while self.cum in self.done:
            self.cum = seq_add(self.cum, 1)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 9), first=st.integers(2**32 - 12, 2**32 - 1) | st.integers(0, 50),
       ops=st.lists(st.tuples(st.sampled_from(["record", "hold", "forget", "run", "saved"]),
                              st.integers(-10, 10), st.integers(1, 5),
                              st.sampled_from([Status.OK, Status.BAD_KEY])), max_size=60))
def test_the_window_answers_as_its_model_for_any_operations(size, first, ops):
    """Whatever requests complete, wait or are forgotten, in any order and across the
    wrap of 2^32, the window classifies every seq, keeps every outcome and moves its
    cumulative ack exactly as the plain model does."""
    w, m = ReplayWindow(size, first), _Model(size, first)
    for kind, off, count, status in ops:
        seq = seq_add(m.cum, off)
        verdict = m.classify(seq)
        if kind == "run":
            seqs = [seq_add(seq, k) for k in range(count)]
            fresh = all(m.classify(s) is Verdict.NEW for s in seqs)
            assert w.all_new(seq, count) == fresh
            if fresh:
                w.record_run(seq, count, status)
                for s in seqs:
                    m.record(s, status)
        elif kind in ("record", "saved") and verdict in (Verdict.NEW, Verdict.HELD):
            saved = ("answer", seq) if kind == "saved" else None
            w.record(seq, status, saved)
            m.record(seq, status, saved)
        elif kind == "hold" and verdict is Verdict.NEW:
            w.hold(seq)
            m.held.add(seq)
        elif kind == "forget" and verdict is Verdict.HELD:
            w.forget(seq)
            m.held.discard(seq)
        assert w.cum == m.cum
        for d in range(-size - 2, size + 2):
            s = seq_add(m.cum, d)
            assert w.classify(s) is m.classify(s), (s, d)
            if m.classify(s) is Verdict.DUPLICATE:
                assert w.outcome(s) == m.done[s]
