"""``netdam.init()``: turn a host process into a rank with a communicator.

Owns the start-up of a host: read the bootstrap environment (netdam.bootstrap), find
the cluster through its coordinator, pick this rank's home device (one of its node's
devices: local rank modulo devices per node), give every device a path (shared memory
for the node's own devices, UDP for the rest: scale-up and scale-out behind one agent;
with NETDAM_PATH=relay the rest are reached through the home device, SPEC §8.5),
lay out every rank's area on its home device, decide with the other ranks whether ranks
of one node load and store each other's areas (NETDAM_LOAD_STORE, off under a capture),
zero this rank's counters, register, and wait until every rank of the job has done the
same (the start-up barrier). Returns the
world ``Communicator``; ``comm.agent`` is the host agent with the primitives. The
control plane's CURVE keys come from NETDAM_AUTH (see ``netdam.control.auth``); an
agent bound elsewhere than loopback (NETDAM_BIND) is announced with a warning.
"""

from __future__ import annotations

import atexit
import os
import time

from netdam.agent import SPIN, Addr, Agent
from netdam.bootstrap import detect
from netdam.collectives.communicator import MAX_SPLITS, Communicator
from netdam.collectives.p2p import Layout
from netdam.control.auth import from_env as auth_from_env
from netdam.control.client import ControlClient
from netdam.capture.pcap import ENV_PCAP, capture_from_env
from netdam.errors import NetdamError, UsageError
from netdam.transport.faults import FaultConfig
from netdam.transport.udp import check_mtu, warn_if_exposed
from netdam.wire.fields import DEFAULT_MTU, MAX_DATAGRAM, MIN_MTU

#: the multicast group LocalCluster creates with every device
WORLD_GROUP = 1


#: (slot bytes, work bytes) tried in order until the ranks' areas fit device memory; the
#: work area bounds a registered buffer and one round of an in-network algorithm
LAYOUTS = ((256 << 10, 64 << 20), (256 << 10, 16 << 20), (128 << 10, 4 << 20),
           (64 << 10, 1 << 20), (16 << 10, 256 << 10))


def fit_layout(n: int, per_device: int, mem: int) -> Layout:
    """The largest layout of ``LAYOUTS`` whose areas for ``per_device`` ranks (of ``n``)
    and their sub-communicators fit devices of ``mem`` bytes."""
    for slot, work in LAYOUTS:
        lay = Layout(n, slot_bytes=slot, work_bytes=work)
        if per_device * _stride(lay) <= mem:
            return lay
    raise UsageError(f"{per_device} ranks per device do not fit devices of {mem} bytes "
                     f"(use more devices per node or a larger --mem-size)")


def _stride(layout: Layout) -> int:
    split = Layout(layout.n, layout.slots, layout.slot_bytes, 0).size
    total = layout.size + MAX_SPLITS * split
    return (total + 4095) // 4096 * 4096


def _mtu_spin(env) -> tuple[int, float]:
    """NETDAM_MTU and NETDAM_SPIN, checked: a bad one is a UsageError naming it."""
    raw = env.get("NETDAM_MTU")
    try:
        mtu = check_mtu(int(raw)) if raw else DEFAULT_MTU
    except ValueError:
        raise UsageError(f"NETDAM_MTU={raw!r}: expected a datagram size in "
                         f"{MIN_MTU}..{MAX_DATAGRAM}") from None
    try:
        spin = float(env.get("NETDAM_SPIN", SPIN))
    except ValueError:
        raise UsageError(f"NETDAM_SPIN={env['NETDAM_SPIN']!r}: expected seconds") from None
    return mtu, spin


def _flag(env, name: str, default: str) -> bool:
    """An on/off setting of the environment: 0 or 1, else a UsageError naming it."""
    flag = env.get(name, default)
    if flag not in ("0", "1"):
        raise UsageError(f"{name}={flag!r}: expected 0 or 1")
    return flag == "1"


def init(*, timeout: float = 30.0, deterministic: bool = False, env=None,
         layout: Layout | None = None, load_store: bool | None = None,
         check_args: bool | None = None) -> Communicator:
    """Join the job described by the environment; return the world communicator.

    ``load_store``: whether ranks of one node reach each other's areas with loads and
    stores (``netdam.collectives.scaleup``) instead of device operations; default: yes,
    unless NETDAM_LOAD_STORE=0 or this rank captures its datagrams (NETDAM_PCAP), so
    that a capture shows every exchange. It holds for the job only if it holds for every
    rank (each publishes its own when it registers), so all ranks choose alike.

    ``check_args``: before each collective, check that every rank passed the same
    arguments (``netdam.collectives.agree``), at the cost of one small all_reduce per
    call; default: NETDAM_CHECK_ARGS=1. On for the job if any rank asks for it."""
    env = os.environ if env is None else env
    b = detect(env)
    if b.coordinator is None:
        raise UsageError("no coordinator: set NETDAM_COORDINATOR (netdam launch does) or "
                         "MASTER_ADDR/MASTER_PORT with a coordinator at MASTER_PORT+1")
    job = env.get("NETDAM_JOB", "default")
    client = ControlClient(b.coordinator, timeout=min(timeout, 10.0),
                           auth=auth_from_env(env))
    topo = client.topology()
    devices = sorted((m for m in topo["members"] if m["role"] == "device" and m["alive"]),
                     key=lambda m: m["id"])
    if not devices:
        raise NetdamError(f"the cluster at {b.coordinator} has no devices")
    mine = [m for m in devices if m["node"] == b.node] or devices
    home = mine[b.local_rank % len(mine)]

    try:
        if load_store is None:
            load_store = _flag(env, "NETDAM_LOAD_STORE", "1") and not env.get(ENV_PCAP)
        if check_args is None:
            check_args = _flag(env, "NETDAM_CHECK_ARGS", "0")
        mtu, spin = _mtu_spin(env)
    except UsageError:
        client.close()
        raise
    reply = client.register("host", node=b.node, name=f"rank{b.rank}",
                            info={"job": job, "rank": b.rank, "home": home["id"],
                                  "load_store": bool(load_store),
                                  "check_args": bool(check_args)})
    beat: dict = {}
    client.start_heartbeat(0.5, lambda: beat)
    bind = env.get("NETDAM_BIND", "127.0.0.1")
    warn_if_exposed(bind, f"rank {b.rank}'s agent")
    agent = Agent(host_id=reply["id"], timeout=min(timeout, 10.0), mtu=mtu,
                  faults=FaultConfig.from_env(env), capture=capture_from_env(env),
                  bind=bind, spin=spin)
    policy = env.get("NETDAM_PATH", "direct")
    if policy not in ("direct", "relay"):
        agent.close()
        client.close()
        raise UsageError(f"NETDAM_PATH={policy!r}: expected direct or relay")
    try:
        for m in devices:
            if m["node"] == b.node:
                agent.add_device(m["info"], path="auto")
        # other nodes' devices: over our own port, or relayed by the home device (PXN)
        via = home["id"] if policy == "relay" and agent.path(home["id"]) == "shm" else None
        for m in devices:
            if m["node"] != b.node:
                agent.add_device(m["info"], path="udp" if via is None else "relay", via=via)
        ranks, load_store, check_args = _wait_for_job(client, job, b.world_size, timeout)
        # areas: ranks sharing a home device are packed in rank order
        per_device: dict[int, int] = {}
        for r in range(b.world_size):
            per_device[ranks[r]] = per_device.get(ranks[r], 0) + 1
        mem = min(m["info"]["mem_size"] for m in devices)
        layout = layout or fit_layout(b.world_size, max(per_device.values()), mem)
        stride = _stride(layout)
        index: dict[int, int] = {}
        areas = []
        for r in range(b.world_size):
            dev = ranks[r]
            areas.append(Addr(dev, index.get(dev, 0) * stride))
            index[dev] = index.get(dev, 0) + 1
        one_per_device = len(index) == b.world_size and set(index) == {d["id"] for d in devices}
        node_of = {m["id"]: m["node"] for m in devices}
        comm = Communicator(agent, b.rank, b.world_size, areas, layout=layout,
                            group=WORLD_GROUP if one_per_device else None, timeout=timeout,
                            deterministic=deterministic, control=client,
                            nodes=[node_of[ranks[r]] for r in range(b.world_size)],
                            load_store=load_store)
        comm.check_args = check_args
        # the start-up barrier: my counters are zero before anyone can send to me
        comm.channels.reset()
        beat.update(ready=job)
        client.request("heartbeat", id=reply["id"], counters=beat)
        _wait_ready(client, job, b.world_size, timeout)
    except BaseException:
        agent.close()
        client.close()
        raise
    atexit.register(_close, comm)
    return comm


def _job_hosts(client: ControlClient, job: str) -> list[dict]:
    return [m for m in client.topology()["members"]
            if m["role"] == "host" and m["info"].get("job") == job]


def _wait_for_job(client: ControlClient, job: str, size: int,
                  timeout: float) -> tuple[dict[int, int], bool, bool]:
    """Rank -> home device of every rank of ``job``, once all have registered, whether
    every one of them allows load/store, and whether any asks for argument checks."""
    deadline = time.monotonic() + timeout
    while True:
        hosts = [m for m in _job_hosts(client, job) if m["alive"]]
        ranks = {m["info"]["rank"]: m["info"]["home"] for m in hosts}
        if len(ranks) == size:
            return (ranks, all(m["info"].get("load_store", False) for m in hosts),
                    any(m["info"].get("check_args", False) for m in hosts))
        if time.monotonic() > deadline:
            raise NetdamError(f"only {len(ranks)} of {size} ranks of job {job!r} joined "
                              f"within {timeout:g} s")
        time.sleep(0.02)


def _wait_ready(client: ControlClient, job: str, size: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = client.status()["members"]
        ready = [m for m in status if m["role"] == "host" and m["info"].get("job") == job
                 and m["counters"].get("ready") == job]
        if len(ready) >= size:
            return
        if time.monotonic() > deadline:
            raise NetdamError(f"only {len(ready)} of {size} ranks of job {job!r} became "
                              f"ready within {timeout:g} s")
        time.sleep(0.02)


def _close(comm: Communicator) -> None:
    try:
        comm.close()
    except Exception:
        pass
    finally:
        if comm.control is not None:
            comm.control.leave()
            comm.control.close()
        comm.agent.close()
