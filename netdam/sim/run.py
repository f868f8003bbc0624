"""One simulated collective: build the system, run it in virtual time, report.

Owns ``SimConfig`` (every knob of a run, with the defaults the documentation states),
the table of collectives and algorithms the simulator runs (each one the unchanged
generator of ``netdam.collectives``), the three modes, the NumPy check of the
per-packet mode and ``SimResult`` (modeled time, algbw/busbw as nccl-tests define them,
per-link and per-flow counters, simulation cost).

Modes (``MODES``): ``packet`` carries real data through the real device (and checks
the result); ``sized`` sends the same datagrams as sizes only; ``chunk`` sends a
message (or a group of p2p pieces) as one burst and reserves its hops at once.
"""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from firmware_model import alu
from firmware_model.timing import TimingModel
from netdam.collectives import algorithms as A
from netdam.collectives import offload
from netdam.collectives.check import BUSBW_FACTOR
from netdam.collectives.p2p import Layout
from netdam.errors import UsageError
from netdam.sim.base import World
from netdam.sim.engine import EventQueue, SimError
from netdam.sim.hosts import Phantom, SimHost, no_reduce
from netdam.sim.model import ModelDevice, ModelPort
from netdam.sim.network import Network, flows_of
from netdam.sim.packet import FirmwareDevice, PacketPort
from netdam.sim.topology import FABRICS, LinkSpec, Topology
from netdam.wire.fields import MAX_DATAGRAM, MIN_MTU, DType, RedOp

ESIZE = 4   # the simulator reduces float32 sums (integers, so every order is exact)


@dataclass(frozen=True)
class Mode:
    data: bool            #: real bytes through the real device
    gran: int | None      #: datagrams per burst (None: a whole message)
    hop_events: bool      #: one event per hop (else hops reserved when the burst leaves)
    group_pieces: bool    #: p2p pieces travel in groups of half the slots
    anchors: bool = True  #: model the first-contact rule (real cores always have it)


MODES = {
    "packet": Mode(data=True, gran=1, hop_events=True, group_pieces=False),
    "sized": Mode(data=False, gran=1, hop_events=True, group_pieces=False),
    "chunk": Mode(data=False, gran=None, hop_events=False, group_pieces=True, anchors=False),
}


@dataclass(frozen=True)
class SimConfig:
    collective: str = "all_reduce"
    nodes: int = 8
    size: int = 1 << 20             #: bytes of each rank's buffer (nccl-tests' size)
    algo: str = "ring"
    topology: str = "fattree"
    link_gbps: float = 100.0        #: every fabric port and switch link
    latency_ns: float = 250.0       #: one fabric link, one way (cable, PHY, switch hop)
    devices_per_node: int = 1
    scaleup_gbps: float = 1600.0    #: the links inside a node (NVLink-class)
    scaleup_latency_ns: float = 100.0
    pcie_gbps: float = TimingModel.pcie_gbps          #: GB/s, host <-> its device
    pcie_crossing_ns: float = TimingModel.pcie_crossing_ns
    mode: str = "packet"
    mtu: int = 9000
    queue_bytes: int | None = None  #: per link; None: unbounded
    loss: float = 0.0
    radix: int = 32                 #: devices per leaf (fattree, multiplane)
    planes: int = 2                 #: multiplane
    dims: tuple[int, ...] | None = None   #: torus shape
    tree_radix: int = 2             #: fan-in of the aggregation tree
    seed: int = 0
    check: bool = True

    @property
    def ranks(self) -> int:
        return self.nodes * self.devices_per_node


def _allreduce(fn):
    return lambda ctx, r: fn(r, ctx.n, ctx.bufs[r], ESIZE, ctx.red)


def _offload(fn):   # in place: the result goes back into the input buffer
    return lambda ctx, r: fn(ctx.hosts[r].comm, ctx.bufs[r], ctx.bufs[r], DType.FLOAT32,
                             RedOp.SUM)


#: (collective, algorithm) -> generator of rank r (every one from netdam.collectives)
ALGORITHMS = {
    ("all_reduce", "ring"): _allreduce(A.allreduce_ring),
    ("all_reduce", "recursive_doubling"): _allreduce(A.allreduce_recursive_doubling),
    ("all_reduce", "canonical"): _allreduce(A.allreduce_canonical),
    ("all_reduce", "chain"): _offload(offload.chain_allreduce),
    ("all_reduce", "tree"): _offload(offload.tree_allreduce),
    ("broadcast", "binomial"): lambda ctx, r: A.broadcast_binomial(r, ctx.n, ctx.bufs[r], 0),
    ("broadcast", "multicast"): lambda ctx, r: offload.multicast_broadcast(
        ctx.hosts[r].comm, ctx.bufs[r], 0),
    ("reduce", "binomial"): lambda ctx, r: A.reduce_binomial(r, ctx.n, ctx.bufs[r], 0,
                                                             ctx.red),
    ("all_gather", "ring"): lambda ctx, r: A.all_gather_ring(r, ctx.n, ctx.bufs[r], ctx.spans),
    ("all_gather", "multicast"): lambda ctx, r: offload.multicast_all_gather(
        ctx.hosts[r].comm, ctx.bufs[r], ctx.spans),
    ("reduce_scatter", "ring"): lambda ctx, r: A.reduce_scatter_ring(r, ctx.n, ctx.bufs[r],
                                                                     ctx.spans, ctx.red),
    ("all_to_all", "pairwise"): lambda ctx, r: A.all_to_all_pairwise(
        r, ctx.n, ctx.bufs[r], ctx.spans, ctx.outs[r], ctx.spans),
}
COLLECTIVES = sorted({c for c, _ in ALGORITHMS})


def algorithms_of(collective: str) -> list[str]:
    return [a for c, a in ALGORITHMS if c == collective]


@dataclass
class SimResult:
    config: SimConfig
    time_ns: float
    algbw: float                #: GB/s: size / time
    busbw: float                #: GB/s: algbw * nccl-tests factor
    links: list[dict]           #: every link that carried traffic, busiest first
    flow_counts: dict = field(repr=False)   #: flow_id -> packed counts (see ``flows``)
    fans: list = field(repr=False)          #: multicasts counted once (see ``flows``)
    correct: bool | None        #: None: not checked (timing-only mode)
    events: int
    wall_s: float
    peak_rss_mb: float
    topology: str
    dropped: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def flows(self) -> dict[tuple[int, int, int], tuple[int, int]]:
        """(src member, dst member, opcode) -> (datagrams, bytes); built when asked for
        (a 1,024-rank run counts millions of flows)."""
        return flows_of(self.flow_counts, self.fans)

    @property
    def busiest(self) -> dict | None:
        return self.links[0] if self.links else None

    def mean_utilisation(self, kind: str = "fabric") -> float:
        used = [lk["utilisation"] for lk in self.links if lk["kind"] == kind]
        return sum(used) / len(used) if used else 0.0

    def to_json(self) -> dict:
        out = {"config": asdict(self.config), "time_us": self.time_ns / 1e3,
               "algbw_GBps": self.algbw, "busbw_GBps": self.busbw,
               "fabric_utilisation": self.mean_utilisation(), "busiest_link": self.busiest,
               "correct": self.correct, "events": self.events, "wall_s": self.wall_s,
               "peak_rss_mb": self.peak_rss_mb, "topology": self.topology,
               "dropped": self.dropped}
        return out


class _Run:
    """Buffers and helpers the algorithm table reads."""

    def __init__(self, cfg: SimConfig, hosts: list[SimHost]):
        n = self.n = cfg.ranks
        self.hosts = hosts
        count = cfg.size // ESIZE
        self.spans = A.blocks(count, n, ESIZE)
        self.outs: list = []
        mode = MODES[cfg.mode]
        self.count = count
        if mode.data:
            self.arrays = [self._start(cfg.collective, r) for r in range(n)]
            self.bufs = [memoryview(a).cast("B") for a in self.arrays]
            if cfg.collective == "all_to_all":
                self.out_arrays = [np.zeros(count, np.float32) for _ in range(n)]
                self.outs = [memoryview(a).cast("B") for a in self.out_arrays]
            self.red = alu.reducer(DType.FLOAT32, RedOp.SUM)
        else:
            self.bufs = [Phantom(count * ESIZE) for _ in range(n)]
            self.outs = [Phantom(count * ESIZE) for _ in range(n)]
            self.red = no_reduce

    def _start(self, collective: str, rank: int) -> np.ndarray:
        """Rank ``rank``'s buffer before the collective."""
        x = _input(rank, self.count)
        if collective == "all_gather":            # each rank holds only its own block
            lo, hi = (s // ESIZE for s in self.spans[rank])
            x[:lo] = 0
            x[hi:] = 0
        elif collective == "broadcast" and rank != 0:
            x[:] = 0
        return x

    def check(self, collective: str) -> bool:
        """Compare with NumPy (inputs regenerated, so no copy of them is kept)."""
        n, count = self.n, self.count
        spans = [(a // ESIZE, b // ESIZE) for a, b in self.spans]
        if collective == "all_to_all":
            return all(np.array_equal(self.out_arrays[r][lo:hi],
                                      _input(s, count)[spans[r][0]:spans[r][1]])
                       for r in range(n) for s, (lo, hi) in enumerate(spans))
        if collective in ("all_gather", "broadcast"):
            want = np.zeros(count, np.float32)
            for r, (lo, hi) in enumerate(spans):
                want[lo:hi] = _input(r if collective == "all_gather" else 0, count)[lo:hi]
            return all(np.array_equal(a, want) for a in self.arrays)
        total = np.zeros(count, np.float32)
        for r in range(n):
            total += _input(r, count)
        if collective == "all_reduce":
            return all(np.array_equal(a, total) for a in self.arrays)
        if collective == "reduce":
            return np.array_equal(self.arrays[0], total)
        if collective == "reduce_scatter":
            return all(np.array_equal(self.arrays[r][lo:hi], total[lo:hi])
                       for r, (lo, hi) in enumerate(spans))
        raise UsageError(f"no check for {collective}")


def _input(rank: int, count: int) -> np.ndarray:
    """Small integers in float32: every summation order gives the same bits."""
    return ((np.arange(count, dtype=np.int32) * 7 + rank * 13) % 97).astype(np.float32)


def validate(cfg: SimConfig) -> None:
    """Raise UsageError (one readable line) for a configuration that cannot run."""
    if cfg.collective not in COLLECTIVES:
        raise UsageError(f"unknown collective {cfg.collective!r}; one of "
                         f"{', '.join(COLLECTIVES)}")
    if (cfg.collective, cfg.algo) not in ALGORITHMS:
        raise UsageError(f"{cfg.collective} has no algorithm {cfg.algo!r} in the simulator; "
                         f"one of {', '.join(algorithms_of(cfg.collective))}")
    if cfg.mode not in MODES:
        raise UsageError(f"unknown mode {cfg.mode!r}; one of {', '.join(MODES)}")
    if cfg.topology not in FABRICS:
        raise UsageError(f"unknown topology {cfg.topology!r}; one of {', '.join(FABRICS)}")
    if cfg.nodes < 1 or cfg.devices_per_node < 1 or cfg.ranks > 16000:
        raise UsageError(f"need 1..16000 devices, not {cfg.nodes} x {cfg.devices_per_node}")
    if cfg.size < 0 or cfg.size % ESIZE:
        raise UsageError(f"--size {cfg.size} must be a non-negative multiple of {ESIZE} "
                         f"(float32 elements)")
    for name in ("link_gbps", "scaleup_gbps", "pcie_gbps"):
        if getattr(cfg, name) <= 0:
            raise UsageError(f"{name.replace('_', '-')} must be positive")
    if cfg.latency_ns < 0 or cfg.scaleup_latency_ns < 0 or cfg.pcie_crossing_ns < 0:
        raise UsageError("latencies must not be negative")
    if not MIN_MTU <= cfg.mtu <= MAX_DATAGRAM:
        raise UsageError(f"--mtu {cfg.mtu} outside {MIN_MTU}..{MAX_DATAGRAM}")
    if not 0 <= cfg.loss < 1:
        raise UsageError(f"--loss {cfg.loss} must be in [0, 1)")
    if cfg.tree_radix < 1:
        raise UsageError("--tree-radix must be at least 1")
    if (cfg.loss or cfg.queue_bytes) and cfg.mode != "packet":
        raise UsageError("loss and finite queues need --mode packet (the reliability "
                         "core repairs drops there)")


def simulate(cfg: SimConfig) -> SimResult:
    """Run one collective of ``cfg`` in virtual time.

    The cyclic garbage collector is paused for the run: a large run holds millions of
    long-lived objects (routes, calendars, pending events) that every full collection
    would walk again (about 30 % of the time at 512 ranks), and the run makes few
    cycles; they are collected when it ends."""
    validate(cfg)
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _simulate(cfg)
    finally:
        if collecting:
            gc.enable()


def _simulate(cfg: SimConfig) -> SimResult:
    wall0 = time.perf_counter()
    mode, n = MODES[cfg.mode], cfg.ranks
    timing = TimingModel(link_gbps=cfg.link_gbps, link_latency_ns=2 * cfg.latency_ns,
                         pcie_gbps=cfg.pcie_gbps, pcie_crossing_ns=cfg.pcie_crossing_ns)
    try:
        topo = Topology(cfg.topology, n, devices_per_node=cfg.devices_per_node, seed=cfg.seed,
                        fabric=LinkSpec(cfg.link_gbps, cfg.latency_ns, cfg.queue_bytes,
                                        cfg.loss),
                        scaleup=LinkSpec(cfg.scaleup_gbps, cfg.scaleup_latency_ns,
                                         cfg.queue_bytes, cfg.loss),
                        pcie=LinkSpec(cfg.pcie_gbps * 8, cfg.pcie_crossing_ns),
                        radix=cfg.radix, planes=cfg.planes, dims=cfg.dims)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    q = EventQueue()
    work = max(16 << 20, -(-(cfg.size + 64 * n) // 64) * 64)   # one round of offload
    world = World(q, topo, Network(q, topo, hop_events=mode.hop_events), timing, cfg.mtu,
                  Layout(n, work_bytes=work), n, tree_radix=cfg.tree_radix)
    group = max(1, world.layout.slots // 2) if mode.group_pieces else 1
    hosts = []
    for r in range(n):
        if mode.data:
            dev = FirmwareDevice(world, r, world.layout.size, seed=cfg.seed * 7919 + r)
            port = PacketPort(world, r, seed=cfg.seed * 7919 + n + r)
        else:
            dev = ModelDevice(world, r, mode.gran, mode.anchors)
            port = ModelPort(world, r, mode.gran, mode.anchors)
        world.net.attach(dev.node, dev)
        world.net.attach(port.node, port)
        world.devices.append(dev)
        hosts.append(SimHost(world, r, port, dev, data=mode.data, group_pieces=group))
    world.hosts = hosts
    run = _Run(cfg, hosts)
    make = ALGORITHMS[(cfg.collective, cfg.algo)]
    for r, h in enumerate(hosts):
        h.start(make(run, r))
    q.run()     # to the end: the last acks still count on their links (and in the flows)
    if world.finished != n:
        stuck = [h.rank for h in hosts if h.finished_at is None]
        raise SimError(f"ranks {stuck[:8]}{'...' if len(stuck) > 8 else ''} never finished "
                       f"(deadlock, or drops beyond repair)")
    t_end = max(h.finished_at for h in hosts)
    world.net.settle()
    correct = run.check(cfg.collective) if mode.data and cfg.check else None
    return _result(cfg, world, t_end, correct, wall0)


def _result(cfg: SimConfig, world: World, t_end: float, correct, wall0: float) -> SimResult:
    links = []
    for lk in world.topo.links.values():
        if lk.packets:
            links.append({"name": lk.name, "kind": lk.kind, "packets": lk.packets,
                          "bytes": lk.bytes, "busy_us": lk.busy_ns / 1e3,
                          "utilisation": lk.utilisation(t_end), "dropped": lk.dropped,
                          "peak_queue_bytes": int(lk.peak_queue_bytes)})
    links.sort(key=lambda d: (-d["busy_us"], d["name"]))
    algbw = cfg.size / t_end if t_end > 0 else 0.0
    busbw = algbw * BUSBW_FACTOR[cfg.collective](cfg.ranks)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return SimResult(cfg, t_end, algbw, busbw, links,
                     world.net.flow_counts, world.net.fans, correct,
                     world.q.events, time.perf_counter() - wall0, rss,
                     world.topo.describe(), world.net.dropped)


__all__ = ["ALGORITHMS", "COLLECTIVES", "MODES", "SimConfig", "SimResult", "algorithms_of",
           "simulate", "validate"]
