"""tools/bench_transport.py's placement: ``pin`` keeps every thread of a real process on
the CPU asked for, ``cpus_for`` picks two CPUs this process may use (or none), and bad
counts get one usage error, not a traceback; an echo that does not answer is a
TimeoutError, polling or not."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
AFFINITY = hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")
TWO_CPUS = AFFINITY and len(os.sched_getaffinity(0)) >= 2

CHILD = """
import threading, time
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
print("ready", flush=True)
time.sleep(30)
"""


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(TOOLS))
    try:
        import bench_transport
    finally:
        sys.path.remove(str(TOOLS))
    return bench_transport


def _allowed(pid: int) -> dict[int, str]:
    """Each thread of ``pid``: its Cpus_allowed_list."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    out[int(tid)] = line.split(":", 1)[1].strip()
    return out


def test_no_placement_when_not_asked(bench):
    assert bench.cpus_for(False) is None
    bench.pin(os.getpid(), None)        # nothing to do, and nothing done
    if AFFINITY:
        assert _allowed(os.getpid())


@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs this process may use")
def test_two_distinct_allowed_cpus(bench):
    client, server = bench.cpus_for(True)
    allowed = os.sched_getaffinity(0)
    assert client != server and {client, server} <= allowed


@pytest.mark.timeout(30)
@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs this process may use")
def test_pin_holds_every_thread_of_a_process(bench):
    _, server = bench.cpus_for(True)
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        before = _allowed(child.pid)
        assert len(before) == 2                        # the main thread and the sleeper
        bench.pin(child.pid, server)
        assert set(_allowed(child.pid).values()) == {str(server)}
    finally:
        child.kill()
        child.wait(5)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("flag", ["--trials", "--count"])
def test_a_zero_count_is_one_usage_error(flag):
    r = subprocess.run([sys.executable, str(TOOLS / "bench_transport.py"), flag, "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "must be at least 1" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("spin", [False, True])
def test_a_silent_echo_is_a_timeout_not_a_hang(bench, monkeypatch, spin):
    monkeypatch.setattr(bench, "ECHO_TIMEOUT", 0.3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:   # never answers
        silent.bind(("127.0.0.1", 0))
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            bench.python_echo_rtt(silent.getsockname()[1], 84, 3, spin=spin)
        assert time.monotonic() - start < 5


@pytest.mark.timeout(30)
def test_the_polling_echo_answers(bench):
    rtt = bench.spin_echo_rtt(84, 200, None)
    assert 0 < rtt < 1e6


def test_a_row_of_runs_gives_median_min_and_max(bench, capsys):
    table = bench.Table()
    assert table.runs("echo", [3.0, 1.0, 2.0], "us") == 2.0
    table.runs("  ratio", [4.5], "x")
    assert table.as_json() == [
        {"measurement": "echo", "value": 2.0, "min": 1.0, "max": 3.0, "unit": "us"},
        {"measurement": "  ratio", "value": 4.5, "min": 4.5, "max": 4.5, "unit": "x"}]
    table.print()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["measurement", "median", "min", "max", "unit"]
    assert lines[1].split() == ["echo", "2.000", "1.000", "3.000", "us"]
    assert lines[2].split() == ["ratio", "4.500", "4.500", "4.500", "x"]


@pytest.mark.timeout(60)
def test_crc_rates_measure_each_kernel_and_restore_the_default(bench):
    from netdam.wire import fast
    if not fast.AVAILABLE:
        pytest.skip("the C fast path is not built")
    default = fast.crc_kernel()
    rates = bench.crc_rates(1)
    assert default in rates or default == "table"
    for cached, streaming in rates.values():
        assert len(cached) == len(streaming) == 1
        assert min(cached + streaming) > 0
    assert fast.crc_kernel() == default         # what the rest of the process runs
