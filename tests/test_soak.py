"""``netdam soak`` for a few seconds. Invariant: under injected loss, duplication,
reordering and corruption every checked operation is right, none is lost, memory stays
flat, every retransmission is accounted for and no device receive buffer is kept past
serving; the command says so with exit 0. A bad duration is one readable line."""

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(90)
def test_a_short_soak_is_clean(tmp_path):
    out = tmp_path / "soak.json"
    p = subprocess.run([sys.executable, "-m", "netdam", "soak", "--seconds", "3", "--nodes",
                        "2", "--loss", "0.02", "--corrupt", "0.01", "--dup", "0.01",
                        "--seed", "3", "--json", str(out)], capture_output=True, text=True,
                       timeout=85, env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"})
    report = json.loads(out.read_text())
    assert p.returncode == 0 and report["clean"], (p.stdout[-3000:], p.stderr[-3000:])
    assert "clean" in p.stdout and "wrong results" in p.stdout
    assert report["ok"] > 50 and report["wrong"] == report["errors"] == report["lost"] == 0
    led = report["ledger"]
    assert led["injected"]["lost"] > 0 and led["retransmitted"] > 0 and led["balanced"]
    assert set(report["rss_kib"]) == {"rank0", "rank1", "coordinator", "device1", "device2"}
    assert report["rx_retained"] == 0 and "receive buffers kept" in p.stdout


def test_a_bad_duration_is_one_line():
    p = subprocess.run([sys.executable, "-m", "netdam", "soak", "--seconds", "0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "positive duration" in p.stderr
    assert "Traceback" not in p.stderr
