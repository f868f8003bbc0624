"""Narrow float formats in NumPy: bfloat16, binary16, OCP FP8 E4M3 / E5M2 (SPEC §6).

Owns the reference conversions between float32 and the narrow formats the device's ALU
reduces in, and the DeepSeek-V3 style block quantization with power-of-two scales. The
C kernels (alu_kernels.c) implement the same rules with bit tricks; this module takes
a different, deliberately plain route so the two check each other:

* decode: every code of a format is turned into its value once with the textbook
  formula ((-1)^s * 2^(e - bias) * 1.m, subnormals 2^(1 - bias) * 0.m) and kept in a
  lookup table; decoding an array is one table lookup.
* encode: the value is rounded in float64 to the format's quantum at its exponent with
  ``np.rint`` (round half to even), then overflow is handled per format (E4M3
  saturates to +-448, the others overflow to inf), then the rounded value is taken
  apart into exponent and mantissa fields. Every float32 input is exact in float64 and
  dividing by a power of two is exact, so this is a single correct rounding.

Values are NumPy arrays of codes (uint8 for FP8, uint16 for the 16-bit formats);
multi-byte codes in device memory are little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from netdam.wire.fields import DType


@dataclass(frozen=True)
class Format:
    """A binary floating-point format with ``ebits`` exponent and ``mbits`` mantissa bits."""

    name: str
    ebits: int
    mbits: int
    bias: int
    max_value: float
    has_inf: bool            # all-ones exponent with zero mantissa is +-inf
    saturate: bool           # out-of-range values (and inf) clamp to +-max_value
    nan_code: int            # the canonical quiet NaN (positive)

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def code_dtype(self):
        return np.dtype(np.uint8) if self.bits == 8 else np.dtype("<u2")

    @property
    def min_normal_exp(self) -> int:
        return 1 - self.bias

    def _value_of(self, code: int) -> float:
        sign = -1.0 if code >> (self.bits - 1) else 1.0
        e = (code >> self.mbits) & ((1 << self.ebits) - 1)
        m = code & ((1 << self.mbits) - 1)
        e_all_ones = e == (1 << self.ebits) - 1
        if self.has_inf and e_all_ones:
            return sign * np.inf if m == 0 else np.nan
        if not self.has_inf and e_all_ones and m == (1 << self.mbits) - 1:
            return np.nan                                  # E4M3: S.1111.111 only
        if e == 0:
            return sign * m * 2.0 ** (self.min_normal_exp - self.mbits)
        return sign * (1.0 + m / 2 ** self.mbits) * 2.0 ** (e - self.bias)

    @cached_property
    def _lut(self) -> np.ndarray:
        """Value of every code, built on first use (65536 entries for 16-bit formats:
        building them at import slowed every process start)."""
        return np.array([self._value_of(c) for c in range(1 << self.bits)], np.float64)

    def decode(self, codes) -> np.ndarray:
        """Codes (any integer array) -> float32 values."""
        return self._lut[np.asarray(codes).astype(np.intp)].astype(np.float32)

    def encode(self, values) -> np.ndarray:
        """Float values -> codes, round to nearest even, overflow per the format."""
        with np.errstate(invalid="ignore"):          # signalling NaNs are fine here
            x = np.asarray(values, dtype=np.float64)
        sign = np.signbit(x)
        a = np.abs(x)
        nan = np.isnan(a)
        a = np.where(nan, 0.0, a)
        # exponent of the quantum: that of a, but never below the smallest normal's
        _, e = np.frexp(a)                                  # a = m * 2^e, m in [0.5, 1)
        exp = np.maximum(e - 1, self.min_normal_exp)
        with np.errstate(invalid="ignore", over="ignore"):
            quantum = np.ldexp(1.0, exp - self.mbits)
            r = np.where(np.isinf(a), a, np.rint(a / quantum) * quantum)
        over = r > self.max_value
        if self.saturate:
            r = np.where(over, self.max_value, r)
            over = np.zeros_like(over)
        # take the rounded magnitude apart (inf handled after)
        finite = np.where(over, 0.0, r)
        _, e2 = np.frexp(finite)
        is_normal = finite >= 2.0 ** self.min_normal_exp
        e_field = np.where(is_normal, e2 - 1 + self.bias, 0)
        scale_exp = np.where(is_normal, e2 - 1, self.min_normal_exp)
        mant = np.ldexp(finite, self.mbits - scale_exp)
        m_field = np.where(is_normal, mant - (1 << self.mbits), mant).astype(np.int64)
        code = (e_field.astype(np.int64) << self.mbits) | m_field
        if not self.saturate:
            code = np.where(over, ((1 << self.ebits) - 1) << self.mbits, code)
        code = np.where(nan, self.nan_code, code)
        code = code | (sign.astype(np.int64) << (self.bits - 1))
        return code.astype(self.code_dtype)


BFLOAT16 = Format("bfloat16", 8, 7, 127, float((2 - 2.0 ** -7) * 2.0 ** 127), True, False,
                  0x7FC0)
FLOAT16 = Format("float16", 5, 10, 15, 65504.0, True, False, 0x7E00)
E4M3 = Format("fp8_e4m3", 4, 3, 7, 448.0, False, True, 0x7F)
E5M2 = Format("fp8_e5m2", 5, 2, 15, 57344.0, True, False, 0x7E)

#: the narrow formats by wire dtype code
FORMATS: dict[int, Format] = {
    DType.BFLOAT16: BFLOAT16,
    DType.FLOAT16: FLOAT16,
    DType.FP8_E4M3: E4M3,
    DType.FP8_E5M2: E5M2,
}

#: float dtypes quantize reads and dequantize writes
WIDE = (DType.FLOAT32, DType.BFLOAT16, DType.FLOAT16)
FP8 = (DType.FP8_E4M3, DType.FP8_E5M2)


def bf16_to_f32(codes) -> np.ndarray:
    return BFLOAT16.decode(codes)


def f32_to_bf16(values) -> np.ndarray:
    """Round to nearest even. float32 input takes the bit-level shortcut (bfloat16 is the
    top half of a float32: add half an ulp of the kept part, ties to even, and shift),
    which equals the reference ``BFLOAT16.encode`` bit for bit; other input goes through
    the reference so it is rounded once."""
    x = np.asarray(values)
    if x.dtype != np.float32:
        return BFLOAT16.encode(x)
    u = x.view(np.uint32)
    r = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        r[nan] = BFLOAT16.nan_code | ((u[nan] >> 16) & 0x8000).astype(np.uint16)
    return r


def fp8_to_f32(codes, fp8_dtype: int) -> np.ndarray:
    return FORMATS[fp8_dtype].decode(codes)


def f32_to_fp8(values, fp8_dtype: int) -> np.ndarray:
    return FORMATS[fp8_dtype].encode(values)


def load(buf, dtype: int) -> np.ndarray:
    """Little-endian bytes of FLOAT32 / BFLOAT16 / FLOAT16 -> float32 values."""
    if dtype == DType.FLOAT32:
        return np.frombuffer(buf, "<f4").astype(np.float32)
    return FORMATS[dtype].decode(np.frombuffer(buf, "<u2"))


def store(values, dtype: int) -> bytes:
    """Float values -> little-endian bytes of FLOAT32 / BFLOAT16 / FLOAT16."""
    if dtype == DType.FLOAT32:
        return np.asarray(values, np.float64).astype("<f4").tobytes()
    return FORMATS[dtype].encode(values).astype("<u2").tobytes()


def block_scale(amax: np.ndarray, fmax: float) -> np.ndarray:
    """Per block, the smallest power of two s with amax / s <= fmax.

    1.0 for blocks with no finite non-zero element; the exponent is clamped to float32's
    normal range so the scale itself is always an exact float32.
    """
    amax = np.asarray(amax, np.float64)
    ok = np.isfinite(amax) & (amax > 0)
    m, e = np.frexp(np.where(ok, amax / fmax, 1.0))
    k = np.where(m == 0.5, e - 1, e)
    k = np.clip(k, -126, 127)
    return np.where(ok, np.ldexp(1.0, k), 1.0)


def quantize(src, src_dtype: int, fp8_dtype: int, block: int = 128) -> tuple[bytes, bytes]:
    """DeepSeek-V3 style: per block of ``block`` elements, scale = 2^ceil(log2(amax/max)).

    Returns (one FP8 code per element, one little-endian float32 scale per block). amax
    ignores inf and NaN elements; inf then saturates (E4M3) or stays inf (E5M2), NaN
    stays NaN. The last block may be short.
    """
    fmt = FORMATS[fp8_dtype]
    x = load(src, src_dtype).astype(np.float64)
    n = x.size
    nblocks = -(-n // block)
    pad = np.zeros(nblocks * block)
    pad[:n] = np.where(np.isfinite(x), np.abs(x), 0.0)
    amax = pad.reshape(nblocks, block).max(axis=1) if n else np.zeros(0)
    scales = block_scale(amax, fmt.max_value)
    per_elem = np.repeat(scales, block)[:n]
    q = fmt.encode(x / per_elem)
    return q.tobytes(), scales.astype("<f4").tobytes()


def dequantize(q, scales, fp8_dtype: int, out_dtype: int, block: int = 128) -> bytes:
    """x' = float(q) * scale of its block, rounded once to ``out_dtype``."""
    fmt = FORMATS[fp8_dtype]
    codes = np.frombuffer(q, np.uint8)
    s = np.frombuffer(scales, "<f4").astype(np.float64)
    per_elem = np.repeat(s, block)[:codes.size]
    with np.errstate(over="ignore", invalid="ignore"):
        x = fmt.decode(codes).astype(np.float64) * per_elem
    if out_dtype == DType.FLOAT32:
        with np.errstate(over="ignore"):
            return x.astype("<f4").tobytes()
    return store(x, out_dtype)
