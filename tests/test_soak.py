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


@pytest.mark.timeout(90)
def test_a_short_soak_on_one_node_is_clean(tmp_path):
    """Ranks of one node: loads and stores between them, datagrams only between devices."""
    out = tmp_path / "soak.json"
    p = subprocess.run([sys.executable, "-m", "netdam", "soak", "--seconds", "3", "--nodes",
                        "1", "--devices-per-node", "2", "--loss", "0.02", "--seed", "5",
                        "--json", str(out)], capture_output=True, text=True, timeout=85,
                       env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"})
    report = json.loads(out.read_text())
    assert p.returncode == 0 and report["clean"], (p.stdout[-3000:], p.stderr[-3000:])
    assert report["ok"] > 50 and report["wrong"] == report["errors"] == report["lost"] == 0


def test_memory_flatness_leaves_out_shared_memory_a_process_touches():
    """Touching 32 MiB of a shared-memory segment (as a rank touches device memory) grows
    VmRSS, not the figure the soak checks."""
    from multiprocessing import shared_memory

    import numpy as np

    from netdam.soak import rss_kib

    def vm_rss() -> int:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    seg = shared_memory.SharedMemory(create=True, size=32 << 20)
    try:
        before, vm_before = rss_kib(), vm_rss()
        np.ndarray((32 << 20,), np.uint8, seg.buf)[:] = 1
        assert vm_rss() - vm_before > 24 << 10
        assert rss_kib() - before < 8 << 10
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.parametrize("argv,text", [
    (["--seconds", "0"], "positive duration"),
    (["--seconds", "5", "--json", "/no-such-dir/x.json"], "no such directory"),
    (["--seconds", "5", "--rss-slack-mib", "-1"], "must not be negative"),
])
def test_a_bad_argument_is_one_line_before_the_soak_starts(argv, text):
    p = subprocess.run([sys.executable, "-m", "netdam", "soak", *argv],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and text in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
