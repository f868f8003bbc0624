"""The device's cost model: how long an instruction keeps a NetDAM device busy (SPEC_device §8).

Owns the numbers the device and the simulator use for time: link rate and latency,
memory and ALU throughput, per-packet pipeline cost and the host's PCIe crossing. They
are calibrated on the NetDAM prototype (FPGA with HBM, 100 GbE): a remote 8-byte read
costs about 600 ns end to end (the paper measures 618 ns) and the SIMD reduce keeps up
with the link. Nothing here sleeps: the device adds ``cost`` to its ``busy_ns`` counter
and the simulator schedules with it.

Units: ``*_ns`` are nanoseconds; ``link_gbps`` is gigabits per second (Ethernet
convention); ``dram_gbps``, ``alu_gbps`` and ``pcie_gbps`` are gigaBYTES per second
(memory convention: 460 GB/s is the prototype's HBM). One GB/s moves one byte per ns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from netdam.wire.fields import CAPS, HEADER_LEN, TRAILER_LEN, Cap, Opcode

# plain ints: IntFlag arithmetic costs microseconds per operation on the hot path
_READS, _WRITES, _REDUCE, _ATOMIC = (int(Cap.READS), int(Cap.WRITES), int(Cap.REDUCE),
                                     int(Cap.ATOMIC))

#: Ethernet preamble + header + FCS + inter-frame gap, IPv4 and UDP headers, in bytes
FRAME_OVERHEAD = 8 + 14 + 4 + 12 + 20 + 8


@dataclass(frozen=True)
class TimingModel:
    """Named cost parameters with the prototype's defaults (100 GbE)."""

    link_gbps: float = 100.0       #: line rate, Gbit/s
    link_latency_ns: float = 500.0  #: fabric round trip (propagation, PHY, switch), request + reply
    dram_gbps: float = 460.0       #: device memory bandwidth, GB/s (HBM of the prototype)
    alu_gbps: float = 400.0        #: SIMD reduce throughput, GB/s of operand
    pipeline_ns: float = 100.0     #: fixed per-packet cost: parse, key check, build reply
    atomic_ns: float = 20.0        #: read-modify-write of one word beyond the pipeline
    pcie_crossing_ns: float = 900.0  #: one host <-> device crossing (doorbell, DMA setup)
    pcie_gbps: float = 25.0        #: host <-> device DMA bandwidth, GB/s

    def __post_init__(self):
        for name in ("link_gbps", "dram_gbps", "alu_gbps", "pcie_gbps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    # -- presets ---------------------------------------------------------------------
    @classmethod
    def ethernet(cls, gbps: float) -> "TimingModel":
        """The default device on a link of ``gbps`` (100, 200, 400...)."""
        return cls(link_gbps=float(gbps))

    def with_(self, **changes) -> "TimingModel":
        return replace(self, **changes)

    # -- costs -----------------------------------------------------------------------
    def wire_ns(self, datagram_bytes: int) -> float:
        """Serialisation time of one datagram of ``datagram_bytes`` on the link."""
        return (datagram_bytes + FRAME_OVERHEAD) * 8.0 / self.link_gbps

    def cost(self, opcode: int, nbytes: int, caps: int | None = None) -> float:
        """Busy time (ns) of the device executing ``opcode`` over ``nbytes`` of operand.

        Branches on capability bits: memory is read and/or written at ``dram_gbps``,
        reductions also pass the ALU, atomics add one read-modify-write. An opcode with
        unknown capabilities (a user instruction registered elsewhere) costs a read and
        a write.
        """
        caps = int(CAPS.get(opcode, _READS | _WRITES) if caps is None else caps)
        ns = self.pipeline_ns
        passes = bool(caps & _READS) + bool(caps & _WRITES)
        ns += passes * nbytes / self.dram_gbps
        if caps & _REDUCE:
            ns += nbytes / self.alu_gbps
        if caps & _ATOMIC:
            ns += self.atomic_ns
        return ns

    def run_cost(self, opcode: int, count: int, nbytes: int, caps: int | None = None) -> float:
        """``cost`` summed over ``count`` requests of ``nbytes`` operand bytes in all
        (a run of fragments: the cost is affine in the bytes)."""
        base = self.cost(opcode, 0, caps)
        return (count - 1) * base + self.cost(opcode, nbytes, caps)

    def pcie_ns(self, nbytes: int) -> float:
        """Host <-> device transfer of ``nbytes`` (scale-up path)."""
        return self.pcie_crossing_ns + nbytes / self.pcie_gbps

    def round_trip_ns(self, opcode: int, request_payload: int, reply_payload: int,
                      nbytes: int | None = None) -> float:
        """Request out, execution, reply back: what a remote requester waits for."""
        head = HEADER_LEN + TRAILER_LEN
        op_bytes = request_payload + reply_payload if nbytes is None else nbytes
        return (self.link_latency_ns + self.wire_ns(head + request_payload)
                + self.cost(opcode, op_bytes) + self.wire_ns(head + reply_payload))

    def remote_read_ns(self, nbytes: int = 8) -> float:
        """A READ of ``nbytes`` answered in one datagram (the paper's 618 ns for 8 B)."""
        return self.round_trip_ns(Opcode.READ, 0, nbytes, nbytes)


#: presets
ETH_100G = TimingModel.ethernet(100)
ETH_200G = TimingModel.ethernet(200)
ETH_400G = TimingModel.ethernet(400)
PRESETS = {"100g": ETH_100G, "200g": ETH_200G, "400g": ETH_400G}

__all__ = ["TimingModel", "ETH_100G", "ETH_200G", "ETH_400G", "PRESETS", "FRAME_OVERHEAD"]
