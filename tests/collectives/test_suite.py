"""The collective correctness suite: real clusters, real processes, real datagrams.

Like nccl-tests and mpi4py's collective tests: every collective x algorithm x dtype x
op x world size x size (0, 1, odd, several MTUs), rank-dependent inputs so a misplaced
block is caught, integers compared exactly and floats within the tolerances stated in
netdam.collectives.types, every iteration checked. Each test runs one batch of cases on
one fresh cluster (a cluster start costs about a second) and reports every failing case.
Invariant: every rank's result equals the NumPy reference, under faults too, and
reproducible mode is bit-identical across runs, algorithms and faults.
"""

import pytest

from netdam.collectives.runner import run_cases

DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "bfloat16", "fp8_e4m3", "fp8_e5m2"]
BITS = {"bfloat16", "fp8_e4m3", "fp8_e5m2"}
ESIZE = {"int8": 1, "uint8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "int16": 2, "uint16": 2,
         "float16": 2, "bfloat16": 2, "int32": 4, "uint32": 4, "float32": 4, "int64": 8,
         "uint64": 8, "float64": 8}
INT_OPS = ["sum", "prod", "min", "max", "band", "bor", "bxor"]
FLOAT_OPS = ["sum", "prod", "min", "max"]
#: element counts: empty, one, odd, and several 65000-byte datagrams of float32
COUNTS = [0, 1, 1001, 50_000]


def case(coll, count, dtype="float32", **kw):
    c = {"collective": coll, "count": count, "dtype": dtype, "warmup": 0, "iters": 1, **kw}
    if dtype in BITS:
        c["bits"] = dtype
    return c


def run(cases, n, **kw):
    results = run_cases(cases, nprocs=n, timeout=240, **kw)
    bad = [f"{r.case} -> wrong={r.wrong} error={r.error}" for r in results if not r.ok]
    assert not bad, f"{len(bad)} of {len(results)} cases failed:\n" + "\n".join(bad[:10])
    return results


def allreduce_matrix(n):
    out = []
    for algo in ("ring", "recursive_doubling", "one_shot", "chain", "tree"):
        for dtype in DTYPES:
            for op in (INT_OPS if dtype.startswith(("int", "uint")) else FLOAT_OPS):
                out.append(case("all_reduce", 33, dtype, op=op, algo=algo))
        for count in COUNTS:
            out.append(case("all_reduce", count, "float32", algo=algo))
    for radix in (1, 3):    # the aggregation tree as a line and (up to 4 ranks) flat
        out += [case("all_reduce", count, "float32", algo="tree", radix=radix)
                for count in COUNTS[1:]]
    return out


def other_matrix(n):
    out = []
    for count in COUNTS:
        for root in sorted({0, n - 1}):
            for algo in ("binomial", "multicast"):
                out.append(case("broadcast", count, "int32", root=root, algo=algo))
            out.append(case("reduce", count, "float64", root=root))
        for algo in ("ring", "multicast"):
            out.append(case("all_gather", count, "uint16", algo=algo))
        out.append(case("reduce_scatter", count, "float32"))
        out.append(case("all_to_all", count * n, "int64"))
        out.append(case("all_to_allv", count, "float16"))
    for dtype in ("bfloat16", "fp8_e4m3", "int8"):
        out.append(case("reduce", 77, dtype, op="max", root=n // 2))
        out.append(case("reduce_scatter", 77, dtype, op="sum"))
    for tokens in (0, 1, 37):   # MoE dispatch + combine, one device per rank
        out.append(case("moe", tokens * 96, hidden=96, k=2))
    out.append(case("barrier", 0, "float32", iters=3))
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_all_reduce_every_algorithm_dtype_and_op(n):
    run(allreduce_matrix(n), n)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_other_collectives(n):
    run(other_matrix(n), n)


@pytest.mark.timeout(300)
def test_one_node_loads_and_stores():
    """3 ranks on one node: the load_store collectives for every dtype and op, and every
    other collective and algorithm between them, their rounds and the channels' stores
    interleaved (the automatic choices take load_store for the small sizes here)."""
    cases = []
    for dtype in DTYPES:
        for op in (INT_OPS if dtype.startswith(("int", "uint")) else FLOAT_OPS):
            cases.append(case("all_reduce", 33, dtype, op=op, algo="load_store"))
    for count in COUNTS:
        cases += [case("all_reduce", count, "float32", algo="load_store"),
                  case("all_reduce", count, "float32"),
                  case("broadcast", count, "int32", root=2, algo="load_store"),
                  case("all_gather", count, "uint16", algo="load_store")]
    cases += [case("all_reduce", 200_000, "float32")]    # auto: the ring, beyond a slot
    cases += other_matrix(3)
    run(cases, 3, nodes=1, devices_per_node=3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_world_of_eight():
    run(allreduce_matrix(8)[::3] + other_matrix(8), 8)


@pytest.mark.timeout(300)
def test_under_faults():
    cases = [case("all_reduce", 20_000, "float32", algo=a) for a in
             ("ring", "recursive_doubling", "one_shot", "chain", "tree")]
    cases += [case("all_reduce", 1000, "float32", iters=5)]     # auto
    cases += [case("broadcast", 20_000, "int32", root=2, algo="multicast"),
              case("all_gather", 5000, "float32", algo="multicast")]
    cases += [case("all_to_allv", 5000, "int32"), case("broadcast", 20_000, "int32", root=1),
              case("reduce_scatter", 3000, "float64"), case("barrier", 0, iters=3),
              case("moe", 40 * 128, hidden=128, k=2)]
    results = run(cases, 3, faults={"loss": 0.05, "dup": 0.05, "reorder": 0.1,
                                    "corrupt": 0.01, "seed": 11})
    assert all(r.wrong == 0 for r in results)


@pytest.mark.timeout(300)
def test_reproducible_mode_is_bit_exact_across_runs_algorithms_and_faults():
    det = [case("all_reduce", 30_001, "float32", algo=a, deterministic=True, seed=5)
           for a in ("ring", "recursive_doubling", "one_shot", "chain")]
    clean = run(det, 4)
    faulty = run(det, 4, faults={"loss": 0.05, "reorder": 0.1, "seed": 3})
    digests = {d for r in clean + faulty for d in r.digests.values()}
    assert len(digests) == 1, digests


@pytest.mark.timeout(300)
def test_nodes_with_several_ranks_and_the_hierarchical_algorithm():
    """4 ranks on 2 nodes sharing one device each: scale-up inside a node, scale-out
    across; hierarchical reduces per node first."""
    cases = []
    for algo in ("hierarchical", "ring", "recursive_doubling", "one_shot"):
        for dtype, op in (("float32", "sum"), ("int16", "max"), ("bfloat16", "sum"),
                          ("uint32", "bxor")):
            for count in (0, 1, 3001):
                cases.append(case("all_reduce", count, dtype, op=op, algo=algo))
    cases += [case("all_reduce", 300_000, "float32")]    # auto: hierarchical here
    cases += [c for c in other_matrix(4) if c.get("algo") != "multicast"][:8]  # no offload:
    # ranks share devices here
    run(cases, 4, nodes=2, devices_per_node=1)
