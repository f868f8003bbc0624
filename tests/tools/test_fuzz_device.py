"""The standalone wire fuzzer against a device of its own, bounded in time. Invariant:
after every batch of hostile datagrams the device still answers, its read-only canary is
unchanged, its memory stays bounded, and every NAK that came back was counted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fuzz_device.py"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("seed", [1, 2])
def test_device_survives_the_fuzzer(tmp_path, seed):
    out = tmp_path / "summary.json"
    p = subprocess.run([sys.executable, str(TOOL), "--spawn", "--seconds", "3", "--seed",
                        str(seed), "--json", str(out)], capture_output=True, text=True,
                       timeout=80)
    summary = json.loads(out.read_text())
    assert p.returncode == 0 and summary["failures"] == [], (summary["failures"], p.stderr)
    assert summary["batches"] >= 10 and summary["sent"] > 2000
    assert summary["device_internal_errors"] == 0
    statuses = set(summary["device_naks"])
    assert {"BAD_KEY", "BAD_PARTITION", "UNKNOWN_OPCODE", "OUT_OF_BOUNDS", "LENGTH_MISMATCH",
            "SEQ_OUT_OF_WINDOW", "ACCESS_DENIED", "MISALIGNED", "USER_ERROR"} <= statuses, \
        statuses
