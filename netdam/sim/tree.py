"""The aggregation tree's host steps, in the shape a virtual-time driver can run.

Owns the simulator's copy of the one part of ``netdam.collectives.offload`` it cannot
drive unchanged: ``offload.tree_allreduce`` passes blocks up inside one device step
that busy-polls words until all of them are in (the right thing on real hosts; a
simulated host cannot wait inside a call). Here the same step registers one watch per
block with ``when_each`` instead; everything else is offload's own: the round
structure, the tree shape (``tree_children`` / ``tree_parent``), the layout's
aggregation words, the descriptors and the result multicast, all executed by the
simulated devices.
"""

from __future__ import annotations

from netdam.collectives import offload
from netdam.wire.fields import DTYPE_SIZE, DType, RedOp


def tree_allreduce(comm, src, dst, dtype: DType, op: RedOp):
    n, rank, lay, agent, ch = comm.size, comm.rank, comm.layout, comm.agent, comm.channels
    home = comm.areas[rank]
    devices = [a.device for a in comm.areas]
    radix = comm.tree_radix

    def body(spans):
        want = {}
        for b, (lo, hi) in enumerate(spans):
            if hi > lo:
                comm.tree_counts[b] += len(offload.tree_children((rank - b) % n, n, radix))
                want[b] = comm.tree_counts[b]
        comm.chain_blocks += len(want)
        target = comm.chain_blocks

        def pass_up(b: int):
            lo, hi = spans[b]
            pos = (rank - b) % n
            if pos == 0:    # the root: the sum goes down to every member
                agent.multicast_nb(comm.group, home + (lay.work + lo),
                                   offload._block_of(ch, lay.work + lo, hi - lo),
                                   signal=home + lay.offload_signal)
            else:           # fold my partial sum into my parent's memory
                parent = devices[(b + offload.tree_parent(pos, radix)) % n]
                agent.reduce_chain_nb([devices[rank], parent], home + (lay.work + lo),
                                      hi - lo, dtype=dtype, op=op,
                                      signal=home + lay.aggregate_word(b))

        yield lambda: ch.when_each([(lay.aggregate_word(b), w, lambda b=b: pass_up(b))
                                    for b, w in want.items()])
        yield lambda: ch.wait_word(lay.offload_signal, target, "aggregation tree result")

    yield from offload._rounds(comm, src, dst, DTYPE_SIZE[dtype], body)


__all__ = ["tree_allreduce"]
