"""The host agent: netdam's primitives over every device, whatever the path (DESIGN.md
"agent"; SPEC §4, §8).

Owns the host's view of the fabric: a global address space (``Addr(device, offset)`` and
named buffers), the primitives ``read, write, atomic_add, compare_swap, reduce,
multicast, put_signal, wait_signal, fence`` and the near-memory fp8 casts
``quantize_fp8, dequantize_fp8`` (each blocking, each with an ``*_nb`` form returning a
``Handle``; Addr, Handle and the errors live in netdam.handle), the completion queue,
path choice per device (shared-memory rings when the device offers them on this node,
UDP otherwise; callers' code is the same), fragmentation of large messages
(``frag.fragments``) and chunked READs. Its progress engine (``netdam.waiting``) says
how it waits: on sockets, doorbells and watched words. Answers are turned into results
by its completer (``netdam.completer``): a NAK raises ``NakError`` naming the status,
READ answers are reassembled into the caller's buffer; a deadline raises
``NetdamTimeout`` naming the device and the operation. It never waits without a bound.

Single-threaded: there is no background thread; the agent makes progress inside its
calls (``Handle.wait``, ``Agent.poll``, the blocking primitives). Reliability is the
sans-I/O core of ``netdam.transport.reliability``; every request asks for its answer
(the answer, not a cumulative ack, retires it, so every NAK is reported; a NAK that can
only mean a copy damaged in transit, MALFORMED / BAD_VERSION, is left to retransmission).

Zero-copy scale-up: a large READ or WRITE (``direct_min``) to a device on this node's
shared memory, with no other request of ours to it in flight and a region that grants
the access, copies straight from/to the mapped device memory and completes with a FENCE
round trip (so a dead device still fails it with NetdamTimeout).

Data passed to a non-blocking write must not change until its handle is done.
"""

from __future__ import annotations

import itertools
import operator
import os
import struct
import time

import numpy as np

from netdam.collectives.types import NUMPY_TO_DTYPE
from netdam.completer import Completer
from netdam.errors import UsageError
from netdam.handle import Addr, Handle, NakError, NetdamTimeout, SignalWaiter
from netdam.transport.faults import FaultConfig
from netdam.transport.reliability import RelConfig, Reliability
from netdam.transport.shm import Backoff, WatchBell
from netdam.transport.shm import copy as shm_copy
from netdam.transport.udp import UdpEndpoint
from netdam.waiting import Waiting
from netdam.wire.codec import Packet, encode_parts
from netdam.wire.fields import DEFAULT_MTU, DTYPE_SIZE, DType, Flag, Opcode, RedOp, Status
from netdam.wire.frag import Fragment, Reassembler, fragments, max_payload

_PEER = operator.itemgetter(0)
_FIRST_CUT = 16      # fragments of a large message sent before the rest are cut
_U64 = struct.Struct("<Q")
_U64x2 = struct.Struct("<QQ")
_MASK64 = (1 << 64) - 1
_READ, _WRITE = int(Opcode.READ), int(Opcode.WRITE)
_MORE_FRAGS = int(Flag.MORE_FRAGS)
# a chain descriptor's flags as plain ints: IntFlag arithmetic costs microseconds a call
_NO_RESPONSE = int(Flag.NO_RESPONSE)
_SIGNAL, _RESULT_MCAST, _JOIN = (int(Flag.LAST_HOP_SIGNAL), int(Flag.RESULT_MCAST),
                                 int(Flag.JOIN))

#: datagrams an agent queues per device before refusing more (each fails at once)
MAX_QUEUE = 1 << 16
#: seconds an agent busy-polls for an answer before sleeping in poll(): about two round
#: trips of this machine's Python path, so a READ or a short WRITE is answered without a
#: wake-up; set 0 where processes outnumber cores (LocalCluster does, via NETDAM_SPIN)
SPIN = 500e-6


class _Link:
    """How datagrams reach one device: its UDP address, a claimed shared-memory pair, or
    (``relay``) the shared-memory pair of a device of this node that forwards them."""

    __slots__ = ("info", "addr", "shm", "kind")

    def __init__(self, info: dict, shm, kind: str | None = None, addr=None):
        self.info = info
        self.addr = addr or (info["host"], int(info["port"]))   # where datagrams go first
        self.shm = shm                   # the ring pair they go through (None: UDP)
        self.kind = kind or ("shm" if shm is not None else "udp")


def _byte_count(length) -> int:
    """``length`` as a count of bytes (an integer, 0 or more), or a UsageError."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise UsageError(f"a length of {length!r}: expected a count of bytes, 0 or more")
    return int(length)


class Agent(Completer, Waiting):
    """The host agent. ``add_device(info)`` with the JSON a device prints first, then the
    primitives. Use as a context manager, or call ``close()``.

    Knobs: ``host_id`` (this host's member id: the device keeps one replay window per
    id, so two agents must never share one; the control plane assigns them, the default
    is distinct per agent of a process), ``timeout`` (seconds before an operation fails
    with NetdamTimeout), ``mtu`` (largest request datagram), ``faults`` (injected on this
    side's UDP sends), ``reliability`` (window, byte budget, retransmission timers;
    by default at most MAX_QUEUE datagrams wait per device),
    ``read_chunk`` (bytes per READ request; larger READs are split and pipelined),
    ``spin`` (seconds of busy-polling for an answer before sleeping, ``SPIN``; 0 where
    processes outnumber cores, since a spinning host steals the CPU its device needs),
    ``direct_min``
    (READ/WRITE of at least this many bytes to a device on this node's shared memory
    copy straight from/to its mapped memory when the region allows it, then confirm with
    a FENCE round trip; None: always use the rings).
    """

    def __init__(self, host_id: int | None = None, *, timeout: float = 5.0,
                 mtu: int = DEFAULT_MTU, faults: FaultConfig | None = None,
                 reliability: RelConfig | None = None, bind: str = "127.0.0.1",
                 read_chunk: int | None = None, seed: int | None = None,
                 spin: float = SPIN, direct_min: int | None = 256 << 10,
                 capture=None):
        self.host_id = _default_host_id() if host_id is None else host_id
        self.timeout = timeout
        self.rel = Reliability(reliability or RelConfig(deadline=timeout,
                                                        max_queue=MAX_QUEUE), seed=seed)
        self.read_chunk = read_chunk or max(8, self.rel.config.max_bytes // 4)
        self.udp = UdpEndpoint(bind, 0, mtu=mtu, faults=faults)
        self.udp.capture = self.capture = capture   # a netdam.capture.pcap.Capture or None
        self.mtu = self.udp.mtu
        self._one_datagram = max_payload(self.mtu)
        self.direct_min = (1 << 64) if direct_min is None else direct_min
        self._mapped: dict[tuple, object] = {}
        self.links: dict[int, _Link] = {}
        self.regions: dict[int, list[dict]] = {}
        self.buffers: dict[str, tuple[Addr, int]] = {}
        self.reasm = Reassembler()
        self._reads: dict[tuple[int, int], tuple[Handle, int, int]] = {}
        self._req_id = (seed or os.getpid()) * 7919 & 0xFFFFFFF
        # the completion queue, in finishing order (a dict: a handle waited on leaves it
        # in O(1), so handles that are waited on and never polled do not pile up)
        self._cq: dict[Handle, None] = {}
        self._waiters: list[SignalWaiter] = []
        self._shm_links: list[_Link] = []
        self._bell: WatchBell | None = None    # watched words ring here (made with a ring)
        self._backoff = Backoff(spin=spin, max_sleep=5e-3)
        self._completer_init()
        self.counters = {"ops": 0, "dropped_crc": 0, "dropped_malformed": 0,
                         "unexpected": 0, "naks": 0, "timeouts": 0, "shm_full": 0,
                         "direct_writes": 0, "direct_reads": 0, "naks_damaged": 0,
                         "answers_in_runs": 0, "signals_in_place": 0, "sleeps": 0}

    # -- devices and addresses --------------------------------------------------------------
    def add_device(self, info: dict, *, path: str = "auto", via: int | None = None) -> str:
        """Make a device reachable. ``info`` is the JSON a device prints first; ``path`` is
        "auto" (shared memory when offered and present on this node), "shm", "udp", or
        "relay": through device ``via`` of this node, which forwards our requests over
        its network port and hands the answers back on its rings (SPEC §8.6; NCCL calls
        it PXN). Returns the path chosen."""
        if path not in ("auto", "shm", "udp", "relay"):
            raise UsageError(f"path {path!r}: expected auto, shm, udp or relay")
        dev = int(info["id"])
        shm = None
        if path == "relay":
            hop = self.links.get(via)
            if hop is None or hop.kind != "shm":
                raise UsageError(f"device {dev}: relay needs a device of this node reached "
                                 f"over shared memory as via=, not {via!r}")
            link = self.links[dev] = _Link(info, hop.shm, "relay", hop.addr)
            self.regions[dev] = list(info.get("regions") or [])
            return link.kind
        if info.get("shm") and path in ("auto", "shm"):
            from netdam.transport.shm import ShmClient
            if self._bell is None:
                self._bell = WatchBell(self.udp.sock.fileno())
            try:
                shm = ShmClient(info["shm"], wake_port=self.udp.address[1],
                                watch_port=self._bell.port)
            except (OSError, ConnectionError) as exc:
                if path == "shm":
                    raise UsageError(f"device {dev}: shared memory unavailable: {exc}") from None

        elif path == "shm":
            raise UsageError(f"device {dev} offers no shared memory")
        link = self.links[dev] = _Link(info, shm)
        if shm is not None:
            self._shm_links.append(link)
        self.regions[dev] = list(info.get("regions") or [])
        return link.kind

    def path(self, device: int) -> str:
        return self._link(device).kind

    def buffer(self, name: str, addr: Addr | None = None, length: int | None = None):
        """Name a buffer (``buffer(name, addr, length)``) or look one up (``buffer(name)``
        returns ``(addr, length)``)."""
        if addr is None:
            try:
                return self.buffers[name]
            except KeyError:
                raise UsageError(f"no buffer named {name!r}") from None
        self.buffers[name] = (addr, int(length or 0))
        return addr, length

    def map_device_memory(self, addr: Addr, length: int, *, write: bool = True) -> np.ndarray:
        """Zero-copy NumPy view of device memory (shared-memory path only; the region's
        rights decide, see netdam.transport.shm)."""
        link = self._link(addr.device)
        if link.kind != "shm":
            raise PermissionError(f"device {addr.device} is not on this node's shared memory")
        rkey, pkey, region = self._target(addr, length)
        if region is None:
            raise PermissionError(f"device {addr.device} published no region holding "
                                  f"[{addr.offset:#x}, +{length})")
        self._confirm_keys(addr.device, region, rkey, pkey)
        return link.shm.map_device_memory(region, pkey=pkey, offset=addr.offset - region["base"],
                                          length=length, write=write)

    def _confirm_keys(self, device: int, region: dict, rkey: int, pkey: int) -> None:
        """Before mapping a region, ask the device itself whether it holds these keys (a
        one-byte READ), so a stale or forged region description maps nothing."""
        try:
            self.read(Addr(device, region["base"], rkey, pkey), 1)
        except NakError as exc:
            if exc.status != Status.ACCESS_DENIED:   # keys held, READ not granted: fine
                raise PermissionError(f"device {device} refuses region key {rkey:#x}: "
                                      f"{exc.status.name}") from None

    def _link(self, device: int) -> _Link:
        try:
            return self.links[device]
        except KeyError:
            raise UsageError(f"device {device} is unknown to this agent (add_device first)") \
                from None

    def _target(self, addr: Addr, length: int) -> tuple[int, int, dict | None]:
        for reg in self.regions.get(addr.device, ()):
            if reg["base"] <= addr.offset and addr.offset + length <= reg["base"] + reg["length"] \
                    and (addr.rkey is None or addr.rkey == reg["key"]):
                return (reg["key"], reg.get("pkey", 0) if addr.pkey is None else addr.pkey,
                        reg)
        if addr.rkey is not None:
            return addr.rkey, addr.pkey or 0, None
        raise UsageError(f"no region of device {addr.device} holds [{addr.offset:#x}, "
                         f"+{length}) and no rkey was given")

    # -- building and sending requests -------------------------------------------------------
    def _next_req(self) -> int:
        self._req_id = (self._req_id + 1) & 0xFFFFFFFF
        return self._req_id

    def _handle(self, what: str, device: int, timeout: float | None) -> Handle:
        self._link(device)
        self.counters["ops"] += 1
        return Handle(self, what, device, self.timeout if timeout is None else timeout)

    def _template(self, opcode: int, addr: Addr, length: int, **fields) -> Packet:
        rkey, pkey, _ = self._target(addr, length)
        # positional, in the fields' order (half the cost of keywords), then the few
        # fields the primitive sets: opcode flags status dtype redop hop src dst pkey group
        # rkey seq ack req_id addr addr2 imm length
        p = Packet(opcode, 0, 0, 0, 0, 0, self.host_id, addr.device, pkey, 0, rkey, 0, 0,
                   self._next_req(), addr.offset, 0, 0, length)
        for name, value in fields.items():
            setattr(p, name, value)
        return p

    def _submit(self, h: Handle, pkt: Packet, now: float, *, size: int | None = None) -> None:
        h.remaining += 1
        self.rel.submit(h.device, pkt, now, token=h, needs_reply=True, size=size,
                        deadline=h.deadline)

    def _send_message(self, h: Handle, template: Packet, data) -> Handle:
        now = time.monotonic()
        if len(data) <= self._one_datagram:   # the common small case: no generator
            template.payload = data
            template.length = len(data)
            template.flags = int(template.flags) & ~_MORE_FRAGS
            self._submit(h, template, now)
        else:
            # Cutting and queueing a large message takes milliseconds (a 32 MiB one in
            # 1500-byte datagrams, tens of them) while the device waits: its first
            # fragments go out before the rest are cut, and each part's timers start
            # when it is sent, not when it was cut or queued.
            cut = fragments(template, data, self.mtu)
            for size in (_FIRST_CUT, None):
                frags = list(itertools.islice(cut, size))
                h.remaining += len(frags)
                self.rel.submit_many(h.device, frags, time.monotonic(), token=h,
                                     needs_reply=True, deadline=h.deadline)
                self._pump(time.monotonic())
            return h
        self._pump(now)
        return h

    def _direct(self, addr: Addr, length: int, *, write: bool):
        """The zero-copy scale-up path: a view of the device's memory when the device is
        on this node's shared memory, the region grants the access (netdam.transport.shm
        rule) and nothing of ours to that device is in flight, so a direct copy is
        ordered after every earlier request exactly as SPEC §8.4 would apply it."""
        if self.rel.in_flight(addr.device) or self.rel.queued(addr.device):
            return None
        got = self._mapped_region(addr, length, write)
        if got is None:
            return None
        whole, start = got
        self.counters["direct_writes" if write else "direct_reads"] += 1
        return memoryview(whole)[start:start + length]

    def _mapped_region(self, addr: Addr, length: int, write: bool):
        """``(view of the whole region, offset of addr in it)`` for ``[addr, +length)``
        of a device on this node's shared memory, when the region grants the access;
        else None. A region is asked about and mapped once (``_confirm_keys``)."""
        link = self.links.get(addr.device)
        if link is None or link.kind != "shm":
            return None
        try:
            rkey, pkey, region = self._target(addr, length)
        except UsageError:
            return None
        if region is None:
            return None
        key = (addr.device, rkey, write)
        whole = self._mapped.get(key)
        if whole is None:
            try:
                self._confirm_keys(addr.device, region, rkey, pkey)
                whole = link.shm.map_device_memory(region, pkey=pkey, write=write)
            except PermissionError:
                whole = False
            self._mapped[key] = whole
        if whole is False:
            return None
        return whole, addr.offset - region["base"]

    def _confirm(self, h: Handle) -> Handle:
        """Finish a direct copy with a FENCE round trip: the device is alive and has
        applied everything earlier, or the operation fails like any other."""
        pkt = Packet(opcode=Opcode.FENCE, src=self.host_id, dst=h.device,
                     req_id=self._next_req(), flags=Flag.FENCE)
        return self._send_message(h, pkt, b"")

    def _pump(self, now: float) -> None:
        """Put on the wire whatever the reliability core lets go now."""
        if not self.rel.wants_send():
            return
        links, udp = self.links, self.udp
        out = self.rel.datagrams_to_send(now)
        if len(out) == 1 and links[out[0][0]].shm is None:   # one request: no grouping
            dev, pkt = out[0]
            udp.send(pkt, links[dev].addr, now)
            return
        # the core lets each peer's datagrams go together: one group per device
        for dev, group in itertools.groupby(out, _PEER):
            link = links[dev]
            if link.shm is None:         # a message's fragments: one sendmmsg
                udp.send_messages([pkt for _, pkt in group], link.addr, now)
                continue
            for _, pkt in group:
                parts = encode_parts(pkt.packet() if type(pkt) is Fragment else pkt)
                port = link.shm.send(parts)
                if self.capture is not None:   # scale-up datagrams are recorded here
                    self.capture.record(None, self.udp.address, link.addr, parts)
                if port > 0:
                    udp.ring_doorbell(port)
                elif port < 0:
                    self.counters["shm_full"] += 1   # lost; retransmitted on timeout

    # -- the primitives ----------------------------------------------------------------------
    def read_nb(self, addr: Addr, length: int, *, out=None, timeout: float | None = None,
                flags: int = 0) -> Handle:
        """Start reading ``length`` bytes; the handle's result is a bytearray (or ``out``)."""
        if type(length) is not int or length < 0:
            length = _byte_count(length)
        if length > self.read_chunk:    # a range no region holds: refused before allocating
            self._target(addr, length)
        h = self._handle(f"read of {length} bytes at {addr.offset:#x}", addr.device, timeout)
        h.result = bytearray(length) if out is None else out
        if out is not None and len(memoryview(out).cast("B")) < length:
            raise UsageError(f"out buffer of {len(memoryview(out).cast('B'))} bytes < {length}")
        if flags == 0 and length >= self.direct_min:
            mem = self._direct(addr, length, write=False)
            if mem is not None:
                shm_copy(memoryview(h.result).cast("B")[:length], mem)
                return self._confirm(h)
        now = time.monotonic()
        for off in range(0, max(length, 1), self.read_chunk):
            n = min(self.read_chunk, length - off)
            pkt = self._template(_READ, addr + off if off else addr, n, flags=flags)
            self._reads[(addr.device, pkt.req_id)] = (h, off, n)
            self._submit(h, pkt, now, size=n)
        self._pump(now)
        return h

    def write_nb(self, addr: Addr, data, *, timeout: float | None = None,
                 flags: int = 0) -> Handle:
        view = memoryview(data).cast("B")
        h = self._handle(f"write of {len(view)} bytes at {addr.offset:#x}", addr.device, timeout)
        if flags == 0 and len(view) >= self.direct_min:
            mem = self._direct(addr, len(view), write=True)
            if mem is not None:
                shm_copy(mem, view)
                return self._confirm(h)
        return self._send_message(h, self._template(_WRITE, addr, len(view), flags=flags),
                                  view)

    def atomic_add_nb(self, addr: Addr, value: int, *, timeout: float | None = None) -> Handle:
        h = self._handle(f"atomic_add at {addr.offset:#x}", addr.device, timeout)
        pkt = self._template(Opcode.ATOMIC_FADD, addr, 8, dtype=DType.UINT64,
                             payload=_U64.pack(value & _MASK64))
        return self._send_message(h, pkt, pkt.payload)

    def compare_swap_nb(self, addr: Addr, expected: int, new: int, *,
                        timeout: float | None = None) -> Handle:
        h = self._handle(f"compare_swap at {addr.offset:#x}", addr.device, timeout)
        payload = _U64x2.pack(expected & _MASK64, new & _MASK64)
        pkt = self._template(Opcode.ATOMIC_CAS, addr, 16, dtype=DType.UINT64)
        return self._send_message(h, pkt, payload)

    def reduce_nb(self, addr: Addr, data, *, op: int = RedOp.SUM, dtype: int | None = None,
                  timeout: float | None = None, flags: int = 0) -> Handle:
        """memory[addr ..] = op(memory, data) elementwise; ``dtype`` defaults from a NumPy
        array's dtype (name BFLOAT16 / FP8 explicitly)."""
        dt = _dtype_of(data, dtype)
        try:
            op = RedOp(op)
        except ValueError:
            raise UsageError(f"unknown reduce op {op!r}; known: "
                             f"{', '.join(o.name.lower() for o in RedOp if o)}") from None
        view = memoryview(np.ascontiguousarray(data) if isinstance(data, np.ndarray)
                          else data).cast("B")
        h = self._handle(f"reduce {op.name} of {len(view)} bytes at {addr.offset:#x}",
                         addr.device, timeout)
        return self._send_message(
            h, self._template(Opcode.REDUCE, addr, len(view), dtype=dt, redop=op, flags=flags),
            view)

    def multicast_nb(self, group: int, addr: Addr, data, *, timeout: float | None = None,
                     flags: int = 0, signal: Addr | None = None, value: int = 1) -> Handle:
        """Write ``data`` at ``addr.offset`` on every member of ``group``; ``addr.device``
        is the member that receives it and replicates it (SPEC §4.8). With ``signal``
        (an offset, the same on every member), each member then adds ``value`` to its
        own signal word there once the whole message has landed."""
        view = memoryview(data).cast("B")
        h = self._handle(f"multicast of {len(view)} bytes to group {group}", addr.device,
                         timeout)
        extra = {}
        if signal is not None:
            flags |= Flag.LAST_HOP_SIGNAL
            extra = {"addr2": signal.offset, "imm": value & _MASK64}
        return self._send_message(
            h, self._template(Opcode.MULTICAST, addr, len(view), group=group, flags=flags,
                              **extra), view)

    def put_signal_nb(self, addr: Addr, data, signal: Addr, value: int = 1, *,
                      timeout: float | None = None, flags: int = Flag.RELEASE) -> Handle:
        """Write ``data`` at ``addr`` then add ``value`` to the 8-byte word at ``signal``
        (same device); the signal is never visible before the data (SPEC §4.10)."""
        if signal.device != addr.device:
            raise UsageError("put_signal: data and signal must be on the same device")
        view = memoryview(data).cast("B")
        h = self._handle(f"put_signal of {len(view)} bytes at {addr.offset:#x}", addr.device,
                         timeout)
        return self._send_message(
            h, self._template(Opcode.PUT_SIGNAL, addr, len(view), addr2=signal.offset,
                              imm=value & _MASK64, flags=flags), view)

    def reduce_chain_nb(self, route, addr: Addr, length: int, *, dtype: int,
                        op: int = RedOp.SUM, signal: Addr | None = None, value: int = 1,
                        group: int | None = None, join: int | None = None,
                        quiet: bool = False, timeout: float | None = None) -> Handle:
        """Start an in-network reduction (a chain descriptor, SPEC §4.9): device
        ``route[0]`` sends its ``length`` bytes at ``addr.offset`` along ``route``, each
        hop folds in its own bytes at the same offset, the last hop writes the result;
        with ``signal`` it then adds ``value`` to that word, with ``group`` it multicasts
        the result (and the signal) to the group. Done when ``route[0]`` accepted it.

        ``join`` (a device id; needs ``group``): a joined start. The descriptor goes to
        that meeting device, which starts it once every member of ``group`` has sent
        one; done when the meeting device holds it.

        ``quiet``: sent with NO_RESPONSE, so no ACK comes back while things go well;
        the caller says when it has seen the chain's effect (its signal) with
        ``answered(h)``, which finishes the handle. Should that take longer than the
        retransmission timeout, the retransmission asks for the ACK (SPEC §8.2)."""
        route = tuple(map(int, route))
        if not route:
            raise UsageError("reduce_chain needs a route of at least one device")
        if join is not None and group is None:
            raise UsageError("a joined start (join=) needs the group whose members join")
        first = Addr(route[0], addr.offset, addr.rkey, addr.pkey)
        to = route[0] if join is None else int(join)
        h = self._handle(f"reduce_chain of {length} bytes over {len(route)} devices"
                         + ("" if join is None else f", joined at device {to}"), to, timeout)
        flags = (0 if signal is None else _SIGNAL) | (0 if group is None else _RESULT_MCAST) \
            | (0 if join is None else _JOIN) | (_NO_RESPONSE if quiet else 0)
        pkt = self._template(Opcode.REDUCE_FWD, first, length, dtype=dtype, redop=op,
                             route=route, hop=0, group=group or 0, flags=flags, dst=to,
                             addr2=signal.offset if signal is not None else 0,
                             imm=value & _MASK64)
        now = time.monotonic()
        self._submit(h, pkt, now)
        self._pump(now)
        return h

    def quantize_fp8_nb(self, src: Addr, count: int, dst: Addr, scales: Addr, *,
                        dtype: int, fp8: int = DType.FP8_E4M3,
                        timeout: float | None = None) -> Handle:
        """Near-memory cast (SPEC §4.13): the device reads ``count`` elements of ``dtype``
        at ``src`` and writes their fp8 codes at ``dst`` and one float32 scale per 128
        elements at ``scales`` (all three on one device, one region)."""
        return self._fp8_op(Opcode.QUANT_FP8, src, count * DTYPE_SIZE[DType(dtype)], dst,
                            scales, dtype, fp8, f"quantize of {count} {DType(dtype).name}",
                            timeout)

    def dequantize_fp8_nb(self, src: Addr, count: int, dst: Addr, scales: Addr, *,
                          dtype: int, fp8: int = DType.FP8_E4M3,
                          timeout: float | None = None) -> Handle:
        """The reverse cast: ``count`` fp8 codes at ``src`` with their scales at
        ``scales`` become elements of ``dtype`` at ``dst``."""
        return self._fp8_op(Opcode.DEQUANT_FP8, src, count, dst, scales, dtype, fp8,
                            f"dequantize of {count} {DType(fp8).name}", timeout)

    def _fp8_op(self, opcode, src: Addr, length: int, dst: Addr, scales: Addr, dtype, fp8,
                what: str, timeout) -> Handle:
        if not src.device == dst.device == scales.device:
            raise UsageError("fp8 casts run inside one device: src, dst and scales must "
                             "be on the same device")
        h = self._handle(what, src.device, timeout)
        pkt = self._template(opcode, src, length, dtype=dtype, redop=fp8,
                             addr2=dst.offset, imm=scales.offset)
        now = time.monotonic()
        self._submit(h, pkt, now)    # no operand: length names the source, not a payload
        self._pump(now)
        return h

    def fence_nb(self, device: int, *, timeout: float | None = None) -> Handle:
        """Completes once every earlier request of this host to ``device`` was applied."""
        h = self._handle("fence", device, timeout)
        pkt = Packet(opcode=Opcode.FENCE, src=self.host_id, dst=device,
                     req_id=self._next_req(), flags=Flag.FENCE)
        return self._send_message(h, pkt, b"")

    def wait_signal_nb(self, signal: Addr, value: int, *, timeout: float | None = None,
                       interval: float = 200e-6) -> Handle:
        """Completes when the 8-byte word at ``signal`` reaches ``value`` (unsigned >=);
        result: the word. Polls with READs, ``interval`` apart at most; an aligned word
        of a device on this node's shared memory whose region this host may read is
        looked at in place instead (no READs), and the agent's sleeps watch it, so the
        device's doorbell ends them when it arrives."""
        if not 0 <= value <= _MASK64:
            raise UsageError(f"wait_signal for {value}: a signal word holds 0..2**64-1")
        h = self._handle(f"wait_signal >= {value} at {signal.offset:#x}", signal.device,
                         timeout)
        word = None
        got = self._mapped_region(signal, 8, False) if signal.offset % 8 == 0 else None
        if got is not None:
            whole, start = got
            word = whole[start:start + 8].view("<u8")
            self.counters["signals_in_place"] += 1
        self._waiters.append(SignalWaiter(h, signal, value, interval, self._finish, word))
        return h

    def read(self, addr: Addr, length: int, **kw) -> bytearray:
        return self._block(self.read_nb(addr, length, **kw))

    def write(self, addr: Addr, data, **kw) -> None:
        self._block(self.write_nb(addr, data, **kw))

    def atomic_add(self, addr: Addr, value: int, **kw) -> int:
        """Fetch-and-add on a uint64 word (wraps); returns the old value."""
        return self._block(self.atomic_add_nb(addr, value, **kw))

    def compare_swap(self, addr: Addr, expected: int, new: int, **kw) -> int:
        """Returns the old value; the swap happened iff it equals ``expected``."""
        return self._block(self.compare_swap_nb(addr, expected, new, **kw))

    def reduce(self, addr: Addr, data, **kw) -> None:
        self._block(self.reduce_nb(addr, data, **kw))

    def multicast(self, group: int, addr: Addr, data, **kw) -> None:
        self._block(self.multicast_nb(group, addr, data, **kw))

    def put_signal(self, addr: Addr, data, signal: Addr, value: int = 1, **kw) -> None:
        self._block(self.put_signal_nb(addr, data, signal, value, **kw))

    def wait_signal(self, signal: Addr, value: int, **kw) -> int:
        return self._block(self.wait_signal_nb(signal, value, **kw))

    def reduce_chain(self, route, addr: Addr, length: int, **kw) -> None:
        self._block(self.reduce_chain_nb(route, addr, length, **kw))

    def quantize_fp8(self, src: Addr, count: int, dst: Addr, scales: Addr, **kw) -> None:
        self.quantize_fp8_nb(src, count, dst, scales, **kw).wait()

    def dequantize_fp8(self, src: Addr, count: int, dst: Addr, scales: Addr, **kw) -> None:
        self.dequantize_fp8_nb(src, count, dst, scales, **kw).wait()

    def fence(self, device: int, **kw) -> None:
        self._block(self.fence_nb(device, **kw))

    # -- completions ---------------------------------------------------------------------------
    def poll(self, max_items: int | None = None, timeout: float = 0.0) -> list[Handle]:
        """The completion queue: non-blocking operations that finished since the last call
        (waiting up to ``timeout`` for at least one)."""
        end = time.monotonic() + timeout
        self.progress(0.0)
        while not self._cq and time.monotonic() < end:
            self.progress(end - time.monotonic())
        out = []
        while self._cq and (max_items is None or len(out) < max_items):
            h = next(iter(self._cq))
            del self._cq[h]
            out.append(h)
        return out

    def wait_all(self, handles, timeout: float | None = None) -> list:
        return [h.wait(timeout) for h in handles]

    def _finish(self, h: Handle, error: BaseException | None = None) -> None:
        if h.finished:
            return
        h.finished = True
        h.error = error
        if error is not None:
            self.rel.cancel(h.device, lambda t: t is h)
            for key in [k for k, (hh, _, _) in self._reads.items() if hh is h]:
                del self._reads[key]
                self.reasm.discard(key)
        if not h.queued:
            h.queued = True
            self._cq[h] = None

    def _consume(self, h: Handle) -> None:
        """A handle waited on is no longer news for ``poll``."""
        self._cq.pop(h, None)

    def _block(self, h: Handle):
        """Wait for an operation started by a blocking primitive (it never shows in the
        completion queue)."""
        h.queued = True
        return h.wait()

    def answered(self, h: Handle) -> None:
        """The caller saw the effect of ``h`` (a ``quiet`` request), so it arrived: its
        datagrams are retired as their ACK would have retired them."""
        if not h.finished:
            for r in self.rel.answered(h.device, h, time.monotonic()):
                self._datagram_done(r.token)

    def _datagram_done(self, h: Handle, n: int = 1) -> None:
        h.remaining -= n
        if h.remaining <= 0:
            self._finish(h)

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()
        self._mapped.clear()
        for link in self._shm_links:
            link.shm.close()
        self._shm_links = []
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        self.udp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_agents_made = itertools.count()


def _default_host_id() -> int:
    """A member id for an agent nobody named: distinct for every agent of this process
    and, best effort, from other processes' (the control plane should assign ids)."""
    return 0x8000 | (((os.getpid() << 4) + next(_agents_made)) & 0x7FFF)


def _dtype_of(data, dtype: int | None) -> int:
    if dtype is not None:
        return DType(dtype)
    if isinstance(data, np.ndarray):
        try:
            return NUMPY_TO_DTYPE[data.dtype.name]
        except KeyError:
            raise UsageError(f"no netdam dtype for NumPy {data.dtype}; pass dtype=") from None
    return DType.UINT8


__all__ = ["Agent", "Addr", "Handle", "NetdamTimeout", "NakError"]
