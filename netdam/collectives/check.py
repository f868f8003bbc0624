"""The reference answers collectives are checked against, and the bandwidth arithmetic.

Owns: rank-dependent input patterns (so a misplaced block shows), the NumPy reference of
every collective (computed by any rank from the seed alone), the comparison with per-dtype
tolerances (stated once in ``types.TOLERANCE``), and nccl-tests' bus-bandwidth factors.
Shared by the correctness suite, ``netdam demo``, ``netdam run`` and ``netdam bench``.
"""

from __future__ import annotations

import numpy as np

from firmware_model import alu
from netdam.collectives.types import INTEGER, TOLERANCE, resolve_dtype, resolve_op
from netdam.wire.fields import DTYPE_NUMPY, DType

#: nccl-tests bus bandwidth = algbw * factor(n): what each link must carry
BUSBW_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "all_to_allv": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "barrier": lambda n: 0.0,
    "moe": lambda n: (n - 1) / n,   # dispatch + combine: two all-to-alls
}


def input_count(collective: str, count: int, n: int) -> int:
    """Elements of each rank's input for a case of ``count`` elements, as nccl-tests sizes
    its cases: an all_gather's size is the gathered array (each rank gives count / n);
    every other collective's is each rank's buffer."""
    return count // n if collective == "all_gather" else count


def case_size(collective: str, per_rank: int, n: int) -> int:
    """The size (bytes or elements) nccl-tests reports for a case whose n ranks each gave
    ``per_rank`` of them (the inverse of ``input_count``)."""
    return per_rank * n if collective == "all_gather" else per_rank


def numpy_dtype(dtype: str) -> tuple[np.dtype, str | None]:
    """Storage dtype for a dtype name, and the ``dtype=`` override to pass (bit types)."""
    native = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64"}
    if dtype in native:
        return np.dtype(dtype), None
    return np.dtype(DTYPE_NUMPY[_bits_dtype(dtype)]), dtype


def make_input(rank: int, count: int, dtype: str, seed: int = 0, op: str = "sum") -> np.ndarray:
    """Rank ``rank``'s input: small values that depend on rank and position, so sums stay
    exact in every integer type and misplaced blocks are caught."""
    storage, override = numpy_dtype(dtype)
    rng = np.random.default_rng([seed, rank, count])
    if override is not None and override.lower().startswith(("fp8", "e4", "e5")):
        vals = rng.integers(-1, 2, count)   # sums of a few of these stay exact in fp8
    elif op in ("band", "bor", "bxor"):
        vals = rng.integers(0, 128, count)
    elif op == "prod":
        vals = rng.choice([1, 1, 1, 2, -1] if np.dtype(storage).kind == "i" or override
                          else [1, 1, 1, 2], count)
    else:
        vals = rng.integers(-8, 8, count) + (rank % 4)
    if override is None:
        if storage.kind == "u":
            vals = np.abs(vals)
        return vals.astype(storage)
    return encode_bits(vals.astype(np.float32), override)


def encode_bits(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values -> bit patterns of bfloat16 / fp8 (round to nearest even)."""
    from firmware_model import fp8
    d = _bits_dtype(dtype)
    if d == DType.BFLOAT16:
        return fp8.f32_to_bf16(x.astype(np.float32))
    return fp8.f32_to_fp8(x.astype(np.float32), d)


def decode_bits(x: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype is None:
        return x
    from firmware_model import fp8
    d = _bits_dtype(dtype)
    return fp8.bf16_to_f32(x) if d == DType.BFLOAT16 else fp8.fp8_to_f32(x, d)


def _bits_dtype(dtype: str) -> DType:
    from netdam.collectives.types import DTYPE_NAMES
    return DTYPE_NAMES[dtype.lower()]


def reduce_all(inputs: list[np.ndarray], op: str, dtype: str | None) -> np.ndarray:
    """op over the ranks' inputs in rank order, with the device ALU's own arithmetic."""
    d = resolve_dtype(inputs[0], dtype)
    acc = inputs[0].copy()
    for x in inputs[1:]:
        alu.reduce_ref(memoryview(acc).cast("B"), memoryview(x).cast("B"), d,
                       resolve_op(op))
    return acc


def same(got: np.ndarray, want: np.ndarray, dtype: str | None = None) -> bool:
    """Equal for integers; within the dtype's tolerance for floats (NaN == NaN)."""
    if got.shape != want.shape:
        return False
    d = resolve_dtype(want, dtype)
    if d in INTEGER:
        return bool(np.array_equal(got, want))
    if np.array_equal(got, want):   # the usual case (exact sums): cheap to see
        return True
    g = decode_bits(got, dtype).astype(np.float64)
    w = decode_bits(want, dtype).astype(np.float64)
    rtol, atol = TOLERANCE[d]
    return bool(np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True))


def moe_input(rank: int, tokens: int, hidden: int, experts: int, k: int,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank ``rank``'s MoE tokens: activations [tokens, hidden] (float32, scaled by rank),
    top-k expert ids (distinct per token, some routes -1) and their weights."""
    rng = np.random.default_rng([seed, rank, tokens, hidden, experts, k])
    x = (rng.standard_normal((tokens, hidden)) * (rank + 1)).astype(np.float32)
    topk = np.array([rng.choice(experts, k, replace=False) for _ in range(tokens)],
                    np.int64).reshape(tokens, k)
    topk[rng.random((tokens, k)) < 0.15] = -1
    return x, topk, rng.random((tokens, k)).astype(np.float32)


def moe_expert(expert: int, x: np.ndarray) -> np.ndarray:
    """The stand-in expert of the checks: a per-expert scale."""
    return x * np.float32(1 + expert / 8)


def moe_reference(x: np.ndarray, topk: np.ndarray, weights: np.ndarray,
                  fp8_dtype: DType = DType.FP8_E4M3) -> np.ndarray:
    """What dispatch + experts + combine give a rank's tokens, as float32: each token's
    weighted sum of its experts' outputs on its fp8-quantized activations."""
    from netdam.collectives.moe import dequantize_rows, quantize_rows
    deq = dequantize_rows(*quantize_rows(x, DType.FLOAT32, fp8_dtype), fp8_dtype)
    out = np.zeros_like(deq)
    for t, j in zip(*np.nonzero(topk >= 0)):
        out[t] += weights[t, j] * moe_expert(int(topk[t, j]), deq[t])
    return out


def busbw(collective: str, nbytes: int, seconds: float, n: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s as nccl-tests defines them."""
    if seconds <= 0:
        return 0.0, 0.0
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * BUSBW_FACTOR[collective](n)


__all__ = ["BUSBW_FACTOR", "input_count", "case_size", "make_input", "reduce_all", "same",
           "busbw", "numpy_dtype", "encode_bits", "decode_bits", "DType", "moe_input",
           "moe_expert", "moe_reference"]
