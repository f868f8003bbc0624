"""Failure semantics with real processes: a host or a device killed in the middle of
collectives (all_reduce on the hosts and in the devices, the devices' multicast
broadcast and all_gather). Invariants: every surviving host's pending collective ends with a clear
error (a timeout naming what did not arrive) within the configured bound, never hangs
and never reports a wrong result as success, and refuses any later collective on that
communicator (its ranks are out of step); the coordinator marks the dead member dead;
a new cluster starts and works right away."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from netdam.agent import Addr, Agent
from netdam.cluster import LocalCluster

TIMEOUT = 3.0        # the communicator's bound (seconds)
DEAD_AFTER = 1.0

WORKER = textwrap.dedent("""
    import json, sys, numpy as np, netdam
    from netdam.errors import NetdamError
    comm = netdam.init(timeout=%(timeout)s)
    i = 0
    while True:
        x = np.arange(1024, dtype=np.float32) + comm.rank + i
        kind = i %% 5      # all_reduce three ways, the devices' broadcast and all_gather
        try:
            if kind < 3:
                want = sum(np.arange(1024, dtype=np.float32) + r + i
                           for r in range(comm.size))
                got = comm.all_reduce(x, algo=("ring", "chain", "recursive_doubling")[kind])
            elif kind == 3:
                root = i %% comm.size
                want = np.arange(1024, dtype=np.float32) + root + i
                got = comm.broadcast(x, root, algo="multicast")
            else:
                want = np.stack([np.arange(1024, dtype=np.float32) + r + i
                                 for r in range(comm.size)])
                got = comm.all_gather(x, algo="multicast")
        except NetdamError as exc:
            try:                     # a failed communicator refuses to go on
                comm.barrier()
                again = "accepted"
            except NetdamError as exc2:
                again = str(exc2)
            print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                              "again": again}), flush=True)
            sys.exit(3)
        if not np.array_equal(got, want):
            print(json.dumps({"wrong": i}), flush=True)
            sys.exit(4)
        print(json.dumps({"ok": i}), flush=True)
        i += 1
""" % {"timeout": TIMEOUT})


def _start_hosts(c: LocalCluster, n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", WORKER],
                             env={**os.environ, **c.env(r, n)}, stdout=subprocess.PIPE,
                             text=True) for r in range(n)]


def _wait_for_progress(procs, rounds: int, limit: float) -> None:
    """Every host has finished ``rounds`` checked collectives."""
    deadline = time.monotonic() + limit
    seen = [0] * len(procs)
    while min(seen) < rounds:
        assert time.monotonic() < deadline, f"no progress: {seen}"
        for i, p in enumerate(procs):
            line = p.stdout.readline()
            assert line, f"host {i} ended early (exit {p.poll()})"
            seen[i] += "ok" in json.loads(line)


def _dead(c: LocalCluster, name: str, limit: float) -> float:
    """Seconds until the coordinator marks member ``name`` dead."""
    client = c.control(5)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < limit:
            members = {m["name"]: m for m in client.status()["members"]}
            if name in members and not members[name]["alive"]:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise AssertionError(f"{name} not marked dead within {limit} s")
    finally:
        client.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("victim", ["host", "device"])
def test_a_member_killed_mid_collective(victim):
    with LocalCluster(nodes=3, mem_size=4 << 20, dead_after=DEAD_AFTER) as c:
        procs = _start_hosts(c, 3)
        try:
            _wait_for_progress(procs, 3, 40)
            t0 = time.monotonic()
            if victim == "host":
                procs[1].send_signal(signal.SIGKILL)
                survivors, name = [procs[0], procs[2]], "rank1"
            else:
                c.kill_device(2)
                survivors, name = procs, "device2"
            ends = []
            for p in survivors:
                out, _ = p.communicate(timeout=TIMEOUT * 3 + 10)
                ends.append((p.returncode, [json.loads(x) for x in out.splitlines()]))
            elapsed = time.monotonic() - t0
            for code, lines in ends:
                assert not any("wrong" in x for x in lines), "a wrong result was reported"
                assert code == 3, (code, lines)          # ended with a clear error
                assert lines[-1]["error"] in ("NetdamTimeout", "NakError")
                assert "within" in lines[-1]["message"] or "refused" in lines[-1]["message"]
                assert "broken by an earlier failure" in lines[-1]["again"], lines[-1]
            assert elapsed < TIMEOUT * 3 + 5, f"survivors took {elapsed:.1f} s"
            assert _dead(c, name, DEAD_AFTER + 5) < DEAD_AFTER + 5
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait(5)
                p.stdout.close()
    # a new cluster right away: it starts and serves
    with LocalCluster(nodes=1, mem_size=1 << 20) as fresh:
        client = fresh.control(5)
        info = [m for m in client.topology()["members"] if m["role"] == "device"][0]["info"]
        client.close()
        with Agent(timeout=2.0) as agent:
            agent.add_device(info, path="udp")
            agent.write(Addr(1, 0), b"fresh")
            assert bytes(agent.read(Addr(1, 0), 5)) == b"fresh"
