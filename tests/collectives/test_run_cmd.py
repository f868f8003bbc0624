"""``netdam run``: one collective on a real local cluster, checked, reported in nccl-tests'
terms (an all_gather's size is the gathered array); bad arguments are one line."""

import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "COLUMNS": "200"}


def _run(*argv: str, timeout: float = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netdam", "run", *argv],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("coll", ["all_gather", "all_reduce"])
def test_one_collective_runs_checked_and_reports_its_size(coll):
    p = _run(coll, "--nodes", "2", "--size", "64K", "--iters", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    row = next(line for line in p.stdout.splitlines() if line.startswith("│ " + coll))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[4] == "65,536" and cells[8] == "0" and cells[9] == "ok", cells


@pytest.mark.parametrize("argv,text", [
    (["all_reduce", "--root", "9", "--nodes", "2"], "--root 9"),
    (["all_reduce", "--algo", "nope"], "no algorithm 'nope'"),
    (["all_reduce", "--dtype", "float7"], "unknown dtype"),
    (["all_reduce", "--algo", "load_store", "--nodes", "2"], "every rank on one node"),
    (["all_reduce", "--nodes", "0"], "--nodes and --devices-per-node must be at least 1"),
    (["all_reduce", "--iters", "0"], "--iters must be at least 1"),
    (["all_reduce", "--size", "-5"], "--size -5: must not be negative"),
    (["all_reduce", "--size", "3"], "the smallest all_reduce of 4 ranks is 4 bytes"),
    (["all_gather", "--size", "12", "--nodes", "4"],
     "the smallest all_gather of 4 ranks is 16 bytes"),
    (["all_reduce", "--mtu", "10"], "mtu 10 outside 256..65507"),
    (["all_reduce", "--size", "64G"], "GiB are available"),
    (["broadcast", "--algo", "load_store", "--nodes", "1", "--devices-per-node", "2",
      "--size", "1M"], "at most 262144 bytes per rank"),
])
def test_bad_arguments_are_one_line(argv, text):
    p = _run(*argv, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert text in p.stderr and "Traceback" not in p.stderr
