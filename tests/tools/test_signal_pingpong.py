"""tools/signal_pingpong.py runs two ranks on two nodes through real devices: every round
trip's payload arrives intact, every wait on the waiter's own node looks in place, and
a bad argument is one readable line."""

from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "signal_pingpong.py"


@pytest.mark.timeout(120)
def test_a_short_pingpong_reports_its_round_trips(ran):
    printed, fig = ran(TOOL, ["--count", "40", "--bytes", "100"])
    assert "round trip of 100-byte signals over 40" in printed
    assert 0 < fig["min_us"] <= fig["round_trip_us"] <= fig["max_us"]
    # the tool's warm-up and timed waits, every one on the waiter's own node's device
    assert fig["waits_in_place"] == [90, 90]
    assert all(c > 0 for c in fig["cpu_us"])


@pytest.mark.parametrize("args, msg", [(["--count", "0"], "--count must be at least 1"),
                                       (["--bytes", "0"], "--bytes must be from 1")])
def test_a_bad_argument_is_one_readable_line(refused, args, msg):
    refused(TOOL, args, msg)
