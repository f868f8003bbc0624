"""Device memory, its registered regions and the one access check (SPEC_device §2).

Owns the bytes a device serves and who may touch which of them. The memory is a flat
buffer (a private ``bytearray``, or a writable buffer handed in: shared memory, mmap) seen
through a uint8 NumPy view. A *region* is a window ``[base, base + length)`` of it with a
bitmask of rights, a partition key and a random 32-bit memory key (``rkey``), like an
RDMA memory region. Deregistering a region revokes its key at once: the next request that
names it fails with BAD_KEY.

``Memory.check`` is the only place that decides whether a request may touch a range; it
returns a ``Status`` (OK or the reason) and never raises. Everything else in the device
asks it before reading or writing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import IntFlag
from typing import NamedTuple

import numpy as np

from netdam.wire.fields import DTYPE_NUMPY, DType, Status

KEY_MAX = (1 << 32) - 1
PKEY_MAX = (1 << 16) - 1


class Rights(IntFlag):
    """What a region allows (SPEC_device §2.1).

    REMOTE_WRITE is accepted wherever WRITE is needed (the RDMA spelling; the device
    does not tell local from remote writers).
    """

    NONE = 0
    READ = 1 << 0
    WRITE = 1 << 1
    ATOMIC = 1 << 2
    REDUCE = 1 << 3
    REMOTE_WRITE = 1 << 4
    ALL = READ | WRITE | ATOMIC | REDUCE | REMOTE_WRITE


#: the alternatives that satisfy "may write" (any one of them suffices)
WRITE_ANY = (Rights.WRITE, Rights.REMOTE_WRITE)


@dataclass(frozen=True, slots=True)
class Region:
    """A registered window of device memory."""

    key: int
    base: int
    length: int
    rights: Rights
    pkey: int = 0

    @property
    def end(self) -> int:
        return self.base + self.length


class Access(NamedTuple):
    """One memory range a request touches: ``need`` lists alternative right sets, any
    one of which must be fully granted; ``align`` divides both address and length."""

    addr: int
    length: int
    need: tuple[Rights, ...]
    align: int = 1


class Memory:
    """The device's memory and region table.

    ``buffer``: an optional writable buffer of at least ``size`` bytes (shared memory,
    mmap, bytearray); without it the memory is a private zeroed ``bytearray``.
    """

    def __init__(self, size: int, buffer=None):
        if size <= 0:
            raise ValueError(f"memory size {size} must be positive")
        if buffer is None:
            buffer = bytearray(size)
        arr = np.frombuffer(buffer, dtype=np.uint8, count=-1)
        if len(arr) < size:
            raise ValueError(f"buffer of {len(arr)} bytes is smaller than memory size {size}")
        if not arr.flags.writeable:
            raise ValueError("device memory buffer must be writable")
        self.size = size
        self._buffer = buffer               # keep the owner alive
        self.bytes = arr[:size]              #: uint8 view of the whole memory
        self.view = memoryview(self.bytes)   #: writable memoryview (uint8)
        self._regions: dict[int, Region] = {}

    # -- views -------------------------------------------------------------------------
    def array(self, dtype) -> np.ndarray:
        """The whole memory as a NumPy array of ``dtype`` (a NumPy dtype or a wire DType)."""
        if isinstance(dtype, int) and not isinstance(dtype, bool) and dtype in DType._value2member_map_:
            dtype = DTYPE_NUMPY[DType(dtype)]
        dt = np.dtype(dtype)
        usable = self.size - self.size % dt.itemsize
        return self.bytes[:usable].view(dt)

    def slice(self, addr: int, length: int) -> memoryview:
        """Writable view of ``[addr, addr + length)``; callers check access first."""
        return self.view[addr:addr + length]

    # -- regions -----------------------------------------------------------------------
    def register(self, base: int, length: int, rights: Rights = Rights.ALL, pkey: int = 0,
                 key: int | None = None) -> Region:
        """Register a region; ``key`` is a fresh random nonzero 32-bit key unless given.

        Raises ValueError for a range outside memory, a bad pkey or a key in use.
        """
        if base < 0 or length < 0 or base + length > self.size:
            raise ValueError(f"region [{base}, {base + length}) outside memory of {self.size}")
        if not 0 <= pkey <= PKEY_MAX:
            raise ValueError(f"pkey {pkey} outside 0..{PKEY_MAX}")
        rights = Rights(int(rights) & Rights.ALL)
        if key is None:
            key = 0
            while key == 0 or key in self._regions:
                key = secrets.randbits(32)
        elif not 1 <= key <= KEY_MAX:
            raise ValueError(f"key {key} outside 1..{KEY_MAX}")
        elif key in self._regions:
            raise ValueError(f"key 0x{key:08X} already names a region")
        region = self._regions[key] = Region(key, base, length, rights, pkey)
        return region

    def deregister(self, key: int) -> Region:
        """Revoke ``key``: requests naming it fail with BAD_KEY from now on."""
        try:
            return self._regions.pop(key)
        except KeyError:
            raise KeyError(f"no region with key 0x{key:08X}") from None

    def region(self, key: int) -> Region | None:
        return self._regions.get(key)

    def regions(self) -> list[Region]:
        return list(self._regions.values())

    # -- the access check --------------------------------------------------------------
    def check(self, rkey: int, pkey: int, access: Access) -> Status:
        """May a request with (rkey, pkey) touch ``access``? The one access check.

        Order (SPEC_device §2.2): BAD_KEY, BAD_PARTITION, OUT_OF_BOUNDS, ACCESS_DENIED,
        MISALIGNED. Addresses are unbounded Python integers, so a 64-bit address plus a
        length can never wrap around into range.
        """
        region = self._regions.get(rkey)
        if region is None:
            return Status.BAD_KEY
        if pkey != region.pkey:
            return Status.BAD_PARTITION
        addr, length = access.addr, access.length
        base = region.base
        if addr < base or length < 0 or addr + length > base + region.length:
            return Status.OUT_OF_BOUNDS
        granted = int(region.rights)
        for need in access.need:          # a loop, not any(): once per request
            need = int(need)
            if granted & need == need:
                break
        else:
            return Status.ACCESS_DENIED
        if access.align > 1 and (addr % access.align or length % access.align):
            return Status.MISALIGNED
        return Status.OK


__all__ = ["Rights", "Region", "Access", "Memory", "WRITE_ANY"]
