"""The Communicator: MPI-style collectives over NumPy arrays on NetDAM devices.

Owns the user-facing collective API (``all_reduce, reduce, broadcast, all_gather,
reduce_scatter, all_to_all, all_to_allv, barrier``, each with a ``*_nb`` form returning a
``Request``), argument checking (and, with ``check_args``, the check that every rank
passed the same arguments: agree.py), the choice of algorithm (``algo=`` or automatic),
and the queue of requests (request.py) that run algorithm generators (algorithms.py,
offload.py) over the point-to-point channels (p2p.py). Non-blocking collectives of one
communicator run in the order they were started, like MPI's; they progress whenever any
request of the communicator, its world or a sibling split is waited on or tested, so
ranks may wait on the requests of different communicators in different orders.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any, Callable, NamedTuple

import numpy as np

from firmware_model import alu
from firmware_model import fp8 as fp8_codec
from netdam.agent import Addr, Agent
from netdam.collectives import algorithms as A
from netdam.collectives import agree, moe, offload, scaleup
from netdam.collectives.p2p import Channels, Layout, address_of, as_bytes
from netdam.collectives.request import Request
from netdam.collectives.types import resolve_dtype, resolve_op
from netdam.errors import NetdamError, UsageError
from netdam.wire.fields import DType, RedOp

#: algorithms selectable with ``algo=`` for all_reduce
ALLREDUCE_ALGOS = ("ring", "recursive_doubling", "one_shot", "load_store", "chain", "tree",
                   "hierarchical", "auto")
#: algorithms selectable with ``algo=`` for broadcast and all_gather (the hosts' first)
BROADCAST_ALGOS = ("binomial", "multicast", "load_store")
ALL_GATHER_ALGOS = ("ring", "multicast", "load_store")
#: from these sizes (a broadcast's buffer, an all_gather's gathered array) the automatic
#: choice lets the devices multicast (BENCHMARKS.md)
MULTICAST_BROADCAST = 64 << 10
MULTICAST_ALL_GATHER = 256 << 10
#: ... where all ranks are on one node and store into each other's areas (the hosts'
#: binomial tree wins below this; their ring all_gather at every size)
MULTICAST_BROADCAST_ONE_NODE = 16 << 20
#: up to this many bytes sent per rank ((n-1) x the buffer), reproducible mode takes one
#: step: one-shot (elsewhere recursive doubling's fewer messages win on this machine)
ONE_SHOT = 64 << 10
#: up to this many bytes per rank (and one stage), ranks that all share one node's
#: memory reduce through it with loads and stores (scaleup.py); beyond, the ring
LOAD_STORE = 256 << 10
#: below this many bytes, latency wins: recursive doubling
SMALL = 64 << 10
#: from this many bytes on, the bandwidth algorithms win on this emulator (BENCHMARKS.md)
LARGE = 1 << 20
#: ... and the chain wins over the hierarchical one where ranks of a node load and store
LARGE_SHARED = 4 << 20
#: sub-communicators one communicator can split off (each gets its own slots)
MAX_SPLITS = 3


class _InNetwork(NamedTuple):
    """An in-network all_reduce's arguments, checked and resolved. The last in-place one
    is kept (``Communicator._again``): a training loop reduces the same buffers call
    after call, and for a registered buffer this work was a third of the host's CPU per
    call (tools/dispatch_cost.py). It holds while the call names the same array, the
    same arguments and reproducible setting, the same registered buffer (the
    automatic choice and the staging check depend on it) and the array's dtype and
    shape. It holds no view of the array (so nothing stops the array's owner from
    resizing it)."""

    x: np.ndarray
    key: tuple              # (op, algo, dtype, deterministic, comm.deterministic)
    dtype: np.dtype
    shape: tuple
    work: np.ndarray | None  # comm._work when it was made
    name: str               # "chain" or "tree"
    what: str               # the request's name
    inline: bool            # may a blocking call run it inline (``_start``)
    dt: DType
    op: RedOp
    det: bool
    at_work: tuple[bool, bool]
    res: np.ndarray


class Communicator:
    """A group of ranks that run collectives together (``netdam.init()`` returns one)."""

    def __init__(self, agent: Agent, rank: int, size: int, areas: list[Addr], *,
                 layout: Layout | None = None, group: int | None = None,
                 timeout: float = 30.0, deterministic: bool = False, control=None,
                 parent: "Communicator | None" = None, nodes: list[int] | None = None,
                 load_store: bool = True):
        if len(areas) != size or not 0 <= rank < size:
            raise UsageError(f"rank {rank} / size {size} / {len(areas)} areas disagree")
        self.agent, self.rank, self.size, self.areas = agent, rank, size, areas
        self.layout = layout or Layout(size)
        self.group, self.timeout, self.deterministic = group, timeout, deterministic
        self.control, self.parent = control, parent
        self.max_splits = MAX_SPLITS
        #: the node of every rank (hierarchical algorithms group ranks by it)
        self.nodes = list(nodes) if nodes is not None else list(range(size))
        self._hier: tuple | None = None   # (intra-node, leaders) communicators, made once
        self._children: list[Communicator] = []
        self._progressing = False          # inside _progress (see _progress_others)
        #: may ranks of one node load and store each other's areas (job-wide)
        self.load_store = load_store
        self.channels = Channels(agent, rank, areas, self.layout, timeout=timeout,
                                 load_store=load_store)
        self._queue: deque[Request] = deque()
        self._reducers: dict[tuple, Callable] = {}   # (dtype, op) -> reducer, made once
        self.broken: str | None = None   # set by the first failed collective
        self._splits = 0
        self.chain_blocks = 0     # blocks the in-network engine finished (signal target)
        self.start_rounds = [0] * size   # per rank: gathered starts it led (offload.py)
        self.device_joins = True  # the devices hold joined starts (SPEC §4.9; offload.py)
        self.tree_radix = 2       # fan-in of the aggregation tree (n - 1: one level)
        self.tree_counts = [0] * size   # per block: contributions my device folded in
        self.node_groups: dict[int, int] | None = None   # node -> multicast group (MoE)
        self.moe_counters = {"multicasts": 0, "unicasts": 0}
        self.offload_ok = len({a.device for a in areas}) == size and \
            len({a.offset for a in areas}) == 1 and group is not None and \
            self.layout.work_bytes > 0     # a split's areas have no work area
        self._work: np.ndarray | None = None    # the mapped work area (work_buffer)
        self._work_address: int | None = None   # ... and where it starts (asked per call)
        self._at_work_last = None   # the last array found to start there (``_at_work``)
        self._again: _InNetwork | None = None   # the last in-place in-network all_reduce
        #: before each collective, check that every rank passed the same arguments
        #: (``agree``; NETDAM_CHECK_ARGS): one small all_reduce more per call. Alike on
        #: every rank (``init`` makes it so; a rank that changes it alone desynchronizes)
        self.check_args = False

    # -- registered buffers --------------------------------------------------------------
    def work_buffer(self, count: int, dtype="float32") -> np.ndarray:
        """An array of ``count`` elements that lives in this rank's offload work area on
        its home device, as NCCL's registered user buffers (``ncclMemAlloc``) do: an
        in-network all_reduce of it in place (``all_reduce(b, out=b, algo="chain")``)
        costs the host no copy in or out; the devices read and write it directly. One
        buffer per communicator (every call returns a view of the same memory); its
        contents become the result. The in-network algorithms stage other arrays in the
        same memory: once this buffer exists, the automatic choice leaves them to the
        hosts, and an explicit ``algo="chain"`` (or ``tree``, ``multicast``) on another
        array overwrites it. Needs the home device on this node (shared memory)."""
        dt = np.dtype(dtype)
        step = self.layout.work_bytes - self.layout.work_bytes % (dt.itemsize * self.size)
        if not 0 <= count * dt.itemsize <= step:
            raise UsageError(f"work_buffer of {count} {dt} elements: the work area holds "
                             f"{step // dt.itemsize} at most")
        if self._work is None:
            home = self.areas[self.rank] + self.layout.work
            try:
                self._work = self.agent.map_device_memory(home, self.layout.work_bytes)
            except (PermissionError, NetdamError) as exc:
                raise UsageError(f"work_buffer needs rank {self.rank}'s device on this "
                                 f"node's shared memory ({exc})") from None
            self._work_address = self._work.ctypes.data
        return self._work[:count * dt.itemsize].view(dt)

    @property
    def work_address(self) -> int | None:
        """Where the mapped work area starts in this process (None: not mapped)."""
        return self._work_address

    # -- progress ------------------------------------------------------------------------
    def _progress_others(self) -> None:
        """Advance the requests of the other communicators of this family (the world and
        its splits) too, as MPI's progress rule asks: a peer may be waiting on one of them
        before it gets to the one waited on here. Their failures stay theirs (recorded
        in their ``broken`` and requests), each raised by its own wait."""
        for c in self._others_to_advance():
            try:
                c._progress()
            except Exception:
                pass

    def _others_to_advance(self) -> list["Communicator"]:
        """The other communicators of this family with requests a wait here must advance:
        not one whose progress is running a step that waits on this one (the
        hierarchical algorithm's steps are collectives of its splits)."""
        root = self.parent or self
        return [c for c in (root, *root._children)
                if c is not self and c._queue and not c.broken and not c._progressing]

    def _progress(self) -> None:
        self._progressing = True
        try:
            self._progress_queue()
        finally:
            self._progressing = False

    def _progress_queue(self) -> None:
        try:
            self.channels.progress()   # raises when a posted piece or credit failed
        except BaseException as exc:
            self.broken = self.broken or f"{exc}"
            raise
        while self._queue:
            req = self._queue[0]
            try:
                if not req._advance():
                    return
                req.result = req._finish()
            except BaseException as exc:  # reported by wait(), never swallowed
                req.error = exc
                self.broken = self.broken or f"{req.name} failed: {exc}"
            req.finished = True
            self._queue.popleft()

    def _start(self, name: str, gen, finish: Callable[[], Any], block: bool, *,
               inline: bool = False, now: Callable[[], None] | None = None):
        """Queue the algorithm ``gen`` as a request; wait for it when ``block``.
        ``inline``: ``gen`` only yields steps that wait on memory (a load/store round,
        ``scaleup``; an in-network round started at one device, ``offload``), so a
        blocking call with nothing queued, here or in another communicator whose
        requests its waits would have to advance, runs them right here, without the
        request machinery (a fifth of a small call's time, a tenth of a registered
        chain's host CPU); ``now``, when given, is ``gen`` written as one function,
        which that case calls instead (``scaleup.allreduce_now``)."""
        if self.broken:
            # the ranks' message streams are out of step after a failure: a retry here
            # could pair the wrong messages (RELIABILITY.md, retries)
            raise NetdamError(f"rank {self.rank}: communicator broken by an earlier "
                              f"failure ({self.broken}); start a new job")
        if inline and block and not self.check_args and not self._queue and \
                not self._others_to_advance():
            try:
                if now is not None:
                    now()
                else:
                    for step in gen:
                        step()
            except BaseException as exc:
                self.broken = self.broken or f"{name} failed: {exc}"
                raise
            return finish()
        req = Request(self, name, gen, finish)
        self._queue.append(req)
        self._progress()
        return req.wait() if block else req

    # -- helpers -------------------------------------------------------------------------
    def _checked(self, gen, collective: str, **call):
        """``gen`` after the check that every rank called ``collective`` with the same
        arguments (``call``, as ``agree.fingerprint`` takes them; ``check_args``)."""
        return agree.checked(self.rank, self.size,
                             agree.fingerprint(self.size, collective, **call), gen)

    def _waits_only(self, algo: str) -> bool:
        """Whether ``algo``'s generator only waits on memory (``_start``'s ``inline``):
        a load/store round (``scaleup``), or an in-network algorithm whose rounds start
        at one device, joined or gathered, not after a barrier (``offload.waits_only``)."""
        return algo == "load_store" or offload.waits_only(self, algo)

    def _reducer(self, dtype: DType, op: RedOp):
        red = self._reducers.get((dtype, op))
        if red is None:
            if alu.check(dtype, op):
                raise UsageError(f"reduce op {op.name} is not defined for {dtype.name}")
            red = self._reducers[(dtype, op)] = alu.reducer(dtype, op)
        return red

    @staticmethod
    def _contiguous(x) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise UsageError(f"expected a NumPy array, got {type(x).__name__}")
        return np.ascontiguousarray(x)

    def _root(self, root: int) -> int:
        if not isinstance(root, (int, np.integer)) or not 0 <= root < self.size:
            raise UsageError(f"root {root!r} outside 0..{self.size - 1}")
        return int(root)

    # -- collectives ---------------------------------------------------------------------
    def all_reduce(self, x: np.ndarray, op: str = "sum", *, out: np.ndarray | None = None,
                   algo: str | None = None, dtype: str | None = None,
                   deterministic: bool | None = None, block: bool = True):
        """Every rank gets op(x_0, ..., x_{n-1}). ``out=x`` reduces in place."""
        key = (op, algo, dtype, deterministic, self.deterministic)
        p = self._again
        if p is None or p.x is not x or out is not x or p.key != key or \
                p.work is not self._work or p.dtype is not x.dtype or \
                p.shape != x.shape or self.check_args:
            x = self._contiguous(x)
            dt, rop = resolve_dtype(x, dtype), resolve_op(op)
            red = self._reducer(dt, rop)
            det = self.deterministic if deterministic is None else deterministic
            name = self._choose_allreduce(algo, x.nbytes, det, self._may_stage(x))
            if name not in ("chain", "tree"):
                return self._host_all_reduce(x, out, name, red, det, op, dtype, block)
            # the devices read x and write the result: no copy
            res = self._out_buffer(x, out)
            what = f"all_reduce({name})"
            self._staged(what, x, res)
            p = _InNetwork(x, key, x.dtype, x.shape, self._work, name, what,
                           self._waits_only(name), dt, rop, det,
                           (self._at_work(x), self._at_work(res)), res)
            if out is x:
                self._again = p
        src = as_bytes(x)
        dst = src if p.res is x else as_bytes(p.res)   # in place: one buffer to look at
        gen = offload.chain_allreduce(self, src, dst, p.dt, p.op, deterministic=p.det,
                                      at_work=p.at_work) if p.name == "chain" \
            else offload.tree_allreduce(self, src, dst, p.dt, p.op, at_work=p.at_work)
        if self.check_args:
            gen = self._checked(gen, "all_reduce", algorithm=p.name, reproducible=p.det,
                                dtype=x.dtype, reduce_dtype=p.dt, op=p.op, count=x.size)
        res, now = p.res, None
        if p.name == "chain":
            now = lambda: offload.chain_now(self, src, dst, p.dt, p.op,  # noqa: E731
                                            deterministic=p.det, at_work=p.at_work)
        return self._start(p.what, gen, lambda: res, block, inline=p.inline, now=now)

    def _host_all_reduce(self, x: np.ndarray, out, name: str, red, det: bool, op, dtype,
                         block: bool):
        """``all_reduce`` by the hosts (``name`` is not an in-network algorithm)."""
        res = self._out(x, out)
        buf = as_bytes(res)
        now = None
        if name == "hierarchical":
            self._hier_comms()   # collective splits, before this request is queued
            gen = self._hierarchical(res, op, dtype)
        elif name == "load_store":
            gen = scaleup.allreduce_load_store(self, buf, red)
            now = lambda: scaleup.allreduce_now(self, buf, red)  # noqa: E731
        elif det and name != "one_shot":     # one-shot sums in rank order already
            gen = A.allreduce_canonical(self.rank, self.size, buf, x.dtype.itemsize, red)
        else:
            gen = A.ALLREDUCE[name](self.rank, self.size, buf, x.dtype.itemsize, red)
        if self.check_args:
            gen = self._checked(gen, "all_reduce", algorithm=name, reproducible=det,
                                dtype=x.dtype, reduce_dtype=resolve_dtype(x, dtype),
                                op=resolve_op(op), count=x.size)
        return self._start(f"all_reduce({name})", gen, lambda: res, block,
                           inline=self._waits_only(name), now=now)

    def _choose_allreduce(self, algo: str | None, nbytes: int, det: bool,
                          devices: bool) -> str:
        if algo not in (None, *ALLREDUCE_ALGOS):
            raise UsageError(f"unknown all_reduce algorithm {algo!r}; choose from "
                             f"{', '.join(ALLREDUCE_ALGOS)}")
        if algo == "hierarchical" and det:
            raise UsageError("hierarchical sums per node first; reproducible mode needs "
                             "ring, recursive_doubling, one_shot or chain")
        if algo == "load_store":
            self._check_load_store("all_reduce", nbytes)
        if algo in ("chain", "tree") and not self.offload_ok:
            raise UsageError(f"the {algo} (in-network) algorithm needs one rank per device "
                             "and a multicast group of those devices")
        if algo == "tree" and det:
            raise UsageError("the aggregation tree folds contributions in arrival order; "
                             "reproducible mode needs ring, recursive_doubling, one_shot "
                             "or chain")
        if algo in (None, "auto"):
            # by size and topology, after the figures in BENCHMARKS.md: latency-bound
            # sizes log2(n) exchanges (in reproducible mode the smallest take one-shot,
            # one step in rank order); larger ones go through the devices (the chain:
            # faster than every host algorithm from 1 MiB on one device per node, from
            # 4 MiB on nodes of several ranks that load and store, and a fraction of
            # their host CPU; ``devices``: unless a registered buffer holds other data),
            # else hierarchical when nodes hold several ranks (scale-up first), else
            # around the ring
            if self.load_store_ok:
                # one node, ranks storing into each other's areas: the hosts beat the
                # devices at every size (BENCHMARKS.md), no exchange beats one round
                if self._fits_load_store(nbytes):
                    return "load_store"
                return "canonical" if det else "ring"
            if det:
                if nbytes * (self.size - 1) <= ONE_SHOT:
                    return "one_shot"
                return "chain" if devices and nbytes >= SMALL else "canonical"
            if nbytes < LARGE:
                return "recursive_doubling"
            hier = self._multi_rank_nodes() and (self._hier is not None
                                                 or self._splits + 2 <= self.max_splits)
            # ranks of a node that store into each other's areas: scale-up first beats
            # the chain below LARGE_SHARED (BENCHMARKS.md); the job-wide setting, so
            # that a rank alone on its node chooses as the others do
            if devices and not (hier and self.load_store and nbytes < LARGE_SHARED):
                return "chain"
            return "hierarchical" if hier else "ring"
        return algo

    def algorithm_for(self, nbytes: int, deterministic: bool = False) -> str:
        """The all_reduce algorithm ``algo=None`` picks for ``nbytes`` on this topology."""
        return self._choose_allreduce(None, nbytes, deterministic,
                                      self.offload_ok and self._work is None)

    def _fits_load_store(self, nbytes: int) -> bool:
        """Whether the automatic choice takes ``load_store`` for ``nbytes`` per rank."""
        limit = min(LOAD_STORE, scaleup.load_store_max(self))
        return self.load_store_ok and nbytes <= limit

    def _check_load_store(self, what: str, nbytes: int) -> None:
        """Refuse an explicit ``algo="load_store"`` that cannot run (before anything
        moves)."""
        if not self.load_store_ok:
            raise UsageError(f"the load_store {what} needs every rank's home device on "
                             "this node's shared memory (and load/store not turned off)")
        if nbytes > scaleup.load_store_max(self):
            raise UsageError(f"the load_store {what} takes at most "
                             f"{scaleup.load_store_max(self)} bytes per rank, not {nbytes}")

    @functools.cached_property
    def load_store_ok(self) -> bool:
        """Whether the ranks may run ``algo="load_store"``: they are all on one node (which
        every rank knows alike, so all choose alike) and this rank maps every area. Fixed
        when the communicator is made; asked on every small collective's path."""
        return self.size > 1 and len(set(self.nodes)) == 1 and self.channels.load_store

    def _multi_rank_nodes(self) -> bool:
        nodes = self.nodes
        return len(set(nodes)) > 1 and len(set(nodes)) < len(nodes) and self.parent is None

    def _hier_comms(self) -> None:
        """The intra-node and node-leader communicators, split once (collective)."""
        if self._hier is None:
            intra = self.split(self.nodes[self.rank], key=self.rank)
            leaders = self.split(0 if intra.rank == 0 else None, key=self.rank)
            self._hier = (intra, leaders)

    def _hierarchical(self, res: np.ndarray, op, dtype):
        """Reduce inside each node (scale-up: the node's devices share memory with its
        hosts), all-reduce across nodes among one leader per node (scale-out), broadcast
        back inside each node."""
        intra, leaders = self._hier
        yield lambda: intra.reduce(res, 0, op, out=res, dtype=dtype)
        if leaders is not None:
            yield lambda: leaders.all_reduce(res, op, out=res, dtype=dtype)
        yield lambda: intra.broadcast(res, 0)

    def _out(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """The result array, holding a copy of x (algorithms that work in place)."""
        res = self._out_buffer(x, out)
        if res is not x:
            res[...] = x
        return res

    @staticmethod
    def _out_buffer(x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """The result array (``out``, checked, or a new one), contents undefined."""
        if out is None:
            return np.empty_like(x)
        if out is x:                    # in place (x is contiguous already)
            return out
        if out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous:
            raise UsageError(f"out must be a contiguous {x.dtype} array of shape {x.shape}")
        return out

    def reduce(self, x: np.ndarray, root: int = 0, op: str = "sum", *,
               out: np.ndarray | None = None, dtype: str | None = None, block: bool = True):
        """The root gets op over all ranks (returned; other ranks get None)."""
        x, root = self._contiguous(x), self._root(root)
        dt, rop = resolve_dtype(x, dtype), resolve_op(op)
        red = self._reducer(dt, rop)
        work = x.copy()
        inline = self._fits_load_store(x.nbytes)
        if inline:   # one round; rank order, so reproducible
            gen = scaleup.reduce_load_store(self, as_bytes(work), root, red)
        elif self.deterministic:   # rank order, like every reproducible reduction
            gen = A.allreduce_canonical(self.rank, self.size, as_bytes(work),
                                        x.dtype.itemsize, red)
        else:
            gen = A.reduce_binomial(self.rank, self.size, as_bytes(work), root, red)
        if self.check_args:
            gen = self._checked(gen, "reduce", dtype=x.dtype, reduce_dtype=dt, op=rop,
                                root=root, count=x.size)

        def finish():
            if self.rank != root:
                return None
            if out is not None:
                out[...] = work
                return out
            return work
        return self._start("reduce", gen, finish, block, inline=inline)

    def broadcast(self, x: np.ndarray, root: int = 0, *, algo: str | None = None,
                  block: bool = True):
        """Every rank's ``x`` becomes the root's (in place; returns x). ``algo``:
        ``binomial`` (hosts), ``multicast`` (the root's device multicasts it) or
        ``load_store`` (one node: the others copy the root's stage, ``scaleup``)."""
        root = self._root(root)
        if not isinstance(x, np.ndarray) or not x.flags.c_contiguous:
            raise UsageError("broadcast needs a C-contiguous NumPy array (it works in place)")
        devices = x.nbytes >= (MULTICAST_BROADCAST_ONE_NODE if self.load_store_ok
                               else MULTICAST_BROADCAST) and self._may_stage(x)
        name = self._choose(algo, BROADCAST_ALGOS, "broadcast", devices, x.nbytes)
        if name == "multicast":
            self._staged("broadcast(multicast)", x)
            gen = offload.multicast_broadcast(self, as_bytes(x), root)
        elif name == "load_store":
            gen = scaleup.broadcast_load_store(self, as_bytes(x), root)
        else:
            gen = A.broadcast_binomial(self.rank, self.size, as_bytes(x), root)
        if self.check_args:
            gen = self._checked(gen, "broadcast", algorithm=name, dtype=x.dtype, root=root,
                                count=x.size)
        return self._start("broadcast", gen, lambda: x, block,
                           inline=self._waits_only(name))

    def all_gather(self, x: np.ndarray, *, out: np.ndarray | None = None,
                   algo: str | None = None, block: bool = True):
        """Returns an array of shape (size, *x.shape): row r is rank r's x. ``algo``:
        ``ring`` (hosts), ``multicast`` (each rank's device multicasts its row) or
        ``load_store`` (one node: every rank copies every stage, ``scaleup``)."""
        x = self._contiguous(x)
        res = np.empty((self.size, *x.shape), x.dtype) if out is None else out
        if res.shape != (self.size, *x.shape) or res.dtype != x.dtype:
            raise UsageError(f"out must have shape {(self.size, *x.shape)} and dtype {x.dtype}")
        res[self.rank] = x
        devices = res.nbytes >= MULTICAST_ALL_GATHER and self._may_stage(x) \
            and self._work is None \
            and not self.load_store_ok
        # (it gathers in the work area, never in place; on one node the hosts' stores
        # beat it at every size)
        spans = [(r * x.nbytes, (r + 1) * x.nbytes) for r in range(self.size)]
        name = self._choose(algo, ALL_GATHER_ALGOS, "all_gather", devices, x.nbytes)
        if name == "multicast":
            self._staged("all_gather(multicast)", x, res, in_place=False)
            gen = offload.multicast_all_gather(self, as_bytes(res), spans)
        elif name == "load_store":
            gen = scaleup.all_gather_load_store(self, as_bytes(res), spans)
        else:
            gen = A.all_gather_ring(self.rank, self.size, as_bytes(res), spans)
        if self.check_args:
            gen = self._checked(gen, "all_gather", algorithm=name, dtype=x.dtype,
                                shape=x.shape)
        return self._start("all_gather", gen, lambda: res, block,
                           inline=self._waits_only(name))

    def _choose(self, algo: str | None, choices: tuple[str, ...], what: str,
                devices: bool, nbytes: int) -> str:
        """The algorithm of a collective with a host one (the first choice), the devices'
        ``multicast``, which the automatic choice takes when ``devices``, and
        ``load_store``, which it takes first where ``nbytes`` per rank fit it."""
        if algo not in (None, "auto", *choices):
            raise UsageError(f"unknown {what} algorithm {algo!r}; choose from "
                             f"{', '.join(choices)}")
        if algo == "multicast" and not self.offload_ok:
            raise UsageError(f"the multicast {what} needs one rank per device and a "
                             "multicast group of those devices")
        if algo == "load_store":
            self._check_load_store(what, nbytes)
        if algo in (None, "auto"):
            if self._fits_load_store(nbytes):
                return "load_store"
            return "multicast" if devices else choices[0]
        return algo

    def _at_work(self, a: np.ndarray) -> bool:
        """Does the non-empty array ``a`` start where the registered work area does? The
        last array found so is remembered (asked several times per call, and an array's
        data never moves)."""
        if self._work is None:
            return False
        if a is self._at_work_last:
            return True
        if not a.nbytes or address_of(a) != self._work_address:
            return False
        self._at_work_last = a
        return True

    def _staged(self, what: str, *arrays: np.ndarray, in_place: bool = True) -> None:
        """An in-network algorithm stages its data in the work area, which a registered
        buffer shares: an array of the caller's may lie in it only as that buffer itself,
        from its start (and not at all where ``in_place`` is False); else a UsageError,
        before anything is sent (the copies in and out would overlap it)."""
        if self._work is None:
            return
        for a in arrays:
            if in_place and self._at_work(a):
                continue
            if a.nbytes and np.may_share_memory(a, self._work):
                raise UsageError(
                    f"{what}: an array in the registered buffer (work_buffer) must start "
                    f"at its beginning{'' if in_place else ' and is not allowed here'}; "
                    "pass a copy")

    def _may_stage(self, x: np.ndarray) -> bool:
        """May an automatic choice run ``x`` through the devices' work area? Not while a
        registered buffer (``work_buffer``) keeps the caller's data there, unless ``x``
        is that buffer."""
        return self.offload_ok and (self._work is None or self._at_work(x))

    def reduce_scatter(self, x: np.ndarray, op: str = "sum", *, counts=None,
                       dtype: str | None = None, block: bool = True):
        """Rank r gets block r of op over all ranks; blocks are ``counts`` elements (default:
        x split as evenly as possible)."""
        x = self._contiguous(x).reshape(-1)
        dt, rop = resolve_dtype(x, dtype), resolve_op(op)
        red = self._reducer(dt, rop)
        spans = self._spans(x, counts)
        work = x.copy()
        buf = as_bytes(work)
        inline = self._fits_load_store(x.nbytes)
        if inline:   # one round; rank order, so reproducible
            gen = scaleup.reduce_scatter_load_store(self, buf, spans, red)
        else:
            fn = A.reduce_scatter_canonical if self.deterministic else A.reduce_scatter_ring
            gen = fn(self.rank, self.size, buf, spans, red)
        if self.check_args:
            gen = self._checked(gen, "reduce_scatter", dtype=x.dtype, reduce_dtype=dt,
                                op=rop, count=x.size, counts=None if counts is None else
                                [(hi - lo) // x.dtype.itemsize for lo, hi in spans])
        es = x.dtype.itemsize
        lo, hi = spans[self.rank]
        return self._start("reduce_scatter", gen, lambda: work[lo // es:hi // es].copy(),
                           block, inline=inline)

    def _spans(self, x: np.ndarray, counts) -> list[tuple[int, int]]:
        es = x.dtype.itemsize
        if counts is None:
            return A.blocks(x.size, self.size, es)
        counts = [int(c) for c in counts]
        if len(counts) != self.size or min(counts) < 0 or sum(counts) != x.size:
            raise UsageError(f"counts must be {self.size} non-negative numbers summing to "
                             f"{x.size}, not {counts}")
        out, start = [], 0
        for c in counts:
            out.append((start * es, (start + c) * es))
            start += c
        return out

    def all_to_all(self, x: np.ndarray, *, block: bool = True):
        """x's first axis is split in ``size`` equal parts; part p goes to rank p."""
        x = self._contiguous(x)
        if x.ndim == 0 or x.shape[0] % self.size:
            raise UsageError(f"all_to_all needs a first axis divisible by {self.size}, "
                             f"got shape {x.shape}")
        per = x.shape[0] // self.size
        if self._fits_load_store(x.nbytes):    # one round: each reads its part in place
            res = np.empty(x.size, x.dtype)
            gen = scaleup.all_to_all_load_store(self, as_bytes(x), as_bytes(res),
                                                x.nbytes // self.size)
            if self.check_args:     # (the other branch's all_to_allv checks its counts)
                gen = self._checked(gen, "all_to_all", dtype=x.dtype, shape=x.shape)
            req = self._start("all_to_all", gen, lambda: res, block, inline=True)
        else:
            counts = [per * int(np.prod(x.shape[1:], dtype=np.int64))] * self.size
            req = self.all_to_allv(x.reshape(-1), counts, counts, block=block)
        if block:
            return req.reshape(x.shape)
        return req

    def all_to_allv(self, x: np.ndarray, send_counts, recv_counts=None, *,
                    block: bool = True):
        """Rank r sends send_counts[p] elements (in order) to p and returns the
        concatenation of what every rank sent it. ``recv_counts`` defaults to being
        exchanged first (one extra all-to-all of counts)."""
        x = self._contiguous(x).reshape(-1)
        send_spans = self._spans(x, send_counts)
        if recv_counts is None:
            counts = np.array([int(c) for c in send_counts], np.int64)
            recv_counts = self.all_to_all(counts).tolist()
        recv_counts = [int(c) for c in recv_counts]
        if len(recv_counts) != self.size or min(recv_counts, default=0) < 0:
            raise UsageError(f"recv_counts must be {self.size} non-negative numbers")
        res = np.empty(sum(recv_counts), x.dtype)
        recv_spans = self._spans(res, recv_counts)
        gen = A.all_to_all_pairwise(self.rank, self.size, as_bytes(x), send_spans,
                                    as_bytes(res), recv_spans)
        if self.check_args:
            gen = self._checked(gen, "all_to_allv", dtype=x.dtype, recv_counts=recv_counts,
                                counts=[(hi - lo) // x.dtype.itemsize for lo, hi in send_spans])
        return self._start("all_to_allv", gen, lambda: res, block)

    def barrier(self, *, block: bool = True):
        """Every rank has entered: one round of posted words where ranks load and store
        each other's areas (``scaleup``), else a dissemination barrier of messages."""
        if self.load_store_ok:
            gen, now = scaleup.barrier_load_store(self), lambda: scaleup.barrier_now(self)
        else:
            gen, now = A.barrier_dissemination(self.rank, self.size), None
        if self.check_args:
            gen = self._checked(gen, "barrier")
        return self._start("barrier", gen, lambda: None, block, inline=self.load_store_ok,
                           now=now)

    # -- expert parallelism (moe.py) -------------------------------------------------------
    def moe_dispatch(self, x: np.ndarray, topk_idx, num_experts: int, *, topk_weights=None,
                     dtype: str | None = None, fp8: str = "e4m3", block: bool = True):
        """Send each token (a row of ``x``, [tokens, hidden]) to the ranks holding its
        experts (``topk_idx`` [tokens, k], -1 for none; ``num_experts`` spread evenly, rank
        r holding ``r*E/n ..``), quantized to fp8 by this rank's device, once per node
        and replicated inside the node by multicast. Returns a ``moe.Dispatch``: the rows
        routed here (``.fp8``, ``.scales``, ``.x`` dequantized), their local experts and
        weights, and what ``moe_combine`` needs."""
        x = self._contiguous(x)
        p = moe.plan(self, x, resolve_dtype(x, dtype), topk_idx, num_experts, topk_weights,
                     fp8)
        if self.node_groups is None:
            self.node_groups = moe.node_groups(self)   # collective, once, before queueing
        gen = moe.dispatch(self, p)
        if self.check_args:
            gen = self._checked(gen, "moe_dispatch", dtype=x.dtype, shape=x.shape[1:],
                                experts=num_experts)
        return self._start("moe_dispatch", gen, lambda: p.result, block)

    def moe_combine(self, y: np.ndarray, dispatch: "moe.Dispatch", *,
                    dtype: str | None = None, block: bool = True):
        """Return every row of ``y`` (one per row ``dispatch`` received: this rank's
        experts' weighted outputs for that token) to the token's rank, which sums them in
        rank order; returns bfloat16 bits (uint16) of shape [tokens, hidden]."""
        y = self._contiguous(y)
        want = (len(dispatch.src_rank), dispatch.hidden)
        if y.shape != want:
            raise UsageError(f"moe_combine needs one row per dispatched row: shape {want}, "
                             f"got {y.shape}")
        dt = resolve_dtype(y, dtype)
        if dt == DType.BFLOAT16:
            bits = y
        elif dt in (DType.FLOAT32, DType.FLOAT16, DType.FLOAT64):
            bits = fp8_codec.f32_to_bf16(y.astype(np.float32))
        else:
            raise UsageError(f"moe_combine takes float or bfloat16 outputs, not {dt.name}")
        out = np.empty((dispatch.tokens, dispatch.hidden), np.uint16)
        gen = moe.combine(self, dispatch, bits, out)
        if self.check_args:
            gen = self._checked(gen, "moe_combine", dtype=y.dtype, shape=y.shape[1:])
        return self._start("moe_combine", gen, lambda: out, block)

    # non-blocking forms (MPI's I-prefixed calls)
    def all_reduce_nb(self, x, op="sum", **kw) -> Request:
        return self.all_reduce(x, op, block=False, **kw)

    def reduce_nb(self, x, root=0, op="sum", **kw) -> Request:
        return self.reduce(x, root, op, block=False, **kw)

    def broadcast_nb(self, x, root=0, **kw) -> Request:
        return self.broadcast(x, root, block=False, **kw)

    def all_gather_nb(self, x, **kw) -> Request:
        return self.all_gather(x, block=False, **kw)

    def reduce_scatter_nb(self, x, op="sum", **kw) -> Request:
        return self.reduce_scatter(x, op, block=False, **kw)

    def all_to_allv_nb(self, x, send_counts, recv_counts, **kw) -> Request:
        return self.all_to_allv(x, send_counts, recv_counts, block=False, **kw)

    def moe_dispatch_nb(self, x, topk_idx, num_experts, **kw) -> Request:
        return self.moe_dispatch(x, topk_idx, num_experts, block=False, **kw)

    def moe_combine_nb(self, y, dispatch, **kw) -> Request:
        return self.moe_combine(y, dispatch, block=False, **kw)

    def barrier_nb(self) -> Request:
        return self.barrier(block=False)

    # -- sub-communicators -----------------------------------------------------------------
    def split(self, color: int | None, key: int | None = None) -> "Communicator | None":
        """MPI_Comm_split: ranks with the same color form a new communicator, ordered by
        (key, rank). ``color=None`` takes no part (returns None). Collective; a world
        communicator can split up to ``max_splits`` times (each split gets its own slots
        in the ranks' areas)."""
        if self.parent is not None:
            raise UsageError("split a sub-communicator's parent instead (one level only)")
        if self._splits >= self.max_splits:
            raise UsageError(f"at most {self.max_splits} splits per communicator")
        for name, value, least in (("color", color, 0), ("key", key, None)):
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, np.integer)) or (least is not None and value < least)):
                raise UsageError(f"split {name} {value!r}: expected None or an integer"
                                 + ("" if least is None else f" >= {least}"))
        self._splits += 1   # (checked first: a refused split takes no slot)
        mine = np.array([-1 if color is None else int(color),
                         self.rank if key is None else int(key), self.rank], np.int64)
        table = self.all_gather(mine)
        sub_layout = Layout(self.size, self.layout.slots, self.layout.slot_bytes, 0)
        shift = self.layout.size + (self._splits - 1) * sub_layout.size
        sub = None
        if color is not None:
            members = sorted((int(k), int(r)) for c, k, r in table if c == int(color))
            ranks = [r for _, r in members]
            sub = Communicator(self.agent, ranks.index(self.rank), len(ranks),
                               [self.areas[r] + shift for r in ranks],
                               layout=Layout(len(ranks), self.layout.slots,
                                             self.layout.slot_bytes, 0),
                               timeout=self.timeout, deterministic=self.deterministic,
                               control=self.control, parent=self,
                               nodes=[self.nodes[r] for r in ranks],
                               load_store=self.load_store)
            sub.check_args = self.check_args
            sub.channels.reset()
            self._children.append(sub)
        self.barrier()   # nobody sends in a new communicator before everyone has reset
        return sub

    def close(self) -> None:
        """Wait until everything this rank sent (here and in its sub-communicators) has
        been acknowledged, so leaving cannot strand a peer."""
        for child in self._children:
            child.close()
        self.channels.flush()
