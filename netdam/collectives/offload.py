"""Device-offloaded collectives: the in-network reduce engine (NetDAM's chain), and the
devices' multicast for broadcast and all_gather.

Owns the host side of an allreduce that the devices run themselves. Each rank copies
its data into the work area of its home device (same offset on every device) and then
hands its own block's chain descriptor (SPEC §4.9), flagged JOIN, to rank 0's device: a
joined start. That device holds the descriptors until every member of the group has
sent one, then starts each at the first device of its block's route. So one request per
rank opens the round, no host waits for the others or leads, and the chains start as
the last input lands, where a dissemination barrier costs every rank log2 n messages
and wake-ups (a rank with an empty block joins with an empty descriptor). A join goes
without asking for its ACK (NO_RESPONSE): the round's signal answers it, as the
meeting device starts nothing before it holds them all, and the host takes one datagram
less per round (a late round's retransmission asks for the ACK; ``_answered``). With
``comm.device_joins`` off, the round opens with a gathered start instead: every other
rank says its input is in with one ATOMIC_FADD to rank 0's ``chain_ready`` word, and
rank 0, once the word counts them all, hands over every block's descriptor. Beyond
``GATHERED_START_MAX`` ranks a barrier opens the round and each rank hands its own
descriptor to its route's first device. From there the devices do all the work:
REDUCE_FWD fragments hop device to device accumulating the block, the last hop writes
the sum back and multicasts it to every member of the communicator's group, and every
device bumps its signal word once per finished block. A rank waits on its own device's
signal word (a memory poll on the scale-up path) and copies the result out.

Block b's route starts at rank b's device and walks the ring, so every device starts one
chain and links are used evenly (whoever posts its descriptor). In reproducible mode
every route is rank order 0..n-1, so each element is ((x_0 op x_1) op ...) op x_{n-1},
bit for bit what the canonical host algorithm computes. Buffers larger than the work
area run in rounds.

The aggregation tree (``tree_allreduce``) makes the devices aggregation nodes, as SHARP
does in switches: block b is aggregated up a ``radix``-ary tree rooted at device b
(positions counted from b around the ring; ``comm.tree_radix``, default 2, so log n
levels; radix n-1 is one level). A leaf sends its block b to its parent as a two-hop
chain whose last hop folds it into the parent's memory and bumps the parent's
aggregation word for block b; an inner node passes its partial sum up the same way once
all its children's are in; the root's device multicasts the sum down from its own
memory (a one-device chain, so the host never touches the bytes) with a signal on every
member. Hosts only watch words and hand over one descriptor per block
and level; the devices move and add every byte.

The multicast broadcast and all_gather (``multicast_broadcast``,
``multicast_all_gather``) move no byte through a host twice: each rank's bytes go into
its work area, and a one-device chain descriptor has its device multicast them, with a
signal, to the same offset of every rank's work area. Joined starts open each round
too (at the broadcast's root's device, where the others join empty; at rank 0's for the
all_gather), so no multicast lands in a work area whose rank still reads it.

The generators here yield the same ``Send``/``Recv`` as the host algorithms (for the
barriers), callables (device steps the communicator's progress engine runs in turn) and
waits for the words the devices bump (``steps.WordWait``, ``steps.WhenEach``): a
request moves on while they are short, so a non-blocking call returns while the devices
work and the host is free meanwhile; a blocking call with nothing else to advance runs
the steps inline (``waits_only`` says which algorithms may). They read these attributes
of the communicator (the simulator's stand-in has the same):
``size, rank, layout, areas, group, timeout, device_joins, agent`` (``write``,
``atomic_add_nb``, ``reduce_chain[_nb]``, ``multicast_nb``), ``channels``
(``home.read_into``, ``wait_word``, ``when_each``, ``track``: a request nobody waits
for, whose failure a later wait raises), and the counters ``chain_blocks``,
``start_rounds``, ``tree_counts`` and ``tree_radix``.
"""

from __future__ import annotations

from netdam.collectives import algorithms as A
from netdam.collectives.p2p import address_of
from netdam.collectives.steps import WhenEach, WordWait
from netdam.wire.fields import DTYPE_SIZE, DType, RedOp


def _is_work(comm, buf: memoryview) -> bool:
    """Is ``buf`` the registered work area itself (``comm.work_buffer``, from its start),
    so that it is neither copied into the work area nor out of it?"""
    work = getattr(comm, "work_address", None)
    return work is not None and len(buf) > 0 and address_of(buf) == work


def rounds(comm, src: memoryview, dst: memoryview, esize: int, body, *,
           barrier: bool = True, at_work: tuple[bool, bool] | None = None):
    """Run an in-device algorithm round by round: each round puts this rank's part of
    ``src`` in its device's work area, meets the others at a barrier (unless ``body``
    opens the round itself, ``barrier=False``), runs ``body(spans)`` (which leaves the
    result in the work area) and copies the result out to ``dst`` (which may be
    ``src``). A buffer that is the work area itself (``comm.work_buffer``) is neither
    copied in nor out.

    No barrier closes a round. ``body`` returns once this rank's signal word counts
    every block's result in its own memory, and a block's result is multicast only
    after its chain (or tree) has passed every device: so no device still reads or
    folds into this rank's work area for this round, and it may take the next
    round's (or collective's) input at once. Another rank's chains for that next
    round cannot start before this rank has written it, because of the next round's
    opening barrier (or, for a gathered start, because rank 0 starts them only after
    this rank's atomic for that round; for a joined start, because rank 0's device
    starts none before it holds this rank's descriptor for that round).

    ``at_work``: whether ``src`` and ``dst`` start at the work area, when the caller
    knows already (the communicator does); else asked here."""
    n, rank, lay = comm.size, comm.rank, comm.layout
    home = comm.areas[rank]
    for part, out, copy_in, copy_out in _parts(comm, src, dst, esize, at_work):
        if copy_in:
            yield lambda: comm.agent.write(home + lay.work, part, timeout=comm.timeout)
        if barrier:
            yield from A.barrier_dissemination(rank, n)
        yield from body(A.blocks(len(part) // esize, n, esize))
        if copy_out:
            yield lambda: comm.channels.home.read_into(lay.work, out)


def _parts(comm, src: memoryview, dst: memoryview, esize: int,
           at_work: tuple[bool, bool] | None):
    """The rounds of ``rounds``: ``(part of src, its part of dst, copy in?, copy out?)``,
    each part as much as the work area takes (a whole number of elements per rank)."""
    lay = comm.layout
    step = lay.work_bytes - lay.work_bytes % (esize * comm.size)
    # only a round that starts where its buffer starts can be the work area itself
    if at_work is None:
        src_work = _is_work(comm, src)
        at_work = src_work, src_work if dst is src else _is_work(comm, dst)
    src_work, dst_work = at_work
    for start in range(0, len(src), step):
        part = src[start:start + step]
        yield (part, dst[start:start + len(part)], not (src_work and start == 0),
               not (dst_work and start == 0))


#: up to this many ranks a chain round opens with a start gathered at rank 0's device
#: (joined starts; with ``device_joins`` off, rank 0 starts every block's chain once the
#: others' atomics say their inputs are in); beyond it with a barrier (log2 n rounds,
#: each rank starting its own block's chain). The bound was set for the gathered start,
#: where rank 0's n descriptors of n hops each cost more than the barrier's rounds
GATHERED_START_MAX = 16


def chain_starts_gathered(comm) -> bool:
    """Whether the chain's rounds open with a start gathered at rank 0's device (joined,
    or with ``device_joins`` off led by rank 0), else with a barrier."""
    return comm.size <= GATHERED_START_MAX


def waits_only(comm, algo: str) -> bool:
    """Whether ``algo``'s generator yields only device steps and waits for words (no
    ``Send``/``Recv`` of a barrier), so that a blocking call may run it inline: the
    multicasts always (a joined or gathered start opens their rounds), the chain when
    its rounds start gathered; the tree opens its rounds with a barrier."""
    return algo == "multicast" or (algo == "chain" and chain_starts_gathered(comm))


def gathered_start(comm, leader: int, what: str):
    """Open a round that ``leader`` starts: every other rank says its input is in its
    work area, and its last results are out of it, with one ATOMIC_FADD to the leader's
    ``chain_ready`` word; the leader's next steps run once that word counts them all
    (``comm.start_rounds[leader]`` rounds of n - 1 each: every rank counts the same)."""
    lay, ch = comm.layout, comm.channels
    comm.start_rounds[leader] += 1
    if comm.rank != leader:
        yield lambda: ch.track(comm.agent.atomic_add_nb(
            comm.areas[leader] + lay.chain_ready, 1, timeout=comm.timeout))
    else:
        target = (comm.size - 1) * comm.start_rounds[leader]
        yield WordWait(comm, lay.chain_ready, target, what)


def _descriptor(comm, route, addr, length: int, *, dtype: DType, op: RedOp,
                join: int | None = None, joined: list | None = None):
    """A step that hands over a chain descriptor whose last hop signals this rank's
    offload word and multicasts to the group. With ``join`` (a meeting device) it is a
    joined start sent without asking for its ACK (NO_RESPONSE), its handle kept in
    ``joined``: the round's signal word answers it (``_answered``)."""
    return lambda: _send_chain(comm, route, addr, length, dtype=dtype, op=op, join=join,
                               joined=joined)


def _send_chain(comm, route, addr, length: int, *, dtype: DType, op: RedOp,
                join: int | None, joined: list | None) -> None:
    """Hand over the descriptor ``_descriptor`` describes, now."""
    quiet = join is not None
    h = comm.agent.reduce_chain_nb(route, addr, length, dtype=dtype, op=op,
                                   signal=comm.areas[comm.rank] + comm.layout.offload_signal,
                                   group=comm.group, join=join, quiet=quiet,
                                   timeout=comm.timeout)
    comm.channels.track(h)
    if quiet:
        joined.append(h)


def _answered(comm, joined: list):
    """What a round's signal wait runs once the word is in (``_retire``)."""
    return lambda: _retire(comm, joined)


def _retire(comm, joined: list) -> None:
    """The round's signal word is in: its chains ran, and the meeting device starts
    none before it holds every member's join (SPEC §4.9), so this rank's quiet JOIN
    arrived; it is retired as its ACK would have retired it. (Were the word late, the
    agent's retransmission would have asked for that ACK.)"""
    if joined:
        comm.agent.answered(joined.pop())


def _spread(comm, member: int, offset: int, length: int, join: int | None = None,
            joined: list | None = None):
    """A step that has rank ``member``'s device multicast its ``length`` bytes at
    ``offset`` to every rank's device (the same offset there), bumping each one's
    offload signal once they are all in: a one-device chain (SPEC §4.9) of bytes,
    whose start is its last hop (``join``: a joined start at that device, as
    ``_descriptor`` sends it)."""
    return _descriptor(comm, [comm.areas[member].device], comm.areas[member] + offset,
                       length, dtype=DType.UINT8, op=RedOp.SUM, join=join, joined=joined)


def multicast_broadcast(comm, buf: memoryview, root: int):
    """Broadcast through the root's device: the root's bytes go into its work area (none
    of a registered buffer), its device multicasts them to every rank's work area with
    a signal, and each rank copies them out. The host never sends the bytes more than
    once, whatever n. The multicast stays off a work area its rank still reads: the
    root's descriptor is a joined start at its own device, and every other rank joins
    with an empty one once its work area is free (or, ``device_joins`` off, a gathered
    start led by the root). Buffers larger than the work area go in rounds."""
    rank, lay, ch = comm.rank, comm.layout, comm.channels
    home = comm.areas[rank]
    for start in range(0, len(buf), lay.work_bytes):
        part = buf[start:start + lay.work_bytes]
        mapped = _is_work(comm, part)
        if rank == root and not mapped:
            yield lambda part=part: comm.agent.write(home + lay.work, part,
                                                     timeout=comm.timeout)
        comm.chain_blocks += 1
        target = comm.chain_blocks
        joined: list = []
        if comm.device_joins:        # the root's bytes, or an empty join ("I am free")
            yield _spread(comm, root, lay.work, len(part) if rank == root else 0,
                          join=comm.areas[root].device, joined=joined)
        else:
            yield from gathered_start(comm, root, "the other ranks' work areas")
            if rank == root:
                yield _spread(comm, root, lay.work, len(part))
        yield WordWait(comm, lay.offload_signal, target, "in-network broadcast",
                       then=_answered(comm, joined))
        if rank != root and not mapped:
            yield lambda part=part: ch.home.read_into(lay.work, part)


def multicast_all_gather(comm, buf: memoryview, spans: list[tuple[int, int]]):
    """All-gather through the devices, in place: ``buf`` holds every rank's block at its
    byte span (this rank's filled in), as for the ring. In each round every rank puts a
    chunk of its block into its own slot of the work area, and each rank's device
    multicasts that slot to every rank's work area with a signal (each rank's descriptor
    a joined start at rank 0's device, an empty one where it has no chunk left; with
    ``device_joins`` off, rank 0 posts them all after a gathered start); each rank
    copies the others' chunks out."""
    n, rank, lay, ch = comm.size, comm.rank, comm.layout, comm.channels
    home = comm.areas[rank]
    chunk = lay.work_bytes // n          # a slot of the work area per rank
    longest = max((hi - lo for lo, hi in spans), default=0)
    for o in range(0, longest, chunk):
        parts = [(lo + o, min(hi, lo + o + chunk)) for lo, hi in spans]
        live = [b for b, (a, z) in enumerate(parts) if z > a]
        a, z = parts[rank]
        if z > a:
            yield lambda a=a, z=z: comm.agent.write(home + (lay.work + rank * chunk),
                                                    buf[a:z], timeout=comm.timeout)
        comm.chain_blocks += len(live)
        target = comm.chain_blocks
        joined: list = []
        if comm.device_joins:
            yield _spread(comm, rank, lay.work + rank * chunk, max(z - a, 0),
                          join=comm.areas[0].device, joined=joined)
        else:
            yield from gathered_start(comm, 0, "the other ranks' blocks")
            if rank == 0:
                for b in live:
                    yield _spread(comm, b, lay.work + b * chunk, parts[b][1] - parts[b][0])
        yield WordWait(comm, lay.offload_signal, target, "in-network all_gather",
                       then=_answered(comm, joined))
        for b in live:
            if b != rank:
                a, z = parts[b]
                yield lambda a=a, z=z, at=lay.work + b * chunk: ch.home.read_into(
                    at, buf[a:z])


def chain_allreduce(comm, src: memoryview, dst: memoryview, dtype: DType, op: RedOp, *,
                    deterministic: bool = False, at_work: tuple[bool, bool] | None = None):
    rank, lay = comm.rank, comm.layout
    devices = [a.device for a in comm.areas]
    gathered = chain_starts_gathered(comm)

    joined: list = []

    def post(b: int, lo: int, hi: int, join: int | None = None):
        """Block b's chain descriptor, to the first device of its route or (``join``)
        to that meeting device (not waited for: the signal word says when the chain
        is through)."""
        return _descriptor(comm, _route(devices, b, deterministic),
                           comm.areas[b] + (lay.work + lo), hi - lo, dtype=dtype, op=op,
                           join=join, joined=joined)

    def body(spans):
        comm.chain_blocks += sum(1 for a, b in spans if b > a)  # empty blocks run no chain
        target = comm.chain_blocks
        if gathered and comm.device_joins:   # an empty block: an empty join
            yield post(rank, *spans[rank], join=devices[0])
        elif not gathered:
            if spans[rank][1] > spans[rank][0]:
                yield post(rank, *spans[rank])
        else:
            yield from gathered_start(comm, 0, "the other ranks' inputs")
            if rank == 0:
                for b, (lo, hi) in enumerate(spans):
                    if hi > lo:
                        yield post(b, lo, hi)
        yield WordWait(comm, lay.offload_signal, target, "in-network allreduce",
                       then=_answered(comm, joined))

    yield from rounds(comm, src, dst, DTYPE_SIZE[dtype], body, barrier=not gathered,
                      at_work=at_work)


def chain_now(comm, src: memoryview, dst: memoryview, dtype: DType, op: RedOp, *,
              deterministic: bool = False, at_work: tuple[bool, bool] | None = None) -> None:
    """``chain_allreduce`` run to its end by the caller: the same rounds for a blocking
    call that runs inline (``Communicator._start``'s ``now``), as plain calls instead of
    generators and their steps, which cost a registered 256 KiB call about 10 of its 176
    us of host CPU (BENCHMARKS.md). Joined starts only: the other ways to open a round
    run the generator's steps here."""
    if not (chain_starts_gathered(comm) and comm.device_joins):
        for step in chain_allreduce(comm, src, dst, dtype, op, deterministic=deterministic,
                                    at_work=at_work):
            step()
        return
    n, rank, lay, ch = comm.size, comm.rank, comm.layout, comm.channels
    home, esize = comm.areas[rank], DTYPE_SIZE[dtype]
    devices = [a.device for a in comm.areas]
    for part, out, copy_in, copy_out in _parts(comm, src, dst, esize, at_work):
        if copy_in:
            comm.agent.write(home + lay.work, part, timeout=comm.timeout)
        spans = A.blocks(len(part) // esize, n, esize)
        comm.chain_blocks += sum(1 for a, b in spans if b > a)  # empty blocks run no chain
        lo, hi = spans[rank]
        joined: list = []                      # an empty block: an empty join
        _send_chain(comm, _route(devices, rank, deterministic), home + (lay.work + lo),
                    hi - lo, dtype=dtype, op=op, join=devices[0], joined=joined)
        ch.wait_word(lay.offload_signal, comm.chain_blocks, "in-network allreduce")
        _retire(comm, joined)
        if copy_out:
            ch.home.read_into(lay.work, out)


def _route(devices: list[int], b: int, deterministic: bool) -> list[int]:
    """Block b's chain: from rank b's device around the ring, or (reproducible mode)
    every device in rank order."""
    return devices if deterministic else devices[b:] + devices[:b]


def tree_children(pos: int, n: int, radix: int) -> range:
    """Positions of ``pos``'s children in a ``radix``-ary aggregation tree of n nodes
    (position 0 is the root; positions are ranks counted from the block's owner)."""
    return range(min(radix * pos + 1, n), min(radix * pos + radix + 1, n))


def tree_parent(pos: int, radix: int) -> int:
    return (pos - 1) // radix


def tree_allreduce(comm, src: memoryview, dst: memoryview, dtype: DType, op: RedOp, *,
                   at_work: tuple[bool, bool] | None = None):
    n, rank, lay, agent, ch = comm.size, comm.rank, comm.layout, comm.agent, comm.channels
    home = comm.areas[rank]
    devices = [a.device for a in comm.areas]
    radix = comm.tree_radix

    def body(spans):
        want = {}        # block -> value its aggregation word must reach here
        for b, (lo, hi) in enumerate(spans):
            if hi > lo:
                comm.tree_counts[b] += len(tree_children((rank - b) % n, n, radix))
                want[b] = comm.tree_counts[b]
        comm.chain_blocks += len(want)
        target = comm.chain_blocks

        def pass_up(b: int) -> None:
            """My partial sum of block b is complete: up to my parent, or (the root)
            down to every member."""
            lo, hi = spans[b]
            pos = (rank - b) % n
            if pos == 0:      # a one-device chain: the device multicasts its own memory
                ch.track(agent.reduce_chain_nb(
                    [devices[rank]], home + (lay.work + lo), hi - lo, dtype=dtype, op=op,
                    signal=home + lay.offload_signal, group=comm.group,
                    timeout=comm.timeout))
            else:
                parent = devices[(b + tree_parent(pos, radix)) % n]
                ch.track(agent.reduce_chain_nb(
                    [devices[rank], parent], home + (lay.work + lo), hi - lo, dtype=dtype,
                    op=op, signal=home + lay.aggregate_word(b), timeout=comm.timeout))

        # every block as soon as its children are in, in any order (a fixed order could
        # wait on a rank that waits on us for another block)
        yield WhenEach(comm, [(lay.aggregate_word(b), w, lambda b=b: pass_up(b))
                              for b, w in want.items()], "aggregation")
        yield WordWait(comm, lay.offload_signal, target, "aggregation tree result")

    yield from rounds(comm, src, dst, DTYPE_SIZE[dtype], body, at_work=at_work)

