"""The device's reduce ALU: elementwise ``dst = op(dst, src)`` and FP8 quantization (SPEC §6).

Owns the public ALU API the instruction handlers call, the argument checks that map
bad requests to status codes, and the choice of backend: the C kernels
(``firmware_model._alu``, built by alu_build.py from alu_kernels.c) when the extension
is importable, otherwise the NumPy reference (alu_ref.py, fp8.py) with one logged
warning. ``NETDAM_ALU=numpy`` in the environment, or ``use_backend("numpy")``, selects
the reference on purpose.

Rules (SPEC §6, reduce semantics)
---------------------------------
* Byte order: multi-byte elements in device memory and in payloads are little-endian
  (like NumPy on x86 and like GPU memory). The packet header is big-endian; that is
  separate.
* ``dst[i] = op(dst[i], src[i])`` for every element; dst and src have the same byte
  length, a multiple of the element size. dst is updated in place.
* Support: NONE (dtype 0) is not reducible (BAD_DTYPE); redop NONE (0) is not an op
  (BAD_REDOP). Integer dtypes support SUM PROD MIN MAX BAND BOR BXOR; FLOAT16,
  BFLOAT16, FLOAT32, FLOAT64, FP8_E4M3 and FP8_E5M2 support SUM PROD MIN MAX (bitwise
  ops on them are BAD_REDOP). Unknown dtype -> BAD_DTYPE, unknown redop -> BAD_REDOP.
  Unequal lengths -> LENGTH_MISMATCH; a length that is not a multiple of the element
  size -> MISALIGNED.
* Integers: SUM and PROD wrap modulo 2^bits (two's complement); MIN/MAX compare as
  signed or unsigned per dtype; BAND/BOR/BXOR are bitwise.
* FLOAT16/FLOAT32/FLOAT64: IEEE 754 arithmetic, round to nearest even (FLOAT16 is
  computed in float32 and rounded once, which equals a correctly rounded binary16
  operation). MIN/MAX propagate NaN (if either operand is NaN the result is NaN, dst's
  NaN first), like np.minimum/np.maximum; when the operands compare equal (0.0 vs -0.0)
  the result is src, which is what np.minimum/np.maximum return for float32/float64.
  NaN payload bits are not specified; a NaN result is a quiet NaN.
* BFLOAT16: computed in float32, rounded to nearest even back to bfloat16; overflow
  gives inf; NaN stays NaN (quiet).
* FP8_E4M3 (OCP: bias 7, max 448, no inf, NaN = S.1111.111): computed in float32,
  rounded to nearest even, saturating to +-448 (inf saturates too); NaN stays NaN.
* FP8_E5M2 (OCP: bias 15, max 57344, inf and NaN): computed in float32, rounded to
  nearest even; overflow gives inf (IEEE-like, not saturating); NaN stays NaN.

Rules (SPEC §6, FP8 quantization, DeepSeek-V3 style)
----------------------------------------------------
* Input FLOAT32, BFLOAT16 or FLOAT16; output one FP8 byte per element plus one
  little-endian float32 scale per block of ``block`` (128) consecutive elements; the
  last block may be short.
* amax = max |x| over the block's finite elements; scale = 2^ceil(log2(amax / fp8_max))
  (fp8_max = 448 for E4M3, 57344 for E5M2), a power of two with exponent clamped to
  [-126, 127]; scale = 1.0 when the block has no finite non-zero element.
* q = fp8(x / scale), rounded to nearest even, saturating (E4M3) / inf (E5M2) as above.
* Dequantize: x' = float(q) * scale, rounded once to the output dtype.
"""

from __future__ import annotations

import logging
import os
import sys

from firmware_model import alu_ref, fp8
from netdam.wire.fields import DType, Status

log = logging.getLogger("netdam.alu")

try:
    from firmware_model._alu import ffi as _ffi, lib as _lib
except ImportError as exc:          # extension not built: NumPy reference only
    _ffi = _lib = None
    _import_error: Exception | None = exc
else:
    _import_error = None

BACKENDS = ("c", "numpy")
BACKEND: str = "numpy"
_warned = False


class AluError(ValueError):
    """A reduce / quantize request the ALU rejects; ``status`` is the netdam status code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)


def c_available() -> bool:
    """True when the C extension is importable and the host is little-endian."""
    return _lib is not None and sys.byteorder == "little"


def use_backend(name: str) -> None:
    """Select "c" or "numpy" for this process (raises RuntimeError if "c" is missing)."""
    global BACKEND
    if name not in BACKENDS:
        raise ValueError(f"unknown ALU backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "c" and not c_available():
        raise RuntimeError(f"the C ALU is not available: {_import_error or 'big-endian host'}")
    BACKEND = name


def kernel_isa() -> str:
    """The C kernel set in use ("baseline", "avx2", "avx2+f16c"), or "numpy"."""
    if BACKEND != "c":
        return "numpy"
    return _ffi.string(_lib.alu_isa()).decode()


def select_kernels(best: bool = True) -> str:
    """Use the widest C kernels this CPU runs (default) or only the portable ones."""
    if not c_available():
        return "numpy"
    return _ffi.string(_lib.alu_select(1 if best else 0)).decode()


def _initial_backend() -> str:
    global _warned
    wanted = os.environ.get("NETDAM_ALU", "").strip().lower()
    if wanted == "numpy":
        return "numpy"
    if c_available():
        return "c"
    if not _warned:
        _warned = True
        why = _import_error or "host is big-endian"
        log.warning("C reduce kernels unavailable (%s); using the NumPy reference", why)
    return "numpy"


BACKEND = _initial_backend()


def check(dtype: int, op: int) -> int:
    """0 if (dtype, op) is supported, else Status.BAD_DTYPE or Status.BAD_REDOP."""
    return alu_ref.check(dtype, op)


def element_size(dtype: int) -> int:
    """Bytes per element of a reducible dtype."""
    return alu_ref.element_size(dtype)


def _nbytes(buf) -> int:
    mv = memoryview(buf)
    if not mv.c_contiguous:
        raise TypeError("ALU buffers must be contiguous")
    return mv.nbytes


_ESIZE: dict[tuple[int, int], int] = {}   # (dtype, op) found reducible -> element size


def _pair_esize(dtype: int, op: int) -> int:
    """The element size of a supported (dtype, op) pair, else AluError (BAD_DTYPE or
    BAD_REDOP); looked up once per pair (the per-fragment path asks often)."""
    esize = _ESIZE.get((dtype, op))
    if esize is None:
        st = check(dtype, op)
        if st:
            name = "dtype" if st == Status.BAD_DTYPE else "redop"
            raise AluError(st, f"{name} not supported: dtype={dtype} redop={op}")
        esize = _ESIZE[(dtype, op)] = element_size(dtype)
    return esize


def _validate(dst, src, dtype: int, op: int) -> int:
    """Raise AluError for a bad request; return the element count."""
    esize = _pair_esize(dtype, op)
    nd, ns = _nbytes(dst), _nbytes(src)
    if nd != ns:
        raise AluError(Status.LENGTH_MISMATCH, f"dst is {nd} bytes but src is {ns}")
    if nd % esize:
        raise AluError(Status.MISALIGNED, f"{nd} bytes is not a multiple of {esize}")
    return nd // esize


def _overlaps(a, b, n: int) -> bool:
    pa = int(_ffi.cast("uintptr_t", a))
    pb = int(_ffi.cast("uintptr_t", b))
    return pa < pb + n and pb < pa + n


def reduce_into(dst, src, dtype: int, op: int) -> None:
    """dst[i] = op(dst[i], src[i]) elementwise in dtype, in place (see the rules above).

    dst: writable contiguous buffer (bytearray, memoryview, np.ndarray); src: any
    contiguous bytes-like of the same byte length. Raises AluError.
    """
    count = _validate(dst, src, dtype, op)
    if not count:
        return
    if BACKEND != "c":
        alu_ref.reduce_ref(dst, src, dtype, op)
        return
    d = _ffi.from_buffer(dst, require_writable=True)
    s = _ffi.from_buffer(src)
    nbytes = len(d)
    if _overlaps(d, s, nbytes):            # the kernels take restrict pointers
        s = _ffi.from_buffer(bytes(memoryview(src).cast("B")))
    st = _lib.alu_reduce(dtype, op, d, s, count)
    if st:
        raise AluError(st, f"C ALU rejected dtype={dtype} redop={op}")


def reducer(dtype: int, op: int):
    """``reduce_into`` for one (dtype, op), checked once: ``red(dst, src)``, for callers
    that reduce many small buffers with one pair (the hosts' collectives). It looks
    nothing up per call, so a 4 KiB call costs about a third of ``reduce_into``'s; same
    results and errors (a call it cannot take plainly goes through ``reduce_into``,
    which raises or copies an overlapping ``src``). Raises AluError for a bad pair."""
    esize = _pair_esize(dtype, op)
    dt, o = int(dtype), int(op)           # (an IntEnum costs each C call a conversion)

    def red(dst, src) -> None:
        if BACKEND != "c":
            return reduce_into(dst, src, dtype, op)
        d = _ffi.from_buffer(dst, require_writable=True)
        s = _ffi.from_buffer(src)
        n = len(d)
        if n != len(s) or n % esize:
            return reduce_into(dst, src, dtype, op)
        st = _lib.alu_reduce_apart(dt, o, d, s, n // esize, esize)   # overlap checked in C
        if st:
            if st == _lib.ALU_OVERLAP:
                return reduce_into(dst, src, dtype, op)
            raise AluError(st, f"C ALU rejected dtype={dtype} redop={op}")
    return red


def reduce_ref(dst, src, dtype: int, op: int) -> None:
    """Same semantics as reduce_into, always through the NumPy reference."""
    if _validate(dst, src, dtype, op):
        alu_ref.reduce_ref(dst, src, dtype, op)


def _check_fp8(fp8_dtype: int, wide_dtype: int, block: int) -> None:
    if fp8_dtype not in fp8.FP8:
        raise AluError(Status.BAD_DTYPE, f"not an FP8 dtype: {fp8_dtype}")
    if wide_dtype not in fp8.WIDE:
        raise AluError(Status.BAD_DTYPE,
                       f"FP8 converts from/to FLOAT32, BFLOAT16, FLOAT16, not {wide_dtype}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")


def quantize_fp8(src, src_dtype: int, fp8_dtype: int, block: int = 128) -> tuple[bytes, bytes]:
    """Quantize src (little-endian src_dtype) to (FP8 bytes, little-endian float32 scales)."""
    _check_fp8(fp8_dtype, src_dtype, block)
    nbytes = _nbytes(src)
    esize = 4 if src_dtype == DType.FLOAT32 else 2
    if nbytes % esize:
        raise AluError(Status.MISALIGNED, f"{nbytes} bytes is not a multiple of {esize}")
    n = nbytes // esize
    if BACKEND != "c":
        return fp8.quantize(src, src_dtype, fp8_dtype, block)
    q = bytearray(n)
    scales = bytearray(4 * (-(-n // block)))
    if n:
        st = _lib.alu_quantize(src_dtype, fp8_dtype, _ffi.from_buffer(src), n, block,
                               _ffi.from_buffer(q), _ffi.from_buffer(scales))
        if st:
            raise AluError(st, "C ALU rejected the quantize request")
    return bytes(q), bytes(scales)


def dequantize_fp8(q, scales, fp8_dtype: int, out_dtype: int, block: int = 128) -> bytes:
    """Inverse of quantize_fp8: FP8 bytes and their block scales -> bytes of out_dtype."""
    _check_fp8(fp8_dtype, out_dtype, block)
    n = _nbytes(q)
    want = 4 * (-(-n // block))
    if _nbytes(scales) != want:
        raise AluError(Status.LENGTH_MISMATCH,
                       f"{n} FP8 elements need {want} bytes of scales, got {_nbytes(scales)}")
    if BACKEND != "c":
        return fp8.dequantize(q, scales, fp8_dtype, out_dtype, block)
    esize = 4 if out_dtype == DType.FLOAT32 else 2
    out = bytearray(n * esize)
    if n:
        st = _lib.alu_dequantize(fp8_dtype, out_dtype, _ffi.from_buffer(q),
                                 _ffi.from_buffer(scales), n, block, _ffi.from_buffer(out))
        if st:
            raise AluError(st, "C ALU rejected the dequantize request")
    return bytes(out)
