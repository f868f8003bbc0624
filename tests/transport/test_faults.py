"""Fault injection is seeded and fully accounted: what leaves equals what came in minus
losses plus duplicates, corruption is always caught by the CRC, and the knobs parse from
the environment and the command line."""

import argparse

import pytest

from netdam.transport.faults import FaultConfig, Injector, add_fault_arguments, describe
from netdam.wire import Opcode, Packet, Status, WireError, decode, encode


def _dgram(i: int) -> bytes:
    return encode(Packet(opcode=Opcode.WRITE, seq=i, payload=bytes(range(256)) * 4))


def test_no_faults_is_inactive_and_transparent():
    inj = Injector(FaultConfig())
    assert not inj.active
    assert inj.apply(b"abc", 1.0) == [(1.0, b"abc")]


def test_counters_account_for_every_datagram():
    inj = Injector(FaultConfig(loss=0.1, dup=0.05, reorder=0.1, corrupt=0.01, seed=3))
    out = []
    for i in range(5000):
        out += inj.apply(_dgram(i), i * 1e-3)
    k = inj.counters
    assert k["seen"] == 5000
    assert len(out) == k["sent"] == 5000 - k["lost"] + k["duplicated"]
    assert 400 < k["lost"] < 600 and 150 < k["duplicated"] < 350
    assert 400 < k["reordered"] < 600 and 20 < k["corrupted"] < 90
    bad = 0
    for _, d in out:
        try:
            decode(d)
        except WireError as exc:
            assert exc.status in (Status.BAD_CRC, Status.MALFORMED, Status.BAD_VERSION)
            bad += 1
    # every corrupted datagram (and its duplicate, if any) fails to decode
    assert k["corrupted"] <= bad <= 2 * k["corrupted"]


def test_seeded_faults_repeat():
    def run():
        inj = Injector(FaultConfig(loss=0.3, dup=0.3, reorder=0.3, corrupt=0.3, seed=11))
        return [inj.apply(_dgram(i), float(i)) for i in range(200)]
    assert run() == run()


def test_reorder_and_delay_shift_send_time():
    inj = Injector(FaultConfig(delay=0.01, reorder=1.0, reorder_hold=0.002, seed=1))
    (at, _), = inj.apply(b"x" * 100, 5.0)
    assert at == pytest.approx(5.012)


def test_rate_cap_spaces_datagrams():
    inj = Injector(FaultConfig(rate_gbps=1.0, seed=0))
    times = [inj.apply(b"x" * 12500, 0.0)[0][0] for _ in range(100)]  # 100 us each at 1G
    # beyond the 64 KiB burst, datagrams leave one serialization time apart
    assert times[-1] == pytest.approx(100 * 100e-6 - (64 << 10) * 8e-9, rel=0.05)
    assert all(b >= a for a, b in zip(times, times[1:]))


def test_env_and_flags():
    env = {"NETDAM_LOSS": "0.1", "NETDAM_SEED": "42", "NETDAM_RATE_GBPS": "2.5"}
    cfg = FaultConfig.from_env(env)
    assert cfg == FaultConfig(loss=0.1, seed=42, rate_gbps=2.5)
    assert FaultConfig.from_env(cfg.to_env()) == cfg
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)
    args = parser.parse_args(["--dup", "0.05", "--loss", "0.2", "--corrupt", "0.01"])
    both = FaultConfig.from_args(args, env)
    assert (both.loss, both.dup, both.corrupt, both.seed) == (0.2, 0.05, 0.01, 42)
    assert FaultConfig.from_args(parser.parse_args(cfg.to_argv()), {}) == cfg
    assert "loss=0.1" in describe(cfg)
    with pytest.raises(ValueError, match="NETDAM_LOSS"):
        FaultConfig.from_env({"NETDAM_LOSS": "lots"})
    with pytest.raises(ValueError, match="probability"):
        FaultConfig(loss=1.5)
