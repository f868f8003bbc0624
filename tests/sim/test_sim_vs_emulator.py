"""The simulator sends what the emulator sends: for the same collectives on the same
configuration (3 nodes of one device, the emulator's MTU and p2p layout), the
device-to-device datagrams and bytes per (source, destination, opcode) of the chain and
the aggregation tree, and the data-bearing PUT_SIGNALs each device receives in the host
ring, equal the counts of a real LocalCluster run's capture exactly. Answers (ACKs) are
compared too when the run had no retransmission (a retransmitted request is answered
twice on the emulator); a coalesced ACK of the emulator's device process (SPEC §4.7,
``addr2`` = n > 1) counts as the n ACKs it stands for, which the simulator sends."""

import collections

import pytest

from netdam.capture.frames import netdam_frames
from netdam.collectives.runner import run_cases
from netdam.sim import SimConfig, simulate
from netdam.sim.base import IS_RESPONSE
from netdam.wire.fields import DEFAULT_MTU, Flag, Opcode

N = 3
SIZE = N * 40_000 * 4          # 160 kB blocks: three datagrams each at the default MTU
ALGOS = ("chain", "tree", "ring")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    pcap = tmp_path_factory.mktemp("emu") / "run.pcap"
    cases = [{"collective": "all_reduce", "count": SIZE // 4, "dtype": "float32",
              "bits": None, "op": "sum", "algo": algo, "root": 0, "iters": 1, "warmup": 0,
              "deterministic": False, "check": True} for algo in ALGOS]
    results = run_cases(cases, nprocs=N, nodes=N, pcap=str(pcap))
    assert all(r.ok for r in results), [r.error for r in results]
    return list(netdam_frames(pcap))


def simulated(algo):
    return simulate(SimConfig(nodes=N, size=SIZE, algo=algo, mtu=DEFAULT_MTU,
                              topology="switch")).flows


def between_devices(flows_or_frames):
    """(src, dst, opcode) -> [datagrams, bytes] of device-to-device traffic."""
    out = collections.defaultdict(lambda: [0, 0])
    for (s, d, op), (pkts, nbytes) in flows_or_frames:
        if s <= N and d <= N:
            out[(s, d, op)][0] += pkts
            out[(s, d, op)][1] += nbytes
    return dict(out)


def answers(frame) -> int:
    """Datagrams a frame stands for: a coalesced ACK answers ``addr2`` requests."""
    if frame.fields["opcode"] == Opcode.ACK:
        return max(1, frame.fields.get("addr2", 0))
    return 1


@pytest.mark.timeout(180)
def test_device_traffic_of_chain_and_tree_equals_the_emulators(emulator):
    first = [f for f in emulator if not f.fields["flags"] & Flag.RETRANSMIT]
    emu = between_devices(((f.fields["src"], f.fields["dst"], f.fields["opcode"]),
                           (answers(f), answers(f) * f.size)) for f in first)
    sim = between_devices(item for algo in ("chain", "tree") for item in
                          simulated(algo).items())
    requests = {k: v for k, v in sim.items() if not IS_RESPONSE[k[2]]}
    assert requests == {k: v for k, v in emu.items() if not IS_RESPONSE[k[2]]}
    assert {Opcode(k[2]).name for k in requests} == {"REDUCE_FWD", "MULTICAST"}
    if len(first) == len(emulator):
        assert sim == emu


@pytest.mark.timeout(180)
def test_ring_puts_per_device_equal_the_emulators(emulator):
    emu = collections.Counter()
    for f in emulator:
        if f.fields["opcode"] == Opcode.PUT_SIGNAL and f.fields["payload_len"] \
                and not f.fields["flags"] & Flag.RETRANSMIT:
            emu[(f.fields["dst"], "datagrams")] += 1
            emu[(f.fields["dst"], "bytes")] += f.size
    sim = collections.Counter()
    for (s, d, op), (pkts, nbytes) in simulated("ring").items():
        if op == Opcode.PUT_SIGNAL:
            sim[(d, "datagrams")] += pkts
            sim[(d, "bytes")] += nbytes
    assert sim == emu
    assert sim[(1, "datagrams")] == 2 * (N - 1) * 3     # 2(n-1) messages of 3 datagrams
