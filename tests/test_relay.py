"""Relay through the node's own device (SPEC §8.5, NCCL's PXN), with real device
processes: a host attached to device A's shared-memory rings reaches device B through A;
every primitive gives the same effects as on the direct UDP path, exactly once under
faults, each datagram crosses two hops (host -> A on the rings, A -> B over UDP), and a
request that reaches a device it does not name is refused with WRONG_DEVICE."""

import textwrap
import time

import numpy as np
import pytest

from netdam.agent import Addr, Agent, NakError
from netdam.cluster import LocalCluster
from netdam.control.client import ControlClient
from netdam.device import DeviceProcess
from netdam.errors import UsageError
from netdam.wire.fields import RedOp, Status

pytestmark = pytest.mark.timeout(60)

KEY = 0x5EED
MEM = 1 << 20
REGIONS = f'[{{"base": 0, "length": {MEM}, "key": {KEY}}}]'
A, B = 11, 12


def _exercise(ag: Agent, dev: int) -> dict:
    a = Addr(dev, 0)
    blob = bytes(range(256)) * 700                     # 175 KiB: several datagrams
    ag.write(a + 4096, blob)
    out = {"read": bytes(ag.read(a + 4096, len(blob)))}
    out["fadd"] = [ag.atomic_add(a + 64, 5) for _ in range(3)]
    out["cas"] = [ag.compare_swap(a + 72, 0, 9), ag.compare_swap(a + 72, 0, 7)]
    ag.write(a + 300000, np.ones(500, np.float32))
    for _ in range(3):
        ag.reduce(a + 300000, np.arange(500, dtype=np.float32), op=RedOp.SUM)
    out["reduce"] = np.frombuffer(ag.read(a + 300000, 2000), np.float32).tolist()
    ag.put_signal(a + 400000, b"signalled" * 100, a + 128, 2)
    out["signal"] = ag.wait_signal(a + 128, 2, timeout=5)
    ag.fence(dev)
    hs = [ag.write_nb(a + 500000 + 8 * i, i.to_bytes(8, "little")) for i in range(50)]
    ag.wait_all(hs, timeout=10)
    out["nb"] = bytes(ag.read(a + 500000, 400))
    return out


def _devices(*extra):
    b = DeviceProcess("--id", B, "--mem-size", MEM, "--regions", REGIONS, *extra)
    peers = f'{{"{B}": ["{b.address[0]}", {b.address[1]}]}}'
    a = DeviceProcess("--id", A, "--mem-size", MEM, "--regions", REGIONS, "--shm",
                      "--peers", peers, *extra)
    return a, b


@pytest.mark.parametrize("faults", [(), ("--loss", "0.05", "--dup", "0.05", "--reorder",
                                         "0.1", "--corrupt", "0.01", "--seed", "4")],
                         ids=["clean", "faults"])
def test_relay_gives_the_same_effects_as_the_direct_path(faults):
    results, counters = {}, {}
    for path in ("udp", "relay"):
        a, b = _devices(*faults)
        with a, b, Agent(timeout=10) as ag:
            ag.add_device(a.info, path="shm")
            via = A if path == "relay" else None
            assert ag.add_device(b.info, path=path, via=via) == path == ag.path(B)
            results[path] = _exercise(ag, B)
        counters[path] = a.final_counters
    assert results["relay"] == results["udp"]
    r = results["relay"]
    assert r["read"] == bytes(range(256)) * 700
    assert r["fadd"] == [0, 5, 10] and r["cas"] == [0, 9]
    assert r["reduce"] == (1 + 3 * np.arange(500, dtype=np.float32)).tolist()
    assert r["signal"] == 2
    assert r["nb"] == b"".join(i.to_bytes(8, "little") for i in range(50))
    # the relay path went through A both ways; the direct path never touched A
    assert counters["relay"]["relayed_out"] > 50 and counters["relay"]["relayed_in"] > 50
    assert counters["udp"]["relayed_out"] == counters["udp"]["relayed_in"] == 0


def test_a_request_for_another_member_is_refused_with_wrong_device():
    a, b = _devices()
    with a, b, Agent(timeout=5) as ag:
        # device B's id, device A's address: A must refuse it, not apply it to itself
        ag.add_device(dict(b.info, host=a.info["host"], port=a.info["port"]), path="udp")
        with pytest.raises(NakError) as exc:
            ag.write(Addr(B, 64), b"not for A")
        assert exc.value.status == Status.WRONG_DEVICE
        ag.add_device(a.info, path="udp")
        assert bytes(ag.read(Addr(A, 64), 9)) == bytes(9)     # nothing applied on A


def test_relay_needs_a_device_on_this_nodes_rings():
    a, b = _devices()
    with a, b, Agent(timeout=5) as ag:
        ag.add_device(a.info, path="udp")
        with pytest.raises(UsageError):
            ag.add_device(b.info, path="relay", via=A)
        with pytest.raises(UsageError):
            ag.add_device(b.info, path="relay", via=99)


SCRIPT = textwrap.dedent("""
    import numpy as np, netdam
    from netdam.collectives import check as C
    comm = netdam.init(timeout=30)
    r, n = comm.rank, comm.size
    remote = [a.device for q, a in enumerate(comm.areas) if comm.nodes[q] != comm.nodes[r]]
    assert {comm.agent.path(d) for d in remote} == {"relay"}, remote
    x = np.arange(30_000, dtype=np.float32) * (r + 1)
    for algo in ("ring", "chain", "tree", "hierarchical"):
        got = comm.all_reduce(x, algo=algo)
        assert np.allclose(got, np.arange(30_000) * n * (n + 1) / 2), algo
    ints = np.full(1000, r, np.int64)
    got = comm.all_to_allv(ints, [250] * n, [250] * n)
    assert got.tolist() == sum(([q] * 250 for q in range(n)), []), got[:5]
    xm, topk, w = C.moe_input(r, 20, 128, 2 * n, 2, seed=1)
    d = comm.moe_dispatch(xm, topk, 2 * n, topk_weights=w)
    assert len(d.src_rank) > 0
    comm.barrier()
    print("rank", r, "ok", flush=True)
""")


@pytest.mark.timeout(120)
def test_collectives_through_the_node_device(run_job):
    """NETDAM_PATH=relay: every rank reaches other nodes' devices through its own."""
    with LocalCluster(nodes=2, devices_per_node=2, mem_size=64 << 20) as c:
        run_job(c, SCRIPT, 4, job="relay", env={"NETDAM_PATH": "relay"})
        client = ControlClient(c.coordinator, timeout=5)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:   # counters ride on the next heartbeat
                relayed = [m["counters"].get("relayed_out", 0)
                           for m in client.status()["members"] if m["role"] == "device"]
                if len(relayed) == 4 and min(relayed) > 0:
                    break
                time.sleep(0.2)
        finally:
            client.close()
    assert len(relayed) == 4 and min(relayed) > 0, relayed
