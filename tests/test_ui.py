"""netdam.ui: a report written to a file or a pipe keeps every cell whole (rich would
assume 80 columns there and cut numbers short), and ``COLUMNS`` still decides when set;
``netdam run`` piped with no ``COLUMNS`` shows its row uncut. Output files that cannot
be written are refused before any work, and a write that fails at the end is one
UsageError."""

import argparse
import os
import subprocess
import sys

import pytest

from netdam.errors import UsageError
from netdam.ui import REPORT_WIDTH, check_outputs, write_output

WIDTH = "from netdam.ui import report_console; print(report_console().width)"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(extra)
    return env


@pytest.mark.timeout(60)
def test_a_piped_report_is_wide_unless_columns_says():
    piped = subprocess.run([sys.executable, "-c", WIDTH], capture_output=True, text=True,
                           env=_env(), timeout=30, check=True)
    assert int(piped.stdout) == REPORT_WIDTH
    told = subprocess.run([sys.executable, "-c", WIDTH], capture_output=True, text=True,
                          env=_env(COLUMNS="100"), timeout=30, check=True)
    assert int(told.stdout) == 100


@pytest.mark.timeout(120)
def test_netdam_run_piped_keeps_its_row_whole():
    p = subprocess.run([sys.executable, "-m", "netdam", "run", "all_reduce", "--nodes", "2",
                        "--size", "64K", "--iters", "2"], capture_output=True, text=True,
                       env=_env(), timeout=100)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "…" not in p.stdout
    row = next(line for line in p.stdout.splitlines() if line.startswith("│ all_reduce"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[4] == "65,536" and cells[9] == "ok", cells


@pytest.mark.timeout(30)
def test_an_output_that_cannot_be_written_is_refused_first(tmp_path):
    def check(path):
        check_outputs(argparse.Namespace(json=path), "json")

    check(str(tmp_path / "fine.json"))
    check("-")                                  # stdout
    assert not (tmp_path / "fine.json").exists()    # nothing made before the end
    for path, why in ((tmp_path / "no" / "x.json", "no such directory"),
                      (tmp_path, "is a directory"),
                      ("/proc/x.json", "cannot write there")):   # nothing may be made
        with pytest.raises(UsageError, match=why):
            check(str(path))


@pytest.mark.timeout(30)
def test_a_failed_write_at_the_end_is_one_usage_error(tmp_path):
    write_output("json", str(tmp_path / "a.json"), "[]")
    assert (tmp_path / "a.json").read_text() == "[]"
    with pytest.raises(UsageError, match="--plot /proc/x.svg: "):
        write_output("plot", "/proc/x.svg", "<svg/>")
