"""netdam bench: the sweep, the nccl-tests columns, #wrong, JSON rows, and bad
arguments as one line."""

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_bench_sweep_writes_rows(tmp_path):
    out = tmp_path / "rows.json"
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", "all_reduce", "all_gather",
                        "--nodes", "2", "-b", "1K", "-e", "16K", "-f", "4", "-w", "0", "-n", "2",
                        "--json", str(out)], capture_output=True, text=True, timeout=100,
                       env={"COLUMNS": "200", **__import__("os").environ})
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())
    sizes = [1024, 4096, 16384]
    assert [(r["collective"], r["algo"], r["size"]) for r in rows] == (
        [("all_reduce", a, s) for a in ("ring", "recursive_doubling", "chain", "tree")
         for s in sizes]
        + [("all_gather", None, s) for s in sizes])
    for r in rows:
        assert r["wrong"] == 0 and r["error"] is None and r["time_us"] > 0
        factor = 2 * (2 - 1) / 2 if r["collective"] == "all_reduce" else (2 - 1) / 2
        assert r["busbw"] == pytest.approx(r["algbw"] * factor)
        assert r["algbw"] == pytest.approx(r["size"] / (r["time_us"] / 1e6) / 1e9)
    assert "busbw (GB/s)" in p.stdout and "#wrong" in p.stdout


@pytest.mark.parametrize("argv,text", [
    (["-b", "0"], "0 < -b"), (["-f", "1"], "greater than 1"), (["nope"], "unknown collective"),
    (["-b", "12Q"], "not a size"),
])
def test_bad_arguments_are_one_line(argv, text):
    p = subprocess.run([sys.executable, "-m", "netdam", "bench", *argv], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and text in p.stderr and "Traceback" not in p.stderr
