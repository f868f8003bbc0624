"""The reduce ALU in plain NumPy: the reference the C kernels are checked against (SPEC §6).

Owns the readable statement of what ``dst[i] = op(dst[i], src[i])`` means for every
(dtype, redop) pair, and the support table (which pairs exist). alu.py falls back to
this module when the C extension is missing; tests and the selftest compare the two.

Elements are little-endian in memory; the explicit '<' NumPy dtypes make that hold on
any host.
"""

from __future__ import annotations

import numpy as np

from firmware_model import fp8
from netdam.wire.fields import DType, RedOp, Status

#: integer dtypes, as little-endian NumPy dtypes (their arithmetic wraps modulo 2^bits)
INTS = {
    DType.INT8: np.dtype("i1"), DType.INT16: np.dtype("<i2"),
    DType.INT32: np.dtype("<i4"), DType.INT64: np.dtype("<i8"),
    DType.UINT8: np.dtype("u1"), DType.UINT16: np.dtype("<u2"),
    DType.UINT32: np.dtype("<u4"), DType.UINT64: np.dtype("<u8"),
}
#: IEEE dtypes NumPy computes in directly (float16 arithmetic rounds once, like float32)
IEEE = {DType.FLOAT16: np.dtype("<f2"), DType.FLOAT32: np.dtype("<f4"),
        DType.FLOAT64: np.dtype("<f8")}
#: dtypes computed in float32 and rounded back through fp8.Format.encode
NARROW = (DType.BFLOAT16, DType.FP8_E4M3, DType.FP8_E5M2)

ARITH = (RedOp.SUM, RedOp.PROD, RedOp.MIN, RedOp.MAX)
BITWISE = (RedOp.BAND, RedOp.BOR, RedOp.BXOR)

#: the support table: dtype -> the redops defined for it
SUPPORTED: dict[int, tuple[int, ...]] = {
    **{dt: ARITH + BITWISE for dt in INTS},
    **{dt: ARITH for dt in IEEE},
    **{dt: ARITH for dt in NARROW},
}


def element_size(dtype: int) -> int:
    if dtype in INTS:
        return INTS[dtype].itemsize
    if dtype in IEEE:
        return IEEE[dtype].itemsize
    return 2 if dtype == DType.BFLOAT16 else 1


def check(dtype: int, op: int) -> int:
    """0 if (dtype, op) can be reduced, else BAD_DTYPE or BAD_REDOP."""
    if dtype not in SUPPORTED:
        return int(Status.BAD_DTYPE)
    if op not in SUPPORTED[dtype]:
        return int(Status.BAD_REDOP)
    return int(Status.OK)


def float_min(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NaN propagates (a's NaN first); equal operands (0.0 vs -0.0) give b."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(a < b, a, b)))


def float_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NaN propagates (a's NaN first); equal operands (0.0 vs -0.0) give b."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(a > b, a, b)))


INT_OPS = {
    RedOp.SUM: np.add, RedOp.PROD: np.multiply, RedOp.MIN: np.minimum,
    RedOp.MAX: np.maximum, RedOp.BAND: np.bitwise_and, RedOp.BOR: np.bitwise_or,
    RedOp.BXOR: np.bitwise_xor,
}
FLOAT_OPS = {RedOp.SUM: np.add, RedOp.PROD: np.multiply, RedOp.MIN: float_min,
             RedOp.MAX: float_max}

#: elements per step when converting through float32 (bounds temporary memory)
CHUNK = 1 << 20


def _view(buf, writable: bool) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        arr = buf.reshape(-1).view(np.uint8)
    else:
        arr = np.frombuffer(buf, np.uint8)
    if writable and not arr.flags.writeable:
        raise TypeError("dst must be a writable buffer")
    return arr


def reduce_ref(dst, src, dtype: int, op: int) -> None:
    """dst[i] = op(dst[i], src[i]) elementwise in dtype, in place. Arguments are checked
    by the caller (alu.reduce_ref); here the lengths are already equal and aligned."""
    d8 = _view(dst, writable=True)
    s8 = _view(src, writable=False)
    if dtype in INTS:
        a, b = d8.view(INTS[dtype]), s8.view(INTS[dtype])
        INT_OPS[op](a, b, out=a)
    elif dtype in IEEE:
        a, b = d8.view(IEEE[dtype]), s8.view(IEEE[dtype])
        with np.errstate(all="ignore"):
            if op in (RedOp.SUM, RedOp.PROD):
                FLOAT_OPS[op](a, b, out=a)
            else:
                a[:] = FLOAT_OPS[op](a, b)
    else:
        fmt = fp8.FORMATS[dtype]
        a, b = d8.view(fmt.code_dtype), s8.view(fmt.code_dtype)
        for i in range(0, a.size, CHUNK):
            fa = fmt.decode(a[i:i + CHUNK])
            fb = fmt.decode(b[i:i + CHUNK])
            with np.errstate(all="ignore"):
                r = FLOAT_OPS[op](fa, fb).astype(np.float32)
            a[i:i + CHUNK] = fmt.encode(r)
