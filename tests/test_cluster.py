"""LocalCluster and netdam launch with real processes. Invariants: every start is
matched by a stop that leaves no process and no shared-memory segment behind; a killed
device is declared dead within the bound and operations on it fail fast; two clusters
side by side do not see each other."""

import io
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from netdam.agent import Addr, Agent, NetdamTimeout
from netdam.cluster import LocalCluster
from netdam.control import ControlClient
from netdam.launch import rank_cpus, run_hosts
from netdam.transport.shm import leaked


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _orphans() -> set[str]:
    """Shared-memory segments whose creating device process is gone: leaks. (Segments of
    live netdam processes, ours or anyone's, are not leaks.)"""
    out = set()
    for name in leaked():
        parts = name.split("-")            # netdam-d<id>-<pid>-<token>-...
        if len(parts) > 2 and parts[2].isdigit() and not _alive(int(parts[2])):
            out.add(name)
    return out


def _names(c: LocalCluster) -> set[str]:
    return {n for d in c.devices for n in [d.shm["memory"]] + sum(d.shm["slots"], [])}


def _devices(c: LocalCluster) -> list[dict]:
    client = ControlClient(c.coordinator, timeout=5)
    try:
        return [m for m in client.topology()["members"] if m["role"] == "device"]
    finally:
        client.close()


@pytest.mark.timeout(120)
def test_start_stop_1_to_8_nodes_leaves_nothing_behind():
    before = _orphans()
    for nodes in (1, 2, 3, 8):
        with LocalCluster(nodes=nodes, mem_size=1 << 20) as c:
            pids = c.pids
            assert len(_devices(c)) == nodes
            names = _names(c)
            assert names and names <= set(leaked()), "devices offer shared memory"
        assert not [p for p in pids if _alive(p)], "processes left after stop"
        assert not names & set(leaked()), "shared memory left after stop"
        assert _orphans() <= before


@pytest.mark.timeout(60)
def test_killed_device_declared_dead_and_operations_fail_fast():
    with LocalCluster(nodes=2, mem_size=1 << 20, dead_after=0.5) as c:
        info = {m["id"]: m["info"] for m in _devices(c)}
        c.kill_device(2)
        client = ControlClient(c.coordinator, timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            alive = {m["id"]: m["alive"] for m in client.status()["members"]}
            if alive.get(2) is False:
                break
            time.sleep(0.05)
        elapsed_ok = time.monotonic() < deadline
        client.close()
        assert elapsed_ok and alive == {1: True, 2: False}
        with Agent(host_id=500, timeout=0.5) as agent:
            agent.add_device(info[2], path="udp")
            t0 = time.monotonic()
            with pytest.raises(NetdamTimeout, match="device 2"):
                agent.read(Addr(2, 0), 8)
            assert time.monotonic() - t0 < 3.0
        names = _names(c)
    assert not names & set(leaked())


@pytest.mark.timeout(60)
def test_two_clusters_side_by_side_do_not_interfere():
    with LocalCluster(nodes=1, mem_size=1 << 20) as a, LocalCluster(nodes=1, mem_size=1 << 20) as b:
        assert a.coordinator != b.coordinator and a.rkey != b.rkey
        ia, ib = _devices(a)[0]["info"], _devices(b)[0]["info"]
        with Agent(host_id=501, timeout=1.0) as agent:
            agent.add_device(ia, path="udp")
            agent.write(Addr(1, 0), b"cluster a")
            assert bytes(agent.read(Addr(1, 0), 9)) == b"cluster a"
            # the same device id in cluster b, with cluster a's key: refused
            agent.add_device(dict(ib, regions=ia["regions"]), path="udp")
            from netdam.agent import NakError
            with pytest.raises(NakError, match="BAD_KEY"):
                agent.write(Addr(1, 0), b"intruder")


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, netdam
    comm = netdam.init(timeout=20)
    x = np.full(4, comm.rank + 1, np.int64)
    total = comm.all_reduce(x)
    print("rank", comm.rank, "of", comm.size, "sum", int(total[0]),
          "checked" if comm.check_args else "unchecked")
    sys.exit(int(sys.argv[1]) if comm.rank == comm.size - 1 else 0)
""")


@pytest.mark.timeout(120)
def test_launch_prefixes_output_and_fails_with_the_failing_rank(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    with LocalCluster(nodes=3, mem_size=8 << 20) as c:
        out = io.StringIO()
        code = run_hosts(c, 3, [sys.executable, str(script), "0"], out=out, err=out,
                         timeout=60, extra_env={"NETDAM_JOB": "ok"})
        assert code == 0, out.getvalue()
        for r in range(3):
            assert f"[{r}] rank {r} of 3 sum 6" in out.getvalue()
        out = io.StringIO()
        code = run_hosts(c, 3, [sys.executable, str(script), "7"], out=out, err=out,
                         timeout=60, extra_env={"NETDAM_JOB": "fail"})
        assert code == 7 and "rank 2 exited with 7" in out.getvalue(), out.getvalue()


AFFINITY = "import os; print('cpus', sorted(os.sched_getaffinity(0)), flush=True)"


@pytest.mark.timeout(60)
def test_launched_ranks_are_spread_over_the_cpus_one_each_unless_told_not_to():
    mine = sorted(os.sched_getaffinity(0))
    assert rank_cpus(5, {3, 1}) == [1, 3, 1, 3, 1]     # round robin, in CPU order
    with LocalCluster(nodes=1, devices_per_node=1, mem_size=1 << 20) as c:
        for bind, want in (("cpu", [[x] for x in rank_cpus(3)]), ("none", [mine] * 3)):
            out = io.StringIO()
            code = run_hosts(c, 3, [sys.executable, "-c", AFFINITY], out=out, err=out,
                             timeout=30, bind=bind)
            assert code == 0, out.getvalue()
            for r in range(3):
                assert f"[{r}] cpus {want[r]}" in out.getvalue(), (bind, out.getvalue())


@pytest.mark.timeout(120)
def test_netdam_launch_command(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    before = _orphans()
    p = subprocess.run([sys.executable, "-m", "netdam", "launch", "-n", "2", str(script), "0"],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr
    assert "[0] rank 0 of 2 sum 3 unchecked" in p.stdout and "[1] rank 1 of 2 sum 3" in p.stdout
    checked = subprocess.run([sys.executable, "-m", "netdam", "launch", "-n", "2",
                              "--check-args", str(script), "0"],
                             capture_output=True, text=True, timeout=90)
    assert checked.returncode == 0, checked.stderr
    assert "[0] rank 0 of 2 sum 3 checked" in checked.stdout, checked.stdout
    assert "[1] rank 1 of 2 sum 3 checked" in checked.stdout, checked.stdout
    assert _orphans() <= before
    for argv, text in ((["-n", "0", str(script)], "must be at least 1"),
                       (["-n", "1", "--timeout", "0", str(script)], "--timeout must be positive"),
                       (["-n", "1", "--exec", str(tmp_path / "nope")], "no such program")):
        bad = subprocess.run([sys.executable, "-m", "netdam", "launch", *argv],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2 and text in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


@pytest.mark.timeout(60)
def test_interrupted_launch_tears_everything_down(tmp_path):
    script = tmp_path / "sleep.py"
    script.write_text("import time, netdam\ncomm = netdam.init()\nprint('up', flush=True)\n"
                      "time.sleep(60)\n")
    before = _orphans()
    p = subprocess.Popen([sys.executable, "-m", "netdam", "launch", "-n", "2", str(script)],
                         stdout=subprocess.PIPE, text=True)
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 2 and time.monotonic() < deadline:
        line = p.stdout.readline()
        seen += "up" in line
    assert seen == 2
    children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                              text=True).stdout.split()
    p.send_signal(2)  # Ctrl-C
    p.wait(timeout=20)
    p.stdout.close()
    time.sleep(0.5)
    assert children and not [c for c in children if _alive(int(c))]
    assert _orphans() <= before


@pytest.mark.timeout(60)
def test_netdam_status_reports_members_and_counters():
    with LocalCluster(nodes=2, mem_size=1 << 20) as c:
        p = subprocess.run([sys.executable, "-m", "netdam", "status", "--json",
                            "--coordinator", c.coordinator], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, p.stderr
        status = json.loads(p.stdout)
        devices = {m["id"]: m for m in status["members"] if m["role"] == "device"}
        assert set(devices) == {1, 2} and all(m["alive"] for m in devices.values())
        assert "rx_packets" in devices[1]["counters"] and devices[1]["counters"]["groups"] == [1]
        table = subprocess.run([sys.executable, "-m", "netdam", "status", "--coordinator",
                                c.coordinator], capture_output=True, text=True, timeout=30,
                               env={**os.environ, "COLUMNS": "250"})
        assert table.returncode == 0 and "device1" in table.stdout and "alive" in table.stdout
    gone = subprocess.run([sys.executable, "-m", "netdam", "status", "--coordinator",
                           "tcp://127.0.0.1:9", "--timeout", "0.3"], capture_output=True,
                          text=True, timeout=30)
    assert gone.returncode == 1 and "did not answer" in gone.stderr
    assert "Traceback" not in gone.stderr


@pytest.mark.timeout(60)
def test_devices_learn_chains_from_the_coordinator():
    with LocalCluster(nodes=3, mem_size=1 << 20) as c:
        client = ControlClient(c.coordinator, timeout=5)
        cid = client.request("chain", members=[3, 1, 2])["chain"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counters = {m["id"]: m["counters"] for m in client.status()["members"]}
            if all(cid in counters[d].get("chains", []) for d in (1, 2, 3)):
                break
            time.sleep(0.05)
        client.close()
        assert all(cid in counters[d]["chains"] for d in (1, 2, 3))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kw,text", [({"mtu": 10}, "mtu 10 outside 256..65507"),
                                     ({"mem_size": 0}, "device memory of 0 bytes"),
                                     ({"pcap": "/nonexistent/dir/x.pcap"},
                                      "no such directory /nonexistent/dir")])
def test_a_cluster_no_device_could_join_is_refused_before_it_starts(kw, text):
    from netdam.errors import UsageError
    with pytest.raises(UsageError, match=text):
        LocalCluster(nodes=1, **kw)


@pytest.mark.timeout(30)
def test_a_child_that_exits_before_announcing_itself_is_named_with_its_code():
    from netdam.cluster import read_json_line
    from netdam.errors import NetdamError
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        with pytest.raises(NetdamError, match="device 7 exited with 3 before it started"):
            read_json_line(proc, 20, "device 7")
    finally:
        proc.wait(5)
