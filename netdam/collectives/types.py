"""What a collective's arguments mean on the wire: NumPy dtypes and op names to SPEC §6.

Owns the mapping from what users pass (NumPy arrays, ``op="sum"``, ``dtype="bfloat16"``
for uint16 bit patterns, ml_dtypes arrays when that package is present) to netdam's
``DType`` and ``RedOp``, and the per-dtype tolerances the correctness suite uses (stated
here, in one place).
"""

from __future__ import annotations

import numpy as np

from netdam.errors import UsageError
from netdam.wire.fields import DTYPE_SIZE, DType, RedOp

#: NumPy dtype name -> netdam dtype (native NumPy types)
NUMPY_TO_DTYPE = {
    "int8": DType.INT8, "int16": DType.INT16, "int32": DType.INT32, "int64": DType.INT64,
    "uint8": DType.UINT8, "uint16": DType.UINT16, "uint32": DType.UINT32,
    "uint64": DType.UINT64, "float16": DType.FLOAT16, "float32": DType.FLOAT32,
    "float64": DType.FLOAT64,
    # ml_dtypes names, for arrays of those types
    "bfloat16": DType.BFLOAT16, "float8_e4m3fn": DType.FP8_E4M3, "float8_e5m2": DType.FP8_E5M2,
}

#: the same, keyed by the dtypes themselves (a dtype's ``name`` is built in Python, a
#: dictionary lookup of the dtype is not: this is on every collective call's path)
_BY_DTYPE = {np.dtype(name): d for name, d in NUMPY_TO_DTYPE.items()
             if hasattr(np, name)}

#: names accepted for ``dtype=`` (bit patterns stored in uint8/uint16 arrays)
DTYPE_NAMES = {d.name.lower(): d for d in DType if d is not DType.NONE} | {
    "fp8_e4m3": DType.FP8_E4M3, "fp8_e5m2": DType.FP8_E5M2, "e4m3": DType.FP8_E4M3,
    "e5m2": DType.FP8_E5M2, "bf16": DType.BFLOAT16}

OP_NAMES = {op.name.lower(): op for op in RedOp if op is not RedOp.NONE}

#: (rtol, atol) per float dtype for comparing a collective with the NumPy reference:
#: n-way sums in different association orders differ by a few ulps per addition.
TOLERANCE = {
    DType.FLOAT64: (1e-12, 1e-12), DType.FLOAT32: (1e-5, 1e-5), DType.FLOAT16: (1e-2, 1e-2),
    DType.BFLOAT16: (2e-2, 2e-2), DType.FP8_E4M3: (0.13, 0.13), DType.FP8_E5M2: (0.26, 0.26),
}

INTEGER = {DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.UINT8, DType.UINT16,
           DType.UINT32, DType.UINT64}


def resolve_dtype(array: np.ndarray, dtype: str | int | None = None) -> DType:
    """The netdam dtype of ``array`` (``dtype`` overrides, for bit-pattern arrays)."""
    if dtype is not None:
        if isinstance(dtype, str):
            if dtype.lower() not in DTYPE_NAMES:
                raise UsageError(f"unknown dtype {dtype!r}; known: {sorted(DTYPE_NAMES)}")
            d = DTYPE_NAMES[dtype.lower()]
        else:
            d = DType(dtype)
        if array.dtype.itemsize != DTYPE_SIZE[d]:
            raise UsageError(f"dtype {d.name} has {DTYPE_SIZE[d]}-byte elements, the array "
                             f"has {array.dtype.itemsize}-byte {array.dtype}")
        return d
    d = _BY_DTYPE.get(array.dtype)
    if d is not None:
        return d
    name = array.dtype.name
    if name not in NUMPY_TO_DTYPE:
        raise UsageError(f"arrays of {array.dtype} are not supported; use one of "
                         f"{sorted(NUMPY_TO_DTYPE)} or pass dtype=")
    return NUMPY_TO_DTYPE[name]


def resolve_op(op: str | int) -> RedOp:
    if isinstance(op, str):
        if op.lower() not in OP_NAMES:
            raise UsageError(f"unknown reduce op {op!r}; known: {sorted(OP_NAMES)}")
        return OP_NAMES[op.lower()]
    return RedOp(op)
