"""Simulated times agree with the alpha-beta closed forms (closed_form.py) where the
model's assumptions hold: PCIe made free, one fabric link (or a switch: two) per step.

alpha is the path's link latency; the first-contact round trip (closed_form.py) is
2 * alpha when a message spans several datagrams. Stated tolerance: 3 % when the
bandwidth term dominates (1 MiB per rank), 30 % when the latency term does (4 KiB): the
formula leaves out the device's per-datagram pipeline (100 ns), the store-and-forward of
each datagram through the sending device and the ack of a one-datagram message that
the next one to the same new peer waits for.
"""

import pytest

from netdam.sim import SimConfig, simulate
from netdam.sim.closed_form import MODELS, effective_gbytes
from netdam.wire.frag import max_payload

LATENCY = 1000.0


@pytest.mark.parametrize("size,tol", [(4096, 0.30), (1 << 20, 0.03)])
@pytest.mark.parametrize("collective,algo,topology,hops,n", [
    ("all_reduce", "ring", "ring", 1, 8),
    ("all_reduce", "ring", "ring", 1, 5),
    ("broadcast", "binomial", "switch", 2, 8),
    ("all_reduce", "recursive_doubling", "switch", 2, 16),
])
def test_simulated_time_matches_the_closed_form(collective, algo, topology, hops, n, size,
                                                tol):
    cfg = SimConfig(collective=collective, algo=algo, nodes=n, size=size, topology=topology,
                    latency_ns=LATENCY, pcie_crossing_ns=0.0, pcie_gbps=1e5, mode="sized")
    message = size // n if algo == "ring" else size
    contact = 2 * hops * LATENCY if message > max_payload(cfg.mtu) else 0.0
    model = MODELS[(collective, algo)](n, size, effective_gbytes(cfg.link_gbps, cfg.mtu),
                                       hops * LATENCY, contact)
    got = simulate(cfg).time_ns
    assert got == pytest.approx(model, rel=tol)
    assert got >= model * 0.99      # the formula is a lower bound: nothing is free


def test_ring_time_grows_linearly_with_latency_and_inversely_with_bandwidth():
    base = dict(nodes=8, size=1 << 20, topology="ring", pcie_crossing_ns=0.0, pcie_gbps=1e5,
                mode="sized")
    t100 = simulate(SimConfig(link_gbps=100, **base)).time_ns
    t400 = simulate(SimConfig(link_gbps=400, **base)).time_ns
    assert 3.0 < t100 / t400 < 4.0          # the latency part does not shrink
    slow = simulate(SimConfig(latency_ns=5000, **base)).time_ns
    fast = simulate(SimConfig(latency_ns=0, **base)).time_ns
    # 2(n-1) steps, and one first-contact round trip
    assert slow - fast == pytest.approx((2 * 7 + 2) * 5000, rel=0.02)
