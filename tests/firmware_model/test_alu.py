"""Tests of the reduce ALU (firmware_model.alu, SPEC §6).

Invariant: for every supported (dtype, redop) and any operands, the C kernels (the
widest set this CPU runs and the portable set) give the same bytes as the NumPy
reference, except that any NaN equals any NaN; and the reference gives the values the
SPEC rules state (checked here on hand-picked values).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_model import alu, alu_ref, fp8
from firmware_model.__main__ import edge_bytes, random_bytes, same
from netdam.wire.fields import DType, RedOp, Status

PAIRS = [(dt, op) for dt in sorted(alu_ref.SUPPORTED) for op in alu_ref.SUPPORTED[dt]]
IDS = [f"{DType(dt).name}-{RedOp(op).name}" for dt, op in PAIRS]

needs_c = pytest.mark.skipif(not alu.c_available(), reason="C extension not built")


@pytest.fixture(params=["best", "baseline"])
def kernels(request):
    """Run a test with the widest C kernels and again with the portable ones."""
    if not alu.c_available():
        pytest.skip("C extension not built")
    alu.use_backend("c")
    alu.select_kernels(request.param == "best")
    try:
        yield request.param
    finally:
        alu.select_kernels(True)


def both(a: bytes, b: bytes, dtype: int, op: int) -> tuple[bytes, bytes]:
    got, want = bytearray(a), bytearray(a)
    alu.reduce_into(got, b, dtype, op)
    alu.reduce_ref(want, b, dtype, op)
    return bytes(got), bytes(want)


def ref(a: bytes, b: bytes, dtype: int, op: int) -> bytes:
    out = bytearray(a)
    alu.reduce_ref(out, b, dtype, op)
    return bytes(out)


# -- C vs reference ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,op", PAIRS, ids=IDS)
def test_c_matches_reference_on_random_data(kernels, dtype, op):
    rng = np.random.default_rng(dtype * 16 + op)
    for n in (1000, 7, 1):
        got, want = both(random_bytes(dtype, n, rng), random_bytes(dtype, n, rng), dtype, op)
        assert same(dtype, got, want)


@pytest.mark.parametrize("dtype,op", PAIRS, ids=IDS)
def test_c_matches_reference_on_edge_values(kernels, dtype, op):
    rng = np.random.default_rng(100 + dtype * 16 + op)
    got, want = both(edge_bytes(dtype, 1000, rng), edge_bytes(dtype, 1000, rng), dtype, op)
    assert same(dtype, got, want)


@pytest.mark.parametrize("dtype", [DType.FP8_E4M3, DType.FP8_E5M2])
@pytest.mark.parametrize("op", [RedOp.SUM, RedOp.PROD, RedOp.MIN, RedOp.MAX])
def test_fp8_all_operand_pairs(kernels, dtype, op):
    a = np.repeat(np.arange(256, dtype=np.uint8), 256).tobytes()
    b = np.tile(np.arange(256, dtype=np.uint8), 256).tobytes()
    got, want = both(a, b, dtype, op)
    assert same(dtype, got, want)


@pytest.mark.parametrize("dtype", [DType.FLOAT16, DType.BFLOAT16])
def test_16bit_all_codes_plus_zero_and_plus_tiny(kernels, dtype):
    """Every 16-bit code survives x + 0 (decode/encode round trip), and x * 1.5."""
    codes = np.arange(1 << 16, dtype="<u2")
    zero = np.zeros(1 << 16, "<u2")
    got, want = both(codes.tobytes(), zero.tobytes(), dtype, RedOp.SUM)
    assert same(dtype, got, want)
    finite = ~np.isnan(fp8.FORMATS[dtype].decode(codes))
    assert np.array_equal(np.frombuffer(got, "<u2")[finite & (codes != 0x8000)],
                          codes[finite & (codes != 0x8000)])
    one_half = fp8.FORMATS[dtype].encode(np.full(1 << 16, 1.5)).tobytes()
    got, want = both(codes.tobytes(), one_half, dtype, RedOp.PROD)
    assert same(dtype, got, want)


@needs_c
def test_unaligned_views_and_numpy_dst_are_reduced_in_place():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(257).astype("<f4")
    b = rng.standard_normal(257).astype("<f4")
    mem = bytearray(3 + a.nbytes)
    mem[3:] = a.tobytes()
    payload = b"xy" + b.tobytes()
    alu.reduce_into(memoryview(mem)[3:], memoryview(payload)[2:], DType.FLOAT32, RedOp.SUM)
    assert np.frombuffer(bytes(mem[3:]), "<f4").tolist() == (a + b).tolist()
    arr = np.frombuffer(a.tobytes(), np.uint8).copy()
    alu.reduce_into(arr, b.tobytes(), DType.FLOAT32, RedOp.MAX)
    assert arr.view("<f4").tolist() == np.maximum(a, b).tolist()


@needs_c
def test_overlapping_src_and_dst():
    buf = bytearray(np.arange(16, dtype="<i4").tobytes())
    view = memoryview(buf)
    alu.reduce_into(view[0:48], view[16:64], DType.INT32, RedOp.SUM)
    assert np.frombuffer(bytes(buf[:48]), "<i4").tolist() == [i + i + 4 for i in range(12)]


@needs_c
def test_c_check_table_agrees_with_python_table():
    from firmware_model._alu import lib
    for dtype in range(0, 20):
        for op in range(0, 10):
            assert lib.alu_check(dtype, op) == alu.check(dtype, op), (dtype, op)


# -- the rules on hand-picked values ------------------------------------------------------

def ints(dtype, values):
    return np.array(values, alu_ref.INTS[dtype]).tobytes()


@pytest.mark.parametrize("dtype,a,b,op,want", [
    (DType.INT8, [127, -128], [1, -1], RedOp.SUM, [-128, 127]),
    (DType.UINT8, [255, 0], [1, 255], RedOp.SUM, [0, 255]),
    (DType.INT16, [300, -2], [300, 32767], RedOp.PROD, [24464, 2]),
    (DType.UINT16, [65535], [65535], RedOp.PROD, [1]),
    (DType.INT32, [2 ** 31 - 1], [2], RedOp.PROD, [-2]),
    (DType.INT64, [2 ** 63 - 1], [1], RedOp.SUM, [-2 ** 63]),
    (DType.UINT64, [2 ** 64 - 1], [2 ** 64 - 1], RedOp.PROD, [1]),
    (DType.INT8, [-1, 5], [1, -7], RedOp.MIN, [-1, -7]),
    (DType.UINT8, [255, 5], [1, 7], RedOp.MIN, [1, 5]),
    (DType.UINT32, [2 ** 32 - 1], [1], RedOp.MAX, [2 ** 32 - 1]),
    (DType.INT32, [-1], [1], RedOp.MAX, [1]),
    (DType.UINT16, [0xF0F0], [0x0FF0], RedOp.BAND, [0x00F0]),
    (DType.INT16, [0x0F00], [0x00F0], RedOp.BOR, [0x0FF0]),
    (DType.INT8, [-1], [0x55], RedOp.BXOR, [-86]),
])
def test_integer_rules(dtype, a, b, op, want):
    assert ref(ints(dtype, a), ints(dtype, b), dtype, op) == ints(dtype, want)
    if alu.c_available():
        out = bytearray(ints(dtype, a))
        alu.reduce_into(out, ints(dtype, b), dtype, op)
        assert bytes(out) == ints(dtype, want)


@pytest.mark.parametrize("dtype", [DType.FLOAT16, DType.FLOAT32, DType.FLOAT64])
def test_ieee_min_max_nan_and_signed_zero(dtype):
    dt = alu_ref.IEEE[dtype]
    a = np.array([np.nan, 1.0, 0.0, -0.0, 2.0, np.inf], dt)
    b = np.array([1.0, np.nan, -0.0, 0.0, -np.inf, np.nan], dt)
    for op in (RedOp.MIN, RedOp.MAX):
        out = bytearray(a.tobytes())
        alu.reduce_into(out, b.tobytes(), dtype, op)
        r = np.frombuffer(bytes(out), dt)
        assert np.isnan(r[[0, 1, 5]]).all()
        assert np.signbit(r[2]) and not np.signbit(r[3])    # equal operands: src wins
        assert r[4] == (-np.inf if op == RedOp.MIN else 2.0)
    if dtype != DType.FLOAT16:    # NumPy's float16 minimum returns dst for 0.0 vs -0.0
        for op, npf in ((RedOp.MIN, np.minimum), (RedOp.MAX, np.maximum)):
            r = np.frombuffer(ref(a.tobytes(), b.tobytes(), dtype, op), dt)
            want = npf(a, b)
            assert np.array_equal(np.signbit(r), np.signbit(want))
            assert np.array_equal(r, want, equal_nan=True)


def test_float16_sum_matches_numpy_rounding():
    rng = np.random.default_rng(9)
    a = (rng.standard_normal(5000) * 1000).astype(np.float16)
    b = (rng.standard_normal(5000) * 1000).astype(np.float16)
    with np.errstate(over="ignore"):
        want = (a + b).tobytes()
    out = bytearray(a.tobytes())
    alu.reduce_into(out, b.tobytes(), DType.FLOAT16, RedOp.SUM)
    assert bytes(out) == want


def bf16(values):
    return fp8.f32_to_bf16(np.array(values, np.float32)).tobytes()


def test_bfloat16_round_to_nearest_even_and_nan():
    # 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7: stays 1.0;
    # (1 + 2^-7) + 2^-8 is halfway between 0x3F81 (odd) and 0x3F82: goes to 0x3F82.
    a = np.array([0x3F80, 0x3F81, 0x7F80, 0x7FC0, 0x7F7F], "<u2").tobytes()
    b = np.array([0x3B80, 0x3B80, 0xFF80, 0x3F80, 0x7F7F], "<u2").tobytes()
    out = bytearray(a)
    alu.reduce_into(out, b, DType.BFLOAT16, RedOp.SUM)
    r = np.frombuffer(bytes(out), "<u2")
    assert r[0] == 0x3F80 and r[1] == 0x3F82
    assert np.isnan(fp8.bf16_to_f32(r[2:4])).all()              # inf + -inf, NaN + 1
    assert r[4] == 0x7F80                                        # max + max overflows


def test_fp8_e4m3_saturates_and_e5m2_overflows_to_inf():
    e4 = fp8.E4M3
    a = e4.encode([448.0, -448.0, 240.0, 1.0, np.nan]).tobytes()
    b = e4.encode([448.0, -448.0, 2.0, 0.0625, 1.0]).tobytes()
    out = bytearray(a)
    alu.reduce_into(out, b, DType.FP8_E4M3, RedOp.SUM)
    assert list(out[:4]) == [0x7E, 0xFE, 0x77, 0x38]    # 242 -> 240 (0x77); 1.0625 tie -> 1
    assert out[4] in (0x7F, 0xFF)
    out = bytearray(a)
    alu.reduce_into(out, b, DType.FP8_E4M3, RedOp.PROD)
    assert list(out[:3]) == [0x7E, 0x7E, 0x7E]                   # 448*448, 240*2 saturate
    e5 = fp8.E5M2
    a = e5.encode([57344.0, 57344.0, 49152.0, -57344.0]).tobytes()
    b = e5.encode([4096.0, 2048.0, 8192.0, -8192.0]).tobytes()
    out = bytearray(a)
    alu.reduce_into(out, b, DType.FP8_E5M2, RedOp.SUM)
    # 61440 is the tie above 57344 (odd mantissa) -> inf; 59392 rounds down; 57344 exact
    assert list(out) == [0x7C, 0x7B, 0x7B, 0xFC]


def test_fp8_formats_decode_known_codes():
    assert fp8.E4M3.decode([0x7E, 0x08, 0x01, 0x38, 0xFE]).tolist() == \
        [448.0, 2 ** -6, 2 ** -9, 1.0, -448.0]
    assert np.isnan(fp8.E4M3.decode([0x7F, 0xFF])).all()
    assert fp8.E5M2.decode([0x7B, 0x7C, 0xFC, 0x01, 0x3C]).tolist() == \
        [57344.0, np.inf, -np.inf, 2 ** -16, 1.0]
    assert np.isnan(fp8.E5M2.decode([0x7D, 0x7E, 0x7F])).all()


def test_reference_float16_encoder_matches_numpy():
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(np.float16).view("<u2")
    got = fp8.FLOAT16.encode(x)
    nan = np.isnan(x)
    assert np.array_equal(got[~nan], want[~nan])
    assert np.isnan(fp8.FLOAT16.decode(got[nan])).all()
    codes = np.arange(1 << 16, dtype=np.uint16)
    assert np.array_equal(fp8.FLOAT16.decode(codes), codes.view(np.float16).astype(np.float32),
                          equal_nan=True)


def test_bfloat16_bit_shortcut_equals_the_reference_encoder():
    """float32 -> bfloat16 by bit arithmetic gives the reference encoder's code for every
    sampled float32 pattern, ties, overflow to inf, subnormals and NaNs included."""
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2 ** 32, 300_000, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001,
                      0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x807FFFFF, 0x3F808000,
                      0x3F818000, 0x7F7F8000, 0x7F7F7FFF], np.uint32)
    x = np.concatenate([bits, edges]).view(np.float32)
    assert np.array_equal(fp8.f32_to_bf16(x), fp8.BFLOAT16.encode(x))


# -- checks and errors --------------------------------------------------------------------

@pytest.mark.parametrize("dtype,op,status", [
    (DType.NONE, RedOp.SUM, Status.BAD_DTYPE),
    (99, RedOp.SUM, Status.BAD_DTYPE),
    (DType.INT32, RedOp.NONE, Status.BAD_REDOP),
    (DType.INT32, 99, Status.BAD_REDOP),
    (DType.FLOAT32, RedOp.BAND, Status.BAD_REDOP),
    (DType.BFLOAT16, RedOp.BXOR, Status.BAD_REDOP),
    (DType.FP8_E4M3, RedOp.BOR, Status.BAD_REDOP),
    (DType.UINT64, RedOp.BXOR, Status.OK),
    (DType.FP8_E5M2, RedOp.MAX, Status.OK),
])
def test_check(dtype, op, status):
    assert alu.check(dtype, op) == status
    if status:
        with pytest.raises(alu.AluError) as exc:
            alu.reduce_into(bytearray(8), bytes(8), dtype, op)
        assert exc.value.status == status


def test_length_errors():
    with pytest.raises(alu.AluError) as exc:
        alu.reduce_into(bytearray(8), bytes(12), DType.INT32, RedOp.SUM)
    assert exc.value.status == Status.LENGTH_MISMATCH
    with pytest.raises(alu.AluError) as exc:
        alu.reduce_into(bytearray(6), bytes(6), DType.INT32, RedOp.SUM)
    assert exc.value.status == Status.MISALIGNED
    with pytest.raises(alu.AluError) as exc:
        alu.reduce_ref(bytearray(6), bytes(6), DType.FLOAT64, RedOp.SUM)
    assert exc.value.status == Status.MISALIGNED
    dst = bytearray(b"\x01\x02")
    alu.reduce_into(dst[:0], b"", DType.INT16, RedOp.SUM)      # empty is fine
    assert dst == bytearray(b"\x01\x02")


@pytest.mark.parametrize("dtype,op", PAIRS, ids=IDS)
def test_a_reducer_made_once_gives_what_reduce_into_gives(kernels, dtype, op):
    red = alu.reducer(dtype, op)
    rng = np.random.default_rng(200 + dtype * 16 + op)
    for n in (1000, 7, 1, 0):
        a, b = edge_bytes(dtype, n, rng), random_bytes(dtype, n, rng)
        got, want = bytearray(a), bytearray(a)
        red(got, b)
        alu.reduce_into(want, b, dtype, op)
        assert same(dtype, bytes(got), bytes(want))


def test_a_reducer_refuses_what_reduce_into_refuses_and_takes_overlaps():
    with pytest.raises(alu.AluError) as exc:
        alu.reducer(DType.FLOAT32, RedOp.BXOR)
    assert exc.value.status == Status.BAD_REDOP
    red = alu.reducer(DType.INT32, RedOp.SUM)
    for dst, src, status in ((bytearray(8), bytes(12), Status.LENGTH_MISMATCH),
                             (bytearray(6), bytes(6), Status.MISALIGNED)):
        with pytest.raises(alu.AluError) as exc:
            red(dst, src)
        assert exc.value.status == status
    buf = bytearray(np.arange(16, dtype="<i4").tobytes())
    view = memoryview(buf)
    red(view[0:48], view[16:64])
    assert np.frombuffer(bytes(buf[:48]), "<i4").tolist() == [i + i + 4 for i in range(12)]
    for d, s in ((slice(16, 64), slice(0, 48)),     # src first, overlapping
                 (slice(32, 64), slice(0, 32)),     # adjacent: no byte shared
                 (slice(0, 4), slice(3, 7))):       # one byte shared
        buf = bytearray(np.arange(16, dtype="<i4").tobytes())
        want = bytearray(buf)
        alu.reduce_ref(memoryview(want)[d], bytes(want[s]), DType.INT32, RedOp.SUM)
        red(memoryview(buf)[d], memoryview(buf)[s])
        assert buf == want, (d, s)


# -- backends -----------------------------------------------------------------------------

def test_numpy_backend_in_process_gives_the_same_results():
    rng = np.random.default_rng(11)
    a, b = random_bytes(DType.BFLOAT16, 500, rng), random_bytes(DType.BFLOAT16, 500, rng)
    before = alu.BACKEND
    alu.use_backend("numpy")
    try:
        assert alu.BACKEND == "numpy"
        out = bytearray(a)
        alu.reduce_into(out, b, DType.BFLOAT16, RedOp.SUM)
        q = alu.quantize_fp8(a, DType.BFLOAT16, DType.FP8_E4M3)
    finally:
        alu.use_backend(before)
    assert bytes(out) == ref(a, b, DType.BFLOAT16, RedOp.SUM)
    assert q == alu.quantize_fp8(a, DType.BFLOAT16, DType.FP8_E4M3)
    with pytest.raises(ValueError):
        alu.use_backend("fortran")


def test_environment_selects_numpy_backend():
    code = ("from firmware_model import alu; b = bytearray(b'\\x01\\x00');"
            "alu.reduce_into(b, b'\\x02\\x00', 6, 1); print(alu.BACKEND, b.hex())")
    env = dict(os.environ, NETDAM_ALU="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert out == ["numpy", "0300"]


# -- FP8 quantization ---------------------------------------------------------------------

def quant_input(rng, n):
    """Blocks of very different magnitudes, a zero block, and a short last block."""
    x = rng.standard_normal(n).astype(np.float32)
    x *= np.repeat(2.0 ** rng.integers(-20, 20, -(-n // 128)), 128)[:n].astype(np.float32)
    x[128:256] = 0.0
    return x


@pytest.mark.parametrize("fp8_dtype,bound", [(DType.FP8_E4M3, 2 ** -4),
                                             (DType.FP8_E5M2, 2 ** -3)])
@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_quantize_round_trip(fp8_dtype, bound, backend):
    if backend == "c" and not alu.c_available():
        pytest.skip("C extension not built")
    rng = np.random.default_rng(fp8_dtype)
    x = quant_input(rng, 1000)
    before = alu.BACKEND
    alu.use_backend(backend)
    try:
        q, scales = alu.quantize_fp8(x.tobytes(), DType.FLOAT32, fp8_dtype)
        back = alu.dequantize_fp8(q, scales, fp8_dtype, DType.FLOAT32)
    finally:
        alu.use_backend(before)
    assert len(q) == 1000 and len(scales) == 4 * 8
    s = np.frombuffer(scales, "<f4")
    mant, _ = np.frexp(s)
    assert (mant == 0.5).all()                                    # powers of two
    assert s[1] == 1.0                                            # the all-zero block
    fmax = fp8.FORMATS[fp8_dtype].max_value
    amax = np.array([np.abs(x[i:i + 128]).max() for i in range(0, 1000, 128)])
    assert (amax / s <= fmax).all() and ((amax == 0) | (amax / s > fmax / 2)).all()
    y = np.frombuffer(back, "<f4")
    per = np.repeat(s, 128)[:1000]
    normal = np.abs(x) / per >= 2.0 ** fp8.FORMATS[fp8_dtype].min_normal_exp
    rel = np.abs(y[normal] - x[normal]) / np.abs(x[normal])
    assert rel.max() <= bound
    fmt = fp8.FORMATS[fp8_dtype]                 # below the normal range: half an ulp
    half_ulp = per[~normal] * 2.0 ** (fmt.min_normal_exp - fmt.mbits - 1)
    assert np.all(np.abs(y[~normal] - x[~normal]) <= half_ulp)
    assert (y[128:256] == 0).all()


@needs_c
@pytest.mark.parametrize("src_dtype", [DType.FLOAT32, DType.BFLOAT16, DType.FLOAT16])
@pytest.mark.parametrize("fp8_dtype", [DType.FP8_E4M3, DType.FP8_E5M2])
def test_quantize_c_matches_reference(src_dtype, fp8_dtype):
    rng = np.random.default_rng(src_dtype * 32 + fp8_dtype)
    x = quant_input(rng, 777).astype(np.float64)
    x[5], x[300], x[301] = np.inf, np.nan, -np.inf
    src = fp8.store(x, src_dtype)
    q_c, s_c = alu.quantize_fp8(src, src_dtype, fp8_dtype, 64)
    q_r, s_r = fp8.quantize(src, src_dtype, fp8_dtype, 64)
    assert s_c == s_r
    assert same(fp8_dtype, q_c, q_r)
    back_c = alu.dequantize_fp8(q_c, s_c, fp8_dtype, src_dtype, 64)
    back_r = fp8.dequantize(q_r, s_r, fp8_dtype, src_dtype, 64)
    assert same(src_dtype, back_c, back_r)
    inf_code = np.frombuffer(q_c, np.uint8)[5]
    assert inf_code == (0x7E if fp8_dtype == DType.FP8_E4M3 else 0x7C)


def test_quantize_errors():
    with pytest.raises(alu.AluError) as exc:
        alu.quantize_fp8(bytes(8), DType.INT32, DType.FP8_E4M3)
    assert exc.value.status == Status.BAD_DTYPE
    with pytest.raises(alu.AluError) as exc:
        alu.quantize_fp8(bytes(8), DType.FLOAT32, DType.FLOAT16)
    assert exc.value.status == Status.BAD_DTYPE
    with pytest.raises(alu.AluError) as exc:
        alu.quantize_fp8(bytes(6), DType.FLOAT32, DType.FP8_E4M3)
    assert exc.value.status == Status.MISALIGNED
    with pytest.raises(alu.AluError) as exc:
        alu.dequantize_fp8(bytes(200), bytes(4), DType.FP8_E4M3, DType.FLOAT32)
    assert exc.value.status == Status.LENGTH_MISMATCH


# -- properties ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(width=32, allow_nan=False),
                          st.floats(width=32, allow_nan=False)), max_size=200))
def test_float32_sum_is_numpy_add(pairs):
    a = np.array([p[0] for p in pairs], "<f4")
    b = np.array([p[1] for p in pairs], "<f4")
    out = bytearray(a.tobytes())
    alu.reduce_into(out, b.tobytes(), DType.FLOAT32, RedOp.SUM)
    with np.errstate(over="ignore", invalid="ignore"):
        want = a + b
    assert np.array_equal(np.frombuffer(bytes(out), "<f4"), want, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-2 ** 31, 2 ** 31 - 1),
                          st.integers(-2 ** 31, 2 ** 31 - 1)), max_size=200))
def test_int32_sum_wraps_like_numpy(pairs):
    a = np.array([p[0] for p in pairs], "<i4")
    b = np.array([p[1] for p in pairs], "<i4")
    out = bytearray(a.tobytes())
    alu.reduce_into(out, b.tobytes(), DType.INT32, RedOp.SUM)
    assert np.frombuffer(bytes(out), "<i4").tolist() == \
        [((x + y + 2 ** 31) % 2 ** 32) - 2 ** 31 for x, y in pairs]
