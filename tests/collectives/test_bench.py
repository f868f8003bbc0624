"""netdam bench: the sweep, the nccl-tests columns, #wrong, JSON rows, bad arguments as
one line, the SVG plot, and the comparison with Gloo and the raw baselines (ratios are
checked for consistency, never for speed)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netdam.collectives import bench, compare
from netdam.launch import rank_cpus


@pytest.mark.timeout(120)
def test_bench_sweep_writes_rows(tmp_path):
    out = tmp_path / "rows.json"
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", "all_reduce", "all_gather",
                        "--nodes", "2", "-b", "1K", "-e", "16K", "-f", "4", "-w", "0", "-n", "2",
                        "--json", str(out)], capture_output=True, text=True, timeout=100,
                       env={"COLUMNS": "200", **os.environ})
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())
    sizes = [1024, 4096, 16384]
    assert [(r["collective"], r["algo"], r["size"]) for r in rows] == (
        [("all_reduce", a, s) for a in ("ring", "recursive_doubling", "one_shot", "chain",
                                        "tree") for s in sizes]
        + [("all_gather", a, s) for a in ("ring", "multicast") for s in sizes])
    for r in rows:
        assert r["wrong"] == 0 and r["error"] is None and r["time_us"] > 0
        assert r["count"] * 4 == r["size"]     # float32 elements of the size
        factor = 2 * (2 - 1) / 2 if r["collective"] == "all_reduce" else (2 - 1) / 2
        assert r["busbw"] == pytest.approx(r["algbw"] * factor)
        assert r["algbw"] == pytest.approx(r["size"] / (r["time_us"] / 1e6) / 1e9)
    assert "busbw (GB/s)" in p.stdout and "#wrong" in p.stdout
    # host CPU per collective in microseconds, as the JSON's seconds say
    cells = {tuple(c.strip() for c in line.split("│")[1:4]): line.split("│")[-2].strip()
             for line in p.stdout.splitlines() if line.count("│") > 10}
    assert "host cpu (us)" in p.stdout
    for r in rows:
        assert cells[(r["collective"], r["algo"], f"{r['size']:,}")] == \
            f"{r['cpu_s'] * 1e6:,.0f}" != "0"


@pytest.mark.timeout(120)
def test_registered_in_network_all_reduce_is_checked_and_labelled(tmp_path):
    out = tmp_path / "rows.json"
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", "all_reduce", "--nodes", "2",
                        "-b", "64K", "-e", "256K", "-f", "4", "-w", "0", "-n", "2", "-R",
                        "--algo", "chain", "--algo", "ring", "--json", str(out)],
                       capture_output=True, text=True, timeout=100,
                       env={"COLUMNS": "200", **os.environ})
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())
    assert [(r["algo"], r["size"]) for r in rows] == [
        ("chain, registered", 65536), ("chain, registered", 262144),
        ("ring", 65536), ("ring", 262144)]
    assert all(r["wrong"] == 0 and r["error"] is None for r in rows)


def test_registered_applies_to_in_network_sizes_that_fit_the_work_area():
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    _, cases = bench.plan(p.parse_args(["all_reduce", "--nodes", "4", "-b", "32M", "-e",
                                        "128M", "-f", "2", "-R", "--algo", "chain",
                                        "--algo", "ring"]))
    assert [(c["algo"], c["count"] * 4 >> 20, c["registered"]) for c in cases] == [
        ("chain", 32, True), ("chain", 64, True), ("chain", 128, False),
        ("ring", 32, False), ("ring", 64, False), ("ring", 128, False)]


def test_registered_applies_to_the_multicast_broadcast_too():
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    _, cases = bench.plan(p.parse_args(["broadcast", "all_gather", "--nodes", "4", "-b",
                                        "1M", "-e", "1M", "-R"]))
    assert [(c["collective"], c["algo"], c["registered"]) for c in cases] == [
        ("broadcast", "binomial", False), ("broadcast", "multicast", True),
        ("all_gather", "ring", False), ("all_gather", "multicast", False)]


def test_algo_picks_each_collectives_own_algorithms():
    """``--algo`` names algorithms across collectives: each runs those it has (or its one
    algorithm); a name no collective has is refused."""
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    _, cases = bench.plan(p.parse_args(["all_reduce", "broadcast", "all_to_all", "--nodes",
                                        "4", "-b", "1M", "-e", "1M", "--algo", "chain",
                                        "--algo", "multicast"]))
    assert [(c["collective"], c["algo"]) for c in cases] == [
        ("all_reduce", "chain"), ("broadcast", "multicast"), ("all_to_all", None)]
    with pytest.raises(bench.UsageError, match="unknown algorithm"):
        bench.plan(p.parse_args(["broadcast", "--algo", "nope"]))


def test_load_store_and_hierarchical_are_swept_where_they_apply():
    """load_store on one node, up to one slot per rank (256 KiB here); hierarchical where
    nodes hold several ranks; either named where it cannot run is refused or skipped."""
    p = argparse.ArgumentParser()
    bench.add_arguments(p)

    def swept(*argv):
        _, cases = bench.plan(p.parse_args(["all_reduce", "-b", "64K", "-e", "1M", *argv]))
        return sorted({(c["algo"], c["count"] * 4) for c in cases
                       if c["algo"] in ("load_store", "hierarchical")})
    assert swept("--nodes", "1", "--devices-per-node", "4") == [
        ("load_store", 64 << 10), ("load_store", 256 << 10)]
    assert swept("--nodes", "2", "--devices-per-node", "2") == [
        ("hierarchical", 64 << 10), ("hierarchical", 256 << 10), ("hierarchical", 1 << 20)]
    assert swept("--nodes", "4") == []
    assert swept("--nodes", "4", "--algo", "hierarchical") == [
        ("hierarchical", 64 << 10), ("hierarchical", 256 << 10), ("hierarchical", 1 << 20)]
    with pytest.raises(bench.UsageError, match="one node"):
        swept("--nodes", "2", "--algo", "load_store")


def test_an_all_gather_is_sized_by_its_gathered_array_as_in_nccl_tests():
    """nccl-tests' all_gather size is the gathered array: each of 4 ranks gives a quarter
    of a 1 MiB case (a reduce_scatter's size is each rank's buffer)."""
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    _, cases = bench.plan(p.parse_args(["all_gather", "reduce_scatter", "--nodes", "4",
                                        "-b", "1M", "-e", "1M", "--algo", "ring"]))
    assert [(c["collective"], c["count"] * 4) for c in cases] == [
        ("all_gather", 256 << 10), ("reduce_scatter", 1 << 20)]


@pytest.mark.parametrize("argv,text", [
    (["-b", "0"], "0 < -b"), (["-f", "1"], "greater than 1"), (["nope"], "unknown collective"),
    (["-b", "12Q"], "not a size"),
])
def test_bad_arguments_are_one_line(argv, text):
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", *argv], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and text in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("argv,text", [
    (["--root", "9", "--nodes", "2"], "--root must be a rank"),
    (["--nodes", "0"], "at least 1"),
    (["--plot", "/no/such/dir/x.svg"], "no such directory"),
    (["--json", "/proc/x.json"], "cannot write there"),
    (["--compare", "tcp"], "invalid choice"),
    (["-i", "0"], "-i must be at least 1 byte"),
    (["--mtu", "10"], "outside 256..65507"),
    (["--loss", "2"], "not a probability"),
])
@pytest.mark.timeout(60)
def test_more_bad_arguments_are_one_line(argv, text):
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", *argv], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and text in p.stderr and "Traceback" not in p.stderr
    assert "ranks" not in p.stdout      # refused before the banner: no cluster started


def _series(svg_text: str) -> tuple[list, set[str]]:
    root = ET.fromstring(svg_text)
    lines = [e for e in root.iter(f"{SVG}polyline") if e.get("class") == "series"]
    texts = {e.text for e in root.iter(f"{SVG}text")}
    return lines, texts


SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.timeout(30)
def test_plot_has_one_line_per_series_and_labelled_axes():
    from netdam.collectives.plot import busbw_svg
    svg = busbw_svg({"all_reduce ring": [(4096, 0.01), (65536, 0.05), (1 << 20, 0.2)],
                     "all_reduce chain": [(4096, 0.005)],                 # one point
                     "udp stream": [(4096, 0.1), (1 << 20, 3.0)]}, "t", {"udp stream"})
    lines, texts = _series(svg)
    assert [e.get("data-name") for e in lines] == ["all_reduce ring", "all_reduce chain",
                                                  "udp stream"]
    assert len(lines[0].get("points").split()) == 3 and len(lines[1].get("points").split()) == 1
    assert lines[2].get("stroke-dasharray") and not lines[0].get("stroke-dasharray")
    assert {"4K", "1M", "all_reduce ring", "udp stream"} <= texts
    assert any(t.startswith("message size") for t in texts)
    assert any(t.startswith("busbw (GB/s") for t in texts)
    xs = [float(p.split(",")[0]) for p in lines[0].get("points").split()]
    assert xs == sorted(xs)   # 4K -> 64K -> 1M: equal ratios, equal steps on a log axis
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], rel=0.01)


@pytest.mark.timeout(120)
def test_compare_gloo_and_baselines_in_the_same_run(tmp_path):
    """A world of 2: netdam's ring next to Gloo and the raw baselines; every row is
    checked, every netdam row carries its ratio, the plot has one line per series."""
    pytest.importorskip("torch")
    out, svg = tmp_path / "rows.json", tmp_path / "busbw.svg"
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", "all_reduce", "--nodes", "2",
                        "--algo", "ring", "-b", "4K", "-e", "64K", "-f", "16", "-w", "0",
                        "-n", "2", "--compare", "gloo", "--baseline", "--json", str(out),
                        "--plot", str(svg)], capture_output=True, text=True, timeout=110,
                       env={**os.environ, "COLUMNS": "250"})
    assert p.returncode == 0, p.stdout + p.stderr
    rows = json.loads(out.read_text())
    by_lib = {}
    for r in rows:
        by_lib.setdefault(r["library"], []).append(r)
    assert sorted(by_lib) == ["baseline", "gloo", "netdam"]
    assert [r["size"] for r in by_lib["netdam"]] == [r["size"] for r in by_lib["gloo"]] \
        == [4096, 65536]
    for r in by_lib["netdam"]:
        gloo = next(g for g in by_lib["gloo"] if g["size"] == r["size"])
        assert r["gloo_busbw"] == gloo["busbw"] > 0
        assert r["vs_gloo"] == pytest.approx(r["busbw"] / gloo["busbw"])
        assert r["udp_stream_gbps"] > 0 and r["memcpy_gbps"] > 0
    for r in by_lib["gloo"]:
        assert r["wrong"] == 0 and r["error"] is None and r["ranks"] == 2
        assert r["min_us"] <= r["time_us"] <= r["max_us"]
    assert sorted((r["collective"], r["size"]) for r in by_lib["baseline"]) == [
        ("memcpy", 4096), ("memcpy", 65536), ("udp stream", 4096), ("udp stream", 65536)]
    assert "vs Gloo" in p.stdout
    lines, texts = _series(svg.read_text())
    assert sorted(e.get("data-name") for e in lines) == [
        "all_reduce Gloo", "all_reduce ring", "memcpy", "udp stream"]
    assert all(len(e.get("points").split()) == 2 for e in lines)


def _site_without(tmp_path, hidden: str) -> Path:
    """A copy (by symlinks) of this interpreter's site-packages without ``hidden``."""
    farm = tmp_path / "site"
    farm.mkdir()
    for d in {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))
              and Path(p).is_dir()}:
        for entry in Path(d).iterdir():
            if not entry.name.lower().startswith(hidden) and not (farm / entry.name).exists():
                (farm / entry.name).symlink_to(entry)
    return farm


@pytest.mark.timeout(60)
def test_compare_gloo_without_torch_is_one_line(tmp_path):
    """Run with a sys.path on which torch cannot be imported (site-packages without it)."""
    farm = _site_without(tmp_path, "torch")
    code = ("import site, sys; site.addsitedir(sys.argv[1]); from netdam.cli import main; "
            "sys.exit(main(['bench', '--compare', 'gloo']))")
    p = subprocess.run([sys.executable, "-S", "-c", code, str(farm)], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    err = p.stderr.strip()
    assert "needs torch" in err and "pip install torch" in err and "Traceback" not in err
    assert len(err.splitlines()) <= 2   # one line, perhaps wrapped by the terminal width


@pytest.mark.timeout(120)
def test_compare_mpi_over_shared_memory_beside_load_store(tmp_path):
    """Ranks of one node against Open MPI's shared-memory transport, in the same run."""
    pytest.importorskip("mpi4py")
    if shutil.which("mpirun") is None:
        pytest.skip("needs mpirun (Open MPI)")
    out = tmp_path / "rows.json"
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", "all_reduce", "--nodes", "1",
                        "--devices-per-node", "2", "--algo", "load_store", "-b", "4K", "-e",
                        "4K", "-w", "0", "-n", "3", "--compare", "mpi-shm", "--json",
                        str(out)], capture_output=True, text=True, timeout=110)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {r["library"]: r for r in json.loads(out.read_text())}
    assert sorted(rows) == ["mpi-shm", "netdam"]
    assert rows["mpi-shm"]["wrong"] == 0 and rows["mpi-shm"]["ranks"] == 2
    assert rows["netdam"]["wrong"] == 0 and rows["netdam"]["algo"] == "load_store"
    assert rows["netdam"]["vs_mpi-shm"] == pytest.approx(
        rows["netdam"]["busbw"] / rows["mpi-shm"]["busbw"])


@pytest.mark.timeout(60)
def test_compare_mpi_without_mpirun_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", "--compare", "mpi"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PATH": str(tmp_path)})
    assert p.returncode == 2 and "mpirun" in p.stderr and "Traceback" not in p.stderr


def test_a_case_larger_than_this_machine_is_refused_before_any_rank_starts():
    from netdam.collectives.runner import MEM_SIZE, memory_refusal
    gib = 1 << 30
    # 4 ranks checking: each holds its buffer, its result, the expected one and 4 inputs
    assert memory_refusal(4, 256 << 20, True, available=8 * gib) is None
    why = memory_refusal(4, 1 << 30, True, available=8 * gib)
    assert why and "need about 28.5 GiB" in why and "--no-check needs less" in why
    assert memory_refusal(4, 512 << 20, False, available=8 * gib) is None
    assert memory_refusal(2, 0, True, available=2 * MEM_SIZE) is None   # devices fit
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", "all_reduce", "-b", "4K",
                        "-e", "64G"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "GiB are available" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_references_are_placed_as_netdam_ranks_are():
    """--bind cpu puts a reference's rank r on the r-th CPU, round robin, as netdam's
    launcher does (mpirun is told to bind by core); --bind none leaves them free."""
    argv = ["worker"]
    gloo = compare.commands("gloo", 3, argv, "cpu")
    assert [cpu for _, _, cpu in gloo] == rank_cpus(3)
    assert [env["RANK"] for _, env, _ in gloo] == ["0", "1", "2"]
    assert all(cpu is None for _, _, cpu in compare.commands("gloo", 3, argv, "none"))
    for bind, want in (("cpu", "core:overload-allowed"), ("none", "none")):
        [(cmd, _, cpu)] = compare.commands("mpi", 3, argv, bind)
        assert cmd[cmd.index("--bind-to") + 1] == want and cpu is None
        assert cmd[-1] == "worker" and cmd[:3] == ["mpirun", "-n", "3"]
