"""The instruction table: one row per opcode (SPEC §4, SPEC_device §3, §6, §7).

Owns what each instruction does. A row (``Instruction``) holds the opcode's capability
bits (taken from ``netdam.wire.fields.CAPS``, the one wire definition), the flags the
opcode implies (FENCE implies the FENCE flag), and three functions:

- ``validate(ctx, pkt) -> Status``: header checks that need no memory (dtype and reduce
  op, payload length, group and route), in SPEC §4.2 order;
- ``operands(ctx, pkt) -> [Access]``: every memory range the request will touch, each
  with the rights it needs and its alignment; the device passes each to the one access
  check (``Memory.check``) before calling the handler;
- ``handler(ctx, pkt) -> [Out]``: applies the request (all checks passed) and returns the
  datagrams to send: its response, forwarded copies. The device adds the ACK of a request
  whose row has no RESPONDS capability. A handler refuses by raising ``InstructionError``
  (or ``alu.AluError``) *before* it writes anything.

Rules of this file: behaviour branches on capability bits and row fields, never on lists
of opcodes; ACK and NAK packets are built here (``make_ack`` / ``make_nak``) and nowhere
else; user-defined instructions (0xC0..0xFE) become rows through
``InstructionTable.register_instruction`` and get default validate/operands derived from
their capability bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from firmware_model import alu
from firmware_model.memory import WRITE_ANY, Access, Memory, Rights
from firmware_model.replay import MessageTracker
from netdam.wire.codec import Packet
from netdam.wire.fields import (CAPS, DTYPE_SIZE, USER_OPCODES, Cap, DType, Flag, Opcode,
                                Status)
from netdam.wire.frag import fragment, fragments, max_payload

MASK64 = (1 << 64) - 1
FP8_BLOCK = 128                      #: elements per scale (QUANT_FP8 / DEQUANT_FP8)
FP8_FORMATS = (DType.FP8_E4M3, DType.FP8_E5M2)
FP8_SOURCES = (DType.FLOAT32, DType.BFLOAT16, DType.FLOAT16)
#: flags a forwarded packet keeps (ordering and reliability flags belong to one hop)
FORWARD_KEEP = int(Flag.MORE_FRAGS | Flag.LAST_HOP_SIGNAL | Flag.RESULT_MCAST | Flag.MCAST_COPY)
# plain ints on the per-fragment path: IntFlag arithmetic builds enum members, which
# cost more than the rest of a chain hop's bookkeeping
_MORE, _SIGNAL = int(Flag.MORE_FRAGS), int(Flag.LAST_HOP_SIGNAL)
_RESULT_MCAST, _COPY = int(Flag.RESULT_MCAST), int(Flag.MCAST_COPY)
_JOIN = int(Flag.JOIN)
_MULTICAST = int(Opcode.MULTICAST)
#: rights that let a request bump a signal word
SIGNAL_NEED = (Rights.ATOMIC,) + WRITE_ANY
_PAYLOAD = int(Cap.PAYLOAD)
_ACK = int(Opcode.ACK)
_READ_RESP, _ATOMIC_RESP = int(Opcode.READ_RESP), int(Opcode.ATOMIC_RESP)
_READ_NEED, _ATOMIC_NEED = (Rights.READ,), (Rights.ATOMIC,)   # per request: no enum lookups
_IDEMPOTENT, _WRITES, _RESPONDS = int(Cap.IDEMPOTENT), int(Cap.WRITES), int(Cap.RESPONDS)


class Out(NamedTuple):
    """A datagram to send: ``dest`` None = back to the source address of the datagram
    being handled; otherwise a member id the glue maps to an address."""

    dest: int | None
    packet: Packet


class InstructionError(Exception):
    """A handler refuses a request; the device answers NAK ``status`` (default USER_ERROR).

    Raise it before writing anything: the device never half-applies.
    """

    def __init__(self, status: int = Status.USER_ERROR, message: str = ""):
        self.status = Status(status) if status else Status.USER_ERROR
        super().__init__(message or self.status.name)


def _answer(opcode: int, device_id: int, pkt: Packet, imm: int = 0,
            payload=b"") -> Packet:
    """A response to ``pkt`` from ``device_id``: seq, req_id, keys, dtype, addr, length
    and frag_off echoed. Positional (half the cost of keywords, once per request), in the
    fields' order: opcode flags status dtype redop hop src dst pkey group rkey seq ack
    req_id addr addr2 imm length frag_off route payload."""
    return Packet(opcode, 0, 0, pkt.dtype, 0, 0, device_id, pkt.src, pkt.pkey, 0, pkt.rkey,
                  pkt.seq, 0, pkt.req_id, pkt.addr, 0, imm, pkt.length, pkt.frag_off, (),
                  payload)


def make_ack(device_id: int, pkt: Packet) -> Packet:
    """ACK of ``pkt`` (SPEC §4.7): seq, req_id, addr, length, frag_off echoed, imm = opcode."""
    return _answer(_ACK, device_id, pkt, pkt.opcode)


def make_nak(device_id: int, status: int, *, src: int = 0, seq: int = 0, req_id: int = 0,
             opcode: int = 0, addr: int = 0, length: int = 0, frag_off: int = 0,
             pkey: int = 0, rkey: int = 0) -> Packet:
    """NAK (SPEC §7.2): the one place a rejection becomes a packet."""
    return Packet(opcode=Opcode.NAK, status=int(status), src=device_id, dst=src, pkey=pkey,
                  rkey=rkey, seq=seq, req_id=req_id, imm=opcode, addr=addr, length=length,
                  frag_off=frag_off)


def nak_for(device_id: int, pkt: Packet, status: int) -> Packet:
    return make_nak(device_id, status, src=pkt.src, seq=pkt.seq, req_id=pkt.req_id,
                    opcode=pkt.opcode, addr=pkt.addr, length=pkt.length,
                    frag_off=pkt.frag_off, pkey=pkt.pkey, rkey=pkt.rkey)


class Context:
    """What a handler may use: the device's identity, memory, groups and helpers."""

    def __init__(self, device_id: int, memory: Memory, mtu: int, tracker: MessageTracker):
        self.device_id = device_id
        self.memory = memory
        self.mtu = mtu
        self.one_datagram = max_payload(mtu)   #: payload bytes one answer datagram carries
        self.tracker = tracker
        self.groups: dict[int, tuple[int, ...]] = {}
        self.chains: dict[int, tuple[int, ...]] = {}
        self.now = 0.0
        self.signals = 0      # signal words bumped (read by the device's counters)
        #: joined starts held (SPEC §4.9): group -> {sender: descriptor}, and since when
        self.joins: dict[int, dict[int, Packet]] = {}
        self.join_since: dict[int, float] = {}
        self.joins_started = 0   # descriptors a complete join started (counters)
        self.answer_views = False   # answers may view memory (sent before it changes)

    # -- memory ----------------------------------------------------------------------
    def mem(self, addr: int, length: int) -> memoryview:
        """Writable view of device memory (only ranges the operands declared)."""
        return self.memory.slice(addr, length)

    def array(self, dtype, addr: int, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return self.memory.bytes[addr:addr + count * dt.itemsize].view(dt)

    def check(self, pkt: Packet, access: Access) -> None:
        """Extra access check for a handler; raises InstructionError on failure."""
        st = self.memory.check(pkt.rkey, pkt.pkey, access)
        if st:
            raise InstructionError(st)

    def add_signal(self, rkey: int, pkey: int, addr: int, addend: int) -> bool:
        """Add ``addend`` (uint64, wrapping) to the little-endian word at ``addr``."""
        if self.memory.check(rkey, pkey, Access(addr, 8, SIGNAL_NEED, 8)):
            return False  # revoked since the first fragment was checked
        word = self.memory.slice(addr, 8)
        value = (int.from_bytes(word, "little") + addend) & MASK64
        word[:] = value.to_bytes(8, "little")
        self.signals += 1
        return True

    def drop_joins(self, group: int) -> int:
        """Forget the joined starts held for ``group``; how many there were."""
        self.join_since.pop(group, None)
        return len(self.joins.pop(group, ()))

    def expire_joins(self, before: float) -> int:
        """Drop every group's joined starts held since before ``before`` (a member that
        never joined: its job failed); how many were dropped."""
        return sum(self.drop_joins(g) for g, t in list(self.join_since.items())
                   if t < before)

    # -- packets ---------------------------------------------------------------------
    def reply(self, pkt: Packet, opcode: int, payload=b"", **changes) -> Out:
        """A response to ``pkt`` (echoes seq, req_id, keys, addr, length, frag_off)."""
        p = _answer(opcode, self.device_id, pkt, 0, payload)
        return Out(None, p.copy(**changes) if changes else p)

    def forward(self, dest: int, pkt: Packet, *, keep: int = FORWARD_KEEP,
                **changes) -> Out:
        """A copy of ``pkt`` for device ``dest``: src = this device, seq 0 (the glue's
        reliability layer numbers it), flags outside ``keep`` (hop-local ones) cleared."""
        flags = (pkt.flags & keep) | changes.pop("flags", 0)
        return Out(dest, pkt.copy(src=self.device_id, dst=dest, seq=0, ack=0, status=0,
                                  flags=flags, **changes))


Handler = Callable[[Context, Packet], list[Out]]
Validator = Callable[[Context, Packet], int]
Operands = Callable[[Context, Packet], Sequence[Access]]


@dataclass(frozen=True)
class Instruction:
    """One row of the instruction table."""

    opcode: int
    name: str
    caps: Cap
    handler: Handler
    validate: Validator
    operands: Operands
    implied: int = 0          #: flags the opcode implies (FENCE -> Flag.FENCE)
    user: bool = False

    def __post_init__(self):
        # capability bits as a plain int: IntFlag arithmetic is slow on the hot path
        bits = int(self.caps)
        object.__setattr__(self, "bits", bits)
        # how a duplicate is answered (SPEC §8.3), decided once per row, not per request:
        # idempotent requests that write nothing (READ) are simply executed again;
        # other requests that answer with data (atomics) keep their replies
        reruns = bool(bits & _IDEMPOTENT) and not bits & _WRITES
        object.__setattr__(self, "reruns", reruns)
        object.__setattr__(self, "saves_replies", bool(bits & _RESPONDS) and not reruns)

    def has(self, cap: int) -> bool:
        return bool(self.bits & int(cap))

    def operand_bytes(self, pkt: Packet) -> int:
        """Bytes the instruction moves (for the cost model)."""
        return len(pkt.payload) if self.bits & _PAYLOAD else pkt.length


# -- shared checks -------------------------------------------------------------------------
def _esize(pkt: Packet) -> int:
    return DTYPE_SIZE.get(pkt.dtype, 1)


def _dtype_known(pkt: Packet) -> int:
    return Status.OK if pkt.dtype in DTYPE_SIZE else Status.BAD_DTYPE


def _fragment_fits(pkt: Packet) -> int:
    ok = pkt.frag_off + len(pkt.payload) <= pkt.length
    return Status.OK if ok else Status.LENGTH_MISMATCH


def _no_payload(pkt: Packet) -> int:
    return Status.LENGTH_MISMATCH if len(pkt.payload) else Status.OK


def _reduce_valid(pkt: Packet) -> int:
    if pkt.dtype not in DTYPE_SIZE:
        return Status.BAD_DTYPE
    return alu.check(pkt.dtype, pkt.redop)


def _first(*checks) -> int:
    for st in checks:
        if st:
            return st
    return Status.OK


def _data(pkt: Packet, need, align: int = 1) -> Access:
    """The fragment's own range: addr + frag_off, payload bytes."""
    return Access(pkt.addr + pkt.frag_off, len(pkt.payload), need, align)


def _signal(pkt: Packet) -> Access:
    return Access(pkt.addr2, 8, SIGNAL_NEED, 8)


def signal_key(kind: str, origin: int, pkt: Packet) -> tuple:
    return (kind, origin, pkt.req_id, pkt.addr, pkt.addr2)


def write_and_signal(ctx: Context, pkt: Packet, key: tuple | None, payload=None) -> None:
    """Write the fragment (``payload``, default the packet's); with a signal key, bump the
    signal after the message's last byte."""
    if key is not None and not ctx.tracker.has_room(key):
        raise InstructionError(Status.BUSY, "signal message table full")
    data = pkt.payload if payload is None else payload
    n = len(data)
    start = pkt.addr + pkt.frag_off
    if n:
        ctx.mem(start, n)[:] = data
    if key is not None:
        done = ctx.tracker.add(key, pkt.length, pkt.frag_off, pkt.frag_off + n, ctx.now,
                               (pkt.rkey, pkt.pkey, pkt.addr2, pkt.imm))
        if done is not None:
            ctx.add_signal(*done)


def need_for(caps: int) -> tuple[Rights, ...]:
    """Rights a request with ``caps`` needs on its range (SPEC_device §2.2)."""
    if caps & Cap.REDUCE:
        return (Rights.REDUCE,)
    if caps & Cap.ATOMIC:
        return (Rights.ATOMIC,)
    read = Rights.READ if caps & Cap.READS else Rights.NONE
    if caps & Cap.WRITES:
        return tuple(read | w for w in WRITE_ANY)
    return (read,)


# -- READ ----------------------------------------------------------------------------------
def _read_validate(ctx, pkt):
    return _first(_dtype_known(pkt), _no_payload(pkt))


def _read_operands(ctx, pkt):
    return [Access(pkt.addr, pkt.length, _READ_NEED)]


def _read(ctx: Context, pkt: Packet) -> list[Out]:
    data = ctx.mem(pkt.addr, pkt.length)
    if not ctx.answer_views:                      # a snapshot: memory may change before
        data = bytes(data)                        # the answer leaves
    out = ctx.reply(pkt, _READ_RESP, data)
    out.packet.frag_off = 0
    if len(data) <= ctx.one_datagram:             # the common small READ: one answer
        return [out]
    return [Out(None, f) for f in fragments(out.packet, data, ctx.mtu)]   # one shared head


# -- WRITE ---------------------------------------------------------------------------------
def _write_validate(ctx, pkt):
    return _first(_dtype_known(pkt), _fragment_fits(pkt))


def _write_operands(ctx, pkt):
    return [_data(pkt, WRITE_ANY)]


def _write(ctx: Context, pkt: Packet) -> list[Out]:
    write_and_signal(ctx, pkt, None)
    return []


# -- atomics -------------------------------------------------------------------------------
_ATOMIC_PAYLOAD = {Opcode.ATOMIC_FADD: 8, Opcode.ATOMIC_CAS: 16}


def _atomic_validate(ctx, pkt):
    size = _ATOMIC_PAYLOAD[pkt.opcode]
    ok = len(pkt.payload) == size and pkt.frag_off == 0
    return _first(_dtype_known(pkt), Status.OK if ok else Status.LENGTH_MISMATCH)


def _atomic_operands(ctx, pkt):
    return [Access(pkt.addr, 8, _ATOMIC_NEED, 8)]


def _atomic(ctx: Context, pkt: Packet) -> list[Out]:
    word = ctx.mem(pkt.addr, 8)
    old = bytes(word)
    operand = bytes(pkt.payload)
    if len(operand) == 8:     # FADD
        new = (int.from_bytes(old, "little") + int.from_bytes(operand, "little")) & MASK64
        word[:] = new.to_bytes(8, "little")
    elif old == operand[:8]:  # CAS: compare, swap
        word[:] = operand[8:16]
    return [ctx.reply(pkt, _ATOMIC_RESP, old, length=8)]


# -- REDUCE --------------------------------------------------------------------------------
def _reduce_validate(ctx, pkt):
    return _first(_reduce_valid(pkt), _fragment_fits(pkt))


def _reduce_operands(ctx, pkt):
    return [_data(pkt, (Rights.REDUCE,), _esize(pkt))]


def _reduce(ctx: Context, pkt: Packet) -> list[Out]:
    n = len(pkt.payload)
    if n:
        alu.reduce_into(ctx.mem(pkt.addr + pkt.frag_off, n), pkt.payload, pkt.dtype, pkt.redop)
    return []


# -- REDUCE_FWD (the NetDAM chain) ---------------------------------------------------------
def _route(ctx: Context, pkt: Packet) -> tuple[int, ...]:
    return tuple(pkt.route) if pkt.route else ctx.chains.get(pkt.group, ())


def _is_last_hop(ctx, pkt) -> bool:
    return pkt.hop == len(_route(ctx, pkt)) - 1


def _is_start(pkt: Packet) -> bool:
    """A chain descriptor (SPEC §4.9): hop 0 and no payload for a non-empty message; the
    first device starts the chain from its own memory, so the host sends one packet."""
    return pkt.hop == 0 and not len(pkt.payload) and pkt.length > 0


def _chain_validate(ctx, pkt):
    st = _first(_reduce_valid(pkt), _fragment_fits(pkt))
    if st:
        return st
    route = _route(ctx, pkt)
    if pkt.flags & _JOIN:    # a joined start: held here, started at route[0] (any device)
        if pkt.hop or len(pkt.payload):
            return Status.MALFORMED
        if not route or route[0] not in ctx.groups.get(pkt.group, ()):
            return Status.BAD_GROUP     # an unknown group, or a start outside it
        if pkt.src in ctx.joins.get(pkt.group, ()):
            return Status.BUSY
        if route[0] != ctx.device_id or not pkt.length:
            return Status.OK        # its route[0] checks the rest when it is started
    if not route or pkt.hop >= len(route) or route[pkt.hop] != ctx.device_id:
        return Status.BAD_GROUP
    if (pkt.hop == len(route) - 1 and pkt.flags & _RESULT_MCAST
            and pkt.group not in ctx.groups):
        return Status.BAD_GROUP
    return Status.OK


def _chain_operands(ctx, pkt):
    if pkt.flags & _JOIN and (_route(ctx, pkt)[0] != ctx.device_id or not pkt.length):
        return []       # nothing of this device's memory (checked at route[0], or none)
    if _is_start(pkt):
        ops = [Access(pkt.addr, pkt.length, (Rights.REDUCE,), _esize(pkt))]
    else:
        ops = [_data(pkt, (Rights.REDUCE,), _esize(pkt))]
    if _is_last_hop(ctx, pkt) and pkt.flags & _SIGNAL:
        ops.append(_signal(pkt))
    return ops


def _chain_start(ctx: Context, pkt: Packet, route: tuple[int, ...]) -> list[Out]:
    """Run a chain descriptor: cut this device's own data into fragments and send them
    to the next hop (or, on a one-device chain, finish them here)."""
    data = bytes(ctx.mem(pkt.addr, pkt.length))
    if len(route) > 1:
        template = ctx.forward(route[1], pkt, hop=1, route=route, payload=b"").packet
        return [Out(route[1], f) for f in fragment(template, data, ctx.mtu)]
    outs: list[Out] = []
    template = pkt.copy(payload=b"", flags=pkt.flags & ~Flag.ACK_REQ)
    for f in fragment(template, data, ctx.mtu):
        outs += chain_last_hop(ctx, f, route, reduce=False)
    return outs


def _join(ctx: Context, pkt: Packet) -> list[Out]:
    """Hold a joined start; once every member of its group has sent one, start them
    all (SPEC §4.9): first forward each one whose route starts elsewhere (a datagram
    each, so that no device waits behind this one's fragments), then start those whose
    route starts here. An empty one only counted its sender."""
    held = ctx.joins.setdefault(pkt.group, {})
    if not held:
        ctx.join_since[pkt.group] = ctx.now
    held[pkt.src] = pkt.copy(flags=pkt.flags & ~_JOIN, payload=b"")
    if len(held) < len(ctx.groups[pkt.group]):
        return []
    ctx.drop_joins(pkt.group)
    here: list[tuple[Packet, tuple[int, ...]]] = []
    outs: list[Out] = []
    for p in held.values():
        if p.length:
            route = _route(ctx, p)
            if route[0] == ctx.device_id:
                here.append((p, route))
            else:
                outs.append(ctx.forward(route[0], p))
    ctx.joins_started += len(outs) + len(here)
    for p, route in here:
        outs += _chain_start(ctx, p, route)
    return outs


def _chain(ctx: Context, pkt: Packet) -> list[Out]:
    if pkt.flags & _JOIN:
        return _join(ctx, pkt)
    route = _route(ctx, pkt)
    if _is_start(pkt):
        return _chain_start(ctx, pkt, route)
    n = len(pkt.payload)
    start = pkt.addr + pkt.frag_off
    if pkt.hop < len(route) - 1:
        acc = bytearray(pkt.payload)          # payload = redop(payload, memory)
        if n:
            alu.reduce_into(acc, ctx.mem(start, n), pkt.dtype, pkt.redop)
        nxt = route[pkt.hop + 1]
        return [ctx.forward(nxt, pkt, hop=pkt.hop + 1, route=route, payload=acc)]
    return chain_last_hop(ctx, pkt, route)


def chain_last_hop(ctx: Context, pkt: Packet, route: tuple[int, ...], *,
                    reduce: bool = True) -> list[Out]:
    """Write the result back; signal after the message's last byte; multicast it."""
    n = len(pkt.payload)
    start = pkt.addr + pkt.frag_off
    signal = bool(pkt.flags & _SIGNAL)
    key = signal_key("chain", route[0], pkt) if signal else None
    if key is not None and not ctx.tracker.has_room(key):
        raise InstructionError(Status.BUSY, "signal message table full")
    if n and reduce:
        alu.reduce_into(ctx.mem(start, n), pkt.payload, pkt.dtype, pkt.redop)
    if key is not None:
        done = ctx.tracker.add(key, pkt.length, pkt.frag_off, pkt.frag_off + n, ctx.now,
                               (pkt.rkey, pkt.pkey, pkt.addr2, pkt.imm))
        if done is not None:
            ctx.add_signal(*done)
    outs: list[Out] = []
    if pkt.flags & _RESULT_MCAST:      # a copy of the result for each other member
        result = bytes(ctx.mem(start, n))
        for member in ctx.groups[pkt.group]:
            if member != ctx.device_id:
                outs.append(ctx.forward(member, pkt, keep=_MORE | _SIGNAL, flags=_COPY,
                                        opcode=_MULTICAST, route=(), hop=0, redop=0,
                                        payload=result))
    return outs


# -- MULTICAST -----------------------------------------------------------------------------
def _members(ctx, pkt) -> tuple[int, ...]:
    return ctx.groups.get(pkt.group, ())


def _applies_locally(ctx, pkt) -> bool:
    return bool(pkt.flags & _COPY) or ctx.device_id in _members(ctx, pkt)


def _mcast_validate(ctx, pkt):
    st = _first(_dtype_known(pkt), _fragment_fits(pkt))
    if not st and not pkt.flags & _COPY and pkt.group not in ctx.groups:
        st = Status.BAD_GROUP
    return st


def _mcast_operands(ctx, pkt):
    if not _applies_locally(ctx, pkt):
        return []
    ops = [_data(pkt, WRITE_ANY)]
    if pkt.flags & _SIGNAL:
        ops.append(_signal(pkt))
    return ops


def _mcast(ctx: Context, pkt: Packet) -> list[Out]:
    if _applies_locally(ctx, pkt):
        signal = pkt.flags & _SIGNAL
        write_and_signal(ctx, pkt, signal_key("mcast", pkt.src, pkt) if signal else None)
    if pkt.flags & _COPY:
        return []
    payload = bytes(pkt.payload)
    return [ctx.forward(m, pkt, flags=_COPY, payload=payload)
            for m in _members(ctx, pkt) if m != ctx.device_id]


# -- PUT_SIGNAL ----------------------------------------------------------------------------
def _put_signal_operands(ctx, pkt):
    return [_data(pkt, WRITE_ANY), _signal(pkt)]


def _put_signal(ctx: Context, pkt: Packet) -> list[Out]:
    write_and_signal(ctx, pkt, signal_key("put", pkt.src, pkt))
    return []


# -- FENCE ---------------------------------------------------------------------------------
def _no_operand_validate(ctx, pkt):
    return _first(_dtype_known(pkt), _no_payload(pkt))


def _nothing(ctx, pkt):
    return []


# -- MEMCPY --------------------------------------------------------------------------------
def _memcpy_operands(ctx, pkt):
    return [Access(pkt.addr, pkt.length, (Rights.READ,)),
            Access(pkt.addr2, pkt.length, WRITE_ANY)]


def _memcpy(ctx: Context, pkt: Packet) -> list[Out]:
    mem, n = ctx.memory.bytes, pkt.length
    mem[pkt.addr2:pkt.addr2 + n] = mem[pkt.addr:pkt.addr + n]   # NumPy handles overlap
    return []


# -- QUANT_FP8 / DEQUANT_FP8 ---------------------------------------------------------------
def _fp8_validate(ctx, pkt):
    if pkt.dtype not in FP8_SOURCES or pkt.redop not in FP8_FORMATS:
        return Status.BAD_DTYPE
    return _no_payload(pkt)


def _scales_bytes(count: int) -> int:
    return 4 * (-(-count // FP8_BLOCK))


def _quant_operands(ctx, pkt):
    size = _esize(pkt)
    count = pkt.length // size
    return [Access(pkt.addr, pkt.length, (Rights.READ,), size),
            Access(pkt.addr2, count, WRITE_ANY),
            Access(pkt.imm, _scales_bytes(count), WRITE_ANY, 4)]


def _quant(ctx: Context, pkt: Packet) -> list[Out]:
    src = bytes(ctx.mem(pkt.addr, pkt.length))
    q, scales = alu.quantize_fp8(src, pkt.dtype, pkt.redop, FP8_BLOCK)
    ctx.mem(pkt.addr2, len(q))[:] = q
    ctx.mem(pkt.imm, len(scales))[:] = scales
    return []


def _dequant_operands(ctx, pkt):
    count = pkt.length
    return [Access(pkt.addr, count, (Rights.READ,)),
            Access(pkt.imm, _scales_bytes(count), (Rights.READ,), 4),
            Access(pkt.addr2, count * _esize(pkt), WRITE_ANY, _esize(pkt))]


def _dequant(ctx: Context, pkt: Packet) -> list[Out]:
    count = pkt.length
    q = bytes(ctx.mem(pkt.addr, count))
    scales = bytes(ctx.mem(pkt.imm, _scales_bytes(count)))
    out = alu.dequantize_fp8(q, scales, pkt.redop, pkt.dtype, FP8_BLOCK)
    ctx.mem(pkt.addr2, len(out))[:] = out
    return []


# -- the table -----------------------------------------------------------------------------
def _builtin(op: Opcode, handler, validate, operands, implied: int = 0) -> Instruction:
    return Instruction(op, op.name, CAPS[op], handler, validate, operands, implied)


BUILTINS: dict[int, Instruction] = {row.opcode: row for row in (
    _builtin(Opcode.READ, _read, _read_validate, _read_operands),
    _builtin(Opcode.WRITE, _write, _write_validate, _write_operands),
    _builtin(Opcode.ATOMIC_FADD, _atomic, _atomic_validate, _atomic_operands),
    _builtin(Opcode.ATOMIC_CAS, _atomic, _atomic_validate, _atomic_operands),
    _builtin(Opcode.REDUCE, _reduce, _reduce_validate, _reduce_operands),
    _builtin(Opcode.REDUCE_FWD, _chain, _chain_validate, _chain_operands),
    _builtin(Opcode.MULTICAST, _mcast, _mcast_validate, _mcast_operands),
    _builtin(Opcode.PUT_SIGNAL, _put_signal, _write_validate, _put_signal_operands),
    _builtin(Opcode.FENCE, _nothing, _no_operand_validate, _nothing, implied=Flag.FENCE),
    _builtin(Opcode.MEMCPY, _memcpy, _no_operand_validate, _memcpy_operands),
    _builtin(Opcode.QUANT_FP8, _quant, _fp8_validate, _quant_operands),
    _builtin(Opcode.DEQUANT_FP8, _dequant, _fp8_validate, _dequant_operands),
)}
# every request opcode of the wire definition has a row; responses have none
assert set(BUILTINS) == {op for op, caps in CAPS.items() if not caps & Cap.RESPONSE}


def default_validate(caps: int) -> Validator:
    """Header checks implied by ``caps`` (used for user-defined instructions)."""
    # the capability tests once, not per request (IntFlag arithmetic is slow)
    reduces, carries = bool(caps & Cap.REDUCE), bool(caps & Cap.PAYLOAD)

    def validate(ctx, pkt):
        base = _reduce_valid(pkt) if reduces else _dtype_known(pkt)
        size = _fragment_fits(pkt) if carries else _no_payload(pkt)
        return _first(base, size)
    return validate


def default_operands(caps: int) -> Operands:
    """The memory range implied by ``caps``: ``[addr + frag_off, + payload)`` for a
    request with PAYLOAD, else ``[addr, + length)``; none without READS/WRITES."""
    need = need_for(caps)
    # the capability tests once, not per request (IntFlag arithmetic is slow)
    touches, carries = bool(caps & (Cap.READS | Cap.WRITES)), bool(caps & Cap.PAYLOAD)
    atomic, aligned = bool(caps & Cap.ATOMIC), bool(caps & Cap.ALIGNED)

    def operands(ctx, pkt):
        if not touches:
            return []
        align = 8 if atomic else _esize(pkt) if aligned else 1
        if carries:
            return [_data(pkt, need, align)]
        return [Access(pkt.addr, pkt.length, need, align)]
    return operands


class InstructionTable:
    """The rows a device executes: the built-ins plus its user-defined instructions."""

    def __init__(self):
        self._rows: dict[int, Instruction] = dict(BUILTINS)

    def get(self, opcode: int) -> Instruction | None:
        return self._rows.get(opcode)

    def user_names(self) -> dict[int, str]:
        return {op: row.name for op, row in self._rows.items() if row.user}

    def register_instruction(self, opcode: int, handler: Handler, caps: int, *,
                             name: str | None = None, validate: Validator | None = None,
                             operands: Operands | None = None,
                             replace: bool = False) -> Instruction:
        """Add a user-defined instruction (SPEC §4.14).

        ``opcode`` in 0xC0..0xFE; ``caps`` a ``Cap`` mask without RESPONSE; ``handler``
        ``(ctx, pkt) -> list[Out]`` raising ``InstructionError`` to refuse. ``validate``
        and ``operands`` default to what ``caps`` implies. Raises ValueError otherwise
        (and for an opcode already registered unless ``replace``).
        """
        if opcode not in USER_OPCODES:
            raise ValueError(f"opcode 0x{opcode:02X} outside the user range "
                             f"0x{USER_OPCODES[0]:02X}..0x{USER_OPCODES[-1]:02X}")
        if not callable(handler):
            raise ValueError("handler must be callable")
        caps = Cap(int(caps))
        if caps & Cap.RESPONSE:
            raise ValueError("a user instruction cannot be a response opcode")
        if opcode in self._rows and not replace:
            raise ValueError(f"opcode 0x{opcode:02X} is already registered")
        row = Instruction(opcode, name or f"USER_0x{opcode:02X}", caps, handler,
                          validate or default_validate(caps),
                          operands or default_operands(caps), user=True)
        self._rows[opcode] = row
        return row


__all__ = ["Out", "InstructionError", "Context", "Instruction", "InstructionTable",
           "BUILTINS", "make_ack", "make_nak", "nak_for", "need_for", "default_validate",
           "write_and_signal", "signal_key", "chain_last_hop", "SIGNAL_NEED",
           "default_operands", "FP8_BLOCK"]
