"""The reliability core (SPEC §8.2) driven in memory: whatever the link loses, duplicates
or reorders, every submitted datagram is retired exactly once or fails at its deadline,
and the window is never exceeded."""

import random

import pytest

from netdam.transport.reliability import Failed, RelConfig, Reliability, Retired
from netdam.wire import Flag, Opcode, Packet
from netdam.wire.fields import CREDIT_UNIT
from netdam.wire.seqnum import seq_add

PEER = 7


def _req(n: int = 0) -> Packet:
    return Packet(opcode=Opcode.WRITE, payload=bytes(n))


def _ack(pkt: Packet, cum: int | None = None) -> Packet:
    flags = Flag.ACK_VALID if cum is not None else 0
    return Packet(opcode=Opcode.ACK, seq=pkt.seq, req_id=pkt.req_id, flags=flags,
                  ack=cum or 0)


def _anchor(rel: Reliability, now: float = 0.0) -> None:
    """Send one datagram and have it answered: the peer has anchored its window."""
    rel.submit(PEER, _req(), now, token="anchor")
    (_, first), = rel.datagrams_to_send(now)
    assert [r.token for r in rel.on_reply(PEER, _ack(first), now)] == ["anchor"]


def test_first_datagram_goes_alone_until_answered():
    """The receiver anchors its replay window at the first seq it sees (SPEC §8.3): a
    later datagram must not overtake a lost first one."""
    rel = Reliability(initial_seq=40)
    for i in range(3):
        rel.submit(PEER, _req(), 0.0, token=i)
    assert [p.seq for _, p in rel.datagrams_to_send(0.0)] == [40]
    assert rel.datagrams_to_send(0.01) == []          # still unanswered: nothing more
    rel.handle_timer(1.0)
    again = rel.datagrams_to_send(1.0)                # the first one, retransmitted
    assert [p.seq for _, p in again] == [40] and again[0][1].has(Flag.RETRANSMIT)
    rel.on_reply(PEER, _ack(again[0][1]), 1.01)
    assert [p.seq for _, p in rel.datagrams_to_send(1.01)] == [41, 42]


def test_sequence_numbers_are_consecutive_and_wrap():
    rel = Reliability(initial_seq=0xFFFFFFFD)
    _anchor(rel)
    for i in range(4):
        rel.submit(PEER, _req(), 0.0, token=i)
    sent = rel.datagrams_to_send(0.0)
    assert [p.seq for _, p in sent] == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1]
    assert all(p.has(Flag.ACK_REQ) and not p.has(Flag.RETRANSMIT) for _, p in sent)
    done = rel.on_reply(PEER, _ack(sent[0][1], cum=2), 0.001)
    assert [r.token for r in done] == [0, 1, 2, 3]
    assert rel.idle() and rel.next_timer() is None


def test_selective_ack_retires_one():
    rel = Reliability(initial_seq=99)
    _anchor(rel)
    for i in range(3):
        rel.submit(PEER, _req(), 0.0, token=i)
    sent = [p for _, p in rel.datagrams_to_send(0.0)]
    assert rel.on_reply(PEER, _ack(sent[1]), 0.001) == [Retired(PEER, 101, 1)]
    assert rel.in_flight(PEER) == 2
    # the same reply again is a duplicate: nothing retired twice
    assert rel.on_reply(PEER, _ack(sent[1]), 0.002) == []
    assert rel.counters["duplicate_replies"] == 1


def test_a_coalesced_ack_retires_its_whole_run():
    """SPEC §4.7: an ACK with addr2 = n answers seq - n + 1 .. seq, and only those."""
    rel = Reliability(initial_seq=0xFFFFFFFE)
    _anchor(rel)
    for i in range(6):
        rel.submit(PEER, _req(), 0.0, token=i, needs_reply=True)
    sent = [p for _, p in rel.datagrams_to_send(0.0)]
    run = _ack(sent[3])
    run.addr2 = 4                                    # wraps: seqs 0xFFFFFFFF .. 2
    assert [r.token for r in rel.on_reply(PEER, run, 0.001)] == [3, 2, 1, 0]
    assert rel.in_flight(PEER) == 2                  # 4 and 5 still wait for theirs
    assert rel.on_reply(PEER, run, 0.002) == []      # a duplicate retires nothing


def test_needs_reply_survives_cumulative_ack_until_final():
    rel = Reliability(initial_seq=5)
    rel.submit(PEER, Packet(opcode=Opcode.READ, length=100), 0.0, token="r",
               needs_reply=True, size=100)
    (_, pkt), = rel.datagrams_to_send(0.0)
    part = Packet(opcode=Opcode.READ_RESP, seq=pkt.seq, flags=Flag.ACK_VALID, ack=6)
    assert rel.on_reply(PEER, part, 0.001, final=False) == []
    assert rel.in_flight(PEER) == 1
    assert [r.token for r in rel.on_reply(PEER, part, 0.002, final=True)] == ["r"]


def test_retransmit_with_backoff_then_give_up():
    cfg = RelConfig(rto_initial=0.1, rto_max=0.4, backoff=2.0, deadline=1.0)
    rel = Reliability(cfg, initial_seq=0)
    rel.submit(PEER, _req(8), 0.0, token="w")
    rel.datagrams_to_send(0.0)
    times, now = [], 0.0
    while True:
        now = rel.next_timer()
        failed = rel.handle_timer(now)
        if failed:
            assert failed == [Failed(PEER, 0, "w", len(times) + 1)]
            break
        (_, again), = rel.datagrams_to_send(now)
        assert again.has(Flag.RETRANSMIT) and again.seq == 0
        times.append(now)
    gaps = [round(b - a, 6) for a, b in zip([0.0] + times, times)]
    assert gaps[:3] == [0.1, 0.2, 0.4] and max(gaps) <= 0.4
    assert now == pytest.approx(1.0) and rel.idle()


def test_window_limits_sequence_span_and_bytes():
    rel = Reliability(RelConfig(window=4, max_bytes=1 << 30), initial_seq=0xFFFFFFFF)
    _anchor(rel)
    for i in range(10):
        rel.submit(PEER, _req(), 0.0, token=i)
    first = rel.datagrams_to_send(0.0)
    assert len(first) == 4 and rel.queued(PEER) == 6
    # acking a later one does not open the window: the span is counted from the oldest
    rel.on_reply(PEER, _ack(first[3][1]), 0.001)
    assert rel.datagrams_to_send(0.001) == []
    rel.on_reply(PEER, _ack(first[0][1]), 0.002)
    assert [p.seq for _, p in rel.datagrams_to_send(0.002)] == [4]

    byt = Reliability(RelConfig(window=100, max_bytes=1000), initial_seq=0)
    _anchor(byt)
    for i in range(5):
        byt.submit(PEER, _req(400), 0.0, token=i)
    assert len(byt.datagrams_to_send(0.0)) == 2


def _credit_ack(pkt: Packet, nbytes: int) -> Packet:
    ack = _ack(pkt)
    ack.group = nbytes // CREDIT_UNIT
    return ack


def test_the_receivers_credit_sets_the_byte_window():
    """An ACK's credit (SPEC §8.2) replaces max_bytes for requests: larger lets more go
    out, smaller holds back what has not been sent yet; in flight stays in flight."""
    rel = Reliability(RelConfig(window=1000, max_bytes=8 * CREDIT_UNIT), initial_seq=0)
    rel.submit(PEER, _req(), 0.0, token="anchor")
    (_, first), = rel.datagrams_to_send(0.0)
    assert rel.credit(PEER) == 0
    rel.on_reply(PEER, _credit_ack(first, 20 * CREDIT_UNIT), 0.0)
    assert rel.credit(PEER) == 20 * CREDIT_UNIT
    for i in range(30):
        rel.submit(PEER, _req(CREDIT_UNIT), 0.0, token=i)
    sent = rel.datagrams_to_send(0.0)
    assert len(sent) == 20                          # not 8: the credit, not max_bytes
    rel.on_reply(PEER, _credit_ack(sent[0][1], 4 * CREDIT_UNIT), 0.001)
    assert rel.datagrams_to_send(0.001) == []       # 19 in flight > 4: hold back
    done = rel.on_reply(PEER, _ack(sent[19][1], cum=sent[19][1].seq + 1), 0.002)
    assert len(done) == 19
    assert len(rel.datagrams_to_send(0.002)) == 4   # an ACK without credit keeps the last
    assert rel.credit(PEER) == 4 * CREDIT_UNIT


def test_expected_answers_stay_within_max_bytes_whatever_the_credit():
    """A READ's answer lands in the sender's own socket buffer: it counts against
    max_bytes, not against the receiver's credit."""
    rel = Reliability(RelConfig(window=1000, max_bytes=8 * CREDIT_UNIT), initial_seq=0)
    rel.submit(PEER, _req(), 0.0, token="anchor")
    (_, first), = rel.datagrams_to_send(0.0)
    rel.on_reply(PEER, _credit_ack(first, 100 * CREDIT_UNIT), 0.0)
    for i in range(10):
        rel.submit(PEER, Packet(opcode=Opcode.READ, length=2 * CREDIT_UNIT), 0.0,
                   token=i, needs_reply=True, size=2 * CREDIT_UNIT)
    assert len(rel.datagrams_to_send(0.0)) == 4     # 4 x 2 units = max_bytes


def test_queued_datagrams_fail_at_their_deadline():
    rel = Reliability(RelConfig(window=1, deadline=0.5), initial_seq=0)
    rel.submit(PEER, _req(), 0.0, token="a")
    rel.submit(PEER, _req(), 0.0, token="b")
    rel.datagrams_to_send(0.0)
    t = 0.0
    failed = []
    while not rel.idle():
        t = rel.next_timer()
        failed += rel.handle_timer(t)
        rel.datagrams_to_send(t)
    assert sorted(f.token for f in failed) == ["a", "b"] and t <= 0.5


def test_rtt_sample_sets_rto():
    rel = Reliability(RelConfig(rto_min=0.001, rto_initial=0.2), initial_seq=0)
    rel.submit(PEER, _req(), 0.0)
    (_, p), = rel.datagrams_to_send(0.0)
    rel.on_reply(PEER, _ack(p), 0.004)
    assert rel.rto(PEER) == pytest.approx(0.004 + 4 * 0.002)


@pytest.mark.parametrize("seed", range(5))
def test_lossy_link_every_datagram_retired_exactly_once(seed):
    """Invariant: under loss, duplication and reordering every token is retired once."""
    rng = random.Random(seed)
    rel = Reliability(RelConfig(window=16, rto_initial=0.01, rto_min=0.01, deadline=60),
                      initial_seq=rng.getrandbits(32))
    n = 300
    for i in range(n):
        rel.submit(PEER, _req(), 0.0, token=i)
    received: set[int] = set()
    cum = None
    retired: list = []
    in_flight: list[tuple[float, Packet]] = []
    now = 0.0
    while not rel.idle():
        for _, p in rel.datagrams_to_send(now):
            assert rel.in_flight(PEER) <= 16
            if rng.random() < 0.2:
                continue                                      # request lost
            copies = 2 if rng.random() < 0.1 else 1
            for _ in range(copies):
                in_flight.append((now + rng.random() * 0.005, p.copy()))
        in_flight.sort(key=lambda x: x[0])
        now += 0.001
        while in_flight and in_flight[0][0] <= now:
            _, p = in_flight.pop(0)
            received.add(p.seq)
            if cum is None:
                cum = p.seq
            while cum in received:
                cum = seq_add(cum, 1)
            if rng.random() < 0.2:
                continue                                      # reply lost
            retired += rel.on_reply(PEER, _ack(p, cum), now)
        assert rel.handle_timer(now) == []
    assert sorted(r.token for r in retired) == list(range(n))
    assert rel.counters["retransmitted"] > 0


def test_due_retransmission_keeps_the_timer_armed():
    """Between handle_timer and datagrams_to_send, next_timer still reports the work."""
    rel = Reliability(RelConfig(rto_initial=0.1), initial_seq=0)
    rel.submit(PEER, _req(), 0.0)
    rel.datagrams_to_send(0.0)
    assert rel.handle_timer(0.1) == []
    assert rel.next_timer() is not None and rel.next_timer() <= 0.1
    assert rel.wants_send()
    (_, p), = rel.datagrams_to_send(0.1)
    assert p.has(Flag.RETRANSMIT) and rel.next_timer() > 0.1


def test_a_flight_resends_only_what_is_outstanding_and_each_resend_backs_off_alone():
    """Datagrams sent together share one timer; when it fires, only the ones not yet
    answered go again, and a resent one runs on its own backed-off RTO while an answer
    to the others of its flight changes nothing for it."""
    rel = Reliability(RelConfig(rto_initial=0.1, rto_min=0.1, backoff=2.0, rto_max=1.0),
                      initial_seq=0)
    _anchor(rel)
    rel.submit_many(PEER, [_req(8) for _ in range(6)], 0.0, token="m")
    sent = [p for _, p in rel.datagrams_to_send(0.0)]
    assert [p.seq for p in sent] == [1, 2, 3, 4, 5, 6] and rel.next_timer() == 0.1
    for p in sent[:2] + sent[4:]:
        rel.on_reply(PEER, _ack(p), 0.05)           # 3 and 4 stay unanswered
    assert rel.next_timer() == 0.1
    assert rel.handle_timer(0.1) == []
    assert sorted(p.seq for _, p in rel.datagrams_to_send(0.1)) == [3, 4]
    assert rel.next_timer() == pytest.approx(0.3)    # 0.1 + 2 x 0.1
    rel.on_reply(PEER, _ack(sent[2]), 0.2)           # 3 answered: 4 keeps its timer
    assert rel.next_timer() == pytest.approx(0.3)
    now = rel.next_timer()
    rel.handle_timer(now)
    (_, again), = rel.datagrams_to_send(now)
    assert again.seq == 4 and rel.next_timer() == pytest.approx(0.7)
    assert [r.token for r in rel.on_reply(PEER, _ack(again), 0.31)] == ["m"]
    assert rel.next_timer() is None and rel.idle()


def test_datagrams_sent_together_fail_at_their_own_deadlines():
    rel = Reliability(RelConfig(rto_initial=0.1, rto_max=0.1), initial_seq=0)
    _anchor(rel)
    for i, deadline in enumerate((0.25, 0.25, 0.45)):
        rel.submit(PEER, _req(), 0.0, token=i, deadline=deadline)
    assert len(rel.datagrams_to_send(0.0)) == 3
    failed, now = [], 0.0
    while len(failed) < 3:
        now = rel.next_timer()
        failed += [(f.token, round(now, 6)) for f in rel.handle_timer(now)]
        rel.datagrams_to_send(now)
    assert failed == [(0, 0.25), (1, 0.25), (2, 0.45)] and rel.idle()


def test_a_full_queue_fails_the_datagram_at_once():
    """Bounded pending state: beyond ``max_queue`` queued datagrams per peer a submit is
    refused, and the refusal comes back as a Failed at the next timer (never lost)."""
    from netdam.transport.reliability import Failed
    rel = Reliability(RelConfig(window=1, max_queue=2), initial_seq=0)
    for i in range(4):
        rel.submit("d", Packet(opcode=Opcode.WRITE, payload=b"x"), 0.0, token=i)
    assert rel.queued("d") == 2 and rel.next_timer() <= 0.0
    failed = rel.handle_timer(0.0)
    assert [(f.token, f.seq, f.tries) for f in failed] == [(2, None, 0), (3, None, 0)]
    assert all(isinstance(f, Failed) for f in failed)
    assert rel.counters["queue_full"] == 2 and rel.counters["failed"] == 2


def test_submit_many_queues_like_submit_and_refuses_past_the_queue_bound():
    rel = Reliability(RelConfig(max_queue=3), initial_seq=1)
    _anchor(rel)
    rel.submit_many(PEER, [_req(10) for _ in range(5)], 0.0, token="m")
    assert rel.queued(PEER) == 3 and rel.counters["queue_full"] == 2
    failed = rel.handle_timer(0.0)
    assert [f.token for f in failed] == ["m", "m"] and all(f.seq is None for f in failed)
    sent = rel.datagrams_to_send(0.0)
    assert [p.seq for _, p in sent] == [2, 3, 4]


def test_a_quiet_request_is_retired_when_answered_without_an_rtt_sample():
    """A request sent with NO_RESPONSE keeps that flag on its first copy, is retired by
    ``answered`` (its token's datagrams only) and leaves the RTO alone: the delay of an
    answer seen some other way is not the path's."""
    rel = Reliability(RelConfig(rto_min=0.001, rto_initial=0.2), initial_seq=0)
    _anchor(rel)
    rto = rel.rto(PEER)
    rel.submit(PEER, Packet(opcode=Opcode.REDUCE_FWD, flags=Flag.NO_RESPONSE), 0.0,
               token="join", needs_reply=True)
    rel.submit(PEER, _req(8), 0.0, token="other")
    sent = [p for _, p in rel.datagrams_to_send(0.0)]
    assert [p.has(Flag.NO_RESPONSE) for p in sent] == [True, False]
    assert [(r.seq, r.token) for r in rel.answered(PEER, "join", 0.5)] == \
        [(sent[0].seq, "join")]
    assert rel.rto(PEER) == rto and rel.in_flight(PEER) == 1
    assert rel.counters["answered"] == 1
    assert rel.answered(PEER, "join", 0.6) == [] and rel.answered(99, "join", 0.6) == []


def test_a_quiet_first_request_answered_anchors_the_window():
    """The first datagram to a peer goes alone until answered (SPEC §8.3); a quiet one
    whose effect was seen counts as answered, so the next ones go together."""
    rel = Reliability(initial_seq=40)
    rel.submit(PEER, Packet(opcode=Opcode.REDUCE_FWD, flags=Flag.NO_RESPONSE), 0.0,
               token="join", needs_reply=True)
    assert [p.seq for _, p in rel.datagrams_to_send(0.0)] == [40]
    for i in range(3):
        rel.submit(PEER, _req(), 0.0, token=i)
    assert rel.datagrams_to_send(0.01) == []           # 40 alone until answered
    rel.answered(PEER, "join", 0.02)
    assert [p.seq for _, p in rel.datagrams_to_send(0.02)] == [41, 42, 43]


def test_a_late_quiet_request_asks_for_its_ack_when_retransmitted():
    """Past its retransmission timeout a quiet request goes again without NO_RESPONSE,
    so the receiver answers it, and that answer retires it like any other."""
    rel = Reliability(RelConfig(rto_initial=0.1), initial_seq=0)
    rel.submit(PEER, Packet(opcode=Opcode.REDUCE_FWD, flags=Flag.NO_RESPONSE | Flag.JOIN),
               0.0, token="join", needs_reply=True)
    (_, first), = rel.datagrams_to_send(0.0)
    assert rel.handle_timer(rel.next_timer()) == []
    (_, again), = rel.datagrams_to_send(0.1)
    assert again.has(Flag.RETRANSMIT) and again.has(Flag.JOIN)
    assert not again.has(Flag.NO_RESPONSE) and first.has(Flag.NO_RESPONSE)
    assert [r.token for r in rel.on_reply(PEER, _ack(again), 0.15)] == ["join"]


def _quiet_round(rel: Reliability, now: float, answer_at: float | None, token="join"):
    """Send one quiet request at ``now``; answer it at ``answer_at`` by its effect, or
    (None) let its timer fire and answer the resent copy. Returns the resend's time."""
    rel.submit(PEER, Packet(opcode=Opcode.REDUCE_FWD, flags=Flag.NO_RESPONSE | Flag.JOIN),
               now, token=token, needs_reply=True)
    (_, first), = rel.datagrams_to_send(now)
    due = rel.next_timer()
    if answer_at is not None and answer_at < due:
        assert [r.token for r in rel.answered(PEER, token, answer_at)] == [token]
        return None
    rel.handle_timer(due)
    (_, again), = rel.datagrams_to_send(due)
    assert again.has(Flag.RETRANSMIT) and not again.has(Flag.NO_RESPONSE)
    assert [r.token for r in rel.on_reply(PEER, _ack(again), due)] == [token]
    return due


def test_a_slow_round_is_learnt_and_then_waited_for_not_resent():
    """A quiet request's answer takes as long as its effect (a round of seconds, say),
    not the path: the first such request is resent at the path's RTO, which doubles the
    quiet timeout (Karn); once a first copy is answered, the quiet timeout follows those
    answers (RFC 6298's estimator) and later rounds of that length go unresent, while
    the path's own RTO and ordinary requests keep their short timer."""
    rel = Reliability(RelConfig(rto_initial=0.1, rto_min=0.01, quiet_max=5.0), initial_seq=0)
    _anchor(rel)                                    # an RTT sample of 0: RTO at its floor
    rto = rel.rto(PEER)
    assert rel.quiet_timeout(PEER) == rto == 0.01
    resends, now = [], 1.0
    for _ in range(8):                              # rounds of 0.3 s
        resends.append(_quiet_round(rel, now, now + 0.3))
        now += 1.0
    assert resends[0] is not None and resends[-3:] == [None] * 3
    assert sum(r is not None for r in resends) <= 6          # doubling: 0.01 -> 0.32
    assert 0.3 < rel.quiet_timeout(PEER) <= 5.0
    assert rel.rto(PEER) == rto                     # the path's estimate is untouched
    rel.submit(PEER, _req(8), now, token="write")   # an ordinary request: the short timer
    rel.datagrams_to_send(now)
    assert rel.next_timer() == pytest.approx(now + rto)


def test_the_quiet_timeout_is_bounded_and_a_fast_round_brings_it_back():
    """Doubling stops at ``quiet_max``; answers that come quickly bring the timeout back
    down toward them, never under the path's RTO."""
    rel = Reliability(RelConfig(rto_initial=0.1, rto_min=0.01, quiet_max=0.5), initial_seq=0)
    _anchor(rel)
    now = 1.0
    for _ in range(10):                             # never answered but by resends
        _quiet_round(rel, now, None)
        now += 1.0
    assert rel.quiet_timeout(PEER) == 0.5
    for _ in range(40):                             # rounds of 5 ms
        assert _quiet_round(rel, now, now + 0.005) is None
        now += 1.0
    assert rel.rto(PEER) <= rel.quiet_timeout(PEER) < 0.05


def test_a_lost_quiet_request_is_resent_before_its_deadline_whatever_was_learnt():
    """However long quiet answers have taken, a quiet request's first timer takes at
    most half of what is left to its deadline: one that was lost is resent in time, not
    failed unsent."""
    rel = Reliability(RelConfig(rto_initial=0.1, rto_min=0.01, quiet_max=5.0), initial_seq=0)
    _anchor(rel)
    now = 1.0
    for _ in range(12):                              # rounds of 2 s: the timeout grows
        _quiet_round(rel, now, now + 2.0)
        now += 10.0
    assert rel.quiet_timeout(PEER) > 2.0
    assert _quiet_round(rel, now, now + 2.0) is None   # and such rounds are waited for
    now += 10.0
    rel.submit(PEER, Packet(opcode=Opcode.REDUCE_FWD, flags=Flag.NO_RESPONSE), now,
               token="lost", needs_reply=True, deadline=now + 1.0)
    rel.datagrams_to_send(now)                       # and lost on the way
    assert rel.next_timer() == pytest.approx(now + 0.5)
    assert rel.handle_timer(now + 0.5) == []
    (_, again), = rel.datagrams_to_send(now + 0.5)
    assert again.has(Flag.RETRANSMIT) and not again.has(Flag.NO_RESPONSE)
