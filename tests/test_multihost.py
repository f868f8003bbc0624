"""A cluster across network namespaces: each namespace is a host with its own address,
joined by a veth link the test makes itself. Coordinator and device 1 live on host A,
device 2 on host B, one rank on each; collectives cross the link as real UDP.
Skipped, with the reason, where network namespaces cannot be created."""

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

ADDR = {"a": "10.213.7.1", "b": "10.213.7.2"}


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def hosts():
    tag = uuid.uuid4().hex[:6]
    ns = {k: f"netdam-{tag}-{k}" for k in ADDR}
    made = []
    try:
        for k, name in ns.items():
            r = _ip("netns", "add", name)
            if r.returncode:
                pytest.skip(f"cannot create network namespaces here: {r.stderr.strip()}")
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        r = _ip("link", "add", f"nd{tag}a", "netns", ns["a"], "type", "veth", "peer", "name",
                f"nd{tag}b", "netns", ns["b"])
        assert r.returncode == 0, r.stderr
        for k, dev in (("a", f"nd{tag}a"), ("b", f"nd{tag}b")):
            assert _ip("-n", ns[k], "addr", "add", f"{ADDR[k]}/24", "dev", dev).returncode == 0
            assert _ip("-n", ns[k], "link", "set", dev, "up").returncode == 0
        yield ns
    finally:
        for name in made:
            _ip("netns", "del", name)


def _start(ns: str, *args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "netdam", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _first_json(p: subprocess.Popen) -> dict:
    line = p.stdout.readline()
    assert line, p.stderr.read()
    return json.loads(line)


SCRIPT = textwrap.dedent("""
    import numpy as np, netdam
    comm = netdam.init(timeout=20)
    x = np.arange(100_000, dtype=np.float32) * (comm.rank + 1)
    for algo in ("ring", "chain"):
        y = comm.all_reduce(x, algo=algo)
        assert np.array_equal(y, np.arange(100_000, dtype=np.float32) * 3), algo
    print("ok", comm.rank, sorted(comm.agent.path(d) for d in (1, 2)), flush=True)
""")


GROUP = textwrap.dedent("""
    import time
    from netdam.control import ControlClient
    c = ControlClient("{control}", timeout=5)
    c.request("group", group=1, members=[1, 2])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counters = {{m["id"]: m["counters"] for m in c.status()["members"]}}
        if all(1 in counters.get(d, {{}}).get("groups", []) for d in (1, 2)):
            break
        time.sleep(0.1)
    else:
        raise SystemExit("the devices did not learn the group")
""")


@pytest.mark.timeout(120)
def test_cluster_across_two_namespaces(hosts, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    procs = []
    try:
        coord = _start(hosts["a"], "coordinator", "--host", ADDR["a"], "--dead-after", "3")
        procs.append(coord)
        control = _first_json(coord)["control"]
        assert control.startswith(f"tcp://{ADDR['a']}:")
        for dev, (k, node) in enumerate((("a", 0), ("b", 1)), start=1):
            regions = json.dumps([{"base": 0, "length": 32 << 20, "key": 0x5151, "pkey": 0}])
            procs.append(_start(hosts[k], "device", "--id", str(dev), "--node", str(node),
                                "--host", ADDR[k], "--mem-size", str(32 << 20), "--shm",
                                "--coordinator", control, "--regions", regions))
            assert _first_json(procs[-1])["host"] == ADDR[k]
        # make the multicast group from host A (the coordinator is only reachable there)
        # and wait until both devices report it in their heartbeats
        group = subprocess.run(["ip", "netns", "exec", hosts["a"], sys.executable, "-c",
                                GROUP.format(control=control)],
                               capture_output=True, text=True, timeout=30)
        assert group.returncode == 0, group.stderr
        ranks = []
        for rank, k in enumerate(("a", "b")):
            env = {"NETDAM_RANK": str(rank), "NETDAM_WORLD_SIZE": "2", "NETDAM_NODE": str(rank),
                   "NETDAM_LOCAL_RANK": "0", "NETDAM_COORDINATOR": control,
                   "NETDAM_BIND": ADDR[k], "NETDAM_JOB": "netns"}
            ranks.append(subprocess.Popen(["ip", "netns", "exec", hosts[k], sys.executable,
                                           str(script)], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True,
                                          env={**os.environ, **env}))
        outs = [p.communicate(timeout=90) for p in ranks]
        for p, (out, err) in zip(ranks, outs):
            assert p.returncode == 0, err
        # each rank reaches its own device by shared memory, the other across the link
        assert "ok 0 ['shm', 'udp']" in outs[0][0] and "ok 1 ['shm', 'udp']" in outs[1][0]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            p.stdout.close()
            p.stderr.close()
