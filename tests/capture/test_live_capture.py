"""Real traffic captured both ways: netdam's own capture (--pcap) and tcpdump on the
loopback interface. Invariant: both files hold the same netdam datagrams, tshark with the
Lua dissector reads the same fields from the tcpdump file as the codec decodes, and the
flow statistics match the transports' own counters. Skipped, with the reason, where
tcpdump or tshark is missing (CI installs both)."""

import collections
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from netdam.agent import Addr, Agent, NakError
from netdam.capture.flows import flow_stats
from netdam.capture.frames import netdam_frames
from netdam.capture.pcap import Capture
from netdam.cluster import LocalCluster
from netdam.control import ControlClient
from netdam.transport.faults import FaultConfig
from netdam.wire import Opcode
from netdam_proto import DISSECTOR

pytestmark = pytest.mark.skipif(not (shutil.which("tcpdump") and shutil.which("tshark")),
                                reason="tcpdump and tshark are needed (apt-get install "
                                       "tcpdump tshark)")


def _traffic(agent: Agent) -> None:
    """Every opcode a host sends, fragments, NAKs and (with the agent's faults)
    retransmissions."""
    a = agent
    a.write(Addr(1, 0), bytes(range(256)) * 40)                # fragments at mtu 1500
    assert bytes(a.read(Addr(1, 0), 10240)) == bytes(range(256)) * 40
    a.atomic_add(Addr(2, 64), 5)
    a.compare_swap(Addr(2, 64), 5, 9)
    a.reduce(Addr(2, 128), np.ones(16, np.float32))
    a.put_signal(Addr(2, 4096), b"x" * 100, Addr(2, 72), 1)
    a.wait_signal(Addr(2, 72), 1)
    a.multicast(1, Addr(1, 8192), b"y" * 3000)
    a.fence(1)
    a.reduce_chain([1, 2], Addr(1, 0), 4096, dtype=5, op=1)    # uint8 sum, in the devices
    with pytest.raises(NakError):
        a.read(Addr(1, 1 << 40, rkey=a.regions[1][0]["key"]), 8)   # OUT_OF_BOUNDS
    with pytest.raises(NakError):
        a.write(Addr(1, 0, rkey=0x1234), b"no")                     # BAD_KEY


@pytest.mark.timeout(120)
def test_tcpdump_and_netdam_capture_agree(tmp_path):
    ours, theirs = tmp_path / "netdam.pcap", tmp_path / "tcpdump.pcap"
    with LocalCluster(nodes=2, mem_size=1 << 20, pcap=ours, mtu=1500) as c:
        ports = [d.endpoint[1] for d in c.devices]
        expr = " or ".join(f"port {p}" for p in ports)
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(theirs),
                                 f"udp and ({expr})"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 10      # wait until tcpdump listens
            while "listening" not in dump.stderr.readline() and time.monotonic() < deadline:
                pass
            client = ControlClient(c.coordinator, timeout=5)
            infos = {m["id"]: m["info"] for m in client.topology()["members"]
                     if m["role"] == "device"}
            counters_before = {m["id"]: m["counters"] for m in client.status()["members"]}
            with Agent(host_id=900, timeout=5, mtu=1500, capture=Capture(tmp_path / "agent.pcap"),
                       faults=FaultConfig(loss=0.2, seed=4)) as agent:
                for dev in (1, 2):
                    agent.add_device(infos[dev], path="udp")
                _traffic(agent)
                agent_udp = dict(agent.udp.counters)
                agent_faults = dict(agent.udp.injector.counters)
            time.sleep(1.2)                        # a heartbeat carries the final counters
            counters = {m["id"]: m["counters"] for m in client.status()["members"]}
            client.close()
        finally:
            time.sleep(0.3)
            dump.send_signal(signal.SIGINT)
            dump.wait(timeout=10)
            dump.stderr.close()
    mine = list(netdam_frames(ours)) + list(netdam_frames(tmp_path / "agent.pcap"))
    wire = list(netdam_frames(theirs))
    # the same datagrams, except the ones the injector dropped before the wire
    sent = collections.Counter((f.src, f.dst, f.datagram) for f in mine
                               if not (f.note or "").startswith("dropped"))
    seen = collections.Counter((f.src, f.dst, f.datagram) for f in wire)
    assert seen == sent and len(wire) > 40
    opcodes = {f.fields.get("opcode") for f in wire}
    for op in (Opcode.READ, Opcode.READ_RESP, Opcode.WRITE, Opcode.ACK, Opcode.NAK,
               Opcode.ATOMIC_FADD, Opcode.ATOMIC_CAS, Opcode.ATOMIC_RESP, Opcode.REDUCE,
               Opcode.REDUCE_FWD, Opcode.MULTICAST, Opcode.PUT_SIGNAL, Opcode.FENCE):
        assert op in opcodes, op.name
    assert agent_faults["lost"] > 0
    assert any(f.packet is not None and f.packet.flags & 0x40 for f in wire)  # RETRANSMIT

    # tshark with the Lua dissector reads the same fields from tcpdump's file
    out = subprocess.run(["tshark", "-X", f"lua_script:{DISSECTOR}", "-r", str(theirs),
                          "-Y", "netdam", "-T", "fields", "-E", "separator=,",
                          "-e", "netdam.opcode", "-e", "netdam.seq", "-e", "netdam.req_id",
                          "-e", "netdam.status"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split(",") for line in out.stdout.splitlines() if line]
    assert [(int(o), int(s), int(r), int(st)) for o, s, r, st in rows] == \
        [(f.fields["opcode"], f.fields["seq"], f.fields["req_id"], f.fields["status"])
         for f in wire]

    # flow statistics against the transports' own counters
    flows = flow_stats(mine)
    from_agent = [fl for fl in flows if fl.src[1] not in ports]
    assert sum(fl.packets for fl in from_agent) == agent_udp["tx_datagrams"] + \
        agent_faults["lost"]
    for dev in c.devices:
        sent_by_dev = sum(fl.packets for fl in flows if fl.src[1] == dev.endpoint[1])
        delta = counters[dev.id]["udp_tx_datagrams"] - \
            counters_before[dev.id].get("udp_tx_datagrams", 0)
        assert sent_by_dev == delta, dev.id
