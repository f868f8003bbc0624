"""Regions, keys and the one access check. Invariant: ``Memory.check`` answers OK only for
a live key, the right partition, a range inside the region, a granted right and alignment."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_model.memory import WRITE_ANY, Access, Memory, Rights
from netdam.wire.fields import DType, Status


def test_keys_are_random_nonzero_and_unique():
    mem = Memory(4096)
    keys = {mem.register(0, 16).key for _ in range(200)}
    assert len(keys) == 200 and 0 not in keys and all(k < 2**32 for k in keys)


def test_register_rejects_bad_arguments():
    mem = Memory(4096)
    with pytest.raises(ValueError):
        mem.register(4000, 200)
    with pytest.raises(ValueError):
        mem.register(-1, 8)
    with pytest.raises(ValueError):
        mem.register(0, 8, pkey=1 << 16)
    with pytest.raises(ValueError):
        mem.register(0, 8, key=0)
    mem.register(0, 8, key=5)
    with pytest.raises(ValueError):
        mem.register(0, 8, key=5)


def test_check_order_and_each_status():
    mem = Memory(4096)
    r = mem.register(1024, 1024, Rights.READ | Rights.ATOMIC, pkey=3)
    read = (Rights.READ,)
    assert mem.check(r.key, 3, Access(1024, 1024, read)) == Status.OK
    assert mem.check(r.key ^ 1, 3, Access(1024, 8, read)) == Status.BAD_KEY
    assert mem.check(r.key, 4, Access(1024, 8, read)) == Status.BAD_PARTITION
    assert mem.check(r.key, 3, Access(1020, 8, read)) == Status.OUT_OF_BOUNDS
    assert mem.check(r.key, 3, Access(2040, 16, read)) == Status.OUT_OF_BOUNDS
    assert mem.check(r.key, 3, Access(2**64 - 8, 16, read)) == Status.OUT_OF_BOUNDS
    assert mem.check(r.key, 3, Access(1024, 8, WRITE_ANY)) == Status.ACCESS_DENIED
    assert mem.check(r.key, 3, Access(1028, 8, (Rights.ATOMIC,), 8)) == Status.MISALIGNED
    assert mem.check(r.key, 3, Access(1024, 12, (Rights.ATOMIC,), 8)) == Status.MISALIGNED
    # the first failure wins: a bad partition beats the bad range
    assert mem.check(r.key, 4, Access(0, 8, read)) == Status.BAD_PARTITION


def test_any_alternative_suffices_and_all_of_one_is_needed():
    mem = Memory(64)
    r = mem.register(0, 64, Rights.REMOTE_WRITE)
    assert mem.check(r.key, 0, Access(0, 8, WRITE_ANY)) == Status.OK
    both = tuple(Rights.READ | w for w in WRITE_ANY)
    assert mem.check(r.key, 0, Access(0, 8, both)) == Status.ACCESS_DENIED


def test_deregistration_revokes_at_once():
    mem = Memory(64)
    r = mem.register(0, 64)
    assert mem.check(r.key, 0, Access(0, 8, (Rights.READ,))) == Status.OK
    assert mem.deregister(r.key) == r
    assert mem.check(r.key, 0, Access(0, 8, (Rights.READ,))) == Status.BAD_KEY
    with pytest.raises(KeyError):
        mem.deregister(r.key)


def test_external_buffers_and_views():
    buf = bytearray(100)
    mem = Memory(64, buf)
    mem.view[0:4] = b"abcd"
    assert buf[0:4] == b"abcd" and len(mem.view) == 64
    mem.array(np.float32)[1] = 1.5
    assert np.frombuffer(bytes(buf[4:8]), np.float32)[0] == 1.5
    assert mem.array(DType.UINT64).dtype == np.uint64 and len(mem.array(DType.UINT64)) == 8
    with pytest.raises(ValueError):
        Memory(64, bytes(64))        # read-only
    with pytest.raises(ValueError):
        Memory(64, bytearray(32))    # too small
