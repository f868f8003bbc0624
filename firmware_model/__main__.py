"""``python -m firmware_model --selftest``: check the C ALU against the NumPy reference.

Owns the command-line self test of the reduce ALU (SPEC §6): every supported
(dtype, redop) pair runs through the C kernels and through alu_ref on the same random
data and edge values (both the widest kernels this CPU runs and the portable ones);
results must agree bit for bit, except that any NaN equals any NaN. Then it prints
throughput (bytes of dst per second, median of interleaved runs) of C against NumPy
for float32, bfloat16 and float16 SUM. Exit status 1 on any mismatch, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from firmware_model import alu, alu_ref, fp8
from netdam.wire.fields import DType, RedOp

#: edge values per dtype kind, as float64 (ints come from their dtype's limits)
FLOAT_EDGES = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 0.5, 1.5, 2.5, 3.0,
               1e-3, -1e-3, 1e-7, 6e-8, 3e-8, 448.0, 464.0, 480.0, 57344.0, 59392.0,
               61440.0, 65504.0, 65520.0, 1e30, -1e30, 3.4e38, 1e-40, 1.00390625,
               1.01171875, 2 ** -9, 2 ** -10, 2 ** -16, 2 ** -17]


def edge_bytes(dtype: int, n: int, rng: np.random.Generator) -> bytes:
    """n elements of dtype built from edge values (and their neighbours), shuffled."""
    if dtype in alu_ref.INTS:
        dt = alu_ref.INTS[dtype]
        info = np.iinfo(dt)
        pool = np.array([0, 1, 2, info.max, info.max - 1, info.min, info.min + 1,
                         info.max // 2 + 1, 3, 255 % (info.max + 1)], dtype=object)
        vals = rng.choice(pool, n)
        return np.array([int(v) for v in vals], dt).tobytes()
    vals = rng.choice(np.array(FLOAT_EDGES), n) * rng.choice([1.0, -1.0], n)
    return encode_floats(vals, dtype)


def encode_floats(vals: np.ndarray, dtype: int) -> bytes:
    if dtype in alu_ref.IEEE:
        with np.errstate(over="ignore"):
            return vals.astype(alu_ref.IEEE[dtype]).tobytes()
    return fp8.FORMATS[dtype].encode(vals.astype(np.float32)).tobytes()


def random_bytes(dtype: int, n: int, rng: np.random.Generator) -> bytes:
    """n random elements: uniform bits for integers and FP8, N(0, 10) for wider floats."""
    esize = alu_ref.element_size(dtype)
    if dtype in alu_ref.INTS or esize == 1:
        return rng.integers(0, 256, n * esize, dtype=np.uint8).tobytes()
    return encode_floats(rng.standard_normal(n) * 10.0, dtype)


def same(dtype: int, got: bytes, want: bytes) -> bool:
    """Bitwise equal, except that any NaN equals any NaN."""
    if got == want:
        return True
    if dtype in alu_ref.INTS:
        return False
    if dtype in alu_ref.IEEE:
        g = np.frombuffer(got, alu_ref.IEEE[dtype])
        w = np.frombuffer(want, alu_ref.IEEE[dtype])
        eq_bits = np.frombuffer(got, np.uint8).reshape(g.size, -1) == \
            np.frombuffer(want, np.uint8).reshape(w.size, -1)
        return bool(np.all(eq_bits.all(axis=1) | (np.isnan(g) & np.isnan(w))))
    fmt = fp8.FORMATS[dtype]
    g = np.frombuffer(got, fmt.code_dtype)
    w = np.frombuffer(want, fmt.code_dtype)
    return bool(np.all((g == w) | (np.isnan(fmt.decode(g)) & np.isnan(fmt.decode(w)))))


def check_pair(dtype: int, op: int, n: int, rng: np.random.Generator) -> str:
    """'' if C and the reference agree on random and edge data, else what differed."""
    cases = [("random", random_bytes(dtype, n, rng), random_bytes(dtype, n, rng)),
             ("edge", edge_bytes(dtype, n, rng), edge_bytes(dtype, n, rng))]
    for name, a, b in cases:
        got = bytearray(a)
        want = bytearray(a)
        alu.reduce_into(got, b, dtype, op)
        alu.reduce_ref(want, b, dtype, op)
        if not same(dtype, bytes(got), bytes(want)):
            return f"{name} data differs"
    return ""


def pairs():
    for dtype in sorted(alu_ref.SUPPORTED):
        for op in alu_ref.SUPPORTED[dtype]:
            yield dtype, op


def run_checks(console: Console, n: int, seed: int) -> int:
    """The PASS/FAIL table for every kernel set; returns the number of failures."""
    failures = 0
    kernel_sets = ["best"] + (["baseline"] if alu.select_kernels(True) != "baseline" else [])
    table = Table(title=f"reduce kernels vs NumPy reference ({n} elements, seed {seed})")
    table.add_column("dtype")
    table.add_column("op")
    for ks in kernel_sets:
        table.add_column(f"C {alu.select_kernels(ks == 'best')}")
    results: dict[tuple[int, int], list[str]] = {}
    for ks in kernel_sets:
        alu.select_kernels(ks == "best")
        rng = np.random.default_rng(seed)
        for dtype, op in pairs():
            results.setdefault((dtype, op), []).append(check_pair(dtype, op, n, rng))
    alu.select_kernels(True)
    for (dtype, op), errs in results.items():
        cells = ["[green]PASS[/]" if not e else f"[red]FAIL[/] {e}" for e in errs]
        failures += sum(1 for e in errs if e)
        table.add_row(DType(dtype).name, RedOp(op).name, *cells)
    console.print(table)
    return failures


def bench(console: Console, nbytes: int, repeats: int) -> None:
    """C vs NumPy throughput, bytes of dst per second, median of interleaved runs."""
    rng = np.random.default_rng(1)
    table = Table(title=f"SUM throughput on {nbytes / 2 ** 20:g} MiB "
                        f"(dst bytes/s, median of {repeats}; kernels: {alu.kernel_isa()})")
    for col in ("dtype", "C GB/s", "NumPy GB/s", "NumPy baseline", "C / NumPy"):
        table.add_column(col, justify="right" if col != "dtype" else "left")
    for dtype in (DType.FLOAT32, DType.BFLOAT16, DType.FLOAT16):
        n = nbytes // alu_ref.element_size(dtype)
        vals = rng.standard_normal(n).astype(np.float32)
        src = np.frombuffer(encode_floats(vals, dtype), np.uint8).copy()
        dst = src.copy()
        if dtype == DType.BFLOAT16:                     # NumPy has no bfloat16 add
            label = "alu_ref"
            run_np = lambda: alu.reduce_ref(dst, src, dtype, RedOp.SUM)  # noqa: E731
        else:
            a = dst.view(alu_ref.IEEE[dtype])
            b = src.view(alu_ref.IEEE[dtype])
            label = "np.add(a, b, out=a)"
            run_np = lambda: np.add(a, b, out=a)  # noqa: E731
        run_c = lambda: alu.reduce_into(dst, src, dtype, RedOp.SUM)  # noqa: E731
        tc, tn = [], []
        with np.errstate(all="ignore"):
            run_c()
            run_np()
            for _ in range(repeats):
                tc.append(timed(run_c))
                tn.append(timed(run_np))
        gc = nbytes / statistics.median(tc) / 1e9
        gn = nbytes / statistics.median(tn) / 1e9
        table.add_row(DType(dtype).name, f"{gc:.2f}", f"{gn:.2f}", label, f"{gc / gn:.2f}x")
    console.print(table)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def size_arg(text: str) -> int:
    """Sizes like 65536, 64K, 64M, 1G (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = units.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in units else t
    try:
        value = int(float(digits) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64M)") from None
    if value < 4096:
        raise argparse.ArgumentTypeError(f"size must be at least 4K, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):          # one readable line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m firmware_model",
                     description="Self test of the device's reduce ALU (C vs NumPy).")
    parser.add_argument("--selftest", action="store_true",
                        help="check every (dtype, op) kernel and print throughput")
    parser.add_argument("--size", type=size_arg, default=64 << 20,
                        help="bytes of dst for the throughput runs (default 64M)")
    parser.add_argument("--elements", type=int, default=4099,
                        help="elements per correctness case (default 4099)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed runs per kernel (default 7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bench", action="store_true", help="skip the throughput runs")
    args = parser.parse_args(argv)
    if not args.selftest:
        parser.error("nothing to do (use --selftest)")
    if args.elements < 1 or args.repeats < 1:
        parser.error("--elements and --repeats must be positive")
    console = Console()
    if alu.BACKEND != "c":
        console.print("[red]FAIL[/] the C extension is not in use "
                      f"(backend {alu.BACKEND}); nothing to compare")
        return 1
    failures = run_checks(console, args.elements, args.seed)
    if not args.no_bench:
        bench(console, args.size, args.repeats)
    if failures:
        console.print(f"[red]{failures} mismatch(es)[/]")
        return 1
    console.print("[green]all kernels match the reference[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
