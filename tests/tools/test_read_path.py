"""tools/read_path.py cuts every timed READ into the phases of its critical path: each
READ is matched to the device turn that answered it, and every phase took time."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "read_path.py"


@pytest.mark.timeout(120)
def test_every_read_is_matched_and_cut_into_its_phases():
    sys.path.insert(0, str(TOOL.parent))
    try:
        import read_path
    finally:
        sys.path.remove(str(TOOL.parent))
    p = subprocess.run([sys.executable, str(TOOL), "--count", "150"], capture_output=True,
                       text=True, timeout=100)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("150 of 150 READs matched")
    phases = dict(re.findall(r"^(\S.*?)\s+([\d.]+)\s+[\d.]+%$", p.stdout, re.M))
    assert list(phases) == list(read_path.PHASES)
    assert all(float(us) > 0 for us in phases.values())


def test_a_bad_count_is_one_readable_line(refused):
    refused(TOOL, ["--count", "0"], "--count must be at least 1")
