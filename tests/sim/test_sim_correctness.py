"""In the per-packet mode every collective's result equals NumPy's: the data really went
through the firmware devices (chain and tree reduce inside them)."""

import pytest

from netdam.collectives.offload import GATHERED_START_MAX
from netdam.sim import ALGORITHMS, SimConfig, SimError, simulate
from netdam.wire.fields import Opcode


@pytest.mark.parametrize("collective,algo", sorted(ALGORITHMS))
def test_every_algorithm_gives_the_numpy_answer(collective, algo):
    r = simulate(SimConfig(collective=collective, algo=algo, nodes=5, size=5 * 3000 * 4,
                           topology="fattree", radix=2, mtu=1500))
    assert r.correct is True
    assert r.time_ns > 0


@pytest.mark.parametrize("topology,k", [("ring", 1), ("torus2d", 1), ("multiplane", 1),
                                        ("torus3d", 1), ("switch", 2), ("fattree", 4)])
def test_chain_and_ring_are_correct_on_every_topology(topology, k):
    for algo in ("chain", "ring"):
        r = simulate(SimConfig(algo=algo, nodes=8 // k, devices_per_node=k, size=8 * 1024,
                               topology=topology, radix=4))
        assert r.correct is True, (topology, algo)


def test_loss_is_repaired_by_the_reliability_core():
    r = simulate(SimConfig(algo="chain", nodes=4, size=64 * 1024, topology="ring", loss=0.02,
                           seed=5))
    assert r.correct is True
    assert r.dropped > 0


def test_a_finite_queue_drops_and_the_result_is_still_right():
    r = simulate(SimConfig(algo="tree", nodes=6, size=6 * 64 * 1024, topology="switch",
                           queue_bytes=100_000))
    assert r.correct is True
    assert r.dropped > 0


def test_the_timing_only_modes_do_not_claim_a_check():
    assert simulate(SimConfig(nodes=4, size=4096, mode="chunk")).correct is None


def test_a_run_that_cannot_finish_says_so():
    # a link that loses everything: the reliability core gives up at its deadline
    with pytest.raises(SimError):
        simulate(SimConfig(nodes=2, size=4096, topology="ring", loss=0.999))


def _flows(algo: str, nodes: int = 4, size: int = 1 << 20) -> dict:
    r = simulate(SimConfig(nodes=nodes, size=size, algo=algo))
    assert r.correct is True
    return r.flows


def _fadds(algo: str, nodes: int = 4, size: int = 1 << 20) -> int:
    return sum(pkts for (_, _, op), (pkts, _) in _flows(algo, nodes, size).items()
               if op == Opcode.ATOMIC_FADD)


def test_a_barrier_returns_no_credits():
    """The tree's round opens with a barrier of empty messages, which take no slot: its
    hosts send no credit (ATOMIC_FADD); the ring's data pieces do."""
    assert _fadds("tree") == 0
    assert _fadds("ring") > 0


def test_a_chain_round_starts_with_one_joined_descriptor_per_rank():
    """No barrier and no atomic open a chain round: every rank hands its block's
    descriptor, flagged JOIN, to rank 0's device (member 1), which starts all four
    chains once it holds them all. Beyond ``GATHERED_START_MAX`` ranks a barrier opens
    it, and the result is as right."""
    flows = _flows("chain")
    assert not any(op == Opcode.ATOMIC_FADD for (_, _, op) in flows)
    starts = {(src, dst): pkts for (src, dst, op), (pkts, _) in flows.items()
              if op == Opcode.REDUCE_FWD and pkts == 1}   # a descriptor is one datagram
    hosts = {src for src, dst in starts if dst == 1 and src > 4}
    assert len(hosts) == 4
    # rank 0's device forwards the descriptors whose routes start elsewhere (the one to
    # member 2 travels in the flow of the chain's fragments there)
    assert {dst for src, dst in starts if src == 1} == {3, 4}
    many = GATHERED_START_MAX + 1
    assert _fadds("chain", nodes=many, size=many * 1024) == 0


@pytest.mark.parametrize("mode", ["packet", "chunk"])
def test_emptied_slots_go_back_a_batch_per_credit(mode):
    """Receivers give a sender's slots back in batches of ``Layout.credit_batch``, as
    ``netdam.collectives.p2p`` does: a ring of 4 ranks over 4 MiB moves 2(n-1) messages
    of 1 MiB (4 slots each) per rank, so each rank sends one credit per two slots."""
    n, size = 4, 4 << 20
    flows = simulate(SimConfig(nodes=n, size=size, algo="ring", mode=mode)).flows
    credits = sum(pkts for (_, _, op), (pkts, _) in flows.items()
                  if op == Opcode.ATOMIC_FADD)
    slots_per_rank = 2 * (n - 1) * (size // n) // (256 << 10)
    assert credits == n * slots_per_rank // 2
