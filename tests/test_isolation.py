"""Isolation between tenants, with real processes and real sockets. Invariants: a host of
one cluster aimed at another cluster's device is refused with a NAK on every path (UDP
and shared memory) and leaves that device's memory unchanged; a revoked key fails at once;
an authenticated control plane admits only clients whose CURVE key it lists; everything
binds loopback unless told otherwise."""

import io
import json
import subprocess
import sys
import textwrap
import time

import pytest
import zmq.auth

from netdam.agent import Addr, Agent, NakError
from netdam.cluster import LocalCluster
from netdam.control.auth import ClientKeys, SERVER
from netdam.control.client import ControlAuthError, ControlClient
from netdam.transport.udp import is_loopback, warn_if_exposed

PATTERN = bytes(range(256)) * 16

# tenant A's host: its own agent, its own keys, aimed at tenant B's device
INTRUDER = textwrap.dedent("""
    import json, os, random, sys
    from netdam.agent import Addr, Agent, NakError
    from netdam.control.client import ControlClient
    mine = ControlClient(os.environ["NETDAM_COORDINATOR"], timeout=5).topology()
    my_regions = [m for m in mine["members"] if m["role"] == "device"][0]["info"]["regions"]
    victim = json.loads(os.environ["VICTIM"])
    results = {}
    with Agent(timeout=2.0) as agent:
        for path in ("udp", "shm"):
            agent.add_device(dict(victim, regions=my_regions), path=path)
            assert agent.path(victim["id"]) == path
            tries = {
                "write": lambda: agent.write(Addr(victim["id"], 0), b"tenant A was here"),
                "read": lambda: agent.read(Addr(victim["id"], 0), 64),
                "atomic": lambda: agent.atomic_add(Addr(victim["id"], 8), 1),
                "reduce": lambda: agent.write(Addr(victim["id"], 16, rkey=victim["regions"][0]["key"], pkey=0), b"x"),
            }
            for name, op in tries.items():
                try:
                    op()
                    results[f"{path} {name}"] = "OK"
                except NakError as exc:
                    results[f"{path} {name}"] = exc.status.name
        rng = random.Random(1)
        guesses = set()
        for _ in range(100):
            try:
                agent.write(Addr(victim["id"], 0, rkey=rng.getrandbits(32) | 1, pkey=0), b"?")
                guesses.add("OK")
            except NakError as exc:
                guesses.add(exc.status.name)
        results["guessed keys"] = sorted(guesses)
    print(json.dumps(results))
""")


def _device_info(c: LocalCluster) -> dict:
    client = c.control(5)
    try:
        return [m for m in client.topology()["members"] if m["role"] == "device"][0]["info"]
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_a_tenant_cannot_read_or_write_another_tenants_memory():
    with LocalCluster(nodes=1, mem_size=1 << 20, name="tenant-a") as a, \
            LocalCluster(nodes=1, mem_size=1 << 20, name="tenant-b") as b:
        assert a.rkey != b.rkey and a.pkey != b.pkey
        info_b = _device_info(b)
        with Agent(timeout=2.0) as owner:
            owner.add_device(info_b, path="udp")
            owner.write(Addr(1, 0), PATTERN)
            env = {**a.env(0, 1), "VICTIM": json.dumps(info_b), "PATH": "/usr/bin:/bin"}
            p = subprocess.run([sys.executable, "-c", INTRUDER], env=env, capture_output=True,
                               text=True, timeout=45)
            assert p.returncode == 0, p.stderr
            results = json.loads(p.stdout.splitlines()[-1])
            for path in ("udp", "shm"):
                assert results[f"{path} write"] == "BAD_KEY"
                assert results[f"{path} read"] == "BAD_KEY"
                assert results[f"{path} atomic"] == "BAD_KEY"
                # B's memory key leaked, but A does not hold B's partition key
                assert results[f"{path} reduce"] == "BAD_PARTITION"
            assert results["guessed keys"] == ["BAD_KEY"]
            assert bytes(owner.read(Addr(1, 0), len(PATTERN))) == PATTERN


@pytest.mark.timeout(60)
def test_a_revoked_key_fails_at_once():
    with LocalCluster(nodes=1, mem_size=1 << 20) as c:
        client = c.control(5)
        region = client.grant_region(1, 0x10000, 4096, rights=["READ", "WRITE"], wait=5)
        assert region["key"] not in (0, c.rkey) and region["pkey"] == c.pkey
        with Agent(timeout=2.0) as agent:
            agent.add_device(_device_info(c), path="udp")
            at = Addr(1, 0x10000, rkey=region["key"], pkey=region["pkey"])
            agent.write(at, b"granted")
            assert bytes(agent.read(at, 7)) == b"granted"
            with pytest.raises(NakError, match="OUT_OF_BOUNDS"):
                agent.read(Addr(1, 0x10000 + 4096, rkey=region["key"], pkey=region["pkey"]), 8)
            handles = [agent.write_nb(at + 8 * i, b"inflight") for i in range(64)]
            client.revoke_region(1, region["key"], wait=5)
            outcomes = set()
            for h in handles:
                try:
                    h.wait(5)
                    outcomes.add("OK")
                except NakError as exc:
                    outcomes.add(exc.status.name)
            assert outcomes <= {"OK", "BAD_KEY"}
            for op in (lambda: agent.write(at, b"revoked"), lambda: agent.read(at, 7)):
                with pytest.raises(NakError, match="BAD_KEY"):
                    op()
        client.close()


@pytest.mark.timeout(60)
def test_authenticated_control_plane_admits_only_listed_keys(tmp_path):
    with LocalCluster(nodes=1, mem_size=1 << 20, auth=True) as c:
        assert c.auth is not None and len(c.devices) == 1   # the device was admitted
        t0 = time.monotonic()
        with pytest.raises(ControlAuthError, match="requires CURVE authentication"):
            ControlClient(c.coordinator, timeout=5).status()
        public, secret = zmq.auth.create_certificates(tmp_path, "stranger")
        server_public, _ = zmq.auth.load_certificate(c.auth / f"{SERVER}.key")
        keys = ClientKeys(server_public, *zmq.auth.load_certificate(secret))
        with pytest.raises(ControlAuthError, match="allow-list"):
            ControlClient(c.coordinator, timeout=5, auth=keys).register("host")
        assert time.monotonic() - t0 < 5, "rejections are reported at the handshake"
        member = c.control(5)
        status = member.status()
        assert status["auth"] is True and status["auth_failures"] >= 2
        assert [m["alive"] for m in status["members"] if m["role"] == "device"] == [True]
        member.close()
        # an authenticated host job runs end to end (netdam.init reads NETDAM_AUTH)
        from netdam.launch import run_hosts
        script = tmp_path / "job.py"
        script.write_text("import numpy as np, netdam\ncomm = netdam.init(timeout=20)\n"
                          "print('sum', int(comm.all_reduce(np.ones(4, np.int64))[0]))\n")
        out = io.StringIO()
        assert run_hosts(c, 1, [sys.executable, str(script)], out=out, err=out,
                         timeout=40) == 0, out.getvalue()
        assert "[0] sum 1" in out.getvalue()


def test_loopback_is_the_default_and_anything_else_warns():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "::", "example.org"))
    out = io.StringIO()
    assert warn_if_exposed("127.0.0.1", "x", out) is False and out.getvalue() == ""
    assert warn_if_exposed("0.0.0.0", "device 3", out) is True
    assert out.getvalue().startswith("warning: device 3 binds 0.0.0.0, not loopback")
    assert out.getvalue().count("\n") == 1
    from netdam.cli import build_parser
    for cmd in ("device", "coordinator"):
        args = build_parser(cmd).parse_args([cmd])
        assert args.host == "127.0.0.1"
