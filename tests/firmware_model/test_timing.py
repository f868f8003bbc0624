"""The cost model. Invariant: costs grow with bytes and work, and a remote 8-byte read
lands near the NetDAM prototype's 618 ns."""

from __future__ import annotations

import pytest
from conftest import Rig

from firmware_model import ETH_100G, ETH_400G, PRESETS, TimingModel
from netdam.wire.fields import Opcode


def test_remote_read_matches_the_prototype():
    assert 550 <= TimingModel().remote_read_ns(8) <= 700


def test_costs_grow_with_bytes_and_work():
    t = TimingModel()
    assert t.cost(Opcode.WRITE, 1 << 20) > t.cost(Opcode.WRITE, 8) >= t.pipeline_ns
    assert t.cost(Opcode.REDUCE, 1 << 20) > t.cost(Opcode.WRITE, 1 << 20)
    assert t.cost(Opcode.ATOMIC_FADD, 8) > t.cost(Opcode.READ, 8)
    assert t.cost(0xC3, 64) > t.pipeline_ns            # a user opcode: read + write


def test_presets_and_wire_time():
    assert set(PRESETS) == {"100g", "200g", "400g"}
    assert ETH_400G.wire_ns(9000) == pytest.approx(ETH_100G.wire_ns(9000) / 4)
    assert TimingModel().pcie_ns(0) == TimingModel().pcie_crossing_ns
    with pytest.raises(ValueError):
        TimingModel(link_gbps=0)


def test_device_accumulates_modeled_busy_time():
    t = TimingModel(pipeline_ns=50.0)
    rig = Rig(timing=t)
    rig.request(Opcode.WRITE, addr=0, payload=bytes(4096))
    rig.request(Opcode.READ, addr=0, length=4096)
    c = rig.dev.counters()
    expect = t.cost(Opcode.WRITE, 4096) + t.cost(Opcode.READ, 4096)
    assert c["busy_ns"] == pytest.approx(expect)
    assert c["by_opcode"]["READ"]["busy_ns"] == pytest.approx(t.cost(Opcode.READ, 4096))
