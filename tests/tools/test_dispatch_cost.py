"""tools/dispatch_cost.py times registered in-network all_reduces on real devices, as a
call and as the same round written with the agent's primitives: both give the right
sums (the tool checks every round), both cost some CPU, the report names the
difference, and a bad argument is one readable line."""

from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "dispatch_cost.py"


@pytest.mark.timeout(150)
def test_a_short_run_reports_both_ways_and_their_difference(ran):
    printed, fig = ran(TOOL, ["--nodes", "2", "--size", "64K", "--count", "5"])
    assert fig["size"] == 64 << 10 and fig["count"] == 5
    assert fig["call_us"] > 0 and fig["bare_us"] > 0
    assert fig["dispatch_us"] == pytest.approx(fig["call_us"] - fig["bare_us"])
    assert "host CPU per round: call" in printed


def test_a_bad_argument_is_one_readable_line(refused, bad_job_args):
    refused(TOOL, *bad_job_args)
