"""tools/overlap.py runs non-blocking all_reduces on real devices, alone and with the
hosts away between start and wait: every sum is right, a start never outlasts its
call, a call with hosts away lasts at least as long as they were away, and a bad
argument is one readable line."""

from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "overlap.py"


@pytest.mark.timeout(150)
def test_a_short_run_reports_start_and_whole_call_per_algorithm(ran):
    printed, fig = ran(TOOL, ["--nodes", "2", "--size", "64K", "--count", "3"])
    assert fig["size"] == 64 << 10 and sorted(fig["algos"]) == ["chain", "ring", "tree"]
    for algo, f in fig["algos"].items():
        assert 0 < f["start_us"] <= f["call_us"], (algo, f)
        for ph in ("others_away", "all_away"):
            assert f[f"call_{ph}_us"] >= f["away_us"] > 0, (algo, ph, f)
            assert 0 <= f[f"overlap_{ph}"] <= 1, (algo, ph, f)
        assert f"{algo:>6}: start" in printed


def test_a_bad_argument_is_one_readable_line(refused, bad_job_args):
    refused(TOOL, *bad_job_args)
