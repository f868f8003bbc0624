"""The line counter of tools/python_work.py runs every case, byte-exact, and counts
work on both sides: the same count twice (it is a count, not a time)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "python_work.py"


def _counts(what: str) -> dict:
    p = subprocess.run([sys.executable, str(TOOL), what, "--top", "3"], capture_output=True,
                       text=True, timeout=100)
    assert p.returncode == 0, p.stderr
    return {m[0]: float(m[1]) for m in re.findall(r"^  (\S.*?)\s+([\d.]+)$", p.stdout, re.M)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("what, sides", [("read8", {"agent send", "device", "agent answer"}),
                                         ("write", {"agent", "device"}),
                                         ("read", {"agent", "device"})])
def test_each_side_is_counted_and_the_count_repeats(what, sides):
    first = _counts(what)
    assert set(first) == sides and all(v > 10 for v in first.values())
    assert _counts(what) == pytest.approx(first, rel=0.05)
